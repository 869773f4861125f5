"""Relax mode's Cancel, expiry and edits, and the fair queue, end to end on Slack (docs/rules.md §10, §11): the
real bolt app in HTTP mode, the fake Slack, the offline server's image, Files and Batch APIs. Each test checks what
the person sees (privately and in the thread) and what the ledger booked. The access rules the same on Discord
(a channel's moderation, a denied group) are in tests/e2e/test_access_rules.py."""

from __future__ import annotations

import asyncio
import html
import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.jobs import texts
from bot.model.pricing import Usage, batch_price, cost_micros, estimate_micros, format_usd, load_prices
from bot.model.sizes import parse_size
from bot.store.ledger import OPEN
from tests.e2e.harness import RunningBot, running_bot, slack_env
from tests.fakes.slack import FakeSlack
from tests.support.slack import (
    a_later_relax_job_delivered,
    job_messages,
    message,
)
from tests.support.waits import until

CANCEL_ENV = {  # a batch that runs long enough to be cancelled
    "IMAGEBOT_BATCH_WINDOW": "0.3",
    "IMAGEBOT_BATCH_POLL": "0.1",
    "IMAGEBOT_OFFLINE_BATCH_LATENCY": "3",
}
QUICK_ENV = {**CANCEL_ENV, "IMAGEBOT_OFFLINE_BATCH_LATENCY": "0.5"}
CHEAP = "--size 1024x1024 --quality low"
COLUMNS = (
    *("job_id", "user", "mode", "status", "reserved_micros", "actual_micros", "error"),
    *("text_tokens", "image_tokens", "output_tokens"),
)


# -- helpers ---------------------------------------------------------------------------------------------------


def png(width: int = 1024, height: int = 1024, color: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, "PNG")
    return out.getvalue()


async def rows_of(bot: RunningBot) -> list[dict[str, Any]]:
    found = await bot.core.ledger.query(f"SELECT {', '.join(COLUMNS)} FROM ledger ORDER BY id")
    return [dict(zip(COLUMNS, row, strict=True)) for row in found]


async def closed(bot: RunningBot, count: int, timeout: float = 15) -> list[dict[str, Any]]:  # noqa: ASYNC109
    """Wait until there are `count` ledger rows and none is open (reserved, running or batched); return them."""
    rows: list[dict[str, Any]] = []

    async def check() -> bool:
        nonlocal rows
        rows = await rows_of(bot)
        return len(rows) == count and all(r["status"] not in (*OPEN, "rendered") for r in rows)

    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"ledger not closed: {rows}"
        await asyncio.sleep(0.05)
    return rows


def relax_reserved(prompt: str, images: int = 0) -> int:
    """What one relax image of `prompt` at CHEAP reserves: the batch price of its worst case ($0.0030)."""
    prices = load_prices().model("gpt-image-2")
    worst = estimate_micros(
        prices, size=parse_size("1024x1024"), quality="low", prompt=prompt, references=images
    )
    reserved = batch_price(worst, prices)
    if not images:  # README: a 1024x1024 low image is $0.0060 fast, $0.0030 relax
        assert format_usd(reserved) == "$0.0030"
    return reserved


def relax_price(row: dict[str, Any]) -> int:
    """What a relax line that came back with its `usage` costs: the batch price of those tokens."""
    prices = load_prices().model("gpt-image-2")
    usage = Usage(row["text_tokens"], row["image_tokens"], row["output_tokens"])
    return batch_price(cost_micros(prices, usage), prices)


def said_to(slack: FakeSlack, user: str) -> list[str]:
    """What only `user` saw, as they read it, oldest first."""
    return [html.unescape(e["text"]) for e in slack.ephemerals if e["user"] == user and not e.get("deleted")]


def bot_replies(slack: FakeSlack, thread: str, channel: str = "C1") -> list[dict[str, Any]]:
    """What the bot posted in the thread, under its root."""
    return [
        m
        for m in slack.messages.get(channel, [])
        if m.get("bot_id") == slack.bot_id and m.get("thread_ts") == thread and m["ts"] != thread
    ]


def uploads_in(slack: FakeSlack, thread: str, channel: str = "C1") -> list[dict[str, Any]]:
    """The bot's image uploads in the thread."""
    return [m for m in bot_replies(slack, thread, channel) if m.get("files")]


def thread_text(slack: FakeSlack, thread: str, channel: str = "C1") -> str:
    """Everything the bot said in the thread, as people read it."""
    return html.unescape(" ".join(str(m.get("text")) for m in bot_replies(slack, thread, channel)))


async def job_ts(slack: FakeSlack, prompt: str) -> str:
    """The ts of the job message whose blocks show `prompt` (its progress message, at the channel root)."""
    [found] = await until(lambda: [m for m in job_messages(slack) if prompt in str(m.get("blocks"))])
    return str(found["ts"])


async def relax(slack: FakeSlack, bot: RunningBot, prompt: str, *, user: str = "U1", flags: str = "") -> str:
    """/imagine `prompt` --relax as `user`; the ts of its job message."""
    text = f"{prompt} --relax {flags or CHEAP}"
    await slack.send_slash_command(bot.events_url, text=text, user_id=user)
    return await job_ts(slack, prompt)


async def sent(slack: FakeSlack, ts: str) -> None:
    """The job's message says its batch went to the Batch API."""
    await until(lambda: "sent to the Batch API" in str(message(slack, ts)), timeout=10)


# -- 1. Cancel on a relax job ------------------------------------------------------------------------------


@pytest.mark.parametrize("when", ["at once", "once its line is made"])
async def test_cancel_of_a_job_alone_in_its_batch_cancels_the_batch(
    when: str, slack: FakeSlack, tmp_path: Path
) -> None:
    """Pressed at once, the batch is usually still validating (released); pressed once the offline server has made
    its line, what finished is delivered and charged. Either way the batch is cancelled."""
    async with running_bot(tmp_path, slack_env(slack, **CANCEL_ENV), latency=0.05) as bot:
        ts = await relax(slack, bot, "a lone fox")
        await sent(slack, ts)
        [batch_id] = bot.server.batch_api.batches
        if when != "at once":
            await until(lambda: bot.server.batch_api.batches[batch_id].completed == 1)
        assert "Cancel" in [b["text"]["text"] for b in slack.buttons(message(slack, ts)["blocks"])]
        status, _ = await slack.press(bot.events_url, "Cancel", message_ts=ts, user_id="U1")
        assert status == 200
        [answer] = await until(lambda: said_to(slack, "U1"))
        assert answer.startswith("Cancelling the batch"), answer
        assert "delivered and charged" in answer and "released" in answer
        await until(lambda: ("POST", f"/v1/batches/{batch_id}/cancel") in bot.server.batch_calls)
        [row] = await closed(bot, 1)
        assert bot.server.batch_api.batches[batch_id].status == "cancelled"
        assert (row["user"], row["mode"], row["reserved_micros"]) == (
            "U1",
            "relax",
            relax_reserved("a lone fox"),
        )
        if when != "at once":
            assert row["status"] == "delivered", row
        if row["status"] == "delivered":  # its line had finished before the cancel: delivered and charged
            assert row["actual_micros"] == relax_price(row) > 0
            [upload] = await until(lambda: uploads_in(slack, ts))
            assert "relax, half price" in html.unescape(str(upload))
        else:  # released: nothing charged, nothing posted but the word
            assert (row["status"], row["actual_micros"]) == ("failed", 0), row
            assert "batch_cancelled" in str(row["error"])
            await until(lambda: "Nothing was charged" in thread_text(slack, ts))
            assert not uploads_in(slack, ts)
        assert len(said_to(slack, "U1")) == 1
        assert bot.server.calls == []  # never the synchronous image API


async def test_cancel_of_a_job_sharing_its_batch_is_charged_but_not_posted(
    slack: FakeSlack, tmp_path: Path
) -> None:
    async with running_bot(tmp_path, slack_env(slack, **CANCEL_ENV), latency=0.05) as bot:
        mine = await relax(slack, bot, "a shared fox", user="U1")
        theirs = await relax(slack, bot, "a shared crow", user="U2")
        await sent(slack, mine)
        await sent(slack, theirs)
        [batch_id] = bot.server.batch_api.batches  # one batch for both
        await slack.press(bot.events_url, "Cancel", message_ts=mine, user_id="U1")
        [answer] = await until(lambda: said_to(slack, "U1"))
        assert "cannot be withdrawn" in answer and "charged at the batch price" in answer, answer
        assert "not posted" in answer
        await until(lambda: uploads_in(slack, theirs), timeout=15)
        rows = {r["user"]: r for r in await closed(bot, 2)}
        assert rows["U1"]["reserved_micros"] == relax_reserved("a shared fox")
        assert rows["U2"]["reserved_micros"] == relax_reserved("a shared crow")
        for (
            row
        ) in rows.values():  # both made and charged at the batch price; the cancelled one kept, not posted
            assert (row["mode"], row["status"]) == (
                "relax",
                "undelivered" if row["user"] == "U1" else "delivered",
            )
            assert row["actual_micros"] == relax_price(row) > 0
        assert ("POST", f"/v1/batches/{batch_id}/cancel") not in bot.server.batch_calls
        assert bot.server.batch_api.batches[batch_id].status == "completed"
        await a_later_relax_job_delivered(slack, bot)  # more polls: the cancelled job is still never posted
        assert not uploads_in(slack, mine)  # never posted; the thread says what happened and what it cost
        assert "cannot be withdrawn" in html.unescape(thread_text(slack, mine))
        [upload] = uploads_in(slack, theirs)
        assert "<@U2>" in str(upload) and "relax, half price" in html.unescape(str(upload))
        assert said_to(slack, "U2") == []


async def test_a_cancelled_shared_job_message_ends_saying_what_was_charged(
    slack: FakeSlack, tmp_path: Path
) -> None:
    env = slack_env(slack, **{**CANCEL_ENV, "IMAGEBOT_OFFLINE_BATCH_LATENCY": "1.5"})
    async with running_bot(tmp_path, env, latency=0.05) as bot:
        mine = await relax(slack, bot, "a shared owl", user="U1")
        theirs = await relax(slack, bot, "a shared hawk", user="U2")
        await sent(slack, mine)
        await slack.press(bot.events_url, "Cancel", message_ts=mine, user_id="U1")
        await until(lambda: said_to(slack, "U1"))
        await until(lambda: uploads_in(slack, theirs), timeout=10)
        rows = {r["user"]: r for r in await closed(bot, 2)}
        charged = format_usd(rows["U1"]["actual_micros"])
        # The final line goes out within the chat.update budget (the polls' progress updates spend it too).
        await until(lambda: "sent to the Batch API" not in str(message(slack, mine)), timeout=10)
        final = message(slack, mine)
        shown = html.unescape(str(final))
        assert "Cancel" not in [b["text"]["text"] for b in slack.buttons(final["blocks"])], shown
        assert "sent to the Batch API" not in shown, shown  # no longer waiting
        assert charged in shown, shown  # "the message says what was delivered and what was charged"


async def test_cancel_before_the_batch_is_sent_charges_nothing_and_sends_nothing(
    slack: FakeSlack, tmp_path: Path
) -> None:
    env = slack_env(slack, **{**CANCEL_ENV, "IMAGEBOT_BATCH_WINDOW": "5"})
    async with running_bot(tmp_path, env, latency=0.05) as bot:
        ts = await relax(slack, bot, "an early fox")
        await until(lambda: "waiting to be sent" in str(message(slack, ts)))
        await slack.press(bot.events_url, "Cancel", message_ts=ts, user_id="U2")  # not theirs
        [refusal] = await until(lambda: said_to(slack, "U2"))
        assert refusal == texts.CANCEL_REFUSED
        await slack.press(bot.events_url, "Cancel", message_ts=ts, user_id="U1")
        [answer] = await until(lambda: said_to(slack, "U1"))
        assert answer == "Cancelled before it was sent to the Batch API: nothing was charged."
        [row] = await closed(bot, 1)
        assert (row["mode"], row["status"], row["reserved_micros"], row["actual_micros"]) == (
            "relax",
            "cancelled",
            relax_reserved("an early fox"),
            0,
        )
        await until(lambda: "Nothing was charged" in thread_text(slack, ts))
        assert "Cancelled" in thread_text(slack, ts) and not uploads_in(slack, ts)
    # The bot sends what is gathered when it stops: the cancelled job was not among it.
    assert bot.server.batch_calls == [] and bot.server.batch_api.batches == {}
    assert bot.server.calls == []


# -- 2. An expired batch ----------------------------------------------------------------------------------


async def test_an_expired_batch_releases_what_it_did_not_make(slack: FakeSlack, tmp_path: Path) -> None:
    """`batch_expired` ends the batch with half its lines done: of `--count 2`, one image comes (charged at the
    batch price) and the other is released, and the summary says so."""
    async with running_bot(tmp_path, slack_env(slack, **QUICK_ENV), latency=0.05) as bot:
        bot.server.push_faults("batch_expired")
        ts = await relax(slack, bot, "two expiring foxes", flags=f"{CHEAP} --count 2")
        first, second = await closed(bot, 2)
        [batch] = bot.server.batch_api.batches.values()
        assert batch.status == "expired"
        assert (first["mode"], first["status"]) == ("relax", "delivered")
        assert first["actual_micros"] == relax_price(first) > 0
        assert (second["mode"], second["status"], second["actual_micros"]) == ("relax", "failed", 0)
        assert "batch_expired" in str(second["error"])
        assert first["reserved_micros"] == second["reserved_micros"] == relax_reserved("two expiring foxes")
        [upload] = await until(lambda: uploads_in(slack, ts))
        told = html.unescape(str(upload))
        assert "batch_expired" in told and "released, nothing charged" in told
        assert bot.server.calls == []


async def test_an_expired_batch_with_nothing_made_releases_every_row(
    slack: FakeSlack, tmp_path: Path
) -> None:
    async with running_bot(tmp_path, slack_env(slack, **QUICK_ENV), latency=0.05) as bot:
        bot.server.push_faults("batch_expired")
        ts = await relax(slack, bot, "an expiring fox")
        [row] = await closed(bot, 1)
        assert (row["mode"], row["status"], row["actual_micros"]) == ("relax", "failed", 0)
        assert row["reserved_micros"] == relax_reserved("an expiring fox")
        await until(lambda: "batch_expired" in thread_text(slack, ts))
        told = thread_text(slack, ts)
        assert told.startswith("<@U1> Failed") and "Nothing was charged" in told
        assert not uploads_in(slack, ts)


# -- 3. A relax edit goes up as files ------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["thread", "channel"])
async def test_a_relax_edit_uploads_its_images_and_references_them_by_file_id(
    where: str, slack: FakeSlack, tmp_path: Path
) -> None:
    async with running_bot(tmp_path, slack_env(slack, **QUICK_ENV), latency=0.05) as bot:
        thread = None
        if where == "thread":  # a relax image first: the reply edits it, with the attachment as a reference
            thread = await relax(slack, bot, "a red boat", flags=f"{CHEAP} --format png")
            await until(lambda: uploads_in(slack, str(thread)), timeout=10)
            await closed(bot, 1)
        before = len(bot.server.batch_calls)
        photo = slack.add_file(name="ref.png", data=png(color="blue"), mimetype="image/png", filetype="png")
        event = slack.message_event(
            text=f"make it blue --relax {CHEAP}", thread_ts=thread, files=[photo], mention=True
        )
        assert (await slack.send_event(bot.events_url, event))[0] == 200
        home = thread or event["ts"]  # the edit's own thread
        rows = await closed(bot, 2 if thread else 1)
        await until(lambda: len(uploads_in(slack, home)) == (2 if thread else 1), timeout=10)
        calls = bot.server.batch_calls[before:]
        posts = [p for m, p in calls if m == "POST"]
        images = 2 if thread else 1  # the thread's image and the attachment, or the attachment alone
        assert posts == ["/v1/files"] * (images + 1) + ["/v1/batches"], calls
        edit_batch = list(bot.server.batch_api.batches.values())[-1]
        assert edit_batch.endpoint == "/v1/images/edits"
        [line] = [json.loads(raw) for raw in edit_batch.input_data.decode().splitlines() if raw.strip()]
        assert line["url"] == "/v1/images/edits" and "moderation" not in line["body"]
        refs = line["body"]["images"]
        assert len(refs) == images and all(set(ref) == {"file_id"} for ref in refs)
        files = bot.server.batch_api.files
        assert [files[ref["file_id"]].purpose for ref in refs] == ["vision"] * images
        assert files[edit_batch.input_file_id].purpose == "batch"
        edit = rows[-1]
        assert (edit["mode"], edit["status"]) == ("relax", "delivered")
        assert edit["reserved_micros"] == relax_reserved("make it blue", images)
        assert edit["actual_micros"] == relax_price(edit) > 0
        assert "relax, half price" in html.unescape(str(uploads_in(slack, home)[-1]))
        assert bot.server.calls == []


# -- 4. Access rules on Slack --------------------------------------------------------------------------------


async def test_the_fair_queue_starts_other_users_single_jobs_early(slack: FakeSlack, tmp_path: Path) -> None:
    env = slack_env(slack, IMAGEBOT_MAX_IN_FLIGHT="1", IMAGEBOT_USER_MAX_JOBS="10")
    async with running_bot(tmp_path, env, latency=0.8) as bot:
        gate = bot.core.runner.gate
        for n in range(1, 6):  # each in the queue before the next is sent: FIFO is about the queue's order
            await slack.send_slash_command(bot.events_url, text=f"u1 job {n} {CHEAP}", user_id="U1")
            await until(lambda n=n: gate.active + gate.queued == n)
        await slack.send_slash_command(bot.events_url, text=f"u2 job {CHEAP}", user_id="U2")
        await slack.send_slash_command(bot.events_url, text=f"u3 job {CHEAP}", user_id="U3")
        await until(lambda: len(bot.server.calls) >= 3, timeout=10)
        first_three = [c.prompt for c in bot.server.calls[:3]]
        bot.server.latency = 0.02  # the rest may go quickly
        assert "u2 job" in first_three and "u3 job" in first_three, first_three
        rows = await bot.settled(7, timeout=20)
        assert sorted(r["user"] for r in rows) == ["U1"] * 5 + ["U2", "U3"]
        assert all(r["status"] == "delivered" and r["actual_micros"] > 0 for r in rows)
        u1 = [c.prompt for c in bot.server.calls if str(c.prompt).startswith("u1")]
        assert u1 == [f"u1 job {n}" for n in range(1, 6)]  # FIFO within a user
