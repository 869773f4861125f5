"""The fair queue's positions (docs/rules.md §10): what every waiting job's progress shows costs O(waiters) per tick in
all, not O(waiters^2 x users); and it stays the order the slots really go in, as the queue changes."""

from __future__ import annotations

import asyncio
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.concurrency import Gate


def reference_order(lines: dict[int, list[int]], served: dict[int, int]) -> list[int]:
    """The round-robin rule, simulated slowly: the waiting owner served longest ago (never served: first to
    wait) goes next, FIFO within an owner."""
    lines = {o: list(line) for o, line in lines.items()}
    served, clock, out = dict(served), max(served.values(), default=0), []
    while lines:
        owner = min(lines, key=lambda o: served.get(o, -1))
        out.append(lines[owner].pop(0))
        clock += 1
        served[owner] = clock
        if not lines[owner]:
            del lines[owner]
    return out


async def test_every_waiters_position_in_a_tick_costs_linear_time() -> None:
    """200 users x 4 images behind 1 busy slot (799 waiters): every waiter's ticker asks its position. Before:
    5.97 s of event-loop stall for one round of ticks (each position re-simulated the whole queue)."""
    gate = Gate(1)
    release = asyncio.Event()
    waiters: list[asyncio.Future[None]] = []

    async def call(owner: int) -> None:
        async with gate.slot(waiters.append, owner=owner):
            await release.wait()

    tasks = [asyncio.create_task(call(owner)) for _ in range(4) for owner in range(200)]
    while len(waiters) < 799:
        await asyncio.sleep(0)
    started = time.perf_counter()
    positions = [gate.position(w) for w in waiters]
    nexts = [gate.next_position(owner) for owner in range(200)]
    elapsed = time.perf_counter() - started
    assert sorted(p for p in positions if p is not None) == list(range(1, 800))
    assert nexts[0] == 800  # owner 0 is being served and has 3 waiting: its next call comes last
    assert elapsed < 0.25, f"a round of 799 positions and 200 next positions took {elapsed:.2f} s"
    release.set()
    await asyncio.gather(*tasks)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("arrive"), st.integers(0, 5)),
            st.tuples(st.just("finish"), st.just(0)),
            st.tuples(st.just("cancel"), st.integers(0, 30)),
        ),
        min_size=1,
        max_size=60,
    ),
    limit=st.integers(1, 3),
)
def test_cached_positions_follow_every_change_of_the_queue(steps: list[tuple[str, int]], limit: int) -> None:
    """Arrivals, finished calls and cancels in any order: after each, every waiter's position (and the next
    position of every owner) is what a slow re-simulation of the rule says."""

    async def scenario() -> None:
        gate = Gate(limit)
        running: list[asyncio.Event] = []
        waiting: dict[asyncio.Future[None], tuple[int, int]] = {}
        tasks: list[asyncio.Task[None]] = []
        served: dict[int, int] = {}
        clock = 0
        counter = 0
        began: dict[int, int] = {}  # owner -> the call whose wait began its present line

        async def call(owner: int, n: int) -> None:
            nonlocal clock
            finish = asyncio.Event()

            def on_wait(w: asyncio.Future[None]) -> None:
                waiting[w] = (owner, n)

            async with gate.slot(on_wait, owner=owner):
                clock += 1
                served[owner] = clock
                running.append(finish)
                await finish.wait()

        for kind, arg in steps:
            if kind == "arrive":
                counter += 1
                tasks.append(asyncio.create_task(call(arg, counter)))
            elif kind == "finish" and running:
                running.pop(0).set()
            elif kind == "cancel":
                live = [t for t in tasks if not t.done()]
                if live:
                    live[arg % len(live)].cancel()
            for _ in range(5):
                await asyncio.sleep(0)
            still = {w: key for w, key in waiting.items() if not w.done()}
            by_owner: dict[int, list[int]] = {}
            for owner, n in sorted(still.values(), key=lambda key: key[1]):
                by_owner.setdefault(owner, []).append(n)
            # An owner began waiting when its line last went from empty to not: a cancelled first call does
            # not move it behind owners who came after it while it kept waiting.
            began = {owner: began.get(owner, line[0]) for owner, line in by_owner.items()}
            lines = {owner: by_owner[owner] for owner in sorted(by_owner, key=began.__getitem__)}
            expected = reference_order(lines, served)
            shown = {still[w][1]: gate.position(w) for w in still}
            assert [n for n, _ in sorted(shown.items(), key=lambda kv: kv[1] or 0)] == expected
            for owner in range(6):
                probe = reference_order({**lines, owner: [*lines.get(owner, []), -1]}, served)
                assert gate.next_position(owner) == probe.index(-1) + 1
            assert gate.queued == len(expected)
        for event in running:
            event.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(scenario())
