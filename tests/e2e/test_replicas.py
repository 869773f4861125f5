"""Two `imagebot run` replicas on one PostgreSQL server (docs/rules.md §12), as real processes behind no load balancer
but the test itself: a quota shared exactly, a Slack retry deduplicated across replicas, and a replica killed
mid-render whose job the other recovers once the lease expires, telling the user."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.offline import OfflineImageServer
from tests import dbs
from tests.fakes.slack import FakeSlack
from tests.support.offline import offline_server
from tests.support.processes import BotProcess
from tests.support.waits import until


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def openai() -> AsyncIterator[OfflineImageServer]:
    """One image API for both replicas (as OpenAI is), so its calls can be counted."""
    async with offline_server(latency=0.3) as server:
        yield server


def replica(tmp: Path, slack: FakeSlack, openai: OfflineImageServer, db: str, **env: str) -> BotProcess:
    return BotProcess(
        tmp,
        slack,
        IMAGEBOT_DB=db,
        IMAGEBOT_OFFLINE="0",
        OPENAI_BASE_URL=openai.base_url,
        IMAGEBOT_CONFIRM_USD="off",
        IMAGEBOT_USER_MAX_JOBS="20",
        **env,
    )


async def test_two_replicas_share_quota_dedupe_and_recover_each_other(
    slack: FakeSlack, openai: OfflineImageServer, pg_url: str, tmp_path: Path
) -> None:
    env = {"IMAGEBOT_USER_DAILY_IMAGES": "3", "IMAGEBOT_LEASE_SECONDS": "2"}
    a = replica(tmp_path / "a", slack, openai, pg_url, **env)
    b = replica(tmp_path / "b", slack, openai, pg_url, **env)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    await asyncio.gather(a.start(), b.start())
    rows = lambda: dbs.read(pg_url, "SELECT * FROM ledger ORDER BY id")  # noqa: E731
    try:
        # 10 simultaneous /imagine from one user, split between the replicas, under a daily limit of 3.
        await asyncio.gather(
            *(
                slack.send_slash_command(
                    f"{(a if i % 2 else b).url}/slack/events", text=f"fox {i} --quality low"
                )
                for i in range(10)
            )
        )
        await until(lambda: len(rows()) == 3 and all(r["status"] == "delivered" for r in rows()), timeout=30)
        # Every command has had its answer: 3 images, and 7 private refusals naming the daily limit.
        await until(
            lambda: len([e for e in slack.ephemerals if "daily images" in e["text"]]) == 7, timeout=30
        )
        # Which replica won each of the 3 places is a race (both answered 5 commands); the rest of the test
        # has each serve a job for certain.
        assert len(openai.calls) == 3 and len(rows()) == 3

        # A Slack retry of one event delivered to the other replica makes one job.
        event = slack.message_event(text="a lighthouse --quality low", mention=True, user="U2")
        assert (await slack.send_event(f"{a.url}/slack/events", event, event_id="EvR"))[0] == 200
        status, _ = await slack.send_event(
            f"{b.url}/slack/events", event, event_id="EvR", retry_num=1, retry_reason="http_timeout"
        )
        assert status == 200
        await until(lambda: len([r for r in rows() if r["user"] == "U2"]) == 1, timeout=30)
        await until(lambda: all(r["status"] == "delivered" for r in rows()), timeout=30)
        # A later event to the replica that got the retry, rendered to the end: it has handled the retry too.
        marker = slack.message_event(text="a marker --quality low", mention=True, user="U4")
        assert (await slack.send_event(f"{b.url}/slack/events", marker, event_id="EvM"))[0] == 200
        await until(
            lambda: [r for r in rows() if r["user"] == "U4" and r["status"] == "delivered"], timeout=30
        )
        assert len([r for r in rows() if r["user"] == "U2"]) == 1 and len(openai.calls) == 5  # 4 + the marker

        # kill -9 of one replica mid-render: the other recovers its job once the lease expires, and says so.
        openai.latency = 60
        await slack.send_slash_command(f"{a.url}/slack/events", text="a slow one --quality low", user_id="U3")
        await until(lambda: any(r["user"] == "U3" and r["status"] == "running" for r in rows()), timeout=30)
        assert await a.stop(signal.SIGKILL) == -signal.SIGKILL
        [job] = await until(
            lambda: [r for r in rows() if r["user"] == "U3" and r["status"] == "interrupted"], timeout=30
        )
        assert (
            job["actual_micros"] == job["reserved_micros"]
        )  # its call had started: charged as possibly billed
        told = await until(
            lambda: [
                c for c in slack.calls_to("chat.postMessage") if "interrupted" in str(c.args.get("text"))
            ],
            timeout=30,
        )
        assert "<@U3>" in told[-1].args["text"]
        counters = dbs.tuples(
            pg_url, "SELECT scope, key, period, micros, images FROM counters WHERE scope='user_day'"
        )
        by_user = {key: (int(m), int(n)) for _, key, _, m, n in counters}
        assert by_user["slack:T0001:U1"][1] == 3
    finally:
        for bot in (a, b):
            if bot.proc is not None and bot.proc.poll() is None:
                await bot.stop(signal.SIGKILL)
