"""Relax mode end to end on Slack (docs/rules.md §11): the real bolt app in HTTP mode, the fake Slack, the offline
server's Files and Batch APIs through the OpenAI SDK. Two users' relax jobs go in one batch and land in their
own threads once each, settled at the batch price; a bot restarted while its batch runs still delivers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bot.app import Core
from bot.config import Settings
from bot.model.pricing import Usage, batch_price, cost_micros, format_usd, load_prices
from bot.offline import OfflineImageServer
from tests.e2e.harness import RunningBot, running_bot, slack_env
from tests.fakes.slack import FakeSlack
from tests.support.core import AccessView as View
from tests.support.processes import environment
from tests.support.processes import start as start_cli
from tests.support.slack import a_later_relax_job_delivered, job_messages
from tests.support.waits import until

RELAX_ENV = {
    "IMAGEBOT_BATCH_WINDOW": "0.3",
    "IMAGEBOT_BATCH_POLL": "0.1",
    "IMAGEBOT_OFFLINE_BATCH_LATENCY": "0.5",
}


def uploads_in(slack: FakeSlack, thread: str) -> list[dict[str, Any]]:
    return [m for m in slack.messages.get("C1", []) if m.get("files") and m.get("thread_ts") == thread]


async def ledger(bot: RunningBot | Core) -> list[dict[str, Any]]:
    columns = "user mode status reserved_micros actual_micros text_tokens image_tokens output_tokens".split()
    core = bot if isinstance(bot, Core) else bot.core
    found = await core.ledger.query(f"SELECT {', '.join(columns)} FROM ledger ORDER BY id")
    return [dict(zip(columns, row, strict=True)) for row in found]


async def sent_to_the_batch_api(slack: FakeSlack, bot: RunningBot, prompt: str) -> dict[str, Any]:
    """/imagine `prompt` --relax (the cheapest image), once its job message says its batch was sent: that
    message."""
    await slack.send_slash_command(bot.events_url, text=f"{prompt} --relax --size 1024x1024 --quality low")
    [job] = await until(lambda: job_messages(slack))
    await until(lambda: "sent to the Batch API" in str(slack.messages.get("C1")), timeout=10)
    return job


async def test_two_users_relax_jobs_share_a_batch_and_land_in_their_own_threads(
    slack: FakeSlack, tmp_path: Path
) -> None:
    async with running_bot(tmp_path, slack_env(slack, **RELAX_ENV), latency=0.05) as bot:
        await slack.send_slash_command(
            bot.events_url, text="a fox --relax --size 1024x1024 --quality low", user_id="U1"
        )
        await slack.send_slash_command(
            bot.events_url, text="a crow --relax --size 1024x1024 --quality low", user_id="U2"
        )
        posted = await until(lambda: job_messages(slack)[1:2] and job_messages(slack))
        # Who asked, read now: the job message later becomes its done line, which need not repeat the prompt.
        threads = {m["ts"]: "U1" if "fox" in str(m) else "U2" for m in posted}
        assert len(threads) == 2
        await until(lambda: all(uploads_in(slack, ts) for ts in threads), timeout=15)
        await until(lambda: "relax, half price" in str([uploads_in(slack, ts) for ts in threads]))
        server = bot.server
        assert sum(1 for m, p in server.batch_calls if (m, p) == ("POST", "/v1/batches")) == 1
        assert server.calls == []
        rows = await ledger(bot)
        prices = load_prices().model("gpt-image-2")
        assert sorted(r["user"] for r in rows) == ["U1", "U2"]
        for row in rows:
            usage = Usage(row["text_tokens"], row["image_tokens"], row["output_tokens"])
            assert row["mode"] == "relax" and row["status"] == "delivered"
            assert row["actual_micros"] == batch_price(cost_micros(prices, usage), prices)
        assert sorted(threads.values()) == ["U1", "U2"]
        for ts, owner in threads.items():  # each user's image in their own job's thread, once
            [upload] = uploads_in(slack, ts)
            assert f"<@{owner}>" in str(upload)
        await until(lambda: all("relax" in str(slack.thread("C1", ts)) for ts in threads))


async def test_a_bot_restarted_while_its_batch_runs_delivers_once(slack: FakeSlack, tmp_path: Path) -> None:
    env = slack_env(slack, **RELAX_ENV)
    openai = OfflineImageServer(latency=0.05, batch_latency=2.0)  # OpenAI outlives the bot's restart
    await openai.start()
    try:
        async with running_bot(tmp_path, env, server=openai) as first:
            job = await sent_to_the_batch_api(slack, first, "a lighthouse")
        assert not uploads_in(slack, job["ts"])  # it went away mid-batch
        async with running_bot(tmp_path, env, server=openai) as second:
            await until(lambda: uploads_in(slack, job["ts"]), timeout=20)
            rows = await ledger(second)
            assert [(r["status"], r["mode"]) for r in rows] == [("delivered", "relax")]
            await a_later_relax_job_delivered(slack, second)  # more polls: still one delivery
        assert len(uploads_in(slack, job["ts"])) == 1
        # One batch for the job (never sent again after the restart), one for the marker.
        assert sum(1 for m, p in openai.batch_calls if (m, p) == ("POST", "/v1/batches")) == 2
    finally:
        await openai.stop()


def gets_of(server: OfflineImageServer, batch_id: str) -> int:
    return sum(1 for call in server.batch_calls if call == ("GET", f"/v1/batches/{batch_id}"))


async def test_a_lost_answer_to_the_batch_creation_still_lands_in_the_thread(
    slack: FakeSlack, tmp_path: Path
) -> None:
    """OpenAI creates the batch but the answer to POST /v1/batches is lost: the bot finds the batch by the key
    in its metadata and delivers the image (it used to release the job while the batch ran and was billed)."""
    openai = OfflineImageServer(latency=0.05, batch_latency=0.5, faults="batch_dropped")
    await openai.start()
    try:
        async with running_bot(tmp_path, slack_env(slack, **RELAX_ENV), server=openai) as bot:
            await slack.send_slash_command(
                bot.events_url, text="a fox --relax --size 1024x1024 --quality low"
            )
            [job] = await until(lambda: job_messages(slack))
            await until(lambda: uploads_in(slack, job["ts"]), timeout=15)
            rows = await ledger(bot)
            assert [(r["status"], r["mode"]) for r in rows] == [("delivered", "relax")]
            [batch_id] = openai.batch_api.batches
            stored = await bot.core.ledger.query("SELECT id, status FROM batches")
            assert [tuple(r) for r in stored] == [(batch_id, "completed")]
        assert sum(1 for m, p in openai.batch_calls if (m, p) == ("POST", "/v1/batches")) == 1
        assert "Nothing was charged" not in str(slack.messages.get("C1"))
    finally:
        await openai.stop()


async def test_a_batch_lost_with_a_restart_of_the_api_is_told_once_and_never_polled_again(
    slack: FakeSlack, tmp_path: Path
) -> None:
    """The bot goes down mid-batch and the (offline) API restarts too, forgetting the batch: the next bot gets
    404, settles the job from what it knows (charged its reservation as possibly billed at the batch price,
    the user told in the thread with the batch id), and no later process asks for that batch again."""
    env = slack_env(slack, **RELAX_ENV)
    before = OfflineImageServer(latency=0.05, batch_latency=30.0)
    await before.start()
    try:
        async with running_bot(tmp_path, env, server=before) as first:
            job = await sent_to_the_batch_api(slack, first, "a fox")
        [batch_id] = before.batch_api.batches
    finally:
        await before.stop()
    after = OfflineImageServer(latency=0.05, batch_latency=0.5)  # a new API process: it never heard of it
    await after.start()
    try:
        async with running_bot(tmp_path, env, server=after) as second:
            await until(lambda: [m for m in slack.thread("C1", job["ts"]) if batch_id in str(m)], timeout=15)
            await second.idle()  # the notice and the job message's own edit both name the batch: both sent
            told = [m for m in slack.thread("C1", job["ts"]) if batch_id in str(m)]
            [row] = await ledger(second)
            assert row["status"] == "possibly_billed" and row["actual_micros"] == row["reserved_micros"] > 0
            assert "may have been billed" in str(told) and format_usd(row["reserved_micros"]) in str(told)
            assert not uploads_in(slack, job["ts"])
            seen = gets_of(after, batch_id)
            assert seen == 1
        async with running_bot(tmp_path, env, server=after) as third:  # a later process: not polled again
            await slack.send_slash_command(
                third.events_url, text="a crow --relax --size 1024x1024 --quality low"
            )
            crow = await until(lambda: job_messages(slack)[1:2])
            await until(lambda: uploads_in(slack, crow[0]["ts"]), timeout=15)
        assert gets_of(after, batch_id) == seen
        assert len([m for m in slack.thread("C1", job["ts"]) if batch_id in str(m)]) == len(told)  # told once
    finally:
        await after.stop()


async def test_a_process_killed_while_sending_its_batch_leaves_it_to_the_next_one(tmp_path: Path) -> None:
    """`imagebot imagine --relax` is killed (-9) while the answer to POST /v1/batches is on its way: OpenAI has
    made the batch. Its rows are `batched` under no lease, the batch `submitting` under its key; once the dead
    process's lease is over, the next process finds the batch by that key, polls it and delivers the job
    (it is not released while the batch runs, and not recovered as interrupted)."""
    openai = OfflineImageServer(latency=0.05, batch_latency=1.0)
    openai.batch_api.create_delay = 60.0  # the batch exists at once; its answer never arrives in time
    await openai.start()
    db = tmp_path / "bot.sqlite3"
    env = environment(
        db,
        IMAGEBOT_OFFLINE="0",
        OPENAI_API_KEY="sk-test-not-a-secret",
        OPENAI_BASE_URL=openai.base_url,
        IMAGEBOT_BATCH_WINDOW="0.1",
        IMAGEBOT_LEASE_SECONDS="1",
        IMAGEBOT_API_TIMEOUT="120",
    )
    args = [
        "imagine",
        "a fox",
        "--relax",
        "--size",
        "1024x1024",
        "--quality",
        "low",
        "--out",
        str(tmp_path / "f.jpg"),
    ]
    process = start_cli(args, env, tmp_path)
    try:
        await until(lambda: ("POST", "/v1/batches") in openai.batch_calls, timeout=30)
        [batch_id] = openai.batch_api.batches
    finally:
        process.kill()
        process.wait(timeout=30)
    assert not (tmp_path / "f.jpg").exists()
    settings = Settings.load(
        environ={
            "IMAGEBOT_DB": str(db),
            "IMAGEBOT_OFFLINE": "1",
            "IMAGEBOT_BATCH_POLL": "0.1",
            "IMAGEBOT_LEASE_SECONDS": "1",
            "IMAGEBOT_API_TIMEOUT": "5",
        },
        env_file=None,
    )
    openai.batch_api.create_delay = 0.0
    core = await Core.start(settings, offline_server=openai)
    try:
        view = View()
        core.places.serve({"cli": SimpleNamespace(view_for=lambda who, context: view)})
        await until(lambda: view.delivered or view.failures, timeout=20)
        assert view.delivered and not view.failures
        [image] = view.delivered[0].images
        assert (image.width, image.height) == (1024, 1024)
        [row] = await ledger(core)
        assert (row["status"], row["mode"]) == ("delivered", "relax")
        # The batch is finished just after its jobs are delivered (bot/jobs/relax.py `_ended`): wait for that write
        # rather than read at once (under load the read came first: finished_at still NULL).
        for _ in range(200):
            stored = await core.ledger.query("SELECT id, finished_at IS NOT NULL FROM batches")
            if all(finished for _, finished in stored):
                break
            await asyncio.sleep(0.05)
        assert [tuple(r) for r in stored] == [(batch_id, True)]
    finally:
        await core.close()
        await openai.stop()
    assert sum(1 for m, p in openai.batch_calls if (m, p) == ("POST", "/v1/batches")) == 1
