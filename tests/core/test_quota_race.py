"""Several OS processes on one SQLite file: quota races and crash recovery (docs/rules.md §5).

The workers run in real processes started with multiprocessing's "spawn" context, so each
has its own interpreter, its own connection and its own pid, as separate bot processes would.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.config import QuotaDefaults
from bot.errors import QuotaExceeded
from bot.model.request import ImageRequest, Requester
from bot.model.sizes import parse_size
from bot.store import pg
from bot.store.ledger import Interrupted, Ledger, Settlement, Status
from tests import dbs

SPAWN = multiprocessing.get_context("spawn")
ALICE = Requester("slack", "W1", "C1", "U1")
BOB = Requester("slack", "W1", "C2", "U2")
EACH = 53_000  # one medium 1024x1024 image
FITS = 37
PROCESSES = 4
ATTEMPTS = 50
TIMEOUT = 30
LEASE = timedelta(seconds=3)  # short, so the test waits for an expiry in seconds


def request(count: int = 1) -> ImageRequest:
    return ImageRequest(prompt="a red fox", size=parse_size("1024x1024"), quality="medium", count=count)


OPEN_SQL = "status IN ('reserved', 'running')"


def sql_counters(path: Path | str) -> dict[tuple[str, str, str], tuple[int, int]]:
    """Every counter as a direct SQL sum over the ledger (open rows: reserved; closed rows: actual)."""
    spend = f"CASE WHEN {OPEN_SQL} THEN reserved_micros ELSE actual_micros END"
    images = "CASE WHEN status IN ('reserved', 'running', 'rendered', 'delivered', 'undelivered') THEN 1 ELSE 0 END"
    tenant = "platform || ':' || workspace"  # tenant-scoped keys (bot/policy/quota.py); test ids have no ':' to escape
    parts = [
        f"SELECT '{scope}' AS scope, {key} AS key, {period} AS period, {spend} AS micros, {images} AS images "
        "FROM ledger"
        for scope, key, period in (
            ("user_day", f"{tenant} || ':' || \"user\"", "day"),
            ("user_month", f"{tenant} || ':' || \"user\"", "month"),
            ("channel_month", f"{tenant} || ':' || channel", "month"),
            ("workspace_month", tenant, "month"),
        )
    ]
    rows = dbs.tuples(path, f"SELECT * FROM ({' UNION ALL '.join(parts)}) AS every_row")
    sums: dict[tuple[str, str, str], tuple[int, int]] = {}
    for scope, key, period, micros, count in rows:
        old = sums.get((scope, key, period), (0, 0))
        sums[(scope, key, period)] = (old[0] + int(micros), old[1] + int(count))
    return {k: v for k, v in sums.items() if v != (0, 0)}


def stored_counters(path: Path | str) -> dict[tuple[str, str, str], tuple[int, int]]:
    rows = dbs.tuples(path, "SELECT scope, key, period, micros, images FROM counters")
    return {(s, k, p): (int(m), int(n)) for s, k, p, m, n in rows if (m, n) != (0, 0)}


def rows(path: Path | str, where: str = "1=1", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    return dbs.read(path, f"SELECT * FROM ledger WHERE {where} ORDER BY id", params)


# --- workers (module level, so "spawn" can import them) ---------------------------------------


def _race_worker(path: str, barrier: Any, results: Any) -> None:
    """Open the (fresh) file together with the others, then reserve as fast as possible."""
    outcome: dict[str, Any] = {
        "pid": os.getpid(),
        "granted": 0,
        "refused": 0,
        "messages": set(),
        "errors": [],
    }

    async def main() -> None:
        barrier.wait(TIMEOUT)  # every process opens (and migrates) the new file at once
        ledger = await asyncio.to_thread(Ledger, path, QuotaDefaults(user_daily_micros=FITS * EACH))
        try:
            barrier.wait(TIMEOUT)  # ... and then they all race for the same user's quota
            for _ in range(ATTEMPTS):
                try:
                    await ledger.reserve(ALICE, request(), EACH)
                    outcome["granted"] += 1
                except QuotaExceeded as exc:
                    outcome["refused"] += 1
                    outcome["messages"].add(str(exc).split(". It resets")[0])
                except Exception as exc:  # anything else reaching the caller is a failure
                    outcome["errors"].append(repr(exc))
        finally:
            await asyncio.to_thread(ledger.close)

    try:
        asyncio.run(main())
    except BaseException as exc:  # noqa: BLE001 - report everything to the parent
        outcome["errors"].append(repr(exc))
    results.put(outcome)


def _crashing_worker(path: str, ready: Any) -> None:
    """Reserve some rows, start API calls on some, finish one job, then wait to be killed."""

    async def main() -> None:
        ledger = Ledger(path, lease=LEASE)
        waiting = await ledger.reserve(ALICE, request(2), 10_000, job_id="job-waiting")
        running = await ledger.reserve(BOB, request(3), 20_000, job_id="job-running")
        await ledger.set_context("job-running", {"channel": "C2", "thread_ts": "1714000000.000100"})
        await ledger.start(running.row_ids[0])
        await ledger.start(running.row_ids[1])
        done = await ledger.reserve(ALICE, request(1), 30_000, job_id="job-done")
        await ledger.start(done.row_ids[0])
        await ledger.close_row(done.row_ids[0], Settlement(status=Status.RENDERED, actual_micros=25_000))
        ready.put(
            {
                "pid": os.getpid(),
                "instance": ledger.instance_id,
                "waiting": list(waiting.row_ids),
                "running": list(running.row_ids),
                "done": list(done.row_ids),
            }
        )
        while True:  # alive until killed: its lease runs LEASE past its last heartbeat
            await asyncio.sleep(LEASE.total_seconds() / 6)
            await ledger.heartbeat()

    asyncio.run(main())


def _live_peer(path: str, ready: Any, stop: Any) -> None:
    """A healthy process with a job in flight: recovery elsewhere must leave it alone."""

    async def main() -> None:
        ledger = Ledger(path, lease=LEASE)
        peer = await ledger.reserve(ALICE, request(1), 40_000, job_id="job-peer")
        await ledger.start(peer.row_ids[0])
        ready.put({"pid": os.getpid(), "rows": list(peer.row_ids)})
        while not await asyncio.to_thread(stop.wait, LEASE.total_seconds() / 4):
            await ledger.heartbeat()  # alive: its lease never expires
        ledger.close()

    asyncio.run(main())


# --- tests ------------------------------------------------------------------------------------


def test_four_processes_never_grant_more_than_the_limit_fits(db_target: str) -> None:
    """On SQLite and on PostgreSQL: 4 processes x 50 reservations against a limit that fits 37."""
    path = db_target  # not created beforehand: the workers create and migrate it together
    barrier = SPAWN.Barrier(PROCESSES)
    results = SPAWN.Queue()
    workers = [
        SPAWN.Process(target=_race_worker, args=(str(path), barrier, results)) for _ in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    try:
        outcomes = [results.get(timeout=TIMEOUT) for _ in workers]
    finally:
        for worker in workers:
            worker.join(TIMEOUT)
            if worker.is_alive():
                worker.kill()
    assert [w.exitcode for w in workers] == [0] * PROCESSES

    errors = [e for o in outcomes for e in o["errors"]]
    assert errors == [], errors  # no "database is locked", no exception of any kind
    assert sum(o["granted"] for o in outcomes) == FITS
    assert sum(o["refused"] for o in outcomes) == PROCESSES * ATTEMPTS - FITS
    messages = set().union(*(o["messages"] for o in outcomes))
    assert messages == {
        "Quota: 1 image at 1024x1024 medium needs up to $0.0530, but your daily spend limit "
        "is $1.9610 and $0.0000 is left"
    }, messages

    granted = rows(path)
    assert len(granted) == FITS and {r["status"] for r in granted} == {"reserved"}
    assert sum(r["reserved_micros"] for r in granted) == FITS * EACH
    if not pg.is_url(path):  # on PostgreSQL the losers of a race retry, so one process may take every grant
        assert len({r["owner"] for r in granted}) >= 2, "the processes did not actually race"
    counters = stored_counters(path)
    assert counters == sql_counters(path)
    assert [(k, v) for (scope, k, _), v in counters.items() if scope == "user_day"] == [
        ("slack:W1:U1", (FITS * EACH, FITS))
    ]


def test_kill_9_then_recovery_releases_reservations_and_charges_started_calls(db_target: str) -> None:
    path = db_target
    Ledger(path).close()  # the file exists before the processes start
    ready = SPAWN.Queue()
    stop = SPAWN.Event()
    victim = SPAWN.Process(target=_crashing_worker, args=(str(path), ready))
    peer = SPAWN.Process(target=_live_peer, args=(str(path), ready, stop))
    victim.start()
    peer.start()
    try:
        infos = [ready.get(timeout=TIMEOUT) for _ in range(2)]
        crashed = next(i for i in infos if i["pid"] == victim.pid)
        alive = next(i for i in infos if i["pid"] == peer.pid)
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(TIMEOUT)
        assert victim.exitcode == -signal.SIGKILL

        before = {r["id"]: r for r in rows(path)}
        assert {before[i]["status"] for i in crashed["waiting"]} == {"reserved"}
        assert [before[i]["status"] for i in crashed["running"]] == ["running", "running", "reserved"]

        ledger = Ledger(path, clock=lambda: datetime.now(UTC))
        try:
            # Nothing is recovered while the dead process's lease runs; once it expired, its jobs are.
            assert ledger.recover_sync() == []
            time.sleep(LEASE.total_seconds() * 1.5)
            interrupted = sorted(ledger.recover_sync(), key=lambda i: i.job_id)
            after = {r["id"]: r for r in rows(path)}
            again = ledger.recover_sync()
        finally:
            ledger.close()

        # Reserved rows: released, nothing charged. Running rows: charged at their estimate.
        for row_id in crashed["waiting"]:
            assert (after[row_id]["status"], after[row_id]["actual_micros"]) == ("interrupted", 0)
            assert "nothing charged" in after[row_id]["error"]
        first, second, third = crashed["running"]
        assert (after[first]["status"], after[first]["actual_micros"]) == ("interrupted", 20_000)
        assert (after[second]["status"], after[second]["actual_micros"]) == ("interrupted", 20_000)
        assert (after[third]["status"], after[third]["actual_micros"]) == ("interrupted", 0)
        assert "possibly billed" in after[first]["error"]
        assert all(after[i]["finished_at"] for i in crashed["waiting"] + crashed["running"])
        # Finished work and the live peer's job are untouched.
        assert (after[crashed["done"][0]]["status"], after[crashed["done"][0]]["actual_micros"]) == (
            "rendered",
            25_000,
        )
        assert [after[i]["status"] for i in alive["rows"]] == ["running"]

        assert interrupted == [
            Interrupted(
                "job-running",
                "slack",
                "C2",
                "U2",
                {"channel": "C2", "thread_ts": "1714000000.000100"},
                40_000,
                3,
            ),
            Interrupted("job-waiting", "slack", "C1", "U1", {}, 0, 2),
        ]
        assert again == []
        assert stored_counters(path) == sql_counters(path)
        instances = {r[0] for r in dbs.tuples(path, "SELECT id FROM instances")}
        assert crashed["instance"] not in instances
    finally:
        stop.set()
        peer.join(TIMEOUT)
        if peer.is_alive():
            peer.kill()
        if victim.is_alive():
            victim.kill()
    assert peer.exitcode == 0
    # The peer closed cleanly but left its row running (as a crash between start and settle would):
    # now that it is gone, the next recovery charges it at the estimate.
    ledger = Ledger(path)
    try:
        late = ledger.recover_sync()
    finally:
        ledger.close()
    assert [(i.job_id, i.charged_micros, i.images) for i in late] == [("job-peer", 40_000, 1)]
    assert stored_counters(path) == sql_counters(path)
    assert rows(path, OPEN_SQL) == []
