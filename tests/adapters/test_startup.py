"""The start-up retry every adapter and the service share (adapters/startup.py), with plain calls: an outage is
tried again after a doubling pause, told once per attempt; a refused configuration is fatal at once; a bug is
raised as it is; a stop ends the wait. And the background tasks an adapter keeps (adapters/tasks.py)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from adapters import startup
from adapters.startup import Stopped, next_delay, unreachable, until_up
from adapters.tasks import Tasks
from bot.errors import ConfigError


def test_the_pause_doubles_from_half_a_second_up_to_15_seconds() -> None:
    assert [next_delay(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 15, 15, 15]


def test_no_answer_is_told_on_one_line_and_anything_else_is_not_an_outage() -> None:
    said = unreachable(ConnectionRefusedError("refused\n  by the host"), "auth.test failed: ")
    assert said == "auth.test failed: ConnectionRefusedError: refused by the host"
    assert unreachable(TimeoutError()) == "TimeoutError: " and unreachable(KeyError("bug")) is None
    assert len(unreachable(OSError("x" * 1000)) or "") == 300


class Flaky:
    """A call that fails with `errors` in turn, then answers "up"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors, self.calls = list(errors), 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "up"


def outage(exc: Exception) -> str | None:
    if isinstance(exc, PermissionError):
        raise ConfigError("TOKEN was refused") from None
    return f"no answer: {exc}" if isinstance(exc, ConnectionError) else None


async def test_an_outage_is_retried_and_told_once_per_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(startup, "BACKOFF_FIRST", 0.01)
    told: list[tuple[str, int, float]] = []

    async def retrying(reason: str, attempt: int, delay: float) -> None:
        told.append((reason, attempt, delay))

    call = Flaky(ConnectionError("a"), ConnectionError("b"))
    assert await until_up(call, outage, retrying) == "up"
    assert call.calls == 3 and told == [("no answer: a", 1, 0.01), ("no answer: b", 2, 0.02)]


async def test_a_refused_configuration_is_fatal_and_a_bug_is_raised_as_it_is() -> None:
    told: list[str] = []
    call = Flaky(PermissionError("401"))
    with pytest.raises(ConfigError, match="TOKEN was refused"):
        await until_up(call, outage, lambda reason, *_: told.append(reason))
    with pytest.raises(KeyError):
        await until_up(Flaky(KeyError("bug")), outage, lambda reason, *_: told.append(reason))
    assert call.calls == 1 and told == []


async def test_a_stop_during_the_pause_ends_the_wait() -> None:
    stop = asyncio.Event()
    call = Flaky(*[ConnectionError("down")] * 10)
    with pytest.raises(Stopped):
        await until_up(call, outage, lambda *_: stop.set(), stop=stop)
    assert call.calls == 1


async def test_a_background_task_is_kept_until_it_ends_and_its_failure_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks = Tasks(logging.getLogger("imagebot.test"), "test task failed", logging.WARNING)

    async def fail() -> None:
        raise RuntimeError("boom")

    done = asyncio.Event()

    async def finish() -> None:
        done.set()

    failing, fine = tasks.spawn(fail()), tasks.spawn(finish())
    assert len(tasks) == 2
    await asyncio.wait([failing, fine])
    await asyncio.sleep(0)  # the done callbacks run on the next turn of the loop
    assert len(tasks) == 0 and done.is_set()
    [record] = [r for r in caplog.records if r.getMessage() == "test task failed"]
    # Its traceback goes with it: as exc_info, or as exc_text once a secret filter has scrubbed it (bot/logs.py;
    # installed by any earlier test in this process that set up logging with secrets).
    assert record.levelno == logging.WARNING and "RuntimeError: boom" in caplog.text
