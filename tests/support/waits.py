"""Waiting for a condition in a test: `until` polls until it holds, and fails (never hangs) after a timeout."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def until(
    check: Callable[[], T | Awaitable[T]],
    timeout: float = 10,  # noqa: ASYNC109
    message: str = "condition not met",
    interval: float = 0.02,
) -> T:
    """Wait until `check()` (a plain or an async callable) is truthy and return its value. The timeout is a
    safety net against hanging, not a measured duration: a test that passes never waits for it."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} within {timeout} s")
        await asyncio.sleep(interval)
