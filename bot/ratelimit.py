"""A token bucket for the platforms' message-edit rate limits, shared by every job of an adapter."""

from __future__ import annotations

import asyncio
import time


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
