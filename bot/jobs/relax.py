"""Relax mode (docs/rules.md §11): jobs rendered through the Batch API at its discount, delivered when ready.

A relax job is reserved at the batch price and gets its message like any job (JobRunner.submit), then
waits here. Jobs gather for IMAGEBOT_BATCH_WINDOW seconds; then one JSONL input file per endpoint
(generations, edits), one line per image with custom_id `<job>:<image>`, goes up with `files.create`
(purpose batch) and `batches.create` (completion window 24h). An edit's images go up first as files (purpose
vision) and the line refers to them by file id.

Batches with a key: just before `POST /v1/batches` the batch is stored as `submitting` under a new key (its API
id unknown yet), with its lines, and its rows become `batched` (one transaction): under no lease, so a restart
never recovers them as interrupted. The key also goes into the batch's `metadata` (`imagebot_key`). If the
answer is lost (a dropped connection, a timeout, a 5xx) or the store fails while recording the id, the batch
is looked for by its key (`GET /v1/batches`, newest first, page by page) instead of its jobs being released;
every poll does the same for a `submitting` batch that no live process is sending, and only a key still not
found releases the jobs (nothing was rendered). A 4xx answer is a refusal: the jobs are released at once.
A Cancel that lands while the batch is being sent waits for the answer, then acts on the batch id (never an
empty one).

Every IMAGEBOT_BATCH_POLL seconds each process polls the open batches, each on its own (an error on one is
logged with its id and never stops the others). When one ends, its output and error files are read: a line
with status 200 is settled from its `usage` at the batch price; any other line (an error, `batch_expired`,
`batch_cancelled`, or missing) is released. A batch that can no longer be read (404) or is an hour past its
window is settled from what is known (docs/rules.md §11): lines with output are delivered and charged, the rest are
charged their reservation as possibly billed and their users told; it is never asked for again (its status
becomes `unreadable` or `overdue`). Settling is idempotent (a row closes once). Every ledger status write of
relax mode is in `Ledger.mark_batched` and `_close_line`. A job is delivered once, by the first process serving its
platform that claims it (one conditional write; the tables and their rules are bot/store/batches.py's),
through its live view if the job began in that process, else through a view rebuilt from where the job
lives (`Places.view_for`, bot/jobs/delivery.py).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from bot import lazy
from bot.errors import ProviderError
from bot.i18n import msg, usd
from bot.jobs import actions, texts
from bot.jobs.delivery import Delivery, Places
from bot.jobs.job import Job, JobView
from bot.jobs.outcomes import Image, JobFailure, JobResult, Progress
from bot.jobs.render import _usage
from bot.model.images import image_size
from bot.model.pricing import PriceTable, batch_price, cost_micros
from bot.model.request import ImageRequest, Requester
from bot.store.batches import Batches, Line, OpenBatch
from bot.store.ledger import Ledger, Reservation, Settlement, Status

if TYPE_CHECKING:
    import openai
else:
    openai = lazy.module("openai")  # imported by the first render or batch (bot/lazy.py)

log = logging.getLogger("imagebot.relax")
GENERATIONS = "/v1/images/generations"
EDITS = "/v1/images/edits"
ENDED = ("completed", "failed", "expired", "cancelled")
WINDOW = 24 * 3600  # the completion window asked for (24h)
OVERDUE = 3600  # a batch this long past its window is settled from what is known (docs/rules.md §11)
UNREADABLE = "unreadable"  # our statuses of a batch settled from what is known
OVERDUE_STATUS = "overdue"
GONE = {UNREADABLE: msg("relax.gone_unreadable"), OVERDUE_STATUS: msg("relax.gone_overdue")}
NOTE = msg("relax.note")
T = TypeVar("T")


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
    sent: asyncio.Event = field(default_factory=asyncio.Event)  # its sending is over (taken, lost or refused)
    key: str | None = None  # its batch's key, from just before `POST /v1/batches`
    cancel_on_arrival: bool = False  # cancelled while its batch's id was not known yet
    outcome: JobResult | JobFailure | None = None  # what this process told its requester, once done
    claimed: bool = False  # this process took on its delivery (done once its batch's bookkeeping is over)


@dataclass(frozen=True, slots=True, kw_only=True)
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
        delivery: Delivery,
        sdk: Callable[[], Awaitable[openai.AsyncOpenAI]],
        places: Places,
        *,
        window: float = 30.0,
        poll: float = 60.0,
    ) -> None:
        self.delivery = delivery  # settles and delivers, as for the fast path
        self.ledger: Ledger = delivery.ledger
        self.prices: PriceTable = delivery.prices
        self.sdk = sdk  # the SDK's client, made on first use (bot/jobs/render.py Renderer.sdk)
        self.window = window
        self.poll = poll
        self.pending: list[_Waiting] = []
        self.live: dict[str, _Waiting] = {}  # jobs this process submitted, until delivered
        self.places = places  # the platforms this process delivers to, and a view from where a job lives
        self._sending: set[str] = set()  # keys of the batches whose POST /v1/batches is in flight here
        self._flusher: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._polling = False
        self._flushing = False
        self._closing = False

    def start(self) -> None:
        self._poller = asyncio.create_task(self._poll_forever())

    async def close(self) -> None:
        """Send what is gathered (it is reserved and promised; a sending under way finishes), then stop polling:
        a poll under way finishes first (it may be settling and delivering a batch: stopped halfway, its batch
        would be polled again)."""
        if self._flusher is not None and not self._flusher.done():
            if self._flushing:  # a batch is being sent: its answer decides what becomes of its jobs
                await asyncio.gather(self._flusher, return_exceptions=True)
            else:
                self._flusher.cancel()
        if self.pending:
            await self.flush()
        self._closing = True
        if self._poller is not None:
            if self._polling:
                with contextlib.suppress(asyncio.CancelledError):
                    await self._poller
            else:
                self._poller.cancel()

    # -- gathering and submitting --------------------------------------------------------------------

    async def enqueue(self, job: Job, view: JobView) -> _Waiting:
        """A reserved relax job whose message is open: it goes out with the next batch. Its `done` event is
        set once this process has delivered it (or given it up), with its `outcome`."""
        job.request = with_note(job.request)
        waiting = _Waiting(job, view)
        self.pending.append(waiting)
        self.live[job.id] = waiting
        who = job.requester
        now = self.ledger.clock()
        await self._store(lambda batches: batches.add_job(job_id=job.id, who=who, submitted=now))
        await self._show(waiting, msg("relax.waiting_to_send", window=f"{self.window:g}"))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_later())
        return waiting

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.window)
        self._flushing = True
        try:
            await self.flush()
        finally:
            self._flushing = False

    async def flush(self) -> None:
        """Send every gathered job: one batch for generations, one for edits."""
        waiting, self.pending = self.pending, []
        for endpoint in (GENERATIONS, EDITS):
            group = [w for w in waiting if (w.job.request.is_edit) == (endpoint == EDITS)]
            if not group:
                continue
            try:
                await self._submit(endpoint, group)
            except Exception as exc:  # before POST /v1/batches (uploads, the store): nothing was rendered
                log.warning("batch not sent; jobs released", extra={"error": repr(exc)[:300]})
                for w in group:
                    await self._give_up(w, msg("relax.not_taken", error=f"{type(exc).__name__}: {exc}"))
            finally:
                for w in group:
                    w.sent.set()

    async def _submit(self, endpoint: str, group: list[_Waiting]) -> None:
        """Upload the lines, record the batch as `submitting` under a new key, then create it with that key in
        its metadata. Raises only before the batch is recorded (nothing was sent: the caller releases the
        jobs). A lost answer (a dropped connection, a timeout, a 5xx) or a store error after the creation
        leaves the batch `submitting`: it is looked for by its key, here and by the poll loop."""
        client = await self.sdk()
        lines: list[dict[str, Any]] = []
        for w in group:
            request = w.job.request
            image_ids: list[str] = []
            mask_id = None
            for ref in request.references:
                image = await client.files.create(file=(ref.name, ref.data, ref.mime), purpose="vision")
                image_ids.append(image.id)
            if request.mask is not None:
                mask = request.mask
                made = await client.files.create(file=(mask.name, mask.data, "image/png"), purpose="vision")
                mask_id = made.id
            body = batch_body(request, image_ids, mask_id)
            lines += [
                batch_line(w.job.id, seq, endpoint, body) for seq in range(len(w.job.reservation.row_ids))
            ]
        data = ("\n".join(json.dumps(line) for line in lines) + "\n").encode()
        upload = await client.files.create(
            file=("imagebot-relax.jsonl", data, "application/jsonl"), purpose="batch"
        )
        key = uuid.uuid4().hex
        now = self.ledger.clock()
        await self.ledger.run_db(lambda db: self._record_submitting(db, key, endpoint, upload.id, group, now))
        for w in group:
            w.key = key
        self._sending.add(key)
        try:
            try:
                batch = await client.batches.create(
                    input_file_id=upload.id,
                    endpoint=endpoint,  # type: ignore[arg-type]
                    completion_window="24h",
                    metadata={"made_by": "imagebot", "imagebot_key": key},
                )
            except openai.APIError as exc:
                if isinstance(exc, openai.APIStatusError) and _refused(exc):  # it said no: nothing was made
                    log.warning("batch refused; jobs released", extra={"key": key, "error": repr(exc)[:300]})
                    why = msg("relax.not_taken", error=f"{type(exc).__name__}: {exc}")
                    await self._not_created(key, why)
                    return
                # The answer was lost (a dropped connection, a timeout, a 5xx): the batch may exist all the same.
                log.warning(
                    "the answer to POST /v1/batches was lost; looking for the batch by its key",
                    extra={"key": key, "error": repr(exc)[:300]},
                )
                for w in group:
                    await self._show(w, msg("relax.answer_lost"))
                found = await self._find_quietly(key, now)
                if found is None:
                    return  # the poll loop looks again, and releases the jobs if it is truly not there
                batch = found
            await self._adopt(key, batch)
        except Exception:  # e.g. the store failed while recording the id: the poll loop resolves it by key
            log.warning("batch sent but not recorded; resolved by its key", extra={"key": key}, exc_info=True)
        finally:
            self._sending.discard(key)

    def _record_submitting(
        self, db: Any, key: str, endpoint: str, input_file_id: str, group: list[_Waiting], now: datetime
    ) -> None:
        """One transaction: the batch (`submitting`, its id unknown), its lines, and its rows `batched` (from
        here on they are under no lease: whatever happens to this process, the batch is looked for by key)."""
        lines = [
            Line(f"{w.job.id}:{seq}", w.job.id, row)
            for w in group
            for seq, row in enumerate(w.job.reservation.row_ids)
        ]
        Batches(db).add_submitting(
            key=key,
            endpoint=endpoint,
            input_file_id=input_file_id,
            lines=lines,
            owner=self.ledger.instance_id,
            now=now,
        )
        self.ledger.mark_batched(db, [row for w in group for row in w.job.reservation.row_ids], now)

    async def _adopt(self, key: str, batch: Any) -> None:
        """The batch of `key` is known by its id: record it, tell its jobs here, act on cancels that came
        while it was being sent."""
        now = self.ledger.clock()
        await self._store(lambda b: b.adopt(key=key, batch_id=batch.id, status=batch.status, now=now))
        log.info("batch submitted", extra={"batch_id": batch.id, "key": key})
        mine = [w for w in self.live.values() if w.key == key]
        submitted = datetime.fromtimestamp(batch.created_at, now.tzinfo)
        for w in mine:
            w.job.batch_id = batch.id
            await self._show(w, self._waiting_text(submitted, now))
        for w in mine:
            if w.cancel_on_arrival:
                w.cancel_on_arrival = False
                said = await self._cancel_sent(w)
                await self.delivery.safe(w.view.refused(said))

    async def _find(self, key: str, since: datetime) -> Any | None:
        """The batch whose metadata carries `key` (`GET /v1/batches`, newest first, page by page), or None.
        Batches made well before `since` (when the key was made) are not looked through."""
        oldest = since.timestamp() - 600
        async for batch in (await self.sdk()).batches.list(limit=100):
            if (batch.metadata or {}).get("imagebot_key") == key:
                return batch
            if batch.created_at < oldest:
                break
        return None

    async def _find_quietly(self, key: str, since: datetime) -> Any | None:
        try:
            return await self._find(key, since)
        except Exception as exc:
            log.warning(
                "could not look for the batch by its key", extra={"key": key, "error": repr(exc)[:300]}
            )
            return None

    async def _resolve(self, batch: OpenBatch) -> None:
        """A `submitting` batch nobody is sending any more: adopt it if the API has it, else release its jobs
        (the Batch API never took them: nothing was rendered)."""
        found = await self._find(batch.key, batch.created)  # an error here: looked for again at the next poll
        if found is not None:
            await self._adopt(batch.key, found)
            return
        log.warning("batch not found by its key; jobs released", extra={"key": batch.key})
        await self._not_created(batch.key, msg("relax.never_taken"))

    async def _not_created(self, key: str, why: str) -> None:
        """The batch of `key` was never created: release its rows, tell its users, stop looking for it."""
        lines = await self._lines(key)
        for job_id, job_lines in lines.items():
            for _, row_id in job_lines:
                await _close_line(
                    self.ledger,
                    row_id,
                    Settlement(status=Status.CANCELLED, actual_micros=0, error=f"relax: {why}"),
                )
            outcomes: list[Image | BaseException] = [ProviderError(why) for _ in job_lines]
            await self._deliver(job_id, [row for _, row in job_lines], outcomes)
        await self._finish_batch(key, "not_created")
        for w in [w for w in self.live.values() if w.key == key]:
            self.live.pop(w.job.id, None)
            w.done.set()

    async def _give_up(self, w: _Waiting, why: str) -> None:
        await self.delivery.abandon(w.job, why)
        self.live.pop(w.job.id, None)
        failure = _failure(w.job, why, cancelled=False, offline=self.delivery.offline)
        w.outcome = failure
        w.done.set()
        await self.delivery.safe(w.view.failed(failure))

    # -- cancel ---------------------------------------------------------------------------------------

    async def cancel(self, job_id: str) -> str | None:
        """Cancel a relax job of this process: what happens, for the requester; None if it is not one."""
        waiting = self.live.get(job_id)
        if waiting is None:
            return None
        if waiting in self.pending:
            self.pending.remove(waiting)
            await self.delivery.abandon(waiting.job, "cancelled before the batch was sent")
            self.live.pop(job_id, None)
            failure = _failure(
                waiting.job, texts.stopped_job("cancelled"), cancelled=True, offline=self.delivery.offline
            )
            waiting.outcome = failure
            waiting.done.set()
            await self.delivery.safe(waiting.view.failed(failure))
            return msg("relax.cancelled_before_sent")
        if waiting.job.batch_id is None:  # its batch is being sent: act once the Batch API has answered
            await waiting.sent.wait()
        if self.live.get(job_id) is not waiting:  # the Batch API did not take it (its message says so)
            return msg("relax.batch_never_created")
        if waiting.job.batch_id is None:  # the answer was lost and the batch is being looked for
            waiting.cancel_on_arrival = True
            return msg("relax.cancel_while_sending")
        return await self._cancel_sent(waiting)

    async def _cancel_sent(self, waiting: _Waiting) -> str:
        """Cancel a job whose batch id is known: the batch if the job is alone in it, else discard on arrival."""
        job_id, batch_id, key = waiting.job.id, waiting.job.batch_id, waiting.key
        others = await self._store(lambda b: b.others_in_batch(key=key, job_id=job_id))
        if not others and batch_id:
            try:
                await (await self.sdk()).batches.cancel(batch_id)
            except openai.APIError as exc:
                return msg("relax.cancel_failed", error=exc.__class__.__name__)
            return msg("relax.cancelling")
        await self._store(lambda b: b.discard(job_id))
        return msg("relax.shared_batch")

    # -- polling, settling, delivering ----------------------------------------------------------------

    async def _poll_forever(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.poll)
            self._polling = True
            try:
                await self.poll_once()
            except Exception:
                log.warning("batch poll failed", exc_info=True)
            finally:
                self._polling = False

    async def poll_once(self) -> None:
        """Check every open batch, each on its own: one batch's error is logged with its id and never stops
        the others. Settle and deliver those that ended; settle from what is known those that can no longer
        be read or are an hour past their window; find by key those whose creation was never heard back."""
        now = self.ledger.clock()
        open_batches, alive = await self._store(lambda b: (b.open_batches(), b.live_instances(now)))
        for batch in open_batches:
            try:
                await self._poll_batch(batch, alive)
            except Exception:
                log.warning("batch poll failed", extra={"batch_id": batch.name}, exc_info=True)

    async def _poll_batch(self, known: OpenBatch, alive: set[str]) -> None:
        if known.id is None:
            sender_alive = known.owner in alive or known.owner == self.ledger.instance_id
            if known.key in self._sending or (known.owner != self.ledger.instance_id and sender_alive):
                return  # still being sent (here or by a live process)
            await self._resolve(known)
            return
        if known.status in GONE:  # settled from what is known; delivering what is left (no GET of the batch)
            await self._ended(known.key, known.id, known.status, known.output_file_id, known.error_file_id)
            return
        try:
            batch = await (await self.sdk()).batches.retrieve(known.id)
        except openai.NotFoundError:
            log.warning(
                "batch can no longer be read (404); settled from what is known", extra={"batch_id": known.id}
            )
            await self._gone(known.key, known.id, UNREADABLE, known.output_file_id, known.error_file_id)
            return
        now = self.ledger.clock()
        await self._store(
            lambda b: b.checked(
                key=known.key,
                status=batch.status,
                now=now,
                output_file_id=batch.output_file_id,
                error_file_id=batch.error_file_id,
            )
        )
        if batch.status in ENDED:
            await self._ended(known.key, batch.id, batch.status, batch.output_file_id, batch.error_file_id)
        elif now.timestamp() > (batch.expires_at or batch.created_at + WINDOW) + OVERDUE:
            log.warning(
                "batch an hour past its window; settled from what is known", extra={"batch_id": batch.id}
            )
            await self._gone(known.key, batch.id, OVERDUE_STATUS, batch.output_file_id, batch.error_file_id)
        else:
            for w in list(self.live.values()):
                if w.job.batch_id == batch.id:
                    submitted = datetime.fromtimestamp(batch.created_at, now.tzinfo)
                    await self._show(w, self._waiting_text(submitted, now))

    async def _gone(
        self, key: str, batch_id: str, status: str, output_file_id: str | None, error_file_id: str | None
    ) -> None:
        await self._store(lambda b: b.set_status(key=key, status=status))
        await self._ended(key, batch_id, status, output_file_id, error_file_id)

    async def _lines(self, key: str) -> dict[str, list[tuple[str, int]]]:
        """The batch's lines by job: (custom_id, ledger row id) each."""
        jobs: dict[str, list[tuple[str, int]]] = {}
        for line in await self._store(lambda b: b.lines(key)):
            jobs.setdefault(line.job_id, []).append((line.custom_id, line.row_id))
        return jobs

    async def _ended(
        self, key: str, batch_id: str, status: str, output_file_id: str | None, error_file_id: str | None
    ) -> None:
        """Settle every line of an ended (or gone) batch and deliver its jobs, each on its own; the batch is
        finished once all its jobs are delivered (by this process or another). Jobs of this process are done
        (their terminal is let go) only after that, so a process that exits then leaves nothing behind."""
        try:
            results = await self._read(output_file_id, error_file_id, tolerant=status in GONE)
            for job_id, job_lines in (await self._lines(key)).items():
                try:
                    outcomes = [
                        await self._settle(row_id, results.get(cid), status, batch_id)
                        for cid, row_id in job_lines
                    ]
                    await self._deliver(job_id, [row for _, row in job_lines], outcomes)
                except Exception:
                    log.warning(
                        "relax job not settled", extra={"job_id": job_id, "batch_id": batch_id}, exc_info=True
                    )
            left = await self._store(lambda b: b.undelivered_jobs(key))
            if not left:  # every job of the batch delivered (by us or another process): stop polling it
                await self._finish_batch(key, None)
        finally:
            for w in [w for w in self.live.values() if w.key == key and w.claimed]:
                self.live.pop(w.job.id, None)
                w.done.set()

    async def _finish_batch(self, key: str, status: str | None) -> None:
        now = self.ledger.clock()
        await self._store(lambda b: b.finish(key=key, now=now, status=status))

    async def _read(
        self, output_file_id: str | None, error_file_id: str | None, *, tolerant: bool = False
    ) -> dict[str, _Line]:
        """Every line of the batch's output and error files, by custom_id (`tolerant`: a file that can no
        longer be read counts as no lines)."""
        found: dict[str, _Line] = {}
        for file_id in (output_file_id, error_file_id):
            if not file_id:
                continue
            try:
                content = await (await self.sdk()).files.content(file_id)
            except openai.NotFoundError:
                if not tolerant:
                    raise
                continue
            for raw in content.text.splitlines():
                if not raw.strip():
                    continue
                item = json.loads(raw)
                response = item.get("response") or {}
                body = response.get("body") or {}
                ok = response.get("status_code") == 200 and bool(body.get("data"))
                error = item.get("error") or body.get("error") or {}
                found[item["custom_id"]] = _Line(
                    ok=ok,
                    body=body,
                    request_id=str(response.get("request_id") or ""),
                    error=str(error.get("code") or error.get("message") or ""),
                )
        return found

    async def _settle(
        self, row_id: int, line: _Line | None, status: str, batch_id: str
    ) -> Image | BaseException:
        """Close one row (once, whichever process gets there first) and return its image or why there is none.
        A line with no answer in a batch that can no longer be read is charged its reservation: the Batch
        API may have billed it."""
        model, reserved = await self._store(lambda b: b.row_price(row_id))
        prices = self.prices.model(model)
        if line is None and status in GONE:
            gone: str = msg("relax.batch_gone", batch_id=batch_id, gone=GONE[status], each=usd(int(reserved)))
            await _close_line(
                self.ledger,
                row_id,
                Settlement(
                    status=Status.POSSIBLY_BILLED,
                    actual_micros=int(reserved),
                    error=f"relax: batch {GONE[status]}",
                ),
            )
            return ProviderError(gone, billed_attempts=1)
        if line is None or not line.ok:
            why = (
                line.error
                if line is not None and line.error
                else f"batch_{status}"
                if status != "completed"
                else "no result"
            )
            ids = (line.request_id,) if line is not None and line.request_id else ()
            await _close_line(
                self.ledger,
                row_id,
                Settlement(status=Status.FAILED, actual_micros=0, request_ids=ids, error=f"relax: {why}"),
            )
            return ProviderError(msg("relax.no_image", why=why), ids)
        parsed = openai.types.ImagesResponse.model_validate(line.body)
        usage = _usage(parsed.usage)
        cost = batch_price(cost_micros(prices, usage), prices)
        b64 = (parsed.data or [])[0].b64_json or ""
        data = await asyncio.to_thread(base64.b64decode, b64)
        width, height = await asyncio.to_thread(image_size, data)
        fmt = str(line.body.get("output_format") or "png")
        await _close_line(
            self.ledger,
            row_id,
            Settlement(
                status=Status.RENDERED,
                actual_micros=cost,
                usage=usage,
                request_ids=(line.request_id,),
                attempts=1,
            ),
            keep=({"width": width, "height": height, "format": fmt, "elapsed_ms": 0}, data),  # the outbox
        )
        return Image(
            data=data,
            width=width,
            height=height,
            format=fmt,
            cost_micros=cost,
            request_ids=(line.request_id,),
            elapsed=0.0,
            row_id=row_id,
        )

    async def _deliver(self, job_id: str, rows: list[int], outcomes: list[Image | BaseException]) -> None:
        """Deliver a settled job once, if this process serves its platform. A job of this process keeps what
        it was told as its `outcome` (its `done` is set by the caller once the batch's bookkeeping is over)."""
        waiting = self.live.get(job_id)
        claim = await self.ledger.run_db(lambda db: self._claim(db, job_id))
        if claim is None:
            return
        who, discard = claim
        if waiting is not None:
            waiting.claimed = True
            job, view = waiting.job, waiting.view
        else:
            rebuilt = await self._rebuild(job_id, who, rows)
            if rebuilt is None:
                return
            job, view = rebuilt
        outcome: JobResult | JobFailure
        if discard:  # cancelled while sharing its batch: made and charged, not posted; its message says so
            log.info("relax job discarded on arrival (cancelled)", extra={"job_id": job_id})
            images = [o for o in outcomes if isinstance(o, Image)]
            charged = sum(i.cost_micros for i in images) + sum(
                job.reservation.each_micros * getattr(o, "billed_attempts", 0)
                for o in outcomes
                if isinstance(o, BaseException)
            )
            ids = tuple(i for image in images for i in image.request_ids)
            text = msg("relax.made_anyway", n=len(images), cost=usd(charged))
            outcome = JobFailure(
                job_id=job.id,
                request=job.request,
                requester=who,
                message=text,
                request_ids=ids,
                charged_micros=charged,
                cancelled=True,
                offline=self.delivery.offline,
            )
            made = [i.row_id for i in images if i.row_id is not None]
            if made:  # kept, not posted: `imagebot redeliver` can still post them
                await self.ledger.undelivered(made, "cancelled while sharing its batch: not posted")
            await self.delivery.safe(view.failed(outcome))
        else:
            outcome = await self.delivery.finish(
                job, view, job.created, outcomes
            )  # it started when asked for
        if waiting is not None:
            waiting.outcome = outcome

    def _claim(self, db: Any, job_id: str) -> tuple[Requester, bool] | None:
        """Claim a job's delivery if this process serves its platform (or began it); one transaction. Its
        images are then ours to deliver: if we die, the outbox sweep takes them over."""
        batches = Batches(db)
        waiting = batches.waiting_job(job_id)
        if waiting is None or (waiting.who.platform not in self.places.platforms and job_id not in self.live):
            return None
        now = self.ledger.clock()
        if not batches.claim_delivery(job_id=job_id, owner=self.ledger.instance_id, now=now):
            return None
        return waiting.who, waiting.discard

    async def _rebuild(self, job_id: str, who: Requester, rows: list[int]) -> tuple[Job, JobView] | None:
        """A job from another life of the bot: its request, its rows, and a view from where it lives."""
        oldest = self.ledger.clock() - timedelta(days=3650)
        record = await self.ledger.run_db(lambda db: actions.load_job(db, job_id, oldest))
        context, each = await self._store(lambda b: b.job_place(job_id))
        view = self.places.view_for(who, context)
        if view is None:
            log.warning("relax job has nowhere to be delivered", extra={"job_id": job_id})
            return None
        job = Job(job_id, with_note(record.request), who, Reservation(job_id, tuple(rows), int(each)))
        age = (self.ledger.clock() - record.created).total_seconds()
        job.created = time.monotonic() - max(age, 0.0)  # asked for in another life of the bot
        return job, view

    async def _store(self, fn: Callable[[Batches], T]) -> T:
        """Run `fn` on the batches' repository (bot/store/batches.py), in one write transaction."""
        return await self.ledger.run_db(lambda db: fn(Batches(db)))

    # -- showing --------------------------------------------------------------------------------------

    def _waiting_text(self, submitted: datetime, checked: datetime) -> str:
        tz = self.ledger.timezone
        return msg(
            "relax.sent_at",
            sent=f"{submitted.astimezone(tz):%H:%M}",
            checked=f"{checked.astimezone(tz):%H:%M:%S}",
        )

    async def _show(self, w: _Waiting, detail: str) -> None:
        job = w.job
        progress = Progress(
            job_id=job.id,
            request=job.request,
            state="relax",
            elapsed=0.0,
            expected=0.0,
            queue_position=None,
            done=0,
            count=job.request.count,
            preview=None,
            offline=self.delivery.offline,
            detail=detail,
        )
        await self.delivery.safe(w.view.progress(progress))


def _refused(exc: openai.APIStatusError) -> bool:
    """The Batch API answered that it did not create the batch (a 4xx other than a timeout)."""
    return 400 <= exc.status_code < 500 and exc.status_code != 408


# -- the ledger status writes of relax mode (one place, for the job state machine to take over) ----------


async def _close_line(
    ledger: Ledger,
    row_id: int,
    settlement: Settlement,
    keep: tuple[dict[str, Any], bytes] | None = None,
) -> bool:
    """Close a batch line's row (once: False if it was already closed, by this process or another); a
    rendered image's bytes go to the outbox with it (bot/store/jobstate.py)."""
    return await ledger.close_row(row_id, settlement, keep=keep)


def _failure(job: Job, message: str, *, cancelled: bool, offline: bool) -> JobFailure:
    return JobFailure(
        job_id=job.id,
        request=job.request,
        requester=job.requester,
        message=message,
        request_ids=(),
        charged_micros=0,
        cancelled=cancelled,
        offline=offline,
    )
