"""Discord at the edges: when Discord drops a call or never answers it, no job stays open, the books balance,
and the requester always hears what happened; and every interaction is answered before anything else. A lost
upload or progress edit, the same on Slack, is in tests/e2e/test_trust_rules.py."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.model.pricing import format_usd
from tests.e2e.harness import RunningBot
from tests.fakes.discord import FakeDiscord, RestCall
from tests.support.discord import content, discord_bot, final_result, first_call, imagine, original_edits
from tests.support.images import png
from tests.support.ledger import assert_counters_match

ORIGINAL = r"/webhooks/\d+/[^/]+/messages/@original"
SHORT = 0.5  # seconds the adapter waits on one Discord call here, so an unanswered one ends quickly
FAULTS = pytest.mark.parametrize("fault", ["drop", "hang"])  # a call Discord drops, or never answers


@contextlib.asynccontextmanager
async def impatient_bot(tmp_path: Path) -> AsyncIterator[tuple[FakeDiscord, RunningBot]]:
    """The bot against the fake Discord, waiting SHORT on a post, an edit or an upload."""
    async with discord_bot(tmp_path) as (fake, bot):
        bot.adapters["discord"].post_timeout = bot.adapters["discord"].upload_timeout = SHORT
        yield fake, bot


async def books_balance(tmp_path: Path, bot: RunningBot) -> None:
    """No ledger row is left open, and the quota counters hold exactly what the rows say."""
    assert not [r for r in await bot.ledger() if r["status"] in ("reserved", "running")]
    assert_counters_match(tmp_path / "imagebot.sqlite3")


def channel_posts(fake: FakeDiscord, words: str) -> list[RestCall]:
    """Messages the bot posted (answered 200) in the channel with `words` in them."""
    path = rf"/channels/{fake.channel_id}/messages"
    return [c for c in fake.calls_matching("POST", path) if c.status == 200 and words in content(c)]


async def first_image(fake: FakeDiscord, bot: RunningBot) -> dict[str, Any]:
    """Make one image with /imagine and return the message that carries it."""
    ix = await imagine(fake, "a red square", size="1024x1024", quality="low", format="png")
    await first_call(fake, lambda c: c in original_edits(fake, ix) and final_result(c))
    await bot.settled(1)
    return fake.messages[fake.channel_id][0]


# -- the progress message of a reply-to-edit -----------------------------------------------------------------


@FAULTS
async def test_progress_message_that_fails_releases_the_job_and_says_nothing_was_charged(
    tmp_path: Path, fault: str
) -> None:
    async with impatient_bot(tmp_path) as (fake, bot):
        image_message = await first_image(fake, bot)
        fake.inject_fault(
            "POST", rf"/channels/{fake.channel_id}/messages", fault, when=lambda c: "Editing" in content(c)
        )
        reply = await fake.send_message(
            content="make it blue --quality low", mentions_bot=True, referenced_message=image_message
        )
        rows = await bot.settled(2, timeout=10)
        assert (rows[1]["status"], rows[1]["actual_micros"]) == ("cancelled", 0)
        assert len(bot.server.calls) == 1  # the edit never reached the image API
        # The reply path has no private reply: the word goes by DM, naming the message it is about.
        await first_call(fake, lambda c: "Nothing was charged" in content(c) and c.status == 200, within=10)
        [told] = [m for m in fake.dm_messages(fake.user_id) if "Nothing was charged" in m["content"]]
        assert reply["id"] in told["content"] and not channel_posts(fake, "Nothing was charged")
        await books_balance(tmp_path, bot)


# -- delivering the image ------------------------------------------------------------------------------------


@FAULTS
async def test_image_that_cannot_be_posted_is_reported_as_made_and_charged(
    tmp_path: Path, fault: str
) -> None:
    async with impatient_bot(tmp_path) as (fake, bot):
        fake.inject_fault("PATCH", ORIGINAL, fault, times=100, when=final_result)
        ix = await imagine(fake, "a lighthouse", quality="low")
        [row] = await bot.settled(1)
        told = await first_call(
            fake,
            lambda c: (
                c in original_edits(fake, ix) and c.status == 200 and "could not be posted" in content(c)
            ),
            within=15,
        )
        [row] = await bot.wait_rows(lambda rows: rows[0]["status"] == "undelivered")
        assert row["actual_micros"] > 0
        assert json.loads(row["request_ids"])[0] in content(told) and row["job_id"] in content(told)
        assert format_usd(row["actual_micros"]) in content(told) and "charged" in content(told)
        assert told.json["components"] == [] and not told.files  # no Cancel button left behind
        assert not [c for c in fake.calls if final_result(c) and c.status == 200]
        await books_balance(tmp_path, bot)


async def test_when_the_response_cannot_be_edited_at_all_the_result_is_told_in_the_channel(
    tmp_path: Path,
) -> None:
    async with discord_bot(tmp_path) as (fake, bot):
        fake.inject_fault("PATCH", ORIGINAL, "drop", times=10, when=lambda c: "request id" in content(c))
        await imagine(fake, "a lighthouse", quality="low")
        [row] = await bot.settled(1)
        await first_call(fake, lambda c: bool(channel_posts(fake, "could not be posted")), within=10)
        [told] = channel_posts(fake, "could not be posted")
        assert f"<@{fake.user_id}>" in content(told) and json.loads(row["request_ids"])[0] in content(told)
        original = fake.messages[fake.channel_id][0]
        assert str(told.json["message_reference"]["message_id"]) == original["id"]
        await books_balance(tmp_path, bot)


async def test_reply_to_edit_image_that_cannot_be_posted_is_reported_in_the_channel(tmp_path: Path) -> None:
    async with discord_bot(tmp_path) as (fake, bot):
        image_message = await first_image(fake, bot)
        fake.inject_fault(
            "POST", rf"/channels/{fake.channel_id}/messages", "drop", times=100, when=final_result
        )
        await fake.send_message(
            content="make it blue --quality low", referenced_message=image_message, mentions_bot=True
        )
        rows = await bot.settled(2)
        await first_call(fake, lambda c: bool(channel_posts(fake, "could not be posted")), within=15)
        [told] = channel_posts(fake, "could not be posted")
        rows = await bot.wait_rows(lambda rows: rows[1]["status"] == "undelivered")
        assert json.loads(rows[1]["request_ids"])[0] in content(told)
        # The progress message is gone: nothing is left looking as if it still works.
        assert not [m for m in fake.messages[fake.channel_id] if "Editing" in m["content"]]
        await books_balance(tmp_path, bot)


async def test_failure_notice_that_cannot_be_edited_in_goes_to_the_channel(tmp_path: Path) -> None:
    async with discord_bot(tmp_path, IMAGEBOT_API_TIMEOUT="0.6") as (fake, bot):
        bot.server.latency = 0.05
        bot.server.push_faults("500*")
        fake.inject_fault(
            "PATCH", ORIGINAL, "drop", times=10, when=lambda c: "Nothing was charged" in content(c)
        )
        await imagine(fake, "a storm", quality="low")
        [row] = await bot.settled(1)
        await first_call(fake, lambda c: bool(channel_posts(fake, "Nothing was charged")), within=10)
        [told] = channel_posts(fake, "Nothing was charged")
        assert "HTTP 500" in content(told) and json.loads(row["request_ids"])[-1] in content(told)
        assert (row["status"], row["actual_micros"]) == ("failed", 0)
        await books_balance(tmp_path, bot)


# -- progress edits ------------------------------------------------------------------------------------------


# -- acks first ----------------------------------------------------------------------------------------------


async def test_cancel_button_is_answered_before_the_job_is_cancelled(tmp_path: Path) -> None:
    async with discord_bot(tmp_path) as (fake, bot):
        bot.server.latency = 5
        ix = await imagine(fake, "a slow one", quality="low")
        first = await first_call(fake, lambda c: c in original_edits(fake, ix))
        button = first.json["components"][0]["components"][0]
        # Discord takes its time over the ack: nothing of the cancel may happen before it is answered.
        fake.inject_fault("POST", r"/interactions/\d+/[^/]+/callback", "delay", seconds=0.5)
        press = await fake.send_interaction(
            type=3,
            custom_id=button["custom_id"],
            component_type=2,
            target_message=fake.messages[fake.channel_id][0],
        )
        [ack] = await fake.wait_for("POST", rf"/interactions/{press['id']}/[^/]+/callback")
        cancelled = await first_call(
            fake, lambda c: c in original_edits(fake, ix) and "Cancelled" in content(c)
        )
        assert ack.status == 200 and ack.answered < cancelled.at
        [row] = await bot.settled(1)
        assert row["status"] == "cancelled"


async def test_edit_image_menu_and_its_form_are_answered_before_anything_else(tmp_path: Path) -> None:
    async with discord_bot(tmp_path) as (fake, bot):
        photo = fake.add_attachment(filename="cat.png", data=png(800, 800), content_type="image/png")
        await fake.send_message(content="my cat", attachments=[photo])
        menu = await fake.send_interaction(
            name="Edit image", command_type=3, target_message=fake.messages[fake.channel_id][0]
        )
        await fake.wait_for("POST", rf"/interactions/{menu['id']}/[^/]+/callback")
        submit = await fake.send_interaction(
            type=5, modal_values={"Instruction": "give it a hat --quality low"}
        )
        await first_call(fake, lambda c: c in original_edits(fake, submit) and final_result(c))
        [menu_ack] = fake.calls_matching("POST", rf"/interactions/{menu['id']}/[^/]+/callback")
        [submit_ack] = fake.calls_matching("POST", rf"/interactions/{submit['id']}/[^/]+/callback")
        assert menu_ack.json["type"] == 9 and submit_ack.json["type"] == 5  # the form, then "thinking"
        [download] = fake.cdn_requests
        assert menu_ack.answered < submit_ack.answered < download.at < original_edits(fake, submit)[0].at
