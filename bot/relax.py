"""Relax mode (SPEC §11): jobs rendered through the Batch API at its discount, delivered when ready.

A relax job is reserved at the batch price and gets its message like any job (JobRunner.submit), then
waits here. Jobs gather for IMAGEBOT_BATCH_WINDOW seconds; then one JSONL input file per endpoint
(generations, edits), one line per image with custom_id `<job>:<image>`, goes up with `files.create`
(purpose batch) and `batches.create` (completion window 24h). An edit's images go up first as files (purpose
vision) and the line refers to them by file id. The rows are then `batched`: under no lease, so a restart
never recovers them as interrupted.

Every IMAGEBOT_BATCH_POLL seconds each process polls the open batches. When one ends, its output and error
files are read: a line with status 200 is settled from its `usage` at the batch price; any other line
(an error, `batch_expired`, `batch_cancelled`, or missing) is released. Settling is idempotent (a row closes
once). A job is delivered once, by the first process serving its platform that claims it (one UPDATE),
through its live view if the job began in that process, else through a view rebuilt from where the job
lives (`Relax.view_for`, set by the service).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import openai

from . import actions, jobstate, texts
from .errors import ProviderError
from .images import image_size
from .ledger import Ledger, Reservation, Settlement, Status, _iso
from .outcomes import Image, JobFailure, Progress
from .pricing import PriceTable, batch_price, cost_micros, format_usd
from .render import _usage
from .request import ImageRequest, Requester

if TYPE_CHECKING:
    from .jobs import Job, JobRunner, JobView

log = logging.getLogger("imagebot.relax")
GENERATIONS = "/v1/images/generations"
EDITS = "/v1/images/edits"
ENDED = ("completed", "failed", "expired", "cancelled")
NOTE = "relax, half price"
ViewFor = Callable[[Requester, dict[str, Any]], "JobView | None"]


def with_note(request: ImageRequest) -> ImageRequest:
    """A relax job's request, saying so in its summary."""
    return request if NOTE in request.notes else replace(request, notes=(*request.notes, NOTE))


def batch_body(
    request: ImageRequest, image_ids: Collection[str] = (), mask_id: str | None = None
) -> dict[str, Any]:
    """The JSON body of one batch line: the images API's own fields (an edit refers to uploaded files)."""
    body: dict[str, Any] = {
        "model": request.model,
        "prompt": request.prompt,
        "size": str(request.size),
        "quality": request.quality,
        "output_format": request.format,
        "n": 1,
    }
    if request.compression is not None and request.format != "png":
        body["output_compression"] = request.compression
    if request.is_edit:
        body["images"] = [{"file_id": file_id} for file_id in image_ids]
        if mask_id is not None:
            body["mask"] = {"file_id": mask_id}
    elif request.moderation is not None:  # generations only: the edits endpoint has no such parameter
        body["moderation"] = request.moderation
    return body


def batch_line(job_id: str, seq: int, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": f"{job_id}:{seq}", "method": "POST", "url": endpoint, "body": body}


@dataclass
class _Waiting:
    job: Job
    view: JobView
    done: asyncio.Event = field(default_factory=asyncio.Event)  # delivered, failed or cancelled here


@dataclass(frozen=True, slots=True)
class _Line:
    """What came back for one line: status 200 and the images response, or why not."""

    ok: bool
    body: dict[str, Any]
    request_id: str
    error: str


class Relax:
    """Gathers relax jobs into batches, polls them, settles and delivers what they made."""

    def __init__(
        self,
        runner: JobRunner,
        client: openai.AsyncOpenAI,
        *,
        window: float = 30.0,
        poll: float = 60.0,
    ) -> None:
        self.runner = runner
        self.ledger: Ledger = runner.ledger
        self.prices: PriceTable = runner.prices
        self.client = client
        self.window = window
        self.poll = poll
        self.pending: list[_Waiting] = []
        self.live: dict[str, _Waiting] = {}  # jobs this process submitted, until delivered
        self.view_for: ViewFor | None = None  # set by the service: a view from where a job lives
        self.platforms: Collection[str] = ()  # the platforms this process delivers to
        self._flusher: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._poller = asyncio.create_task(self._poll_forever())

    async def close(self) -> None:
        """Send what is gathered (it is reserved and promised), then stop polling."""
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
        if self.pending:
            await self.flush()
        if self._poller is not None:
            self._poller.cancel()

    # -- gathering and submitting --------------------------------------------------------------------

    async def enqueue(self, job: Job, view: JobView) -> asyncio.Event:
        """A reserved relax job whose message is open: it goes out with the next batch. The event is set once
        this process has delivered it (or given it up)."""
        job.request = with_note(job.request)
        waiting = _Waiting(job, view)
        self.pending.append(waiting)
        self.live[job.id] = waiting
        who = job.requester
        now = self.ledger.clock()
        await self.ledger.run_db(
            lambda db: db.conn.execute(
                "INSERT OR IGNORE INTO relax_jobs (job_id, platform, workspace, channel, user, submitted_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [job.id, who.platform, who.workspace, who.channel, who.user, _iso(now)],
            )
        )
        await self._show(waiting, f"relax mode, half price · waiting to be sent (within {self.window:g} s)")
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_later())
        return waiting.done

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.window)
        await self.flush()

    async def flush(self) -> None:
        """Send every gathered job: one batch for generations, one for edits."""
        waiting, self.pending = self.pending, []
        for endpoint in (GENERATIONS, EDITS):
            group = [w for w in waiting if (w.job.request.is_edit) == (endpoint == EDITS)]
            if not group:
                continue
            try:
                await self._submit(endpoint, group)
            except Exception as exc:  # the Batch API refused or could not be reached: nothing was rendered
                log.warning("batch submission failed; jobs released", extra={"error": repr(exc)[:300]})
                for w in group:
                    await self._give_up(
                        w, f"the Batch API did not take the job ({type(exc).__name__}: {exc})"
                    )

    async def _submit(self, endpoint: str, group: list[_Waiting]) -> None:
        lines: list[dict[str, Any]] = []
        for w in group:
            request = w.job.request
            image_ids: list[str] = []
            mask_id = None
            for ref in request.references:
                image_ids.append(
                    (await self.client.files.create(file=(ref.name, ref.data, ref.mime), purpose="vision")).id
                )
            if request.mask is not None:
                mask = request.mask
                mask_id = (
                    await self.client.files.create(file=(mask.name, mask.data, "image/png"), purpose="vision")
                ).id
            body = batch_body(request, image_ids, mask_id)
            lines += [
                batch_line(w.job.id, seq, endpoint, body) for seq in range(len(w.job.reservation.row_ids))
            ]
        data = ("\n".join(json.dumps(line) for line in lines) + "\n").encode()
        upload = await self.client.files.create(
            file=("imagebot-relax.jsonl", data, "application/jsonl"), purpose="batch"
        )
        batch = await self.client.batches.create(
            input_file_id=upload.id,
            endpoint=endpoint,  # type: ignore[arg-type]
            completion_window="24h",
            metadata={"made_by": "imagebot"},
        )
        now = self.ledger.clock()

        def record(db: Any) -> None:
            db.conn.execute(
                "INSERT INTO batches (id, endpoint, input_file_id, status, created_at, checked_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [batch.id, endpoint, upload.id, batch.status, _iso(now), _iso(now)],
            )
            for w in group:
                for seq, row in enumerate(w.job.reservation.row_ids):
                    db.conn.execute(
                        "INSERT INTO batch_lines (custom_id, batch_id, job_id, row_id, state) VALUES (?, ?, ?, ?, 'open')",
                        [f"{w.job.id}:{seq}", batch.id, w.job.id, row],
                    )
                    db.conn.execute(
                        "UPDATE ledger SET status='batched', updated_at=? WHERE id=? AND status='reserved'",
                        [_iso(now), row],
                    )

        await self.ledger.run_db(record)  # one transaction
        log.info("batch submitted", extra={"batch_id": batch.id, "lines": len(lines), "endpoint": endpoint})
        for w in group:
            w.job.batch_id = batch.id
            await self._show(w, self._waiting_text(now, now))

    async def _give_up(self, w: _Waiting, why: str) -> None:
        await self.runner.abandon(w.job, why)
        self.live.pop(w.job.id, None)
        w.done.set()
        await self.runner._safe(
            w.view.failed(_failure(w.job, why, cancelled=False, offline=self.runner.offline))
        )

    # -- cancel ---------------------------------------------------------------------------------------

    async def cancel(self, job_id: str) -> str | None:
        """Cancel a relax job of this process: what happens, for the requester; None if it is not one."""
        waiting = self.live.get(job_id)
        if waiting is None:
            return None
        if waiting in self.pending:
            self.pending.remove(waiting)
            await self.runner.abandon(waiting.job, "cancelled before the batch was sent")
            self.live.pop(job_id, None)
            waiting.done.set()
            await self.runner._safe(
                waiting.view.failed(
                    _failure(
                        waiting.job,
                        texts.stopped_job("cancelled"),
                        cancelled=True,
                        offline=self.runner.offline,
                    )
                )
            )
            return "Cancelled before it was sent to the Batch API: nothing was charged."
        batch_id = waiting.job.batch_id
        others = await self.ledger.run_db(
            lambda db: db.conn.execute(
                "SELECT COUNT(*) FROM batch_lines WHERE batch_id=? AND job_id<>?", [batch_id, job_id]
            ).fetchone()[0]
        )
        if not others:
            try:
                await self.client.batches.cancel(batch_id or "")
            except openai.APIError as exc:
                return f"The batch could not be cancelled ({exc.__class__.__name__}); the images will come as ready."
            return (
                "Cancelling the batch: images it finished before the cancel are delivered and charged, "
                "the rest are released."
            )
        await self.ledger.run_db(
            lambda db: db.conn.execute("UPDATE relax_jobs SET discard=1 WHERE job_id=?", [job_id])
        )
        return (
            "This job shares its batch with other people's jobs, and a batch line cannot be withdrawn: "
            "its images will still be made and charged at the batch price, but not posted."
        )

    # -- polling, settling, delivering ----------------------------------------------------------------

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.poll)
            try:
                await self.poll_once()
            except Exception:
                log.warning("batch poll failed", exc_info=True)

    async def poll_once(self) -> None:
        """Check every open batch; settle and deliver those that ended."""
        open_batches = await self.ledger.run_db(
            lambda db: [r[0] for r in db.conn.execute("SELECT id FROM batches WHERE finished_at IS NULL")]
        )
        for batch_id in open_batches:
            batch = await self.client.batches.retrieve(batch_id)
            now = self.ledger.clock()
            await self._sql(
                "UPDATE batches SET status=?, checked_at=? WHERE id=?", [batch.status, _iso(now), batch_id]
            )
            if batch.status in ENDED:
                await self._ended(batch)
            else:
                for w in list(self.live.values()):
                    if w.job.batch_id == batch_id:
                        submitted = datetime.fromtimestamp(batch.created_at, now.tzinfo)
                        await self._show(w, self._waiting_text(submitted, now))

    async def _ended(self, batch: Any) -> None:
        results = await self._read(batch)
        lines = await self.ledger.run_db(
            lambda db: db.conn.execute(
                "SELECT custom_id, job_id, row_id FROM batch_lines WHERE batch_id=?", [batch.id]
            ).fetchall()
        )
        jobs: dict[str, list[tuple[str, int]]] = {}
        for custom_id, job_id, row_id in lines:
            jobs.setdefault(job_id, []).append((custom_id, row_id))
        for job_id, job_lines in jobs.items():
            outcomes = [
                await self._settle(job_id, row_id, results.get(cid), batch.status)
                for cid, row_id in job_lines
            ]
            await self._deliver(job_id, [row for _, row in job_lines], outcomes)
        left = await self.ledger.run_db(
            lambda db: db.conn.execute(
                "SELECT COUNT(*) FROM relax_jobs WHERE delivered_at IS NULL AND job_id IN "
                "(SELECT job_id FROM batch_lines WHERE batch_id=?)",
                [batch.id],
            ).fetchone()[0]
        )
        if not left:  # every job of the batch delivered (by us or another process): stop polling it
            now = self.ledger.clock()
            await self.ledger.run_db(
                lambda db: db.conn.execute(
                    "UPDATE batches SET finished_at=? WHERE id=?", [_iso(now), batch.id]
                )
            )

    async def _read(self, batch: Any) -> dict[str, _Line]:
        """Every line of the batch's output and error files, by custom_id."""
        found: dict[str, _Line] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            content = await self.client.files.content(file_id)
            for raw in content.text.splitlines():
                if not raw.strip():
                    continue
                item = json.loads(raw)
                response = item.get("response") or {}
                body = response.get("body") or {}
                ok = response.get("status_code") == 200 and bool(body.get("data"))
                error = item.get("error") or body.get("error") or {}
                found[item["custom_id"]] = _Line(
                    ok,
                    body,
                    str(response.get("request_id") or ""),
                    str(error.get("code") or error.get("message") or ""),
                )
        return found

    async def _settle(
        self, job_id: str, row_id: int, line: _Line | None, status: str
    ) -> Image | BaseException:
        """Close one row (once, whichever process gets there first) and return its image or why there is none."""
        model = await self.ledger.run_db(
            lambda db: db.conn.execute("SELECT model FROM ledger WHERE id=?", [row_id]).fetchone()[0]
        )
        prices = self.prices.model(model)
        if line is None or not line.ok:
            why = (
                line.error
                if line is not None and line.error
                else f"batch_{status}"
                if status != "completed"
                else "no result"
            )
            ids = (line.request_id,) if line is not None and line.request_id else ()
            await self.ledger.close_row(
                row_id, Settlement(Status.FAILED, 0, request_ids=ids, error=f"relax: {why}")
            )
            return ProviderError(f"the batch gave no image ({why}); released, nothing charged", ids)
        parsed = openai.types.ImagesResponse.model_validate(line.body)
        usage = _usage(parsed.usage)
        cost = batch_price(cost_micros(prices, usage), prices)
        b64 = (parsed.data or [])[0].b64_json or ""
        data = await asyncio.to_thread(base64.b64decode, b64)
        width, height = await asyncio.to_thread(image_size, data)
        fmt = str(line.body.get("output_format") or "png")
        await self.ledger.close_row(
            row_id,
            Settlement(Status.RENDERED, cost, usage=usage, request_ids=(line.request_id,), attempts=1),
            keep=({"width": width, "height": height, "format": fmt, "elapsed_ms": 0}, data),  # the outbox
        )
        return Image(data, width, height, fmt, cost, (line.request_id,), 0.0, row_id)

    async def _deliver(self, job_id: str, rows: list[int], outcomes: list[Image | BaseException]) -> None:
        """Deliver a settled job once, if this process serves its platform."""
        waiting = self.live.get(job_id)
        claim = await self.ledger.run_db(lambda db: self._claim(db, job_id))
        if claim is None:
            return
        who, discard = claim
        self.live.pop(job_id, None)
        try:
            if waiting is not None:
                job, view = waiting.job, waiting.view
            else:
                rebuilt = await self._rebuild(job_id, who, rows)
                if rebuilt is None:
                    return
                job, view = rebuilt
            if (
                discard
            ):  # cancelled while sharing its batch: made and charged, not posted; its message says so
                log.info("relax job discarded on arrival (cancelled)", extra={"job_id": job_id})
                images = [o for o in outcomes if isinstance(o, Image)]
                charged = sum(i.cost_micros for i in images)
                ids = tuple(i for image in images for i in image.request_ids)
                text = (
                    f"its batch made {len(images)} image(s) anyway (a batch line cannot be withdrawn), "
                    f"charged {format_usd(charged)} at the batch price and not posted"
                )
                failure = JobFailure(job.id, job.request, who, text, ids, charged, True, self.runner.offline)
                rows_made = [i.row_id for i in images if i.row_id is not None]
                if rows_made:  # kept, not posted: `imagebot redeliver` can still post them
                    await self.ledger.undelivered(rows_made, "cancelled while sharing its batch: not posted")
                await self.runner._safe(view.failed(failure))
                return
            await self.runner._finish(job, view, _started(job), outcomes)
        finally:
            if waiting is not None:
                waiting.done.set()

    def _claim(self, db: Any, job_id: str) -> tuple[Requester, bool] | None:
        row = db.conn.execute(
            "SELECT platform, workspace, channel, user, discard FROM relax_jobs WHERE job_id=? AND delivered_at IS NULL",
            [job_id],
        ).fetchone()
        if row is None or (row[0] not in self.platforms and job_id not in self.live):
            return None
        claimed = db.conn.execute(
            "UPDATE relax_jobs SET delivered_at=? WHERE job_id=? AND delivered_at IS NULL",
            [_iso(self.ledger.clock()), job_id],
        ).rowcount
        if claimed:  # its images are ours to deliver now: if we die, the outbox sweep takes them over
            jobstate.own(db.conn, job_id, self.ledger.instance_id, _iso(self.ledger.clock()))
        return (Requester(row[0], row[1], row[2], row[3]), bool(row[4])) if claimed else None

    async def _rebuild(self, job_id: str, who: Requester, rows: list[int]) -> tuple[Job, JobView] | None:
        """A job from another life of the bot: its request, its rows, and a view from where it lives."""
        from .jobs import Job

        oldest = self.ledger.clock() - timedelta(days=3650)
        record = await self.ledger.run_db(lambda db: actions.load_job(db, job_id, oldest))
        context, each = await self.ledger.run_db(
            lambda db: db.conn.execute(
                "SELECT context, reserved_micros FROM ledger WHERE job_id=? ORDER BY seq LIMIT 1", [job_id]
            ).fetchone()
        )
        view = self.view_for(who, json.loads(context or "{}")) if self.view_for is not None else None
        if view is None:
            log.warning("relax job has nowhere to be delivered", extra={"job_id": job_id})
            return None
        job = Job(job_id, with_note(record.request), who, Reservation(job_id, tuple(rows), int(each)))
        age = (self.ledger.clock() - record.created).total_seconds()
        job.created = time.monotonic() - max(age, 0.0)  # asked for in another life of the bot
        return job, view

    async def _sql(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        return await self.ledger.run_db(lambda db: db.conn.execute(sql, params).fetchall())

    # -- showing --------------------------------------------------------------------------------------

    def _waiting_text(self, submitted: datetime, checked: datetime) -> str:
        tz = self.ledger.timezone
        return (
            f"relax mode, half price · sent to the Batch API at {submitted.astimezone(tz):%H:%M} · "
            f"last checked {checked.astimezone(tz):%H:%M:%S} · usually within minutes, at most 24 h"
        )

    async def _show(self, w: _Waiting, detail: str) -> None:
        job = w.job
        progress = Progress(
            job.id,
            job.request,
            "relax",
            0.0,
            0.0,
            None,
            0,
            job.request.count,
            None,
            self.runner.offline,
            detail,
        )
        await self.runner._safe(w.view.progress(progress))


def _failure(job: Job, message: str, *, cancelled: bool, offline: bool) -> JobFailure:
    return JobFailure(job.id, job.request, job.requester, message, (), 0, cancelled, offline)


def _started(job: Job) -> Any:
    """The job's state as its summary reads it: it started when it was asked for (minutes ago, in relax)."""
    from .jobs import _State

    return _State(started=job.created, waiters=[])
