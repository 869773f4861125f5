"""Concurrency helpers shared by the runner and the adapters: the in-flight limit with queue positions
(`Gate`), acks before job work (`AcksFirst`), and a token bucket for the platforms' edit rate limits."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Hashable, Mapping

MAX_REMEMBERED_OWNERS = 10_000


class Gate:
    """A limit on API calls in flight, with a fair queue that can tell a waiter its place in it.

    When every slot is taken, the next call to start is taken round-robin across owners (users): the
    waiting owner served longest ago goes next (one never served before anyone served), FIFO within one
    owner. So everyone's first waiting call starts before anyone's second, and a newcomer waits behind at
    most one call of each owner already waiting.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self._lines: dict[Hashable, deque[asyncio.Future[None]]] = {}  # in the order owners began waiting
        self._served: dict[Hashable, int] = {}  # owner -> when they last got a slot (a counter)
        self._clock = 0
        self._queued = 0
        # Every waiting job's ticker asks its position: the order is worked out once per change of the queue
        # (O(waiters + owners log owners)), and each position is then a lookup.
        self._version = 0  # bumped on every enqueue, dequeue and grant
        self._cached_version = -1
        self._positions: dict[asyncio.Future[None], int] = {}
        self._rotation: list[Hashable] = []  # waiting owners, in the order their turns come

    def _changed(self) -> None:
        self._version += 1

    def _turns(self) -> list[Hashable]:
        """Waiting owners in the order their next turns come: the one served longest ago first, those never
        served (in the order they began waiting) before all. Served owners have distinct counters."""
        return sorted(self._lines, key=lambda owner: self._served.get(owner, -1))  # stable: dict order

    def _refresh(self) -> None:
        if self._cached_version == self._version:
            return
        rotation = self._turns()
        positions: dict[asyncio.Future[None], int] = {}
        # Round-robin: each turn an owner takes its next call and goes to the back (it is now the one served
        # most recently), until its line is empty. Taking round k of every owner still waiting in order is
        # the same thing: an owner's k-th call comes in round k, after the earlier owners' k-th calls.
        lines = [self._lines[owner] for owner in rotation]
        n, rounds = 1, 0
        while lines:
            for line in lines:
                positions[line[rounds]] = n
                n += 1
            rounds += 1
            lines = [line for line in lines if len(line) > rounds]
        self._positions = positions
        self._rotation = rotation
        self._cached_version = self._version

    def order(self) -> list[asyncio.Future[None]]:
        """Every waiter, in the order the slots will go to them (if nobody else arrives)."""
        self._refresh()
        return sorted(self._positions, key=self._positions.__getitem__)

    @staticmethod
    def _next(lines: Mapping[Hashable, object], served: Mapping[Hashable, int]) -> Hashable:
        """The waiting owner served longest ago; among those never served, the first to wait."""
        return min(lines, key=lambda owner: served.get(owner, -1))

    def position(self, waiter: asyncio.Future[None] | None) -> int | None:
        """1 for the next call to start; None if `waiter` is not waiting."""
        if waiter is None or waiter.done():
            return None
        self._refresh()
        return self._positions.get(waiter)

    def next_position(self, owner: Hashable) -> int:
        """The position a call of `owner` would get if it started waiting now: after every call of the k
        rounds before its own (k = its calls waiting now), and in round k after the owners ahead of it."""
        self._refresh()
        k = len(self._lines.get(owner, ()))
        ahead = sum(min(len(line), k) for line in self._lines.values())
        if owner in self._lines:
            rank = self._rotation.index(owner)
        else:  # a newcomer's turn: before every owner served after it (never served: behind the others so)
            mine = self._served.get(owner, -1)
            rank = sum(1 for other in self._rotation if self._served.get(other, -1) <= mine)
        ahead += sum(1 for other in self._rotation[:rank] if len(self._lines[other]) > k)
        return ahead + 1

    @property
    def queued(self) -> int:
        return self._queued

    @contextlib.asynccontextmanager
    async def slot(
        self, on_wait: Callable[[asyncio.Future[None]], None], owner: Hashable = None
    ) -> AsyncIterator[None]:
        if self.active < self.limit and not self._lines:
            self.active += 1
            self._serve(owner)
        else:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._lines.setdefault(owner, deque()).append(waiter)
            self._queued += 1
            self._changed()
            on_wait(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._release()  # granted just as we were cancelled
                else:
                    self._forget(owner, waiter)  # a release may have dropped it from its line already
                raise
        try:
            yield
        finally:
            self._release()

    def _serve(self, owner: Hashable) -> None:
        self._changed()
        self._clock += 1
        self._served[owner] = self._clock
        if len(self._served) > MAX_REMEMBERED_OWNERS:  # forget who is not waiting (they count as new again)
            self._served = {o: t for o, t in self._served.items() if o in self._lines or o == owner}

    def _forget(self, owner: Hashable, waiter: asyncio.Future[None]) -> None:
        line = self._lines.get(owner)
        if line is None:
            return
        try:
            line.remove(waiter)
        except ValueError:
            return
        self._queued -= 1
        self._changed()
        if not line:
            del self._lines[owner]

    def _release(self) -> None:
        self.active -= 1
        while self._lines:
            owner = self._next(self._lines, self._served)
            line = self._lines[owner]
            waiter = line.popleft()
            self._queued -= 1
            self._changed()
            if not line:
                del self._lines[owner]
            if not waiter.done():
                self.active += 1
                self._serve(owner)
                waiter.set_result(None)
                break


class Slots:
    """At most `limit` holders at once, served in arrival order (IMAGEBOT_MAX_DOWNLOADS: files downloading).

    Re-entrant within one task: code that already holds a slot (downloading a file and decoding it) and calls
    something that takes one too (the adapter's download) does not take a second one, nor wait for it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._semaphore: asyncio.Semaphore | None = None  # made on first use, on the running loop
        self._mine: contextvars.ContextVar[bool] = contextvars.ContextVar(f"slot-{id(self)}", default=False)

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        if self._mine.get():
            yield
            return
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.limit)
        async with self._semaphore:
            token = self._mine.set(True)
            self.held += 1
            try:
                yield
            finally:
                self.held -= 1
                self._mine.reset(token)


class AcksFirst:
    """Acknowledging a command comes before starting anyone's job.

    A platform drops a command that is not acknowledged within 3 s, while a job's own work can wait a
    few milliseconds. So in a burst of commands, jobs start once every command in it has been
    acknowledged and none has arrived for `quiet` seconds, or after `patience` seconds at most. A burst
    reaches us in bunches (a gateway frame, a few HTTP requests) a few milliseconds apart: a quiet time of
    20 ms keeps job work out of those gaps (Discord's ack p99 for 200 at once: 182 ms with 5 ms, 137 ms).
    """

    def __init__(self, quiet: float = 0.02, patience: float = 0.5) -> None:
        self.quiet = quiet
        self.patience = patience
        self.pending = 0
        self._last = float("-inf")
        self._calm = asyncio.Event()
        self._calm.set()
        self._watcher: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def acking(self) -> AsyncIterator[None]:
        """Around an adapter's ack (or the whole request whose answer is the ack)."""
        self.pending += 1
        self._last = time.monotonic()
        if self._watcher is None or self._watcher.done():
            self._calm.clear()
            self._watcher = asyncio.create_task(self._watch())
        try:
            yield
        finally:
            self.pending -= 1
            self._last = time.monotonic()

    async def calm(self) -> None:
        """Return once no command is waiting for its ack."""
        await self._calm.wait()

    async def _watch(self) -> None:
        give_up = time.monotonic() + self.patience
        while time.monotonic() < give_up:
            if self.pending == 0 and time.monotonic() - self._last >= self.quiet:
                break
            await asyncio.sleep(self.quiet)
        self._calm.set()


class TokenBucket:
    """`per_second` tokens a second, at most `burst` saved up.

    Progress ticks use `take()` and are skipped when the bucket is empty (the next tick catches up);
    updates that must land (a final line) use `wait()`, which queues behind earlier callers.
    """

    def __init__(self, per_second: float, burst: int) -> None:
        self.rate = per_second
        self.capacity = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self) -> bool:
        """Take a token if one is there now."""
        self._refill()
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    async def wait(self) -> None:
        """Take a token even if that means waiting for it (the bucket may go into debt)."""
        self._refill()
        self.tokens -= 1
        if self.tokens < 0:
            await asyncio.sleep(-self.tokens / self.rate)
