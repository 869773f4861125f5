"""The core tests' shared pieces: requesters, recording views (what an adapter would show), the `make_core`
fixture (a Core against the offline image server, on the store `db_target` names) and the ledger checks."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any

import pytest

from adapters.mentions import read_admin
from bot import commands
from bot.app import Core
from bot.config import Settings
from bot.jobs.outcomes import JobFailure, JobResult, Progress
from bot.model.pricing import Usage
from bot.model.request import Requester
from bot.policy import quota
from tests import dbs

ALICE = Requester("slack", "W1", "C1", "U1")


BOB = Requester("slack", "W1", "C1", "U2")


class RecordingView:
    """The adapter side of a job: records every callback."""

    def __init__(self) -> None:
        self.ticks: list[Progress] = []
        self.delivered: list[JobResult] = []
        self.failures: list[JobFailure] = []

    async def progress(self, progress: Progress) -> None:
        self.ticks.append(progress)

    async def deliver(self, result: JobResult) -> None:
        self.delivered.append(result)

    async def failed(self, failure: JobFailure) -> None:
        self.failures.append(failure)


MakeCore = Callable[..., Awaitable[Core]]


def offline_settings(db: str, **env: str) -> Settings:
    """A test core's settings: the store `db`, the offline image server with short latency, progress and API
    timeout, then `env` (IMAGEBOT_... names) on top; no env file is read."""
    environ = {
        "IMAGEBOT_DB": db,
        "IMAGEBOT_OFFLINE": "1",
        "IMAGEBOT_OFFLINE_LATENCY": "0.05",
        "IMAGEBOT_PROGRESS_INTERVAL": "0.05",
        "IMAGEBOT_API_TIMEOUT": "1",
        **env,
    }
    return Settings.load(environ=environ, env_file=None)


@pytest.fixture
async def make_core(db_target: str) -> AsyncIterator[MakeCore]:
    """Cores on one store: a SQLite file, or (for the modules tests/core/conftest.py names) PostgreSQL too."""
    cores: list[Core] = []

    async def make(**env: str) -> Core:
        core = await Core.start(offline_settings(db_target, **env))
        cores.append(core)
        return core

    yield make
    for core in cores:
        await core.close()


def rows(core: Core, where: str = "1=1", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    return dbs.read(core.settings.db_path, f"SELECT * FROM ledger WHERE {where} ORDER BY id", params)


def counters(core: Core) -> dict[tuple[str, str, str], tuple[int, int]]:
    found = dbs.tuples(core.settings.db_path, "SELECT scope, key, period, micros, images FROM counters")
    return {(s, k, p): (int(m), int(n)) for s, k, p, m, n in found}


def user_day(core: Core, who: Requester = ALICE) -> tuple[int, int]:
    """(micros, images) of `who`'s counter for today."""
    periods = quota.Periods.at(core.ledger.clock(), core.ledger.timezone)
    key = quota.counter_keys(who, periods.day, periods.month)[0]
    return counters(core).get(key, (0, 0))


def assert_counters_match_ledger(core: Core) -> None:
    """Every counter equals the SQL sum over the ledger (open rows: reserved; closed rows: actual)."""
    expected: dict[tuple[str, str, str], tuple[int, int]] = {}
    for row in rows(core):
        is_open = row["status"] in ("reserved", "running")
        micros = row["reserved_micros"] if is_open else row["actual_micros"]
        images = 1 if is_open or row["status"] in ("rendered", "delivered", "undelivered") else 0
        who = Requester(row["platform"], row["workspace"], row["channel"], row["user"])
        for key in quota.counter_keys(who, row["day"], row["month"]):
            old = expected.get(key, (0, 0))
            expected[key] = (old[0] + micros, old[1] + images)
    assert {k: v for k, v in counters(core).items() if v != (0, 0)} == {
        k: v for k, v in expected.items() if v != (0, 0)
    }


def expected_usage(core: Core, call_index: int) -> Usage:
    """What the offline server billed for one of its calls, from what it recorded about the call."""
    call = core.offline_server.calls[call_index]  # type: ignore[union-attr]
    prices = core.prices.model(call.model or "gpt-image-2")
    size = "1024x1024" if call.size in (None, "auto") else call.size  # `auto` renders the 1K square
    width, height = (int(n) for n in size.split("x"))
    quality = "medium" if call.quality in (None, "auto") else call.quality  # what `auto` renders as
    output = (
        prices.image_output_tokens(width, height, quality)
        + call.partial_images * prices.partial_image_output_tokens
    )
    return Usage(text_tokens=math.ceil(len(call.prompt or "") / 4), output_tokens=output)


class ActionsView:
    """A platform that can show buttons and ask before expensive renders; records everything."""

    previews = False

    def __init__(self, confirms: bool = True) -> None:
        self.confirms = confirms
        self.delivered: list[JobResult] = []
        self.failures: list[JobFailure] = []
        self.refusals: list[str] = []
        self.questions: list[tuple[str, str]] = []

    async def open(self, first: Progress) -> dict[str, Any]:
        return {}

    async def progress(self, progress: Progress) -> None:
        pass

    async def deliver(self, result: JobResult) -> list[dict[str, Any]]:
        self.delivered.append(result)
        return [{"job": result.job_id, "n": n} for n in range(len(result.images))]

    async def failed(self, failure: JobFailure) -> None:
        self.failures.append(failure)

    async def refused(self, text: str) -> None:
        self.refusals.append(text)

    async def confirm(self, text: str, token: str) -> None:
        self.questions.append((text, token))


class Store:
    """The platform's copies of posted images, by `where`."""

    def __init__(self) -> None:
        self.images: dict[tuple[str, int], bytes] = {}
        self.deleted: list[dict[str, Any]] = []

    def keep(self, result: JobResult) -> None:
        for n, image in enumerate(result.images):
            self.images[(result.job_id, n)] = image.data

    async def fetch(self, where: dict[str, Any]) -> bytes:
        return self.images[(where["job"], where["n"])]

    async def delete(self, where: dict[str, Any]) -> None:
        self.deleted.append(where)


ADMIN = Requester("slack", "W1", "C1", "UADMIN")


class AccessView(ActionsView):
    """ActionsView without price checks; `admin` and `groups` are what the platform says."""

    def __init__(self, *, admin: bool = False, groups: Collection[str] = ()) -> None:
        super().__init__(confirms=False)
        self.admin = admin
        self.groups = set(groups)
        self.opened: list[Progress] = []
        self.asked: list[Collection[str]] = []

    async def open(self, first: Progress) -> dict[str, Any]:
        self.opened.append(first)
        return {}

    async def confirm(self, text: str, token: str) -> None:
        raise AssertionError("no price check in these tests")

    async def platform_admin(self) -> bool:
        return self.admin

    async def member_of(self, groups: Collection[str]) -> bool:
        self.asked.append(groups)
        return not self.groups.isdisjoint(groups)


async def admin_chat(
    core: Core, who: Requester, text: str, *, platform_admin: bool, operator: bool | None = None
) -> commands.Reply:
    """`/imagine-admin <text>` as the chat adapters run it: read as `who`'s platform writes it, then the core."""
    return await commands.admin(
        core, who, read_admin(text, who.platform), platform_admin=platform_admin, operator=operator
    )


async def run_job(
    core: Core, text: str, who: Requester = ALICE, *, fault: str | None = None
) -> tuple[JobResult | JobFailure, RecordingView]:
    """`text` prepared and run by the core's JobRunner for `who` (with `fault` queued on the offline server
    first): the outcome, and the view that recorded what the user was shown."""
    if fault is not None:
        assert core.offline_server is not None
        core.offline_server.push_faults(fault)
    view = RecordingView()
    job = await core.runner.prepare(core.parse(text), who)
    return await core.runner.execute(job, view), view
