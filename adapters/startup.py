"""A start-up call that rides out an outage: the database (adapters/service.py), Slack's auth.test and Socket
Mode address (adapters/slack/client.py), Discord's login (adapters/discord/client.py).

The rule, the same for each: the call is made again and again, with a pause that doubles from 0.5 s up to 15 s,
while what it fails with is an outage (no DNS, connection refused, a 5xx, a database that does not answer);
each failed attempt is one log line and a word for /readyz (the caller's `retrying`). What says the
configuration itself is wrong (a refused token or password) is fatal: the caller's `outage` raises a ConfigError
(one line, exit 2). Anything else is a bug, raised as it is. This module imports nothing of the adapters, so
the service and the adapters it builds both use it."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp

T = TypeVar("T")
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 15.0  # seconds between start-up attempts: doubling, capped


class Stopped(Exception):
    """`stop` was set while a start-up call waited to be tried again."""


def next_delay(attempt: int) -> float:
    """The pause after failed attempt `attempt` (1, 2, ...): 0.5, 1, 2, 4 ... 15, 15 s."""
    return min(BACKOFF_FIRST * 2 ** max(attempt - 1, 0), BACKOFF_MAX)


def unreachable(exc: Exception, prefix: str = "") -> str | None:
    """The words for a call that got no answer (no DNS, connection refused or reset, timed out): `prefix`, the
    kind of failure and its message on one line, at most 300 characters; None for any other failure."""
    if isinstance(exc, aiohttp.ClientError | OSError | TimeoutError):
        return f"{prefix}{type(exc).__name__}: {' '.join(str(exc).split())}"[:300]
    return None


async def until_up(
    call: Callable[[], Awaitable[T]],
    outage: Callable[[Exception], str | None],
    retrying: Callable[[str, int, float], Awaitable[None] | None],
    *,
    stop: asyncio.Event | None = None,
) -> T:
    """`call()` until it answers. A failure goes to `outage(exc)`: the reason to try again (a few words), None
    when it is no outage (the failure is raised as it is), or it raises ConfigError itself (fatal). Then
    `retrying(reason, attempt, delay)` (sync or async: a log line, /readyz's word, any clean-up) and a pause of
    `delay` seconds; with `stop`, a `stop` set during the pause raises Stopped."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except Exception as exc:
            reason = outage(exc)
            if reason is None:
                raise
        delay = next_delay(attempt)
        told = retrying(reason, attempt, delay)
        if inspect.isawaitable(told):
            await told
        if stop is None:
            await asyncio.sleep(delay)
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
            raise Stopped
