"""One job's lifecycle: reserve -> open its message -> render (with progress) -> settle -> deliver.

An adapter builds a request and a `JobView` and calls `JobRunner.submit` once; the view only shows
things (the progress message, the image, a refusal). Money and job state never leave the core.
Settling and delivering what a job made is bot/jobs/delivery.py's, shared with relax mode.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from bot import metrics, platforms
from bot.concurrency import AcksFirst, Gate
from bot.errors import ApiRejected, CannotPost, ProviderError, UserError
from bot.i18n import msg
from bot.jobs import actions, texts
from bot.jobs.delivery import Delivery
from bot.jobs.job import Job, JobView, Stopped, failure_charge
from bot.jobs.outcomes import Image, JobFailure, JobResult, Progress
from bot.jobs.relax import Relax
from bot.jobs.render import Attempt, Renderer, RenderResult
from bot.model.images import preview_jpeg
from bot.model.pricing import cost_micros
from bot.model.request import ImageRequest, Requester
from bot.policy import access, price_check
from bot.policy.access import Access
from bot.policy.pace import Pace
from bot.policy.price_check import JobPrices
from bot.store.ledger import Ledger, Settlement, Status

log = logging.getLogger("imagebot.jobs")

# Typical render seconds at 1 MP by quality; larger sizes scale by pixels^0.45 (4K high ~ 4.7 min).
BASE_SECONDS = {"low": 25.0, "medium": 60.0, "high": 110.0, "auto": 90.0}


def expected_seconds(request: ImageRequest, offline_latency: float | None) -> float:
    """What to tell the user to expect, before any render has finished."""
    if offline_latency is not None:
        return max(offline_latency, 0.1)
    megapixels = (request.size.pixels or 1024 * 1024) / (1024 * 1024)
    return BASE_SECONDS.get(request.quality, 90.0) * max(1.0, megapixels) ** 0.45


@dataclass
class _State:
    """Mutable progress of one job, read by its ticker."""

    started: float
    waiters: list[asyncio.Future[None] | None]
    rendering: int = 0
    done: int = 0
    preview: bytes | None = None


class JobRunner:
    """Runs jobs for every adapter; owns the in-flight limit and the table of cancellable jobs."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        renderer: Renderer,
        job_prices: JobPrices,
        delivery: Delivery,
        relax: Relax,
        access: Access,
        max_in_flight: int = 8,
        progress_interval: float = 3.0,
        offline_latency: float | None = None,
        confirm_micros: int | None = None,
    ) -> None:
        self.ledger = ledger
        self.access = access
        self.renderer = renderer
        self.prices = job_prices.prices
        self.gate = Gate(max_in_flight)
        self.progress_interval = progress_interval
        self.job_prices = job_prices
        self.offline_latency = offline_latency
        self.confirm_micros = confirm_micros  # IMAGEBOT_CONFIRM_USD; a channel may set its own
        self.delivery = delivery  # settles and delivers (bot/jobs/delivery.py), as for relax mode
        self.jobs: dict[str, Job] = {}
        self.relax = relax  # relax mode (bot/jobs/relax.py): rendered by the Batch API
        self.accepting = True
        self.acks = AcksFirst()
        metrics.IN_FLIGHT.set_function(lambda: self.gate.active)
        metrics.QUEUED.set_function(lambda: self.gate.queued)

    @property
    def offline(self) -> bool:
        return self.offline_latency is not None

    def estimate(self, request: ImageRequest, partials: int = 0) -> int:
        """Worst-case micro-dollars for ONE image of `request` (bot/policy/price_check.py)."""
        return self.job_prices.estimate(request, partials)

    def partials(self, request: ImageRequest, previews: bool) -> int:
        return self.job_prices.partials(request, previews)

    def reservation(self, request: ImageRequest, previews: bool) -> int:
        """Exactly what a job of `request` reserves (bot/policy/price_check.py)."""
        return self.job_prices.reservation(request, previews)

    async def prepare(
        self, request: ImageRequest, requester: Requester, *, previews: bool = False, pace: Pace | None = None
    ) -> Job:
        """Reserve the job's worst case against every limit. Raises UserError (e.g. QuotaExceeded).

        `previews`: the adapter can show partial images, so stream as many as pay for themselves (each costs
        ~100 output tokens: at most IMAGEBOT_PREVIEW_MAX_SHARE of the image's estimate in all).
        """
        await self.acks.calm()
        if not self.accepting:
            raise UserError(texts.RESTARTING)
        partials = self.partials(request, previews)
        reservation = await self.ledger.reserve(
            requester, request, self.estimate(request, partials), pace=pace
        )
        job = Job(reservation.job_id, request, requester, reservation, partials, previews)
        self.jobs[job.id] = job
        log.info(
            "job reserved",
            extra={
                "job_id": job.id,
                "platform": requester.platform,
                "channel": requester.channel,
                "user": requester.user,
                "reserved_micros": reservation.total_micros,
            },
        )
        return job

    async def abandon(self, job: Job, reason: str) -> None:
        """Release a prepared job that will never execute (e.g. its progress message could not be posted)."""
        await self.delivery.abandon(job, reason)
        self.jobs.pop(job.id, None)

    async def submit(
        self, request: ImageRequest, requester: Requester, view: JobView, *, confirmed: bool = False
    ) -> JobResult | JobFailure | None:
        """The one call an adapter makes for a job: reserve, open the view's message, record where it lives,
        render, settle, deliver. Whatever goes wrong before the job starts is told to the requester alone
        (`view.refused`) and costs nothing; None then. A render estimated above the confirm threshold first
        asks its requester (`view.confirm`); nothing is reserved until they press Render (None then too)."""
        try:  # the tenant's access rules (bot/policy/access.py): the place, the person, the channel's ceilings
            rules = access.Rules.of(await self.ledger.settings.place(**access.where(requester)))
            request, pace = await self.access.admit(rules, requester, request, view)
        except UserError as exc:
            await self.delivery.safe(view.refused(exc.text))
            return None
        if view.confirms and not confirmed:
            estimate = self.reservation(request, view.previews)
            threshold = price_check.crossed(
                estimate, price_check.confirm_threshold(rules, self.confirm_micros)
            )
            if threshold is not None:
                now = self.ledger.clock()
                admit = lambda: self.ledger.check_sync(requester, request, estimate, pace)  # noqa: E731
                try:  # the job's own pace and quota checks first, reserving nothing; at most MAX_PENDING waiting
                    token = await self.ledger.run_db(
                        lambda db: actions.save_confirmation(db, requester, request, now, admit)
                    )
                except UserError as exc:
                    await self.delivery.safe(view.refused(exc.text))
                    return None
                await self.delivery.safe(view.confirm(texts.price_check(request, estimate, threshold), token))
                return None
        try:
            job = await self.prepare(request, requester, previews=view.previews, pace=pace)
        except UserError as exc:
            await self.delivery.safe(view.refused(exc.text))
            return None
        try:
            context = await view.open(self.first_progress(job))
        except Exception as exc:  # refused, timed out, disconnected: without a message there is no job
            reason = exc.text if isinstance(exc, CannotPost) else type(exc).__name__
            await self.abandon(job, f"progress message failed: {reason}")
            log.warning("progress message failed; job released", extra={"job_id": job.id, "error": reason})
            await self.delivery.safe(view.refused(texts.cannot_post(reason)))
            return None
        self.ledger.set_context(job.id, context)
        now = self.ledger.clock()
        try:  # what its buttons need; a job is worth rendering even if this fails
            await self.ledger.run_db(lambda db: actions.save_job(db, job.id, requester, request, now))
        except Exception:
            log.exception("could not keep the job's request for its buttons", extra={"job_id": job.id})
        if request.relax:  # rendered by the Batch API, delivered when it is ready
            self.jobs.pop(job.id, None)
            waiting = await self.relax.enqueue(job, view)
            if platforms.is_local(requester.platform):  # a terminal has no thread to come back to: wait
                await waiting.done.wait()
                return waiting.outcome
            return None
        return await self.execute(job, view)

    def first_progress(self, job: Job) -> Progress:
        """What to show before the job's first tick: queued if every slot is taken."""
        queued = self.gate.active >= self.gate.limit
        return Progress(
            job_id=job.id,
            request=job.request,
            state="queued" if queued else "rendering",
            elapsed=0.0,
            expected=expected_seconds(job.request, self.offline_latency),
            queue_position=self.gate.next_position(_owner(job.requester)) if queued else None,
            done=0,
            count=job.request.count,
            preview=None,
            offline=self.offline,
        )

    async def shutdown(self, grace: float) -> None:
        """Stop taking jobs, let running ones finish for `grace` seconds, then interrupt the rest."""
        self.accepting = False
        tasks = [job.task for job in self.jobs.values() if job.task is not None and not job.task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        for job in list(self.jobs.values()):
            if job.task is not None and not job.task.done():
                job.stop("interrupted")  # what finished is still delivered
        leftover = [job.task for job in self.jobs.values() if job.task is not None]
        if leftover:
            await asyncio.wait(leftover, timeout=10)

    def fence(self) -> int:
        """This process's lease lapsed (bot/store/jobstate.py): stop every local job. Their rows are no longer ours:
        whoever recovers them charges what may have been billed and tells the users. Returns the jobs stopped."""
        stopped = 0
        for job in list(self.jobs.values()):
            if job.task is not None and not job.task.done():
                stopped += job.stop("interrupted")
        log.error("lease lapsed: local jobs stopped", extra={"jobs": stopped})
        return stopped

    def cancel(self, job_id: str, who: Requester | str) -> bool:
        """Cancel a running job's unfinished images if its requester asked (a user id alone matches in any
        tenant: for local callers); its finished images are still delivered. False if not theirs or done."""
        job = self.jobs.get(job_id)
        if job is None or job.task is None or job.task.done():
            return False
        mine = (
            job.requester.user == who
            if isinstance(who, str)
            else (job.requester.platform, job.requester.workspace, job.requester.user)
            == (who.platform, who.workspace, who.user)
        )
        return mine and job.stop("cancelled")

    async def execute(self, job: Job, view: JobView) -> JobResult | JobFailure:
        """Render every image of the job, settle each, and hand the outcome to `view`.

        A cancel or a shutdown stops only the unfinished images: what finished is delivered (and charged).
        """
        job.task = asyncio.current_task()  # type: ignore[assignment]
        state = _State(started=time.monotonic(), waiters=[None] * job.request.count)
        ticker = asyncio.create_task(self._tick(job, view, state))
        job.images = [
            asyncio.create_task(self._one(job, seq, row, state))
            for seq, row in enumerate(job.reservation.row_ids)
        ]
        outer_cancel = False
        try:
            outcomes: list[Image | BaseException] = await asyncio.gather(*job.images, return_exceptions=True)
        except asyncio.CancelledError:
            # The job's own task was cancelled: stop the images, keep what finished.
            outer_cancel = True
            job.stop(job.stop_reason)
            outcomes = await asyncio.shield(asyncio.gather(*job.images, return_exceptions=True))
        finally:
            ticker.cancel()
        for seq, outcome in enumerate(outcomes):
            if isinstance(outcome, asyncio.CancelledError):  # stopped before it ever ran: nothing was called
                await asyncio.shield(
                    self.delivery.close(
                        job,
                        job.reservation.row_ids[seq],
                        Settlement(
                            status=Status(job.stop_reason),
                            actual_micros=0,
                            error=f"{job.stop_reason} before the API call",
                        ),
                    )
                )
                outcomes[seq] = Stopped(job.stop_reason, 0)
        try:
            return await self.delivery.finish(job, view, state.started, outcomes)
        finally:
            self.jobs.pop(job.id, None)
            if outer_cancel:
                raise asyncio.CancelledError

    async def _one(self, job: Job, seq: int, row_id: int, state: _State) -> Image:
        """One image: wait for a slot, render (extending the reservation before each retry that follows an
        attempt that may have been billed), settle. Raises Stopped if cancelled, settled by the same rules."""
        each = job.reservation.each_micros
        prices = self.prices.model(job.request.model)
        attempts: list[Attempt] = []

        def waiting(waiter: asyncio.Future[None]) -> None:
            state.waiters[seq] = waiter

        async def preview(data: bytes, index: int) -> None:
            try:
                state.preview = await asyncio.to_thread(preview_jpeg, data)
            except (OSError, ValueError):  # a preview is a nicety: an unreadable one is skipped
                log.warning("unreadable partial image skipped", extra={"job_id": job.id})

        async def before_retry() -> None:
            await self.ledger.extend(row_id, each)

        try:
            async with self.gate.slot(waiting, owner=_owner(job.requester)):
                state.waiters[seq] = None
                # Fencing (bot/store/jobstate.py): no API call unless this process still holds the row, reserved,
                # under its live lease. Otherwise another process recovered it (or a cancel closed it).
                if not await asyncio.shield(self.ledger.start(row_id)):
                    log.error("row no longer ours; no API call", extra={"job_id": job.id, "row_id": row_id})
                    raise Stopped("interrupted", 0)
                state.rendering += 1
                try:
                    result: RenderResult = await self.renderer.render(
                        job.request,
                        partials=job.partials,
                        on_preview=preview,
                        client_request_id=f"imagebot-{job.id}-{seq}",
                        before_retry=before_retry,
                        attempts=attempts,
                    )
                except asyncio.CancelledError:
                    raise
                except (ProviderError, ApiRejected) as exc:
                    charge = failure_charge(exc, each)
                    await self.delivery.close(
                        job,
                        row_id,
                        Settlement(
                            status=Status.POSSIBLY_BILLED if charge else Status.FAILED,
                            actual_micros=charge,
                            request_ids=exc.request_ids,
                            attempts=exc.attempts,
                            latency_ms=_ms(state.started),
                            error=str(exc),
                        ),
                    )
                    raise
                except Exception as exc:
                    # Anything else (a database error while extending the reservation, say): every attempt
                    # that may have reached the provider is still charged, never recorded as free.
                    billed = sum(a.possibly_billed for a in attempts)
                    await self.delivery.close(
                        job,
                        row_id,
                        Settlement(
                            status=Status.POSSIBLY_BILLED if billed else Status.FAILED,
                            actual_micros=billed * each,
                            request_ids=tuple(a.request_id for a in attempts if a.request_id),
                            attempts=len(attempts),
                            error=repr(exc)[:500],
                        ),
                    )
                    raise ProviderError(
                        msg("jobs.broke", n=len(attempts), error=type(exc).__name__),
                        tuple(a.request_id for a in attempts if a.request_id),
                        billed_attempts=billed,
                        attempts=len(attempts),
                    ) from exc
                finally:
                    state.rendering -= 1
        except asyncio.CancelledError:
            # Every attempt that may have reached the provider is charged at the estimate, the one in flight
            # included: never recorded as free. An image still queued never called the API: released.
            billed = sum(a.possibly_billed for a in attempts)
            charge = billed * each
            note = (
                f"{job.stop_reason} during the API call; {billed} attempt(s) charged at the estimate as "
                "possibly billed"
                if billed
                else f"{job.stop_reason} before the API call; nothing charged"
            )
            await asyncio.shield(
                self.delivery.close(
                    job,
                    row_id,
                    Settlement(
                        status=Status(job.stop_reason),
                        actual_micros=charge,
                        attempts=len(attempts),
                        request_ids=tuple(a.request_id for a in attempts if a.request_id),
                        error=note,
                    ),
                )
            )
            raise Stopped(job.stop_reason, charge) from None
        cost = cost_micros(prices, result.usage) + result.lost_attempts * each
        elapsed_ms = int(result.elapsed * 1000)
        kept = {
            "width": result.width,
            "height": result.height,
            "format": result.format,
            "elapsed_ms": elapsed_ms,
        }
        settle = asyncio.ensure_future(
            self.delivery.close(
                job,
                row_id,
                Settlement(
                    status=Status.RENDERED,
                    actual_micros=cost,
                    usage=result.usage,
                    request_ids=result.request_ids,
                    attempts=result.attempts,
                    latency_ms=elapsed_ms,
                ),
                keep=(kept, result.data),  # the outbox: the bytes stay with the row until delivered
            )
        )
        try:
            settled = await asyncio.shield(settle)
        except asyncio.CancelledError:
            settled = await settle  # the image is finished and paid for: a cancel now still delivers it
        if not settled:
            # Fenced: our lease lapsed and another process closed the row as interrupted (charged at its
            # estimate) and tells the user. The row is no longer ours to deliver.
            log.error("rendered image for a row no longer ours", extra={"job_id": job.id, "row_id": row_id})
            raise Stopped("interrupted", each)
        state.done += 1
        metrics.RENDER_SECONDS.observe(result.elapsed)
        return Image(
            data=result.data,
            width=result.width,
            height=result.height,
            format=result.format,
            cost_micros=cost,
            request_ids=result.request_ids,
            elapsed=result.elapsed,
            row_id=row_id,
        )

    async def _tick(self, job: Job, view: JobView, state: _State) -> None:
        expected = expected_seconds(job.request, self.offline_latency)
        while True:
            positions = [p for p in (self.gate.position(w) for w in state.waiters) if p is not None]
            queued = not state.rendering and not state.done and bool(positions)
            preview, state.preview = state.preview, None
            await self.delivery.safe(
                view.progress(
                    Progress(
                        job_id=job.id,
                        request=job.request,
                        state="queued" if queued else "rendering",
                        elapsed=time.monotonic() - state.started,
                        expected=expected,
                        queue_position=min(positions) if positions else None,
                        done=state.done,
                        count=job.request.count,
                        preview=preview,
                        offline=self.offline,
                    )
                )
            )
            await asyncio.sleep(self.progress_interval)


def _owner(who: Requester) -> tuple[str, str, str]:
    """Whose turn a call is in the fair queue: one user of one tenant."""
    return (who.platform, who.workspace, who.user)


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
