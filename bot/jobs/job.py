"""What a job is, and what shows it: the reserved `Job`, the adapter's `JobView`, an image `Stopped` by a cancel
or a shutdown, and what a failed image costs. Shared by the fast path (bot/jobs/runner.py), relax mode
(bot/jobs/relax.py) and the service that settles and delivers for both (bot/jobs/delivery.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

from bot.i18n import Msg
from bot.jobs import texts
from bot.jobs.outcomes import Image, JobFailure, JobResult, Progress
from bot.model.request import ImageRequest, Requester
from bot.store.ledger import Reservation


class JobView(Protocol):
    """What an adapter shows for one job. The core calls it; it never touches money or job state.

    `previews`: the platform can show streamed partial images (each costs output tokens).
    `confirms`: the platform can ask the requester to confirm an expensive render (buttons); where it
    cannot (the terminal, where the user typed the command and pays directly), nothing asks.
    """

    previews: bool
    confirms: bool

    async def open(self, first: Progress) -> dict[str, Any]:
        """Post the progress message; return where the job lives (so a restart can tell its user).
        Raise CannotPost (with the platform's reason) if the platform refuses it."""
        ...

    async def progress(self, progress: Progress) -> None: ...

    async def deliver(self, result: JobResult) -> list[dict[str, Any]] | None:
        """Show the images (with `result.buttons`); return where each one now lives on the platform (what a
        button needs to find it again), or None if the platform does not say. Raise DeliveryFailed (or any
        error: taken as worth retrying) if the platform did not take them; the core retries with backoff
        and, after its deadline (bot/jobs/delivery.py), calls `undelivered`. The images are kept until one call succeeds."""
        ...

    async def undelivered(self, text: str) -> None:
        """Tell the requester their paid images could not be posted (the text has the cost, the request ids
        and how to get them: `imagebot redeliver JOB`). Every `text` the core hands a view is a Text
        (bot/i18n.py): the view says it in its reader's language with `i18n.translate`."""
        ...

    async def failed(self, failure: JobFailure) -> None: ...

    async def refused(self, text: str) -> None:
        """Tell only the requester why no job was started (a quota, a bad value, a channel we cannot post in)."""
        ...

    async def confirm(self, text: str, token: str) -> None:
        """Show only the requester the price check `text`, with Render and Cancel buttons carrying `token`."""
        ...

    # Who the requester is on the platform, asked only when the tenant's access rules need it (access.Standing).
    async def platform_admin(self) -> bool: ...

    async def member_of(self, groups: Collection[str]) -> bool: ...


@dataclass
class Job:
    """A validated, reserved job, ready to execute."""

    id: str
    request: ImageRequest
    requester: Requester
    reservation: Reservation
    partials: int = 0
    previews: bool = False  # its platform shows previews (so would a click's job: what its buttons cost)
    stop_reason: str = "cancelled"  # or "interrupted" when shutdown stops it
    created: float = field(default_factory=time.monotonic)
    task: asyncio.Task[JobResult | JobFailure] | None = None
    batch_id: str | None = None  # relax mode: the batch its lines are in, once sent
    images: list[asyncio.Task[Image]] = field(default_factory=list)  # one per image, while it executes

    def stop(self, reason: str) -> bool:
        """Stop the images that are not finished (finished ones are kept and delivered). False if none was left."""
        unfinished = [task for task in self.images if not task.done()]
        if self.images and not unfinished:
            return False
        self.stop_reason = reason
        for task in unfinished:
            task.cancel()
        if not self.images and self.task is not None:  # not executing yet: stop it as a whole
            self.task.cancel()
        return True


class Stopped(Exception):
    """An image stopped by a cancel or a shutdown, settled: `charged` if its API call may have been billed."""

    def __init__(self, reason: str, charged: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.charged = charged

    @property
    def text(self) -> Msg:
        return texts.image_stopped(self.reason, self.charged)

    def __str__(self) -> str:
        return str.__str__(self.text)


def failure_charge(error: BaseException, estimate: int) -> int:
    """A failed image costs its estimate once for every attempt the provider may have billed, else nothing."""
    if isinstance(error, Stopped):
        return error.charged
    return estimate * getattr(error, "billed_attempts", 0)
