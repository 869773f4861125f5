"""What a job reports to its view: progress snapshots while it runs, then its result or its failure.

Plain data; the words shown for them are bot/jobs/texts.py's.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.jobs.actions import Button
from bot.model.request import ImageRequest, Requester


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    """A snapshot of a running job, sent to the adapter at a steady cadence."""

    job_id: str
    request: ImageRequest
    state: str  # queued | rendering
    elapsed: float
    expected: float
    queue_position: int | None
    done: int
    count: int
    preview: bytes | None  # the latest partial image as a small JPEG (images.preview_jpeg), if a new one came
    offline: bool
    detail: str = ""  # state "relax": where the job is (sent to the Batch API at, last checked at)

    @property
    def fraction(self) -> float:
        """0..1, capped below 1 until the image arrives."""
        if self.state == "queued":
            return 0.0
        return (
            min(0.95, (self.done + min(1.0, self.elapsed / self.expected)) / self.count)
            if self.expected
            else 0.0
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Image:
    """One delivered image."""

    data: bytes
    width: int
    height: int
    format: str
    cost_micros: int
    request_ids: tuple[str, ...]
    elapsed: float
    row_id: int | None = None  # its ledger row, whose outbox entry holds these bytes until delivered

    @property
    def filename(self) -> str:
        return f"image-{self.width}x{self.height}.{'jpg' if self.format == 'jpeg' else self.format}"


@dataclass(frozen=True, slots=True, kw_only=True)
class JobResult:
    """What a finished job produced: at least one image, maybe some failures."""

    job_id: str
    request: ImageRequest
    requester: Requester
    images: tuple[Image, ...]
    failures: tuple[str, ...]
    total_micros: int
    elapsed: float
    quota_left: str
    offline: bool
    buttons: tuple[
        Button, ...
    ] = ()  # the actions on it (Re-roll, Vary, ...), each with what a click reserves


@dataclass(frozen=True, slots=True, kw_only=True)
class JobFailure:
    """A job that made no image: why, the request ids, and what it cost (usually nothing)."""

    job_id: str
    request: ImageRequest
    requester: Requester
    message: str
    request_ids: tuple[str, ...]
    charged_micros: int
    cancelled: bool
    offline: bool
