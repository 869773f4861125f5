"""Discord result actions and the price check (docs/rules.md §9), what only Discord has, end to end: the real
discord.py client, the fake Discord, the offline image server and the SQLite file. How the buttons are laid out and
where each image is recorded, a result posted past its interaction token, how each press is acknowledged, a reply
that asks the price check, one image deleted of several. What the buttons do, the same on Slack, is in
tests/e2e/test_actions_rules.py."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from bot.jobs import texts
from tests.fakes.discord import FakeDiscord, reset_discord_endpoints
from tests.support.discord import (
    EPHEMERAL,
    NO_CHECK,
    OTHER,
    bot_on,
    callback,
    content,
    discord_bot,
    final_result,
    finished,
    first_call,
    image_message,
    imagine,
    original_edits,
    private_words,
)

# -- helpers -------------------------------------------------------------------------------------------------


def labels(message: dict[str, Any]) -> list[str]:
    return [b["label"] for b in FakeDiscord.buttons(message)]


def answered_first(fake: FakeDiscord, ix: dict[str, Any], since: float) -> None:
    """Interaction `ix` got its callback before any other Discord call (REST or CDN) made after `since`."""
    ack = callback(fake, ix)
    later = [c for c in [*fake.calls, *fake.cdn_requests] if c.at >= since and c is not ack]
    assert ack.status == 200 and later
    assert all(ack.answered <= c.at for c in later), [
        (c.method, c.path) for c in later if c.at < ack.answered
    ]


# -- the buttons ---------------------------------------------------------------------------------------------


async def test_the_result_carries_buttons_with_prices_that_know_where_each_image_is(tmp_path: Path) -> None:
    async with discord_bot(tmp_path, **NO_CHECK) as (fake, bot):
        message = await image_message(fake, bot)
        [row, info] = message["components"]  # one image: five buttons in one row, then Info
        assert [re.sub(r" · \$\d+\.\d{4}$", " · $", label) for label in labels(message)] == [
            "Re-roll · $",
            "Vary · $",
            "Upscale · $",
            "Edit",
            "Delete",
            "Info",
        ]
        ids = [b["custom_id"] for b in FakeDiscord.buttons(message)]
        assert all(i.startswith("imagebot:act:") and len(i) <= 100 for i in ids)
        assert [b["style"] for b in row["components"]] == [1, 2, 2, 2, 4]
        assert [b["style"] for b in info["components"]] == [2]

        # Four images: 18 buttons in rows of at most five, Re-roll leading the Vary row, Info ending the last.
        many = await image_message(fake, bot, "four of them", rows=5, count=4, size="1024x1024")
        rows = [[b["label"].split(" · ")[0] for b in r["components"]] for r in many["components"]]
        assert rows == [
            ["Re-roll", "Vary 1", "Vary 2", "Vary 3", "Vary 4"],
            ["Upscale 1", "Upscale 2", "Upscale 3", "Upscale 4"],
            ["Edit 1", "Edit 2", "Edit 3", "Edit 4"],
            ["Delete 1", "Delete 2", "Delete 3", "Delete 4", "Info"],
        ]
        ids = [b["custom_id"] for b in FakeDiscord.buttons(many)]
        assert len(set(ids)) == 18 and all(len(i) <= 100 for i in ids)

        # Where each image lives: the message that carries it, and which of its attachments.
        [(images,)] = await bot.core.ledger.query(
            "SELECT images FROM results WHERE job_id=?", [ids[0].split(":")[3]]
        )
        assert [i["where"] for i in json.loads(images)] == [
            {
                "channel_id": str(fake.channel_id),
                "message_id": many["id"],
                "index": n,
                "attachment_id": many["attachments"][n]["id"],
            }
            for n in range(4)
        ]


async def test_past_the_token_the_channel_reply_carries_the_buttons_and_they_work(tmp_path: Path) -> None:
    async with discord_bot(tmp_path, **NO_CHECK) as (fake, bot):
        bot.server.latency = 1.0
        ix = await imagine(fake, "a slow render", size="1536x1024", quality="low")
        await first_call(fake, lambda c: c in original_edits(fake, ix))
        fake.expire_interaction_tokens()
        channel = rf"/channels/{fake.channel_id}/messages"
        posted = await first_call(
            fake, lambda c: c.method == "POST" and c.path == channel and final_result(c) and c.status == 200
        )
        await bot.settled(1)
        [message] = [m for m in fake.messages[fake.channel_id] if m["attachments"] and m["components"]]
        assert labels(message)[0].startswith("Re-roll") and posted.json["components"]
        bot.server.latency = 0.2
        press = await fake.press_button(message, "Vary")
        await finished(fake, bot, press, rows=2)
        [download] = fake.cdn_requests
        assert message["attachments"][0]["id"] in download.path
        assert bot.server.calls[-1].endpoint == "edits"


# -- what only Discord has ----------------------------------------------------------------------------------


async def test_a_restart_sends_no_view_again(tmp_path: Path) -> None:
    """The buttons are persistent custom ids: a restarted bot answers them (tests/e2e/test_actions_rules.py)
    without posting or editing any message to register them again."""
    fake = FakeDiscord()
    await fake.start()
    try:
        async with bot_on(fake, tmp_path, **NO_CHECK) as bot:
            await image_message(fake, bot, "a red fox in snow")
        before = len(fake.calls)
        async with bot_on(fake, tmp_path, **NO_CHECK):
            assert not [c for c in fake.calls[before:] if "/messages" in c.path]
    finally:
        await fake.stop()
        reset_discord_endpoints()
    assert not fake.errors, fake.errors


async def test_each_press_is_answered_as_its_outcome_is_seen(tmp_path: Path) -> None:
    """A render is answered with a public "thinking" (its image is for everyone), Edit with its form, Delete
    silently (the pressed message stays the press's to edit), a price question's Cancel privately; every
    interaction once."""
    async with discord_bot(tmp_path, IMAGEBOT_CONFIRM_USD="0.10") as (fake, bot):
        message = await image_message(fake, bot, "a red fox in snow")
        press = await fake.press_button(message, "Re-roll")
        await finished(fake, bot, press, rows=2)
        assert callback(fake, press).json["type"] == 5
        edit = await fake.press_button(message, "Edit")
        await fake.wait_for("POST", rf"/interactions/{edit['id']}/[^/]+/callback")
        submit = await fake.send_interaction(
            type=5, modal_values={"Instruction": "make the fox blue"}, target_message=message
        )
        await finished(fake, bot, submit, rows=3)
        assert (callback(fake, edit).json["type"], callback(fake, submit).json["type"]) == (9, 5)
        upscale = await fake.press_button(
            message, "Upscale"
        )  # high at 3504x2336: above the check, so it asks
        await private_words(fake, upscale)
        question = next(
            m for m in fake.messages[fake.channel_id] if m["flags"] & EPHEMERAL and m["components"]
        )
        ids = [b["custom_id"] for b in FakeDiscord.buttons(question)]
        assert ids[0].startswith("imagebot:render:") and ids[1].startswith("imagebot:decline:")
        cancel = await fake.press_button(question, "Cancel")
        assert content(await private_words(fake, cancel)) == texts.CONFIRM_CANCELLED
        assert callback(fake, cancel).json == {"type": 5, "data": {"flags": EPHEMERAL}}
        delete = await fake.press_button(message, "Delete")
        assert content(await private_words(fake, delete)) == texts.DELETED
        assert callback(fake, delete).json == {"type": 6}
        for each in (press, edit, submit, upscale, cancel, delete):
            assert len(fake.calls_matching("POST", rf"/interactions/{each['id']}/[^/]+/callback")) == 1


# -- the price check -----------------------------------------------------------------------------------------


async def test_a_reply_to_edit_above_the_price_check_asks_in_a_reply(tmp_path: Path) -> None:
    async with discord_bot(tmp_path, IMAGEBOT_CONFIRM_USD="0.10") as (fake, bot):
        fake.add_member(OTHER)
        image = await image_message(fake, bot, "a red square", size="1024x1024")  # low: no question

        reply = await fake.send_message(
            content="make it glow --quality high", referenced_message=image, mentions_bot=True
        )
        channel = rf"/channels/{fake.channel_id}/messages"
        asked = await first_call(fake, lambda c: c.method == "POST" and c.path == channel and c.status == 200)
        assert str(asked.json["message_reference"]["message_id"]) == reply["id"]
        question = fake.messages[fake.channel_id][-1]
        assert labels(question) == ["Render", "Cancel"] and len(bot.server.calls) == 1

        press = await fake.press_button(question, "Render", user_id=OTHER)  # not theirs to confirm
        assert "only the person who asked" in content(await private_words(fake, press))
        assert len(bot.server.calls) == 1 and len(await bot.ledger()) == 1

        press = await fake.press_button(question, "Render")
        await finished(fake, bot, press, rows=2)
        edit = bot.server.calls[-1]
        assert (edit.endpoint, edit.images, edit.prompt, edit.quality) == ("edits", 1, "make it glow", "high")
        assert (await bot.ledger())[-1]["user"] == str(fake.user_id)


# -- answered first ------------------------------------------------------------------------------------------


async def test_every_press_is_answered_before_any_other_call_it_causes(tmp_path: Path) -> None:
    async with discord_bot(tmp_path, IMAGEBOT_CONFIRM_USD="0.10") as (fake, bot):
        message = await image_message(fake, bot, "a red fox")
        ack = r"/interactions/\d+/[^/]+/callback"

        async def press(label: str, **spec: Any) -> dict[str, Any]:
            fake.inject_fault("POST", ack, "delay", seconds=0.3)  # Discord takes its time over the answer
            return await fake.press_button(message, label, **spec)

        since = time.monotonic()
        vary = await press("Vary")
        await finished(fake, bot, vary, rows=2)
        answered_first(fake, vary, since)

        since = time.monotonic()
        edit = await press("Edit")
        await fake.wait_for("POST", rf"/interactions/{edit['id']}/[^/]+/callback")
        fake.inject_fault("POST", ack, "delay", seconds=0.3)
        submit = await fake.send_interaction(
            type=5, modal_values={"Instruction": "make it blue"}, target_message=message
        )
        await finished(fake, bot, submit, rows=3)
        answered_first(fake, edit, since)
        answered_first(fake, submit, callback(fake, edit).answered)

        since = time.monotonic()
        upscale = await press("Upscale")  # high at 3504x2336: above the check, so it asks
        question = await private_words(fake, upscale)
        answered_first(fake, upscale, since)
        assert len(bot.server.calls) == 3
        asked = next(m for m in fake.messages[fake.channel_id] if m["flags"] & EPHEMERAL and m["components"])
        assert question.status == 200

        since = time.monotonic()
        fake.inject_fault("POST", ack, "delay", seconds=0.3)
        render = await fake.press_button(asked, "Render")
        await finished(fake, bot, render, rows=4)
        answered_first(fake, render, since)
        assert bot.server.calls[-1].size == "3504x2336"

        since = time.monotonic()
        delete = await press("Delete")
        assert content(await private_words(fake, delete)) == texts.DELETED
        answered_first(fake, delete, since)


async def test_delete_of_one_of_several_images_removes_that_image_only(tmp_path: Path) -> None:
    """`Delete 2` under four images takes the second attachment off the message; the others and their
    buttons keep working (each image is named by its attachment's id, not its position)."""
    async with discord_bot(tmp_path, **NO_CHECK) as (fake, bot):
        message = await image_message(fake, bot, "four of them", rows=4, count=4)
        ids = [a["id"] for a in message["attachments"]]
        press = await fake.press_button(message, "Delete 2")
        assert content(await private_words(fake, press)) == texts.DELETED
        after = fake.message(int(message["id"]))
        assert after is not None and [a["id"] for a in after["attachments"]] == [ids[0], ids[2], ids[3]]
        calls = len(bot.server.calls)
        press = await fake.press_button(after, "Vary 3")
        await first_call(fake, lambda c: len(bot.server.calls) > calls)
        assert bot.server.calls[-1].endpoint == "edits" and bot.server.calls[-1].images == 1
