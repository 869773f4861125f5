"""Background tasks an adapter starts and does not await (Slack's work after an ack, Discord's record of an
interaction id): kept until they end, so that none is collected mid-way, and a failure is logged, never lost."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterator
from typing import Any


class Tasks:
    """A set of running tasks; a task that failed is logged on `log` at `level` with `failed` as the message."""

    def __init__(self, log: logging.Logger, failed: str, level: int = logging.ERROR) -> None:
        self.log, self.failed, self.level = log, failed, level
        self._running: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._running.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.log(self.level, self.failed, exc_info=task.exception())

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(set(self._running))

    def __len__(self) -> int:
        return len(self._running)
