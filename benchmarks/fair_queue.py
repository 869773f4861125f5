"""The fair queue under a crowd: 2,000 queued images from 500 users (count 4 each), IMAGEBOT_MAX_IN_FLIGHT=8,
against the offline server (its own process) at a fixed, small latency; every job's ticker asks its queue
position every IMAGEBOT_PROGRESS_INTERVAL.

Measured: event-loop lag p50/p99 while the queue drains (target p99 <= 20 ms; positions cost O(waiters) per
tick, docs/rules.md §10), and every position a job was shown, checked against a reference simulation of the
round-robin rule (each waiting owner in turn, served longest ago first, FIFO within an owner) run from the
queue as it stood once everyone had arrived. Every call is held at the gate until all 2,000 wait (so no
later arrival changes the order), then the slots open. Last line: JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Hashable
from typing import Any

from benchmarks._common import LoopLag, bench_settings, peak_rss_mb, percentile


def reference_order(lines: dict[Hashable, int], served: dict[Hashable, int]) -> list[Hashable]:
    """Whose call starts next, in turn, simulated one grant at a time by the rule itself (no shortcut)."""
    left, served, clock, out = dict(lines), dict(served), max(served.values(), default=0), []
    while left:
        owner = min(left, key=lambda o: served.get(o, -1))  # served longest ago; never served: first to wait
        out.append(owner)
        clock += 1
        served[owner] = clock
        left[owner] -= 1
        if not left[owner]:
            del left[owner]
    return out


class RecordingView:
    """A job view that records every queue position it is shown, with how many slots had been granted then."""

    previews = False
    confirms = False

    def __init__(self, owner: Hashable, bench: Bench) -> None:
        self.owner = owner
        self.bench = bench

    async def open(self, first: Any) -> dict[str, Any]:
        return {}

    async def progress(self, progress: Any) -> None:
        # Runs synchronously right after the ticker asked the gate: the grant count is the one it saw.
        self.bench.shown.append(
            (self.owner, progress.queue_position, self.bench.granted, self.bench.released)
        )

    async def deliver(self, result: Any) -> list[dict[str, Any]] | None:
        self.bench.delivered += 1
        return None

    async def failed(self, failure: Any) -> None:
        self.bench.failures.append(str(getattr(failure, "message", failure)))

    async def refused(self, text: str) -> None:
        self.bench.failures.append(text)

    async def confirm(self, text: str, token: str) -> None:
        raise AssertionError("no price check here")

    async def platform_admin(self) -> bool:
        return False

    async def member_of(self, groups: Any) -> bool:
        return False


class Bench:
    def __init__(self) -> None:
        self.granted = 0
        self.released = False
        self.grants: list[Hashable] = []
        self.shown: list[tuple[Hashable, int | None, int, bool]] = []
        self.delivered = 0
        self.failures: list[str] = []


async def run(users: int, count: int, in_flight: int, latency: float, interval: float) -> dict[str, Any]:
    from bot.app import Core
    from bot.model.request import Requester

    bench = Bench()
    settings_env = {
        "IMAGEBOT_PROGRESS_INTERVAL": str(interval),
        "IMAGEBOT_CONFIRM_USD": "off",
        "IMAGEBOT_USER_MAX_JOBS": "10",
    }
    with bench_settings(latency, in_flight, **settings_env) as settings:
        core = await Core.start(settings)
        gate = core.runner.gate
        serve = gate._serve

        def counting_serve(owner: Hashable) -> None:  # every grant, in order
            bench.granted += 1
            bench.grants.append(owner)
            serve(owner)

        gate._serve = counting_serve  # type: ignore[method-assign]
        try:
            request = core.parse(
                f"queue benchmark --size 1024x640 --format jpeg --quality low --count {count}"
            )
            gate.active = gate.limit  # hold every call until all have arrived: no arrival reorders the queue
            total = users * count
            with LoopLag() as lag:
                wall = time.perf_counter()
                tasks = [
                    asyncio.create_task(
                        core.submit(
                            request,
                            Requester("bench", "w", "c", f"u{u}"),
                            RecordingView(("bench", "w", f"u{u}"), bench),
                        )
                    )
                    for u in range(users)
                ]
                while gate.queued < total:
                    if bench.failures:
                        raise RuntimeError(bench.failures[0])
                    await asyncio.sleep(0.01)
                arrived = time.perf_counter() - wall
                lines = {owner: len(line) for owner, line in gate._lines.items()}
                served = dict(gate._served)
                expected = reference_order(lines, served)
                lag.samples.clear()  # the drain is what is measured: positions are asked all through it
                bench.released = True
                for _ in range(gate.limit):  # open the slots (the held ones were never taken)
                    gate._release()
                await asyncio.gather(*tasks)
                wall = time.perf_counter() - wall
        finally:
            await core.close()
    # Every position shown after the slots opened, against the reference: at `granted` grants, an owner's
    # first waiting call is the first of its turns in the reference order from there on.
    turns: dict[Hashable, list[int]] = {}
    for index, owner in enumerate(expected):
        turns.setdefault(owner, []).append(index)
    checked = wrong = 0
    examples: list[str] = []
    for owner, position, granted, released in bench.shown:
        if not released:
            continue
        nxt = next((i for i in turns.get(owner, []) if i >= granted), None)
        want = None if nxt is None else nxt - granted + 1
        checked += 1
        if position != want:
            wrong += 1
            if len(examples) < 5:
                examples.append(f"{owner} at {granted} grants: shown {position}, reference {want}")
    return {
        "users": users,
        "images": users * count,
        "max_in_flight": in_flight,
        "latency_s": latency,
        "progress_interval_s": interval,
        "arrival_s": round(arrived, 2),
        "wall_s": round(wall, 2),
        "loop_lag_p50_ms": round(percentile(lag.samples, 50), 2),
        "loop_lag_p99_ms": round(percentile(lag.samples, 99), 2),
        "loop_lag_max_ms": round(max(lag.samples, default=0.0), 2),
        "positions_checked": checked,
        "positions_wrong": wrong,
        "wrong_examples": examples,
        "start_order_matches_reference": bench.grants[-len(expected) :] == expected,
        "delivered_jobs": bench.delivered,
        "failures": len(bench.failures),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--interval", type=float, default=0.5)
    args = parser.parse_args()
    result = asyncio.run(run(args.users, args.count, args.in_flight, args.latency, args.interval))
    ok = (
        result["loop_lag_p99_ms"] <= 20
        and result["positions_wrong"] == 0
        and result["positions_checked"] > 0
        and result["start_order_matches_reference"]
        and result["failures"] == 0
    )
    result["ok"] = ok
    print(
        f"loop_lag_p99_ms={result['loop_lag_p99_ms']} (target <= 20), positions {result['positions_checked']} "
        f"checked, {result['positions_wrong']} wrong",
        file=sys.stderr,
    )
    print(json.dumps(result))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
