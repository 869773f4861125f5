"""Discord result actions and the price check (docs/rules.md §9), end to end: the real discord.py client, the fake Discord,
the offline image server and the SQLite file. Buttons under a finished job (Re-roll, Vary, Upscale, Edit, Delete)
are persistent custom ids, a click is the clicker's own job, and an expensive render asks its requester first."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bot import texts
from tests.e2e.harness import RunningBot
from tests.fakes.discord import FakeDiscord, reset_discord_endpoints
from tests.support.discord import (
    ADMIN,
    EPHEMERAL,
    MANAGE_GUILD,
    NO_CHECK,
    OTHER,
    bot_on,
    callback,
    content,
    decoded,
    discord_bot,
    final_result,
    finished,
    first_call,
    image_message,
    imagine,
    original_edits,
    private_words,
    response_of,
    response_of_gone,
)

# -- helpers -------------------------------------------------------------------------------------------------


def labels(message: dict[str, Any]) -> list[str]:
    return [b["label"] for b in FakeDiscord.buttons(message)]


async def backdate(bot: RunningBot, table: str, by: timedelta) -> None:
    """Move every row of `table` (results, confirmations) `by` into the past."""

    def shift(db: Any) -> None:
        for rowid, created in db.conn.execute(f"SELECT rowid, created_at FROM {table}").fetchall():
            older = (datetime.fromisoformat(created) - by).isoformat(timespec="milliseconds")
            db.conn.execute(f"UPDATE {table} SET created_at=? WHERE rowid=?", [older, rowid])

    await bot.core.ledger.run_db(shift)


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
        # ... so Vary 3 works on the third attachment.
        press = await fake.press_button(many, "Vary 3")
        await finished(fake, bot, press, rows=6)
        [download] = [r for r in fake.cdn_requests if r.path.startswith("/cdn/attachments/")][-1:]
        assert many["attachments"][2]["id"] in download.path


async def test_reroll_repeats_the_request(tmp_path: Path) -> None:
    async with discord_bot(tmp_path, **NO_CHECK) as (fake, bot):
        message = await image_message(fake, bot, "a red fox in snow")
        press = await fake.press_button(message, "Re-roll")
        result = await finished(fake, bot, press, rows=2)
        first, again = bot.server.calls
        assert again.endpoint == "generations" and again.images == 0
        assert (again.prompt, again.size, again.quality) == (first.prompt, first.size, first.quality)
        assert callback(fake, press).json["type"] == 5  # "thinking", in public: the new image is for everyone
        assert labels(result)[0].startswith("Re-roll") and result["attachments"]
        assert result["interaction_metadata"]["interacted_message_id"] == message["id"]


async def test_vary_edits_the_delivered_image(tmp_path: Path) -> None:
    async with discord_bot(tmp_path, **NO_CHECK) as (fake, bot):
        message = await image_message(fake, bot, "a red fox in snow")
        press = await fake.press_button(message, "Vary")
        result = await finished(fake, bot, press, rows=2)
        vary = bot.server.calls[-1]
        assert vary.endpoint == "edits" and vary.images == 1 and not vary.mask
        assert vary.size == "1536x1024" and (vary.prompt or "").startswith("a red fox in snow")
        # The image it edited is the one on the message: fetched afresh, then downloaded from its attachment.
        assert fake.calls_matching("GET", rf"/channels/{fake.channel_id}/messages/{message['id']}")
        [download] = fake.cdn_requests
        assert download.status == 200 and message["attachments"][0]["id"] in download.path
        assert result["attachments"] and labels(result)[1].startswith("Vary")


async def test_upscale_renders_the_largest_size_at_high_quality_and_not_beyond(tmp_path: Path) -> None:
    async with discord_bot(tmp_path, **NO_CHECK) as (fake, bot):
        message = await image_message(fake, bot, "a wide valley")
        press = await fake.press_button(message, "Upscale")
        final = await first_call(
            fake, lambda c: c in original_edits(fake, press) and final_result(c) and c.status == 200
        )
        await bot.settled(2)
        upscale = bot.server.calls[-1]
        assert upscale.endpoint == "edits" and upscale.images == 1
        assert (upscale.size, upscale.quality) == ("3504x2336", "high")
        assert decoded(final).size == (3504, 2336)
        # At its largest size already: no Upscale under it.
        assert not [label for label in labels(response_of(fake, press)) if label.startswith("Upscale")]


async def test_edit_opens_a_form_whose_instruction_is_the_prompt(tmp_path: Path) -> None:
    async with discord_bot(tmp_path, **NO_CHECK) as (fake, bot):
        message = await image_message(fake, bot, "a red fox in snow")
        press = await fake.press_button(message, "Edit")
        await fake.wait_for("POST", rf"/interactions/{press['id']}/[^/]+/callback")
        assert callback(fake, press).json["type"] == 9  # the form is the answer
        form = fake.modals[-1]
        assert form["custom_id"].startswith("imagebot:edit:edit:") and len(form["custom_id"]) <= 100
        submit = await fake.send_interaction(
            type=5, modal_values={"Instruction": "make the fox blue"}, target_message=message
        )
        await finished(fake, bot, submit, rows=2)
        edit = bot.server.calls[-1]
        assert (edit.endpoint, edit.images, edit.prompt) == ("edits", 1, "make the fox blue")
        assert edit.size == "1536x1024" and callback(fake, submit).json["type"] == 5


async def test_delete_by_the_requester_or_an_admin_but_not_by_another(tmp_path: Path) -> None:
    async with discord_bot(tmp_path, **NO_CHECK) as (fake, bot):
        fake.add_member(OTHER)
        fake.add_member(ADMIN, permissions=str(MANAGE_GUILD))
        message = await image_message(fake, bot, "mine")
        press = await fake.press_button(message, "Delete", user_id=OTHER)
        refused = await private_words(fake, press)
        assert texts.DELETE_REFUSED in content(refused)
        assert fake.message(int(message["id"])) is not None
        assert not fake.calls_matching("DELETE", rf"/channels/{fake.channel_id}/messages/\d+")

        press = await fake.press_button(message, "Delete")
        told = await private_words(fake, press)
        assert content(told) == texts.DELETED
        [deleted] = fake.calls_matching("DELETE", rf"/channels/{fake.channel_id}/messages/\d+")
        assert deleted.path.endswith(f"/{message['id']}") and fake.message(int(message["id"])) is None
        # Answered silently (the pressed message stays the press's to edit): nothing public appeared for it.
        assert callback(fake, press).json == {"type": 6}

        other = await image_message(fake, bot, "also mine", rows=2)
        press = await fake.press_button(other, "Delete", user_id=ADMIN)
        assert content(await private_words(fake, press)) == texts.DELETED
        assert fake.message(int(other["id"])) is None
        assert len(bot.server.calls) == 2  # deleting calls no API


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


# -- whose job a click is ------------------------------------------------------------------------------------


async def test_a_click_is_the_clickers_job_under_their_own_quota(tmp_path: Path) -> None:
    async with discord_bot(tmp_path, IMAGEBOT_USER_DAILY_IMAGES="1", **NO_CHECK) as (fake, bot):
        fake.add_member(OTHER)
        message = await image_message(fake, bot, "a red fox")
        press = await fake.press_button(message, "Re-roll", user_id=OTHER)
        await finished(fake, bot, press, rows=2)
        first, second = await bot.ledger()
        assert (first["user"], second["user"]) == (str(fake.user_id), str(OTHER))
        assert second["channel"] == str(fake.channel_id) and second["status"] == "delivered"

        # Their one image of the day is spent: refused, privately, with no API call.
        press = await fake.press_button(message, "Vary", user_id=OTHER)
        refused = await private_words(fake, press)
        assert "daily images" in content(refused)
        assert len(bot.server.calls) == 2 and len(await bot.ledger()) == 2
        assert response_of_gone(fake, press)


async def test_buttons_work_after_a_restart_without_resending_anything(tmp_path: Path) -> None:
    fake = FakeDiscord()
    await fake.start()
    try:
        async with bot_on(fake, tmp_path, **NO_CHECK) as bot:
            message = await image_message(fake, bot, "a red fox in snow")
        before = len(fake.calls)
        async with bot_on(fake, tmp_path, **NO_CHECK) as bot:
            restarted = fake.calls[before:]
            assert not [c for c in restarted if "/messages" in c.path]  # no view was sent again
            press = await fake.press_button(message, "Vary")
            await finished(fake, bot, press, rows=2)
            [vary] = bot.server.calls  # the new process's image server
            assert vary.endpoint == "edits" and vary.images == 1 and vary.size == "1536x1024"
    finally:
        await fake.stop()
        reset_discord_endpoints()
    assert not fake.errors, fake.errors


async def test_an_expired_button_gets_a_private_notice(tmp_path: Path) -> None:
    async with discord_bot(tmp_path, **NO_CHECK) as (fake, bot):
        message = await image_message(fake, bot, "old news")
        await backdate(bot, "results", timedelta(days=31))
        for label in ("Vary", "Re-roll", "Delete"):
            press = await fake.press_button(message, label)
            told = await private_words(fake, press)
            assert "expired" in content(told) and callback(fake, press).status == 200
            assert response_of_gone(fake, press)
        assert len(bot.server.calls) == 1 and len(await bot.ledger()) == 1
        assert fake.message(int(message["id"])) is not None


# -- the price check -----------------------------------------------------------------------------------------


async def ask(fake: FakeDiscord, prompt: str = "a cathedral") -> tuple[dict[str, Any], dict[str, Any]]:
    """/imagine at high 1024x1024 (above a $0.10 check): the interaction and its private question."""
    ix = await imagine(fake, prompt, size="1024x1024", quality="high")
    await private_words(fake, ix)
    [message] = [m for m in fake.messages[fake.channel_id] if m["flags"] & EPHEMERAL and m["components"]]
    return ix, message


async def test_an_expensive_render_asks_privately_and_renders_on_render(tmp_path: Path) -> None:
    async with discord_bot(tmp_path, IMAGEBOT_CONFIRM_USD="0.10") as (fake, bot):
        ix, question = await ask(fake)
        assert question["flags"] & EPHEMERAL and labels(question) == ["Render", "Cancel"]
        assert "$0.1000" in question["content"] and "Render" in question["content"]
        ids = [b["custom_id"] for b in FakeDiscord.buttons(question)]
        assert ids[0].startswith("imagebot:render:") and ids[1].startswith("imagebot:decline:")
        assert response_of_gone(fake, ix)  # nothing public was left of the /imagine
        assert not bot.server.calls and not await bot.ledger()  # nothing reserved, nothing called

        press = await fake.press_button(question, "Render")
        result = await finished(fake, bot, press, rows=1)
        [row] = await bot.ledger()
        assert (row["user"], row["status"], row["quality"]) == (str(fake.user_id), "delivered", "high")
        assert [c.quality for c in bot.server.calls] == ["high"]
        assert labels(result)[0].startswith("Re-roll")  # a rendered price check is a job like any other

        again = await fake.press_button(question, "Render")  # once only
        assert "already" in content(await private_words(fake, again))
        assert len(bot.server.calls) == 1


async def test_cancel_costs_nothing(tmp_path: Path) -> None:
    async with discord_bot(tmp_path, IMAGEBOT_CONFIRM_USD="0.10") as (fake, bot):
        _, question = await ask(fake)
        press = await fake.press_button(question, "Cancel")
        told = await private_words(fake, press)
        assert content(told) == texts.CONFIRM_CANCELLED
        assert callback(fake, press).json == {"type": 5, "data": {"flags": EPHEMERAL}}
        [(state,)] = await bot.core.ledger.query("SELECT state FROM confirmations")
        assert state == "cancelled" and not bot.server.calls and not await bot.ledger()


async def test_render_after_ten_minutes_is_refused(tmp_path: Path) -> None:
    async with discord_bot(tmp_path, IMAGEBOT_CONFIRM_USD="0.10") as (fake, bot):
        _, question = await ask(fake)
        await backdate(bot, "confirmations", timedelta(minutes=11))
        press = await fake.press_button(question, "Render")
        assert "expired" in content(await private_words(fake, press))
        assert response_of_gone(fake, press)
        assert not bot.server.calls and not await bot.ledger()


async def test_a_cheap_render_does_not_ask_and_a_reply_to_edit_asks_in_a_reply(tmp_path: Path) -> None:
    async with discord_bot(tmp_path, IMAGEBOT_CONFIRM_USD="0.10") as (fake, bot):
        fake.add_member(OTHER)
        image = await image_message(fake, bot, "a red square", size="1024x1024")  # low: no question
        assert not [m for m in fake.messages[fake.channel_id] if m["flags"] & EPHEMERAL]

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


async def test_a_replayed_interaction_is_no_new_job(tmp_path: Path) -> None:
    """The same interaction (the same id) delivered again is ignored before any answer: one callback, one job,
    one API call for a command, a button and a form, and the replays say nothing."""
    async with discord_bot(tmp_path, **NO_CHECK) as (fake, bot):
        ix = await imagine(fake, "a red fox", size="1024x1024", quality="low")
        for _ in range(2):
            await fake.replay_interaction(ix)
        message = await finished(fake, bot, ix, rows=1)

        press = await fake.press_button(message, "Re-roll")
        for _ in range(2):
            await fake.replay_interaction(press)
        await finished(fake, bot, press, rows=2)

        edit = await fake.press_button(message, "Edit")
        await fake.wait_for("POST", rf"/interactions/{edit['id']}/[^/]+/callback")
        submit = await fake.send_interaction(
            type=5, modal_values={"Instruction": "make the fox blue"}, target_message=message
        )
        for _ in range(2):
            await fake.replay_interaction(submit)
        await finished(fake, bot, submit, rows=3)

        # A positive signal that the replays above were handled: a new command after them renders.
        last = await imagine(fake, "a grey wolf", size="1024x1024", quality="low")
        rows = await bot.settled(4)
        await finished(fake, bot, last, rows=4)
        assert [r["status"] for r in rows] == ["delivered"] * 4, rows
        assert len(bot.server.calls) == 4
        for each in (ix, press, edit, submit, last):
            assert len(fake.calls_matching("POST", rf"/interactions/{each['id']}/[^/]+/callback")) == 1
            assert len(fake.calls_matching("POST", rf"/webhooks/{fake.application_id}/{each['token']}")) == 0
