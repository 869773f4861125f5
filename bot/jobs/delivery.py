"""Settle and deliver: the one service the fast path (bot/jobs/runner.py) and relax mode (bot/jobs/relax.py)
share once a job's images are made (or not).

`finish` turns a job's outcomes (an image or why not, one per image) into its result or its failure and hands it
to the view; `deliver` hands the images over through the outbox (bot/store/jobstate.py), retrying with backoff;
`close` settles one ledger row under this process's lease and counts it in the metrics; `safe` calls the
adapter's display so that its failing never fails (or double-charges) a job. `Places` is where jobs live: the
platforms this process serves, once their adapters are up, and a view rebuilt for a job from another life of
the bot.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, Protocol

from bot import metrics
from bot.errors import ApiRejected, DeliveryFailed, ImagebotError, ProviderError, UserError
from bot.i18n import lazy
from bot.jobs import actions, texts
from bot.jobs.job import Job, JobView, Stopped, failure_charge
from bot.jobs.outcomes import Image, JobFailure, JobResult
from bot.model.pricing import PriceTable
from bot.model.request import ImageRequest, Requester
from bot.policy.price_check import JobPrices
from bot.store.ledger import Interrupted, Ledger, Settlement, Status

log = logging.getLogger("imagebot.jobs")

DELIVERY_DEADLINE_SECONDS = 600.0
MAX_DELIVERY_BACKOFF_SECONDS = 60.0


class Destination(Protocol):
    """One started adapter, as the core reaches it without a command: a view for a job that lives there (from
    the context its view's `open` returned), and a word to the user of a job a restart interrupted."""

    def view_for(self, who: Requester, context: dict[str, Any]) -> JobView: ...

    async def tell_interrupted(self, job: Interrupted) -> None: ...


class Places:
    """The platforms this process delivers to: none until its adapters are up (`serve`). Built with the core
    (the adapters need the core, the core needs to reach them)."""

    def __init__(self) -> None:
        self._destinations: Mapping[str, Destination] = {}

    def serve(self, destinations: Mapping[str, Destination]) -> None:
        """The adapters are started: jobs of their platforms are delivered and their users told from now on."""
        self._destinations = dict(destinations)

    @property
    def platforms(self) -> frozenset[str]:
        return frozenset(self._destinations)

    def view_for(self, who: Requester, context: dict[str, Any]) -> JobView | None:
        """A view for a job that lives at `context` on `who`'s platform; None if this process does not serve it."""
        destination = self._destinations.get(who.platform)
        return destination.view_for(who, context) if destination is not None else None

    async def tell_interrupted(self, job: Interrupted) -> None:
        await self._destinations[job.platform].tell_interrupted(job)


class Delivery:
    """Settles a job's rows and delivers what they made, for the fast path and relax mode alike."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        prices: PriceTable,
        job_prices: JobPrices,
        offline: bool = False,
        deadline: float = DELIVERY_DEADLINE_SECONDS,
        backoff: float = 1.0,
    ) -> None:
        self.ledger = ledger
        self.prices = prices
        self.job_prices = job_prices  # what a click on a result's button reserves
        self.offline = offline
        self.deadline = deadline  # keep trying to deliver for 10 minutes
        self.backoff = backoff  # the first retry's wait, doubling up to a minute

    async def abandon(self, job: Job, reason: str) -> None:
        """Release a prepared job that will never execute (e.g. its progress message could not be posted)."""
        for row in job.reservation.row_ids:
            await self.close(job, row, Settlement(status=Status.CANCELLED, actual_micros=0, error=reason))

    async def finish(
        self, job: Job, view: JobView, started: float, outcomes: list[Image | BaseException]
    ) -> JobResult | JobFailure:
        """The job's result (at least one image: delivered) or its failure (shown), from its outcomes, one per
        image; `started` is when it started (time.monotonic), for its summary."""
        elapsed = time.monotonic() - started
        images = [o for o in outcomes if isinstance(o, Image)]
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        for error in errors:
            if not isinstance(error, UserError | ProviderError | Stopped):
                log.error("job %s image failed unexpectedly", job.id, exc_info=error)
        charged = sum(i.cost_micros for i in images) + sum(
            failure_charge(e, job.reservation.each_micros) for e in errors
        )
        stopped = [e for e in errors if isinstance(e, Stopped)]
        if images:
            notes = tuple(e.text if isinstance(e, Stopped) else texts.image_failed(e) for e in errors)
            buttons = actions.buttons(
                job.id,
                job.request,
                [(i.width, i.height) for i in images],
                self.prices,
                self._price_of(job.previews),
            )
            result = JobResult(
                job_id=job.id,
                request=job.request,
                requester=job.requester,
                images=tuple(images),
                failures=notes,
                total_micros=charged,
                elapsed=elapsed,
                quota_left=await self.ledger.quota_left_text(job.requester),
                offline=self.offline,
                buttons=tuple(buttons),
            )
            await self.deliver(view, result)
            return result
        if stopped and len(stopped) == len(errors):
            failure = JobFailure(
                job_id=job.id,
                request=job.request,
                requester=job.requester,
                message=texts.stopped_job(job.stop_reason),
                request_ids=(),
                charged_micros=charged,
                cancelled=True,
                offline=self.offline,
            )
        else:
            first = next(e for e in errors if not isinstance(e, Stopped))
            ids = tuple(i for e in errors for i in getattr(e, "request_ids", ()))
            message = (
                first.message
                if isinstance(first, ProviderError | ApiRejected)
                else first.text
                if isinstance(first, ImagebotError)
                else str(first)
            )
            failure = JobFailure(
                job_id=job.id,
                request=job.request,
                requester=job.requester,
                message=message,
                request_ids=ids,
                charged_micros=charged,
                cancelled=False,
                offline=self.offline,
            )
        await self.safe(view.failed(failure))
        return failure

    async def deliver(self, view: JobView, result: JobResult) -> bool:
        """Hand the images over through the outbox (bot/store/jobstate.py): their bytes are stored with their rows
        until the platform takes them. A failure is retried with backoff for `delivery_deadline` seconds; then
        the rows are `undelivered` (kept for `imagebot redeliver`) and the requester is told what they cost.
        True once delivered."""
        rows = [i.row_id for i in result.images if i.row_id is not None]
        if rows and self.ledger.fenced and not await self.ledger.take(result.job_id):
            # Our lease lapsed since these rows were rendered, and another process holds them now: it delivers.
            log.warning("another process delivers this job's images", extra={"job_id": result.job_id})
            return False
        deadline = time.monotonic() + self.deadline
        wait = self.backoff
        while True:
            try:
                where = await view.deliver(result)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                retry = exc.retry if isinstance(exc, DeliveryFailed) else True
                why = exc.text if isinstance(exc, DeliveryFailed) else f"{type(exc).__name__}: {exc}"[:300]
                left = deadline - time.monotonic()
                if not retry or left <= 0:
                    log.error("delivery failed; images kept", extra={"job_id": result.job_id, "error": why})
                    metrics.DELIVERIES.labels("undelivered").inc()
                    if rows:
                        await self.ledger.undelivered(rows, why)
                    ids = [i for image in result.images for i in image.request_ids]
                    text = texts.undelivered(why, lazy(texts.summary, result), result.job_id, ids)
                    await self.safe(view.undelivered(text))
                    return False
                log.warning(
                    "delivery failed; retrying",
                    extra={"job_id": result.job_id, "error": why, "retry_in_s": round(min(wait, left), 2)},
                )
                metrics.DELIVERIES.labels("retried").inc()
                await asyncio.sleep(min(wait, left))
                wait = min(wait * 2, MAX_DELIVERY_BACKOFF_SECONDS)
        if rows:
            await self.ledger.delivered(rows)
        metrics.DELIVERIES.labels("delivered").inc()
        if where:
            images = [
                {"width": i.width, "height": i.height, "format": i.format, "where": w}
                for i, w in zip(result.images, where, strict=False)
            ]
            try:
                await self.ledger.run_db(lambda db: actions.save_images(db, result.job_id, images))
            except Exception:
                log.exception("could not keep where the images live", extra={"job_id": result.job_id})
        return True

    async def redeliver(self, job_id: str, view: JobView) -> bool:
        """Deliver a job's images that wait in the outbox (a restart took its process, or `imagebot
        redeliver`), through `view`, with the same retries. False if nothing of it waits there."""
        waiting = await self.ledger.outbox(job_id)
        if not waiting:
            return False
        oldest = self.ledger.clock() - timedelta(days=3650)
        record = await self.ledger.run_db(lambda db: actions.load_job(db, job_id, oldest))
        images = tuple(
            Image(
                data=bytes(data),
                width=w,
                height=h,
                format=fmt,
                cost_micros=int(cost),
                request_ids=tuple(json.loads(ids or "[]")),
                elapsed=(ms or 0) / 1000,
                row_id=row_id,
            )
            for row_id, _seq, data, w, h, fmt, ms, cost, ids, _status in waiting
        )
        request = record.request
        who, _context = await self.ledger.place(job_id)
        buttons = actions.buttons(
            job_id, request, [(i.width, i.height) for i in images], self.prices, self._price_of(False)
        )
        result = JobResult(
            job_id=job_id,
            request=request,
            requester=who,
            images=images,
            failures=("delivered late: the first delivery did not go through",),
            total_micros=sum(i.cost_micros for i in images),
            elapsed=sum(i.elapsed for i in images),
            quota_left=await self.ledger.quota_left_text(who),
            offline=self.offline,
            buttons=tuple(buttons),
        )
        metrics.DELIVERIES.labels("redelivered").inc()
        return await self.deliver(view, result)

    def _price_of(self, previews: bool) -> Callable[[ImageRequest], int]:
        return lambda request: self.job_prices.reservation(request, previews)

    async def close(
        self, job: Job, row_id: int, settlement: Settlement, keep: tuple[dict[str, Any], bytes] | None = None
    ) -> bool:
        """Close a ledger row (under this process's lease) and count it in the metrics. False if the row was
        no longer ours to close (bot/store/jobstate.py)."""
        if await self.ledger.close_row(row_id, settlement, keep=keep):
            who = job.requester
            log.info(
                "image settled",
                extra={
                    "job_id": job.id,
                    "row_id": row_id,
                    "platform": who.platform,
                    "workspace": who.workspace,
                    "channel": who.channel,
                    "user": who.user,
                    "status": str(settlement.status),
                    "actual_micros": settlement.actual_micros,
                    "request_ids": ",".join(settlement.request_ids),
                },
            )
            metrics.JOBS.labels(who.platform, str(settlement.status)).inc()
            metrics.SPEND.labels(who.platform).inc(settlement.actual_micros / 1_000_000)
            return True
        return False

    @staticmethod
    async def safe(awaitable: object) -> None:
        """An adapter's display failing must never fail (or double-charge) a job."""
        try:
            await awaitable  # type: ignore[misc]
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("adapter callback failed")
