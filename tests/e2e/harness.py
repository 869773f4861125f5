"""Run the real bot (core + adapters + HTTP server) in-process against loopback fakes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from adapters.discord import DiscordAdapter
from adapters.service import Service, build_adapters, serve
from bot.app import Core
from bot.config import Settings
from bot.model.pricing import Usage, cost_micros, load_prices
from bot.offline import OfflineImageServer
from tests.fakes.slack import FakeSlack
from tests.support.waits import until


class RunningBot:
    def __init__(self, core: Core, adapters: dict[str, Any], port: int, server: OfflineImageServer) -> None:
        self.core = core
        self.adapters = adapters
        self.port = port
        self.server = server  # the offline image server: `.calls`, `.push_faults`, `.latency`

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def events_url(self) -> str:
        return f"{self.url}/slack/events"

    async def ledger(self, where: str = "1=1", params: list[Any] | None = None) -> list[dict[str, Any]]:
        rows = await self.core.ledger.query(f"SELECT * FROM ledger WHERE {where} ORDER BY id", params)
        columns = [c[1] for c in await self.core.ledger.query("PRAGMA table_info(ledger)")]
        return [dict(zip(columns, row, strict=True)) for row in rows]

    async def wait_rows(
        self,
        check: Callable[[list[dict[str, Any]]], bool],
        timeout: float = 15,  # noqa: ASYNC109
    ) -> list[dict[str, Any]]:
        """Wait until `check(rows)` holds for the ledger rows (in id order); return them."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            rows = await self.ledger()
            if rows and check(rows):
                return rows
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"ledger rows never matched: {rows}")
            await asyncio.sleep(0.05)

    async def settled(self, count: int = 1, timeout: float = 15) -> list[dict[str, Any]]:  # noqa: ASYNC109
        """Wait until `count` ledger rows are closed (not reserved/running); return all rows."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            rows = await self.ledger()
            closed = [
                r for r in rows if r["status"] not in ("reserved", "running", "rendered")
            ]  # rendered: on its way
            if len(closed) >= count and len(closed) == len(rows):
                return rows
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"ledger not settled: {rows}")
            await asyncio.sleep(0.05)

    def work(self) -> set[asyncio.Task[Any]]:
        """The work the adapters have spawned after their acks and not finished yet (the Slack adapter keeps
        it in `tasks`): take it before a request, then `idle(since=...)` waits for what that request set off."""
        return {task for adapter in self.adapters.values() for task in getattr(adapter, "tasks", ())}

    async def idle(self, timeout: float = 15, *, since: set[asyncio.Task[Any]] | None = None) -> None:  # noqa: ASYNC109
        """Wait for a deterministic drain: every piece of work an adapter spawned after an ack has ended (only
        what was spawned after the `since` snapshot, if given), and, without `since`, no job runs in the runner
        or waits for its slot and no ledger row is open (reserved, running, rendered). A negative check waits
        for its positive signal (what the user was told), then for this, then checks that nothing else
        happened: whatever the request set off has finished, and shows, by then."""
        runner = self.core.runner

        async def drained() -> bool:
            if self.work() - (since or set()):
                return False
            if since is not None:
                return True
            if any(job.task is not None and not job.task.done() for job in list(runner.jobs.values())):
                return False
            if runner.gate.active or runner.gate.queued:
                return False
            return not await self.ledger("status IN ('reserved', 'running', 'rendered')")

        await until(drained, timeout, "the bot never went idle", interval=0.01)


@contextlib.asynccontextmanager
async def running_bot(
    tmp_path: Path, env: dict[str, str], *, latency: float = 0.2, server: OfflineImageServer | None = None
) -> AsyncIterator[RunningBot]:
    """Start core + adapters + HTTP server with `env` (docs/rules.md §7 names) over test defaults. `server`: an offline
    image server that outlives this bot (as OpenAI outlives a restart); else one of its own."""
    base = {
        "IMAGEBOT_DB": str(tmp_path / "imagebot.sqlite3"),
        "IMAGEBOT_OFFLINE": "1",
        "IMAGEBOT_HTTP_HOST": "127.0.0.1",
        # Any free port, taken when the server opens (adapters/service.py `Service.port`): a port picked free
        # beforehand can be taken by another worker's connection before the bot binds it.
        "IMAGEBOT_HTTP_PORT": "0",
        "IMAGEBOT_PROGRESS_INTERVAL": "0.1",
        "IMAGEBOT_API_TIMEOUT": "5",
        "IMAGEBOT_SHUTDOWN_GRACE": "2",
        "IMAGEBOT_CONFIRM_USD": "off",  # the price check has its own tests; elsewhere renders go straight on
    }
    base.update(env)
    settings = Settings.load(environ=base, env_file=None)
    own = server is None
    if server is None:
        server = OfflineImageServer(latency=latency, batch_latency=settings.offline_batch_latency)
        await server.start()
    service = Service(settings)  # listening first, as `imagebot run` does
    await service.open()
    # A platform that keeps failing an upload is retried for 10 minutes in production; here for 2 s.
    core = await Core.start(settings, offline_server=server, delivery_backoff=0.05, delivery_deadline=2.0)
    # discord.py calls the bot ready 2 s after the last guild arrives; the fake sends all of them at once.
    DiscordAdapter.guild_ready_timeout = 0.05
    adapters = build_adapters(core)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve(core, adapters, stop, ready, service=service))
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait([task, waiter], timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    try:
        yield RunningBot(core, adapters, service.port, server)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await service.close()
        await core.close()
        if own:
            await server.stop()


def socket_env(fake: FakeSlack, **extra: str) -> dict[str, str]:
    """The names that point the bot at a fake Slack in Socket Mode (no signing secret: a socket app has none)."""
    return {
        "SLACK_BOT_TOKEN": fake.bot_token,
        "SLACK_APP_TOKEN": fake.app_token,
        "SLACK_API_URL": fake.api_url,
        **extra,
    }


def slack_env(fake: FakeSlack, **extra: str) -> dict[str, str]:
    """The docs/rules.md §7 names that point the bot at a fake Slack in HTTP mode."""
    return {
        "SLACK_BOT_TOKEN": fake.bot_token,
        "SLACK_SIGNING_SECRET": fake.signing_secret,
        "SLACK_API_URL": fake.api_url,
        **extra,
    }


# Every fault the offline server offers -> (final status, charge: "usage" | "estimate" | "usage+estimate" |
# "zero", attempts, words the user sees). One budget covers every HTTP attempt, a broken stream's re-try
# included; every attempt that may have been billed without an image is charged at the estimate, and the
# reservation is extended by one estimate before each retry that follows one. The words for "drop*" depend on
# whether the adapter streams (Discord, for previews) or not (Slack): see each adapter's fault test. One line a
# fault: the fault, the final status, the charge, the attempts, the words.
FAULT_MATRIX = {
    fault: (status, charge, int(attempts), words)
    for fault, status, charge, attempts, words in (
        line.split(maxsplit=4)
        for line in """
500        delivered       usage          2  request id req_
500*       failed          zero           3  HTTP 500
503*       failed          zero           3  HTTP 503
429:1      delivered       usage          2  request id req_
429:1*     failed          zero           3  rate limiting
hang       delivered       usage+estimate 2  request id req_
hang*      possibly_billed estimate       3  did not answer
drop       delivered       usage+estimate 2  request id req_
drop*      possibly_billed estimate       3  connection
moderation failed          zero           1  safety system
garbage    possibly_billed estimate       1  not an image
408        delivered       usage          2  request id req_
409        failed          zero           1  HTTP 409
""".strip().splitlines()
    )
}


def expected_charge(row: dict[str, Any], charge: str) -> int:
    """What a fault-matrix row should have cost: `usage` (its tokens), `estimate` (every attempt possibly billed:
    its whole reservation, extended before each retry), `usage+estimate` (an image plus one lost attempt: the
    reservation was extended once, to two estimates) or `zero`."""
    usage = (
        cost_micros(
            load_prices().model(row["model"]),
            Usage(
                text_tokens=row["text_tokens"] or 0,
                image_tokens=row["image_tokens"] or 0,
                output_tokens=row["output_tokens"] or 0,
            ),
        )
        if row["output_tokens"]
        else 0
    )
    return {
        "usage": usage,
        "estimate": row["reserved_micros"],
        "usage+estimate": usage + row["reserved_micros"] // 2,
        "zero": 0,
    }[charge]
