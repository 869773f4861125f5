"""Concurrency helpers shared by the runner and the adapters: the in-flight limit with queue positions
(`Gate`), acks before job work (`AcksFirst`), and a token bucket for the platforms' edit rate limits."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable


class Gate:
    """A FIFO limit on API calls in flight that can tell a waiter its place in the queue."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    def position(self, waiter: asyncio.Future[None] | None) -> int | None:
        if waiter is None or waiter.done():
            return None
        try:
            return self._waiters.index(waiter) + 1
        except ValueError:
            return None

    @property
    def queued(self) -> int:
        return len(self._waiters)

    @contextlib.asynccontextmanager
    async def slot(self, on_wait: Callable[[asyncio.Future[None]], None]) -> AsyncIterator[None]:
        if self.active < self.limit and not self._waiters:
            self.active += 1
        else:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            on_wait(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._release()  # granted just as we were cancelled
                else:
                    # A release may have dropped our cancelled waiter from the queue already.
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(waiter)
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        self.active -= 1
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.active += 1
                waiter.set_result(None)
                break


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
