"""Quota ledger throughput: reserve + settle of a 1-image job, in one process and in several.

    .venv/bin/python -m benchmarks.quota [--jobs 4000] [--procs 4] [--db postgresql://user@host:5432/db]

Each job is `Ledger.reserve_sync` (one BEGIN IMMEDIATE transaction that checks all six limits
and writes the ledger row and four counters) followed by `Ledger.close_row_sync` (settle to the
real cost). Users, channels and workspaces vary; every limit is set (high enough never to
refuse) so every check runs. The multi-process run starts its workers together on a barrier,
all on one SQLite file, and counts total jobs over wall time. Any sqlite3.OperationalError
(e.g. "database is locked") is counted as a lock error.

With `--db postgresql://...` the same two runs go on PostgreSQL too (two fresh databases created on that
server), SERIALIZABLE, where a reservation that loses a race is run again (`serialization_retries`).

Prints human-readable lines, then, as its last line, one JSON object with
`jobs_per_s_1proc`, `jobs_per_s_4proc` and `lock_errors` (and with --db `jobs_per_s_pg_1proc`,
`jobs_per_s_pg_4proc`, `serialization_retries`).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from bot import pg, quota
from bot.config import QuotaDefaults
from bot.errors import QuotaExceeded
from bot.ledger import Ledger, Settlement, Status
from bot.request import ImageRequest, Requester
from bot.sizes import parse_size

EACH = 6_000  # a low-quality 1024x1024 image: $0.006
ACTUAL = 5_200
BIG = 10**15
DEFAULTS = QuotaDefaults(
    user_daily_micros=BIG,
    user_daily_images=BIG,
    user_monthly_micros=BIG,
    user_monthly_images=BIG,
    channel_monthly_micros=BIG,
    workspace_monthly_micros=BIG,
)
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
            ledger.close_row_sync(
                reservation.row_ids[0],
                Settlement(
                    Status.RENDERED, ACTUAL, attempts=1, request_ids=(f"req_{worker}_{i}",), latency_ms=1000
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


def single(path: Path | str, jobs: int) -> tuple[float, dict[str, Any]]:
    ledger = Ledger(path, defaults=DEFAULTS)
    try:
        run_jobs(ledger, 0, 0, WARMUP)
        started = time.perf_counter()
        stats = run_jobs(ledger, 0, WARMUP, jobs)
        elapsed = time.perf_counter() - started
        stats["retries"] = ledger.serialization_retries
    finally:
        ledger.close()
    return elapsed, stats


def _worker(path: str, worker: int, jobs: int, barrier: Any, results: Any) -> None:
    stats: dict[str, Any] = {"jobs": 0, "lock_errors": 0, "refused": 0, "other_errors": 0, "examples": []}
    ledger = None
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
            return [tuple(r) for r in conn.execute(pg.translate(sql))]  # type: ignore[arg-type]
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


def counters_match(path: Path | str) -> bool:
    """The counters equal the sums over the ledger (closed rows: actual; open rows: reserved), under the
    tenant-scoped keys the ledger itself uses (quota.counter_keys)."""
    expected: dict[tuple[str, str, str], tuple[int, int]] = {}
    for platform, workspace, channel, user, day, month, status, reserved, actual in _select(
        path,
        "SELECT platform, workspace, channel, user, day, month, status, reserved_micros, actual_micros FROM ledger",
    ):
        is_open = status in ("reserved", "running")
        spend, images = (reserved if is_open else actual), int(is_open or status == "delivered")
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

    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        one_path, many_path = Path(folder) / "one.sqlite3", Path(folder) / "many.sqlite3"
        elapsed, one = single(one_path, args.jobs)
        per_s_1 = one["jobs"] / elapsed
        print(
            f"1 process : {one['jobs']} jobs in {elapsed:.2f} s = {per_s_1:,.0f} jobs/s "
            f"({elapsed / max(1, one['jobs']) * 1e6:.0f} us per reserve+settle); "
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
    }
    if args.db:
        figures.update(postgres(args.db, args.jobs, args.procs))
    print(json.dumps(figures))


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
    print(f"PostgreSQL, 1 process : {one['jobs']} jobs in {elapsed:.2f} s = {per_s_1:,.0f} jobs/s")
    wall, many = multi(many_url, procs, jobs)
    total = sum(s["jobs"] for s in many)
    per_s_n = total / wall
    retries = one.get("retries", 0) + sum(s.get("retries", 0) for s in many)
    errors = (
        one["other_errors"] + one["lock_errors"] + sum(s["other_errors"] + s["lock_errors"] for s in many)
    )
    print(
        f"PostgreSQL, {procs} processes: {total} jobs in {wall:.2f} s wall = {per_s_n:,.0f} jobs/s "
        f"({per_s_n / per_s_1:.2f}x one process); serialization retries {retries}, errors {errors}"
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
        "serialization_retries": retries,
        "pg_errors": errors,
        "pg_counters_match": match,
    }


if __name__ == "__main__":
    main()
