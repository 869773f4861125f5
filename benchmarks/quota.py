"""Quota ledger throughput: reserve + start + settle of a 1-image job, in one process and in several.

    .venv/bin/python -m benchmarks.quota [--jobs 4000] [--procs 4] [--db postgresql://user@host:5432/db]

Each job is what a 1-image job does to the ledger: `Ledger.reserve_sync` (checks all six limits and the
pace, writes the ledger row and bumps four counters), `Ledger.start_sync` (reserved -> running) and
`Ledger.close_row_sync` (settle to the real cost). Users, channels and workspaces vary; every limit is set
(high enough never to refuse) so every check runs. The multi-process run starts its workers together on a
barrier, all on one SQLite file, and counts total jobs over wall time. Any sqlite3.OperationalError
(e.g. "database is locked") is counted as a lock error.

With `--db postgresql://...` the same two runs go on PostgreSQL too (two fresh databases created on that
server); a transaction that loses a race is run again (`serialization_retries`). Round trips are counted at
the driver (`PgConnection.round_trips`: one per statement sent) over the single-process run.

Prints human-readable lines, then, as its last line, one JSON object with
`jobs_per_s_1proc`, `jobs_per_s_4proc` and `lock_errors` (and with --db `jobs_per_s_pg_1proc`,
`jobs_per_s_pg_4proc`, `serialization_retries`, `pg_round_trips_per_job` (reserve + start + settle),
`pg_round_trips_reserve_settle`, `pg4_over_sqlite1` = pg 4 processes / SQLite 1 process and
`pg_scaling` = pg 4 processes / pg 1 process, all from the same run).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sqlite3
import tempfile
import time
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from bot.config import QuotaDefaults
from bot.errors import QuotaExceeded
from bot.model.request import ImageRequest, Requester
from bot.model.sizes import parse_size
from bot.policy import quota
from bot.store import pg
from bot.store.jobstate import OPEN, PAID
from bot.store.ledger import Ledger, Settlement, Status

EACH = 6_000  # a low-quality 1024x1024 image: $0.006
ACTUAL = 5_200
BIG = 10**15
DEFAULTS = QuotaDefaults(**{limit.name: BIG for limit in fields(QuotaDefaults)})  # every limit out of reach
REQUEST = ImageRequest(
    prompt="a lighthouse at dawn", size=parse_size("1024x1024"), quality="low", format="png"
)
WARMUP = 200


def requester(worker: int, i: int) -> Requester:
    n = worker * 1_000_003 + i
    return Requester("slack", f"W{n % 4}", f"C{n % 37}", f"U{n % 211}")


def run_jobs(ledger: Ledger, worker: int, first: int, count: int) -> dict[str, Any]:
    """`count` reserve+settle jobs; errors are counted, never raised."""
    stats: dict[str, Any] = {"jobs": 0, "lock_errors": 0, "refused": 0, "other_errors": 0, "examples": []}
    for i in range(first, first + count):
        try:
            reservation = ledger.reserve_sync(requester(worker, i), REQUEST, EACH)
            if not ledger.start_sync(reservation.row_ids[0]):  # reserved -> running (bot/store/jobstate.py)
                raise RuntimeError(f"row {reservation.row_ids[0]} could not start")
            ledger.close_row_sync(
                reservation.row_ids[0],
                Settlement(
                    status=Status.RENDERED,
                    actual_micros=ACTUAL,
                    attempts=1,
                    request_ids=(f"req_{worker}_{i}",),
                    latency_ms=1000,
                ),
            )
            stats["jobs"] += 1
        except sqlite3.OperationalError as exc:
            stats["lock_errors"] += 1
            if len(stats["examples"]) < 3:
                stats["examples"].append(repr(exc))
        except QuotaExceeded:
            stats["refused"] += 1
        except Exception as exc:  # noqa: BLE001 - a benchmark reports, it does not stop
            stats["other_errors"] += 1
            if len(stats["examples"]) < 3:
                stats["examples"].append(repr(exc))
    return stats


def round_trips(ledger: Ledger) -> int:
    """Statements this ledger's PostgreSQL connection has sent so far (0 on SQLite)."""
    return int(getattr(ledger.db.conn, "round_trips", 0))


def phases(ledger: Ledger, worker: int, first: int, count: int) -> dict[str, float]:
    """Round trips per reserve, start and settle, counted at the driver over `count` jobs."""
    spent = {"reserve": 0, "start": 0, "settle": 0}
    for i in range(first, first + count):
        before = round_trips(ledger)
        reservation = ledger.reserve_sync(requester(worker, i), REQUEST, EACH)
        spent["reserve"] += round_trips(ledger) - before
        before = round_trips(ledger)
        ledger.start_sync(reservation.row_ids[0])
        spent["start"] += round_trips(ledger) - before
        before = round_trips(ledger)
        ledger.close_row_sync(
            reservation.row_ids[0], Settlement(status=Status.RENDERED, actual_micros=ACTUAL, attempts=1)
        )
        spent["settle"] += round_trips(ledger) - before
    return {name: value / count for name, value in spent.items()}


def single(path: Path | str, jobs: int) -> tuple[float, dict[str, Any]]:
    ledger = Ledger(path, defaults=DEFAULTS)
    try:
        run_jobs(ledger, 0, 0, WARMUP)
        trips = round_trips(ledger)
        started = time.perf_counter()
        stats = run_jobs(ledger, 0, WARMUP, jobs)
        elapsed = time.perf_counter() - started
        stats["round_trips"] = round_trips(ledger) - trips
        stats["phases"] = phases(ledger, 0, WARMUP + jobs, 100)
        stats["retries"] = ledger.serialization_retries
    finally:
        ledger.close()
    return elapsed, stats


def _worker(path: str, worker: int, jobs: int, barrier: Any, results: Any) -> None:
    stats: dict[str, Any] = {"jobs": 0, "lock_errors": 0, "refused": 0, "other_errors": 0, "examples": []}
    ledger = None
    os.setsid()  # a replica of its own (see the module docstring: autogroup scheduling)
    try:
        ledger = Ledger(path, defaults=DEFAULTS)
        run_jobs(ledger, worker, 0, WARMUP // 4)
        barrier.wait(120)
        stats["start"] = time.time()
        stats.update(run_jobs(ledger, worker, WARMUP, jobs))
        stats["end"] = time.time()
        stats["retries"] = ledger.serialization_retries
    except sqlite3.OperationalError as exc:
        stats["lock_errors"] += 1
        stats["examples"].append(repr(exc))
    except Exception as exc:  # noqa: BLE001
        stats["other_errors"] += 1
        stats["examples"].append(repr(exc))
    finally:
        try:
            if ledger is not None:
                ledger.close()
        except Exception as exc:  # noqa: BLE001 - the parent must always get the figures
            stats["lock_errors" if isinstance(exc, sqlite3.OperationalError) else "other_errors"] += 1
            stats["examples"].append(repr(exc))
        results.put(stats)


def multi(path: Path | str, procs: int, jobs_each: int) -> tuple[float, list[dict[str, Any]]]:
    Ledger(path, defaults=DEFAULTS).close()  # create and migrate the file first
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(procs), ctx.Queue()
    workers = [
        ctx.Process(target=_worker, args=(str(path), w + 1, jobs_each, barrier, results))
        for w in range(procs)
    ]
    for worker in workers:
        worker.start()
    stats = [results.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join(60)
    timed = [s for s in stats if "start" in s and "end" in s]
    wall = max(s["end"] for s in timed) - min(s["start"] for s in timed) if timed else float("nan")
    return wall, stats


def _select(path: Path | str, sql: str) -> list[tuple[Any, ...]]:
    if pg.is_url(path):
        with psycopg.connect(str(path)) as conn:
            return [tuple(r) for r in conn.execute(sql)]  # type: ignore[arg-type]
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


def counters_match(path: Path | str) -> bool:
    """The counters equal the sums over the ledger (closed rows: actual; open rows: reserved), under the
    tenant-scoped keys the ledger itself uses (quota.counter_keys)."""
    expected: dict[tuple[str, str, str], tuple[int, int]] = {}
    for platform, workspace, channel, user, day, month, status, reserved, actual in _select(
        path,
        'SELECT platform, workspace, channel, "user", day, month, status, reserved_micros, actual_micros FROM ledger',
    ):
        is_open = status in OPEN
        spend, images = (reserved if is_open else actual), int(is_open or status in PAID)
        for key in quota.counter_keys(Requester(platform, workspace, channel, user), day, month):
            old = expected.get(key, (0, 0))
            expected[key] = (old[0] + spend, old[1] + images)
    stored = {
        (s, k, p): (int(m), int(n))
        for s, k, p, m, n in _select(path, "SELECT scope, key, period, micros, images FROM counters")
    }
    return {k: v for k, v in expected.items() if v != (0, 0)} == {
        k: v for k, v in stored.items() if v != (0, 0)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--jobs", type=int, default=4000, help="jobs in the single-process run, and per worker"
    )
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--dir", help="folder for the SQLite files (default: a temporary folder)")
    parser.add_argument("--db", help="also run on this PostgreSQL server (postgresql://user@host:port/db)")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        one_path, many_path = Path(folder) / "one.sqlite3", Path(folder) / "many.sqlite3"
        elapsed, one = single(one_path, args.jobs)
        per_s_1 = one["jobs"] / elapsed
        print(
            f"1 process : {one['jobs']} jobs in {elapsed:.2f} s = {per_s_1:,.0f} jobs/s "
            f"({elapsed / max(1, one['jobs']) * 1e6:.0f} us per reserve+start+settle); "
            f"lock errors {one['lock_errors']}, other errors {one['other_errors']}"
        )

        wall, many = multi(many_path, args.procs, args.jobs)
        total = sum(s["jobs"] for s in many)
        per_s_n = total / wall
        lock_errors = one["lock_errors"] + sum(s["lock_errors"] for s in many)
        other_errors = one["other_errors"] + sum(s["other_errors"] for s in many)
        print(
            f"{args.procs} processes: {total} jobs in {wall:.2f} s wall = {per_s_n:,.0f} jobs/s "
            f"(per process: {', '.join(str(s['jobs']) for s in many)}); "
            f"lock errors {sum(s['lock_errors'] for s in many)}, other errors {sum(s['other_errors'] for s in many)}"
        )
        for example in [e for s in [one, *many] for e in s["examples"]][:3]:
            print(f"  error: {example}")
        match = counters_match(one_path) and counters_match(many_path)
        print(f"counters equal the ledger's SQL sums afterwards: {'yes' if match else 'NO'}")
        print(
            f"target: >= 2,000 jobs/s in one process: {'met' if per_s_1 >= 2000 else 'NOT met'}; "
            f"0 lock errors: {'met' if lock_errors == 0 else 'NOT met'}"
        )
    figures: dict[str, Any] = {
        "jobs_per_s_1proc": round(per_s_1, 1),
        "jobs_per_s_4proc": round(per_s_n, 1),
        "lock_errors": lock_errors,
        "other_errors": other_errors,
        "counters_match": match,
        "autogroup": _autogroup(),
    }
    if args.db:
        figures.update(postgres(args.db, args.jobs, args.procs))
        figures["pg4_over_sqlite1"] = round(figures["jobs_per_s_pg_4proc"] / per_s_1, 3)
        figures["pg_scaling"] = round(figures["jobs_per_s_pg_4proc"] / figures["jobs_per_s_pg_1proc"], 3)
        print(
            f"PostgreSQL {args.procs} processes / SQLite 1 process: {figures['pg4_over_sqlite1']:.2f} "
            f"(target >= 0.5); PostgreSQL {args.procs} / 1 process: {figures['pg_scaling']:.2f} (target >= 2.0)"
        )
    figures["loadavg_1min"] = [round(load_before, 1), round(os.getloadavg()[0], 1)]  # before, after
    print(
        f"load average (1 min) before {load_before:.1f}, after {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print(json.dumps(figures))


def _autogroup() -> str:
    """Whether the kernel shares the CPU between sessions (autogroup) rather than processes."""
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip()
    except OSError:
        return "unknown"


def server_settings(url: str) -> dict[str, str]:
    """The PostgreSQL settings that change commit cost, as the server has them."""
    with psycopg.connect(url) as conn:
        return {
            name: str(conn.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]
            for name in ("synchronous_commit", "fsync", "full_page_writes", "max_connections")
        }


def fresh_database(url: str, name: str) -> str:
    """A new, empty database on the server of `url`; its URL."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")  # type: ignore[arg-type]
        conn.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def postgres(url: str, jobs: int, procs: int) -> dict[str, Any]:
    """The same two runs on PostgreSQL."""
    one_url, many_url = fresh_database(url, "imagebot_bench_one"), fresh_database(url, "imagebot_bench_many")
    elapsed, one = single(one_url, jobs)
    per_s_1 = one["jobs"] / elapsed
    trips = one["round_trips"] / max(1, one["jobs"])
    print(
        f"PostgreSQL, 1 process : {one['jobs']} jobs in {elapsed:.2f} s = {per_s_1:,.0f} jobs/s; "
        f"{trips:.2f} round trips per job (reserve {one['phases']['reserve']:.2f}, start "
        f"{one['phases']['start']:.2f}, settle {one['phases']['settle']:.2f}; target <= 3)"
    )
    wall, many = multi(many_url, procs, jobs)
    total = sum(s["jobs"] for s in many)
    per_s_n = total / wall
    retries = one.get("retries", 0) + sum(s.get("retries", 0) for s in many)
    errors = (
        one["other_errors"] + one["lock_errors"] + sum(s["other_errors"] + s["lock_errors"] for s in many)
    )
    print(
        f"PostgreSQL, {procs} processes: {total} jobs in {wall:.2f} s wall = {per_s_n:,.0f} jobs/s "
        f"({per_s_n / max(per_s_1, 1e-9):.2f}x one process); serialization retries {retries}, errors {errors}"
    )
    for example in [e for s in [one, *many] for e in s["examples"]][:3]:
        print(f"  error: {example}")
    match = counters_match(one_url) and counters_match(many_url)
    print(
        f"counters equal the ledger's SQL sums: {'yes' if match else 'NO'}; target: {procs} processes >= 2x one: "
        f"{'met' if per_s_n >= 2 * per_s_1 else 'NOT met'}; 0 errors: {'met' if errors == 0 else 'NOT met'}"
    )
    return {
        "jobs_per_s_pg_1proc": round(per_s_1, 1),
        "jobs_per_s_pg_4proc": round(per_s_n, 1),
        "pg_round_trips_per_job": round(trips, 2),
        "pg_round_trips_reserve_settle": round(one["phases"]["reserve"] + one["phases"]["settle"], 2),
        "serialization_retries": retries,
        "pg_errors": errors,
        "pg_counters_match": match,
        "pg_settings": server_settings(one_url),
    }


if __name__ == "__main__":
    main()
