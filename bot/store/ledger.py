"""The cost ledger: one row per image call, from reservation to settlement (docs/rules.md §5).

A row's statuses and the arrows between them are bot/store/jobstate.py's: every status write goes through it.
Every write that moves money also moves the quota counters, in the same transaction.
All database work runs on one worker thread per Ledger, so the event loop never waits on SQLite.

Each process holds a lease on the rows it reserved: its `instances` row expires `lease` seconds after
its last heartbeat. Any process recovers the open rows of an expired lease (docs/rules.md §5), whatever host
name or pid it had: a container that comes back under a new name, or never comes back, frees its money.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, Protocol, TypeVar

from bot import metrics
from bot.errors import PaceExceeded, UserError
from bot.i18n import ENGLISH, Msg, Text, lazy, msg, say
from bot.model.pricing import Usage
from bot.model.request import ImageRequest, Requester
from bot.store import admission, counters, dedupe, jobstate, pg
from bot.store import settings as settings_repo
from bot.store import usage as usage_repo
from bot.store.admission import Periods, QuotaDefaults
from bot.store.db import Database
from bot.store.jobstate import OPEN, PAID, Status
from bot.store.schema import connect

log = logging.getLogger("imagebot.ledger")
T = TypeVar("T")


LEASE = timedelta(seconds=60)  # docs/rules.md §5: at most 60 s; IMAGEBOT_LEASE_SECONDS
RESERVED_KEPT = 100_000  # PostgreSQL: reservations remembered for settlements without a read (a bound)
SERIALIZATION_ATTEMPTS = 50  # PostgreSQL: tries of one transaction that keeps losing races
WAL_AUTOCHECKPOINT_PAGES = 4000  # ~16 MB of WAL between checkpoints (SQLite's default: 1000 pages)
WAL_SIZE_LIMIT = 32 * 1024 * 1024


def utcnow() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class Reservation:
    """The ledger rows reserved for one job, one per image."""

    job_id: str
    row_ids: tuple[int, ...]
    each_micros: int

    @property
    def total_micros(self) -> int:
        return self.each_micros * len(self.row_ids)


@dataclass(frozen=True, slots=True, kw_only=True)
class Settlement:
    """How one row closes: its status, what it is charged, and what the API said (tokens, request ids)."""

    status: Status
    actual_micros: int
    usage: Usage | None = None
    request_ids: tuple[str, ...] = ()
    attempts: int = 0
    latency_ms: int | None = None
    error: str | None = None
    notice: str | None = None  # "pending": the user is still owed a notice (an interrupted job)


@dataclass(frozen=True, slots=True)
class Interrupted:
    """A job a dead process left open, now closed; the owning adapter tells the user."""

    job_id: str
    platform: str
    channel: str
    user: str
    context: dict[str, Any]
    charged_micros: int
    images: int


@dataclass(frozen=True, slots=True)
class QuotaLine:
    label: str
    used: str
    limit: str
    left: str
    resets: datetime


def _retried(method: Callable[..., T]) -> Callable[..., T]:
    """A transaction method that, on PostgreSQL, runs again after losing a race (Ledger._retrying)."""

    @functools.wraps(method)
    def run(self: Ledger, *args: Any, **kwargs: Any) -> T:
        return self._retrying(lambda: method(self, *args, **kwargs))()

    return run


def _closing(settlement: Settlement, now: str, overage: int) -> dict[str, Any]:
    """The columns a settlement writes with its row's status."""
    usage = settlement.usage or Usage()
    return {
        "actual_micros": settlement.actual_micros,
        "text_tokens": usage.text_tokens,
        "image_tokens": usage.image_tokens,
        "output_tokens": usage.output_tokens,
        "request_ids": json.dumps(list(settlement.request_ids)),
        "attempts": settlement.attempts,
        "latency_ms": settlement.latency_ms,
        "error": settlement.error,
        "finished_at": now,
        "notice": settlement.notice,
        "overage": int(overage > 0),
    }


class Pace(Protocol):
    """The pace rule as the ledger applies it (bot/policy/pace.py decides and words it; the counting is here)."""

    @property
    def max_jobs(self) -> int: ...

    def since(self, now: datetime) -> datetime | None: ...

    def check_open(self, open_jobs: int) -> None: ...

    def check_recent(self, last: str | None, now: datetime, tz: tzinfo) -> None: ...

    def too_many(self, open_jobs: int) -> PaceExceeded: ...

    def too_soon(self, last: str, now: datetime, tz: tzinfo) -> PaceExceeded: ...


def _what(request: ImageRequest) -> Msg:
    """What a job asks for, in a quota refusal: `2 images at 1024x1024 high`."""
    return msg("ledger.what", n=request.count, size=str(request.size), quality=request.quality)


def _left_text(lines: tuple[QuotaLine, ...], locale: str = ENGLISH) -> str:
    """`$4.2000 left of daily spend; 18 images left of monthly images` for a summary."""
    return say(locale, "list.semicolon").join(
        say(locale, "ledger.left_of", left=line.left, label=admission.short_label_text(line.label))
        for line in lines
    )


def _log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("ledger write failed", exc_info=future.exception())


@dataclass
class Ledger:
    """Async façade over the ledger tables, safe for many processes on one file."""

    path: Path | str
    defaults: QuotaDefaults = field(default_factory=QuotaDefaults)
    timezone: Any = UTC
    store_prompts: bool = True
    clock: Callable[[], datetime] = utcnow
    lease: timedelta = LEASE
    # PostgreSQL: the reservation of each row this process reserved and has not closed (a lower bound: an
    # extension only adds), so a settlement within it needs no read first (`close_row_sync`).
    _reserved: dict[int, int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imagebot-db")
        self.db: Database = self._pool.submit(connect, self.path).result()
        self.postgres = self.db.postgres
        self.leases = jobstate.Clock(self.postgres)
        self.fenced = 0  # times this process found its lease lapsed (and stopped its jobs)
        self.serialization_retries = 0  # PostgreSQL transactions run again after losing a race
        self._retrying_now = False  # on the database thread: a retrying run is under way (no nesting)
        if self.postgres:
            self.instance_id = uuid.uuid4().hex
            self._sync(self._register)
            return
        # A reserve+settle writes ~13 WAL pages; at SQLite's default (a checkpoint every 1000 pages) one
        # commit in ~150 pays for a checkpoint's fsyncs, about a third of all ledger time. Checkpoint
        # every 4000 pages instead; the WAL file is reused, and cut back to the limit after a checkpoint.
        self._sync(
            lambda: (
                self.db.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}"),
                self.db.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}"),
            )
        )
        self.instance_id = uuid.uuid4().hex
        self._sync(self._register)

    # -- plumbing -------------------------------------------------------------------------

    def _sync(self, fn: Callable[[], T]) -> T:
        return self._pool.submit(self._retrying(fn)).result()

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._retrying(fn))

    def _retrying(self, fn: Callable[[], T]) -> Callable[[], T]:
        """On PostgreSQL, a transaction that lost a race to another replica (a serialization failure) is run
        again, up to SERIALIZATION_ATTEMPTS times, after a short random pause: never shown to a user."""
        if not self.postgres:
            return fn

        def run() -> T:
            if self._retrying_now:  # inside an outer run (a retried method called by `_run`): it retries
                return fn()
            self._retrying_now = True
            try:
                for attempt in range(1, SERIALIZATION_ATTEMPTS + 1):
                    try:
                        return fn()
                    except Exception as exc:
                        if attempt == SERIALIZATION_ATTEMPTS or not pg.is_retryable(exc):
                            raise
                        self.serialization_retries += 1
                        time.sleep(random.uniform(0, 0.002 * attempt))
                raise AssertionError("unreachable")
            finally:
                self._retrying_now = False

        return run

    def close(self) -> None:
        """Leave (our instance row goes) and close the file; a second call does nothing."""
        if self._pool._shutdown:
            return

        def _close() -> None:
            self.db.execute("DELETE FROM instances WHERE id=?", [self.instance_id])
            self.db.close()

        try:
            self._sync(_close)
        finally:
            self._pool.shutdown(wait=True)

    @property
    def connection_lost(self) -> bool:
        """On PostgreSQL: the connection is closed or broken (read without queueing behind the database
        thread). Always False on SQLite (a file does not go away)."""
        return isinstance(self.db, pg.PgDatabase) and self.db.broken

    async def reconnect(self) -> None:
        """On PostgreSQL: open the lost connection again, on the database thread and outside a transaction
        (`run_db` would BEGIN on the dead one). Nothing to do on SQLite."""
        if isinstance(self.db, pg.PgDatabase):
            await self._run(self.db.reconnect)

    def _transaction(self, *, single: bool = False) -> contextlib.AbstractContextManager[Any]:
        """A write transaction (`db.transaction()`). `single`: the block's only write is one conditional
        UPDATE, which PostgreSQL runs as a transaction of its own: no BEGIN and COMMIT round trips there."""
        if single and self.postgres:
            return contextlib.nullcontext()
        return self.db.transaction()

    def _now(self) -> str:
        return _iso(self.clock())

    def _expiry_sql(self) -> tuple[str, list[Any]]:
        """SQL and parameters for a lease that runs `lease` from now, by the database's clock on PostgreSQL."""
        if self.postgres:
            return (
                "to_char((now() + make_interval(secs => ?)) AT TIME ZONE 'UTC', "
                '\'YYYY-MM-DD"T"HH24:MI:SS.MS"+00:00"\')',
                [self.lease.total_seconds()],
            )
        return "?", [_iso(self.clock() + self.lease)]

    def _register(self) -> None:
        now = self._now()
        expiry, params = self._expiry_sql()
        self.db.execute(
            "INSERT INTO instances (id, host, pid, started_at, heartbeat_at, expires_at) "
            f"VALUES (?, ?, ?, ?, ?, {expiry})",
            [self.instance_id, socket.gethostname(), os.getpid(), now, now, *params],
        )

    def heartbeat_sync(self) -> bool:
        """Renew this process's lease on its jobs while it is still live. False if it had lapsed: then its
        open rows belong to whoever recovers them (docs/rules.md §5, fencing), this process gives up its old identity
        (its jobs under it can no longer move a row or start an API call), and takes a new lease for the jobs
        it starts from now on. The caller stops its local jobs."""
        expiry, params = self._expiry_sql()
        with self.db.transaction():
            cursor = self.db.execute(
                f"UPDATE instances SET heartbeat_at=?, expires_at={expiry} WHERE id=? AND NOT "
                f"{self.leases.expired()}",
                [self._now(), *params, self.instance_id, self._now()],
            )
            if cursor.rowcount == 1:
                return True
            # Lapsed (recovered or not yet): the old lease is dead for good, so its rows are anyone's to recover.
            self.db.execute("DELETE FROM instances WHERE id=?", [self.instance_id])
            self.fenced += 1
            self.instance_id = uuid.uuid4().hex
            self._register()
        log.error("this process's lease had lapsed: its jobs are stopped and recovered, a new lease is taken")
        metrics.FENCED.inc()
        return False

    async def heartbeat(self) -> bool:
        return await self._run(self.heartbeat_sync)

    # -- reservation ----------------------------------------------------------------------

    @_retried
    def reserve_sync(
        self,
        who: Requester,
        request: ImageRequest,
        each_micros: int,
        job_id: str | None = None,
        pace: Pace | None = None,
    ) -> Reservation:
        """Check the pace and every limit and reserve `count` x `each_micros` in one BEGIN IMMEDIATE
        transaction (on PostgreSQL: in one statement, `_reserve_postgres`)."""
        job_id = job_id or uuid.uuid4().hex[:16]
        now = self.clock()
        periods = Periods.at(now, self.timezone)
        count = request.count
        what = _what(request)
        if self.postgres:
            return self._reserve_postgres(who, request, each_micros, job_id, pace, now, periods, what)
        with self.db.transaction():
            if pace is not None:
                self._keep_pace(who, pace, now)
            self._admit(who, periods, micros=each_micros * count, images=count, now=now, what=what)
            stamp = _iso(now)
            prompt = request.prompt if self.store_prompts else None
            ids = []
            for seq in range(count):
                cursor = self.db.execute(
                    'INSERT INTO ledger (job_id, seq, platform, workspace, channel, "user", model, size, quality, '
                    "format, prompt, status, reserved_micros, actual_micros, attempts, owner, day, month, "
                    "created_at, updated_at, mode) VALUES (?,?,?,?,?,?,?,?,?,?,?,'reserved',?,0,0,?,?,?,?,?,?) "
                    "RETURNING id",
                    [
                        job_id,
                        seq,
                        who.platform,
                        who.workspace,
                        who.channel,
                        who.user,
                        request.model,
                        str(request.size),
                        request.quality,
                        request.format,
                        prompt,
                        each_micros,
                        self.instance_id,
                        periods.day,
                        periods.month,
                        stamp,
                        stamp,
                        "relax" if request.relax else "fast",
                    ],
                )
                ids.append(int(cursor.fetchone()[0]))
        return Reservation(job_id, tuple(ids), each_micros)

    def _reserve_postgres(
        self,
        who: Requester,
        request: ImageRequest,
        each_micros: int,
        job_id: str,
        pace: Pace | None,
        now: datetime,
        periods: Periods,
        what: str,
    ) -> Reservation:
        """`reserve_sync` on PostgreSQL: one statement, `imagebot_reserve` (bot/store/pg.py), which locks the
        counters, checks the pace and every limit and inserts the rows (its trigger bumps the counters)."""
        tenant = admission.tenant_key(who.platform, who.workspace)
        stamp = _iso(now)
        refused, used, limit, last_at, ids = self.db.execute(
            "SELECT refused, used, lim, last_at, ids FROM imagebot_reserve(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
            "?, ?, ?, ?, ?, ?, CAST(? AS bigint[]), ?, ?)",
            [
                job_id,
                request.count,
                each_micros,
                who.platform,
                who.workspace,
                who.channel,
                who.user,
                request.model,
                str(request.size),
                request.quality,
                request.format,
                request.prompt if self.store_prompts else None,
                self.instance_id,
                periods.day,
                periods.month,
                stamp,
                "relax" if request.relax else "fast",
                admission.scoped_key("user", tenant, who.user),
                admission.scoped_key("channel", tenant, who.channel),
                tenant,
                self.defaults.as_list(),
                pace.max_jobs if pace is not None else None,
                _iso(since) if pace is not None and (since := pace.since(now)) is not None else None,
            ],
        ).fetchone()
        if refused is not None:
            self._refused(
                refused,
                used,
                limit,
                last_at,
                pace,
                periods,
                now,
                request.count * each_micros,
                request.count,
                what,
            )
        if len(self._reserved) > RESERVED_KEPT:  # rows closed elsewhere (recovered, relaxed) are never popped
            self._reserved.clear()
        self._reserved.update((int(i), each_micros) for i in ids)
        return Reservation(job_id, tuple(int(i) for i in ids), each_micros)

    def _refused(
        self,
        refused: str,
        used: int | None,
        limit: int | None,
        last_at: str | None,
        pace: Pace | None,
        periods: Periods,
        now: datetime,
        micros: int,
        images: int,
        what: str,
    ) -> None:
        """Raise the refusal PostgreSQL returned as data, worded as the SQLite path words it."""
        if refused == "max_jobs" and pace is not None and used is not None:
            raise pace.too_many(int(used))
        if refused == "cooldown" and pace is not None and last_at is not None:
            raise pace.too_soon(last_at, now, self.timezone)
        admission.refuse(
            refused,
            int(used or 0),
            int(limit or 0),
            periods,
            micros=micros,
            images=images,
            now=now.astimezone(self.timezone),
            what=what,
        )

    def check_sync(self, who: Requester, request: ImageRequest, micros: int, pace: Pace | None) -> None:
        """Refuse (PaceExceeded, QuotaExceeded) as `reserve_sync` would for a job of `micros` in all, reserving
        nothing: a price check's admission (bot/jobs/actions.py). Inside the caller's transaction (run_db)."""
        now = self.clock()
        periods = Periods.at(now, self.timezone)
        if pace is not None:
            self._keep_pace(who, pace, now)
        count = request.count
        admission.enforce(
            self._checks(who, periods),
            micros=micros,
            images=count,
            now=now.astimezone(self.timezone),
            what=_what(request),
        )

    def _admit(
        self, who: Requester, periods: Periods, *, micros: int, images: int, now: datetime, what: str
    ) -> None:
        """Inside a write transaction: refuse (QuotaExceeded) unless every limit of `who` takes `micros` and
        `images` more in `periods`, then count them in the counters."""
        admission.enforce(
            self._checks(who, periods),
            micros=micros,
            images=images,
            now=now.astimezone(self.timezone),
            what=what,
        )
        counters.bump(
            self.db,
            keys=admission.counter_keys(who, periods.day, periods.month),
            micros=micros,
            images=images,
        )

    def _checks(self, who: Requester, periods: Periods) -> list[admission.Check]:
        """Every limit of `who` with its use in `periods`, read from `limits` and `counters`."""
        overrides = counters.limit_rows(self.db, keys=admission.limit_keys(who))
        limits = admission.effective_limits(self.defaults, who, overrides)
        if not limits.any():
            return []
        keys = admission.counter_keys(who, periods.day, periods.month)
        return admission.checks(limits, who, periods, counters.used(self.db, keys=keys))

    def _keep_pace(self, who: Requester, pace: Pace, now: datetime) -> None:
        """Inside the reservation's transaction: refuse (PaceExceeded) a user who has `max_jobs` jobs open
        (reserved or running), or whose last job started less than `cooldown` seconds ago."""
        mine = [who.platform, who.workspace, who.user]
        (open_jobs,) = self.db.execute(
            'SELECT COUNT(DISTINCT job_id) FROM ledger WHERE platform=? AND workspace=? AND "user"=? '
            "AND status IN ('reserved', 'running', 'batched')",
            mine,
        ).fetchone()
        pace.check_open(open_jobs)
        since = pace.since(now)
        if since is None:
            return
        (last,) = self.db.execute(
            'SELECT MAX(created_at) FROM ledger WHERE platform=? AND workspace=? AND "user"=? AND created_at > ?',
            [*mine, _iso(since)],
        ).fetchone()
        pace.check_recent(last, now, self.timezone)

    async def reserve(
        self,
        who: Requester,
        request: ImageRequest,
        each_micros: int,
        job_id: str | None = None,
        pace: Pace | None = None,
    ) -> Reservation:
        return await self._run(lambda: self.reserve_sync(who, request, each_micros, job_id, pace))

    @_retried
    def extend_sync(self, row_id: int, micros: int) -> None:
        """Reserve `micros` more for an open row (a retry after an attempt that may have been billed), in one
        transaction that checks every limit of the row's requester. Raises QuotaExceeded if they cannot take
        it; nothing changes then."""
        now = self.clock()
        if self.postgres:  # one statement: imagebot_extend (bot/store/pg.py) locks, checks and extends
            refused, used, limit, day = self.db.execute(
                "SELECT refused, used, lim, row_day FROM imagebot_extend(?, ?, ?, CAST(? AS bigint[]))",
                [row_id, micros, _iso(now), self.defaults.as_list()],
            ).fetchone()
            if refused == "closed":
                raise UserError(msg("ledger.not_running"))
            if refused is not None:
                periods = Periods.at(datetime.fromisoformat(day).replace(tzinfo=self.timezone), self.timezone)
                self._refused(refused, used, limit, None, None, periods, now, micros, 0, "another attempt")
            return
        with self.db.transaction():
            row = self.db.execute(
                f'SELECT status, platform, workspace, channel, "user", day, month FROM ledger WHERE id=?{self.db.for_update}',
                [row_id],
            ).fetchone()
            if row is None or row[0] not in OPEN:
                raise UserError(msg("ledger.not_running"))
            who = Requester(row[1], row[2], row[3], row[4])
            # The periods the row counts in (a job that started before midnight still belongs to that day).
            periods = Periods.at(datetime.fromisoformat(row[5]).replace(tzinfo=self.timezone), self.timezone)
            self._admit(who, periods, micros=micros, images=0, now=now, what=msg("ledger.another_attempt"))
            self.db.execute(
                "UPDATE ledger SET reserved_micros = reserved_micros + ?, updated_at=? WHERE id=?",
                [micros, _iso(now), row_id],
            )

    async def extend(self, row_id: int, micros: int) -> None:
        await self._run(lambda: self.extend_sync(row_id, micros))

    def mark_batched(self, db: Any, row_ids: Collection[int], now: datetime) -> None:
        """Reserved rows go into a relax batch: `batched`, from then on under no lease, by the job state
        machine's arrow while this process still holds them. Inside the caller's transaction (run_db)."""
        for row in row_ids:
            jobstate.move(db.conn, self.leases, row, Status.BATCHED, now=_iso(now), owner=self.instance_id)

    def start_sync(self, row_id: int) -> bool:
        """An API call for this row is about to be made: reserved -> running, only while this process's lease
        is live (fencing). False if the row was recovered, cancelled or is not ours: make no call then."""
        with self._transaction(single=True):
            return jobstate.move(
                self.db, self.leases, row_id, Status.RUNNING, now=self._now(), owner=self.instance_id
            )

    async def start(self, row_id: int) -> bool:
        return await self._run(lambda: self.start_sync(row_id))

    def set_context(self, job_id: str, context: dict[str, Any]) -> asyncio.Future[Any]:
        """Where the adapter shows this job (thread, message), so a restart can tell the user.

        Like `start`, queued on the database thread at once, ahead of the job's own writes; callers need
        not wait for it before the API call (a failure is logged).
        """
        text = json.dumps(context)
        future = asyncio.get_running_loop().run_in_executor(
            self._pool, lambda: self.db.execute("UPDATE ledger SET context=? WHERE job_id=?", [text, job_id])
        )
        future.add_done_callback(_log_failure)
        return future

    # -- settlement -----------------------------------------------------------------------

    @_retried
    def close_row_sync(
        self,
        row_id: int,
        settlement: Settlement,
        *,
        fenced: bool = True,
        keep: tuple[dict[str, Any], bytes] | None = None,
    ) -> bool:
        """Settle or release one open row and move the counters by the difference, by the row's arrow in
        bot/store/jobstate.py. `fenced`: a leased row (reserved, running) moves only under this process's live lease
        (False for recovery, which closes the rows of dead leases; a batched row has no lease). `keep`: the
        rendered image (its fields and bytes) goes to the outbox in the same transaction. False if the row
        could not move (already closed, recovered by another process, or not ours)."""
        now = self._now()
        reserved_at_least = self._reserved.pop(row_id, None)
        if keep is None and reserved_at_least is not None and settlement.actual_micros <= reserved_at_least:
            # PostgreSQL, a row reserved here and charged within its reservation (no overage): its state
            # machine UPDATE from whichever open state it is in is the whole settlement (the trigger moves the
            # counters). If the row did not move, the path below reads it and answers as it always did.
            if jobstate.move(
                self.db,
                self.leases,
                row_id,
                settlement.status,
                now=now,
                owner=self.instance_id if fenced else None,
                only_from=OPEN,
                sets=_closing(settlement, now, overage=0),
            ):
                return True
        # On PostgreSQL the ledger's trigger moves the counters with the row's UPDATE (bot/store/pg.py), so without
        # an image to keep, the conditional UPDATE is the whole settlement: no transaction around it.
        single = keep is None and self.postgres  # (a lock outside a transaction would only cost a write)
        with self._transaction(single=single):
            row = self.db.execute(
                'SELECT status, reserved_micros, workspace, channel, "user", day, month, platform, job_id, seq '
                f"FROM ledger WHERE id=?{'' if single else self.db.for_update}",
                [row_id],
            ).fetchone()
            if row is None or row[0] not in OPEN:
                return False
            old_status, reserved, workspace, channel, user, day, month, platform, job_id, seq = row
            overage = max(0, settlement.actual_micros - int(reserved))
            moved = jobstate.move(
                self.db,
                self.leases,
                row_id,
                settlement.status,
                now=now,
                owner=self.instance_id if fenced else None,
                only_from=(old_status,),
                sets=_closing(settlement, now, overage),
            )
            if not moved:
                return False
            if keep is not None:
                jobstate.keep(self.db, row_id, job_id, int(seq or 0), keep[0], keep[1], now)
            # An open row counts its reservation and one image; a closed one its actual cost, and its image
            # only if it was made (rendered, delivered or not). PostgreSQL: the trigger did it (bot/store/pg.py).
            if not self.postgres:
                counters.bump(
                    self.db,
                    keys=admission.counter_keys(Requester(platform, workspace, channel, user), day, month),
                    micros=settlement.actual_micros - int(reserved),
                    images=int(str(settlement.status) in PAID) - 1,
                )
        if overage:
            # The estimate should be a true upper bound (docs/rules.md §5): the real cost is recorded all the same.
            log.error(
                "settlement above its reservation (overage)",
                extra={"row_id": row_id, "reserved_micros": int(reserved), "overage_micros": overage},
            )
            metrics.OVERAGE.inc(overage)
        return True

    async def close_row(
        self,
        row_id: int,
        settlement: Settlement,
        *,
        fenced: bool = True,
        keep: tuple[dict[str, Any], bytes] | None = None,
    ) -> bool:
        return await self._run(lambda: self.close_row_sync(row_id, settlement, fenced=fenced, keep=keep))

    # -- the outbox (bot/store/jobstate.py) ------------------------------------------------------

    async def delivered(self, row_ids: list[int]) -> None:
        """The platform confirmed these images: delivered (their bytes go with the next purge)."""
        await self.run_db(lambda db: jobstate.delivered(db, self.leases, row_ids, self._now()))

    async def undelivered(self, row_ids: list[int], why: str) -> None:
        """Delivery gave up: the rows say why, the bytes stay for `imagebot redeliver`."""
        await self.run_db(lambda db: jobstate.undelivered(db, self.leases, row_ids, self._now(), why))

    async def claim_orphans(self, platforms: Collection[str]) -> list[str]:
        """Jobs with rendered images on `platforms` whose process is gone (or requeued by `imagebot
        redeliver`), claimed for this process to deliver."""
        return await self.run_db(
            lambda db: jobstate.claim_orphans(db, self.leases, platforms, self.instance_id, self._now())
        )

    async def take(self, job_id: str) -> bool:
        """Hold a job's rendered rows for delivery under this process's current lease (after a fence, the old
        lease is gone); False if another live process holds them (it delivers them)."""
        return await self.run_db(
            lambda db: jobstate.take(db, self.leases, job_id, self.instance_id, self._now())
        )

    async def outbox(self, job_id: str) -> list[tuple[Any, ...]]:
        """A job's images still in the outbox (bot/jobstate.waiting)."""
        return await self._run(lambda: jobstate.waiting(self.db, job_id))

    async def place(self, job_id: str) -> tuple[Requester, dict[str, Any]]:
        """Who asked for a job and where it is shown (the context its view recorded)."""
        row = await self._run(
            lambda: self.db.execute(
                'SELECT platform, workspace, channel, "user", context FROM ledger WHERE job_id=? ORDER BY seq '
                "LIMIT 1",
                [job_id],
            ).fetchone()
        )
        if row is None:
            raise UserError(msg("ledger.no_such_job", job_id=repr(job_id)))
        return Requester(row[0], row[1], row[2], row[3]), json.loads(row[4] or "{}")

    async def requeue(self, job_id: str) -> list[int]:
        """`imagebot redeliver JOB`: its undelivered images go back to the outbox queue."""
        return await self.run_db(lambda db: jobstate.requeue(db, self.leases, job_id, self._now()))

    # -- crash recovery -------------------------------------------------------------------

    def recover_sync(self) -> list[Interrupted]:
        """Close the open rows of every process whose lease expired (or that left no lease at all).

        A row whose API call had started is charged its reservation (the estimate of every attempt that may
        have been billed); one still waiting is released. Each closed row owes its user a notice, sent by a
        process that serves its platform (`claim_notices`). Returns the jobs closed here, for the logs.
        """
        now = self._now()
        with self.db.transaction():
            dead = [
                r[0]
                for r in self.db.execute(
                    f"SELECT id FROM instances WHERE {self.leases.expired()} AND id != ?",
                    [now, self.instance_id],
                )
            ]
            if dead:
                self.db.execute(f"DELETE FROM instances WHERE id IN ({','.join('?' * len(dead))})", dead)
            rows = self.db.execute(
                'SELECT id, job_id, status, reserved_micros, platform, channel, "user", context FROM ledger '
                "WHERE status IN ('reserved', 'running') AND (owner IS NULL OR owner NOT IN "
                "(SELECT id FROM instances))"
            ).fetchall()
        jobs: dict[str, Interrupted] = {}
        for row_id, job_id, status, reserved, platform, channel, user, context in rows:
            charged = int(reserved) if status == "running" else 0
            note = (
                "interrupted: the process running it stopped during the API call; charged at its "
                "estimate as possibly billed"
                if charged
                else "interrupted: the process running it stopped before the API call; nothing charged"
            )
            if not self.close_row_sync(
                row_id,
                Settlement(status=Status.INTERRUPTED, actual_micros=charged, error=note, notice="pending"),
                fenced=False,
            ):
                continue  # its owner settled it meanwhile
            old = jobs.get(job_id)
            jobs[job_id] = Interrupted(
                job_id,
                platform,
                channel,
                user,
                json.loads(context) if context else {},
                charged + (old.charged_micros if old else 0),
                1 + (old.images if old else 0),
            )
        return list(jobs.values())

    async def recover(self) -> list[Interrupted]:
        return await self._run(self.recover_sync)

    def claim_notices_sync(self, platforms: Collection[str]) -> list[Interrupted]:
        """Interrupted jobs on `platforms` whose users have not been told yet; claimed (marked sent) here,
        so that of several processes exactly one tells each user."""
        if not platforms:
            return []
        marks = ",".join("?" * len(platforms))
        with self.db.transaction():
            # One UPDATE claims the rows: of two processes at once, the second finds them already 'sent'.
            claimed = self.db.execute(
                f"UPDATE ledger SET notice = 'sent' WHERE notice = 'pending' AND platform IN ({marks}) "
                'RETURNING id, job_id, platform, channel, "user", context, actual_micros',
                list(platforms),
            ).fetchall()
        jobs: dict[str, Interrupted] = {}
        for _, job_id, platform, channel, user, context, charged in sorted(claimed):
            seen = jobs.get(job_id)
            jobs[job_id] = Interrupted(
                job_id,
                platform,
                channel,
                user,
                json.loads(context) if context else {},
                int(charged) + (seen.charged_micros if seen else 0),
                1 + (seen.images if seen else 0),
            )
        return list(jobs.values())

    async def claim_notices(self, platforms: Collection[str]) -> list[Interrupted]:
        return await self._run(lambda: self.claim_notices_sync(platforms))

    # -- reading --------------------------------------------------------------------------

    def quota_lines_sync(self, who: Requester) -> list[QuotaLine]:
        now = self.clock()
        periods = Periods.at(now, self.timezone)
        return [
            QuotaLine(c.label, c.show(c.used), c.show(c.limit), c.show(c.left), c.resets)
            for c in self._checks(who, periods)
        ]

    async def quota_lines(self, who: Requester) -> list[QuotaLine]:
        return await self._run(lambda: self.quota_lines_sync(who))

    async def quota_left_text(self, who: Requester) -> Text:
        """One short line: what is left of the tightest limits, for summaries."""
        lines = await self.quota_lines(who)
        if not lines:
            return msg("ledger.no_limits")
        return lazy(_left_text, tuple(lines[:2]))

    def set_limits_sync(
        self, scope: str, key: str, values: dict[str, int | None], *, tenant: admission.TenantLike
    ) -> None:
        """Override limits of user `key`, channel `key` or (scope 'workspace', `key` = its workspace id) the
        tenant itself, in `tenant` only. Who may do which is the caller's rule (bot/commands.py)."""
        if scope not in ("user", "channel", "workspace"):
            raise ValueError(scope)
        if scope == "workspace" and key != tenant.workspace:
            raise ValueError(f"a workspace limit is its tenant's own: {key!r} is not {tenant}")
        if scope != "user" and any(column != "monthly_micros" for column in values):
            # Only users have daily and image limits; stored for a channel they would be silently ignored.
            raise UserError(msg("ledger.monthly_only", scope=msg(f"ledger.scope.{scope}")))
        admission.check_limit_values(values)
        row_key = admission.scoped_key(scope, tenant.key, key)
        stamp = _iso(self.clock())
        with self.db.transaction():
            counters.set_limits(self.db, scope=scope, key=row_key, values=values, stamp=stamp)

    async def set_limits(
        self, scope: str, key: str, values: dict[str, int | None], *, tenant: admission.TenantLike
    ) -> None:
        await self._run(lambda: self.set_limits_sync(scope, key, values, tenant=tenant))

    def seen_sync(self, key: str) -> bool:
        """Remember a platform event id; True if it was already seen (so: do nothing)."""
        now = self.clock()
        with self.db.transaction():
            return not dedupe.first_time(
                self.db, key=key, now=_iso(now), forget_before=_iso(now - timedelta(days=1))
            )

    async def seen(self, key: str) -> bool:
        return await self._run(lambda: self.seen_sync(key))

    async def run_db(self, fn: Callable[[Database], T]) -> T:
        """Run `fn(db)` on the database thread, inside one write transaction (for the other modules' tables)."""

        def inside() -> T:
            with self.db.transaction():
                return fn(self.db)

        return await self._run(inside)

    async def read_db(self, fn: Callable[[Database], T]) -> T:
        """Run `fn(db)` on the database thread, outside a transaction (reads that need no snapshot: reports)."""
        return await self._run(lambda: fn(self.db))

    # The repositories of the other tables, on this ledger's database thread.

    @functools.cached_property
    def settings(self) -> settings_repo.Settings:
        """Tenant and channel settings (bot/store/settings.py)."""
        return settings_repo.Settings(self.run_db)

    @functools.cached_property
    def usage(self) -> usage_repo.Usage:
        """The ledger read back: reports, recent jobs, spend, tenants (bot/store/usage.py)."""
        return usage_repo.Usage(self.read_db)

    async def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """A read-only query on the worker thread (reports)."""
        return await self._run(lambda: self.db.execute(sql, params or []).fetchall())
