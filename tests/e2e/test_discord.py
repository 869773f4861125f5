"""Discord end to end: the real discord.py client and command tree, a fake Discord, the offline image server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.store.ledger import Interrupted
from tests.e2e.harness import RunningBot
from tests.fakes.discord import FakeDiscord
from tests.support.discord import (
    EPHEMERAL,
    MANAGE_GUILD,
    RESULT_LABELS,
    buttons,
    cancel_buttons,
    content,
    decoded,
    discord_bot,
    final_result,
    first_call,
    imagine,
    original_edits,
)
from tests.support.images import png


@pytest.fixture
async def discord(tmp_path: Path) -> AsyncIterator[tuple[FakeDiscord, RunningBot]]:
    async with discord_bot(tmp_path) as running:
        yield running


async def test_imagine_defers_shows_progress_then_puts_the_image_in_the_response(discord: Any) -> None:
    fake, bot = discord
    ix = await imagine(fake, "a lighthouse at dawn", size="1536x1024", quality="low")
    final = await first_call(
        fake, lambda c: c.method == "PATCH" and bool(c.files) and "request id" in content(c)
    )
    rows = await bot.settled(1)

    [callback] = fake.calls_matching("POST", rf"/interactions/{ix['id']}/{ix['token']}/callback")
    assert callback.json["type"] == 5  # deferred, "thinking"
    edits = original_edits(fake, ix)
    assert edits[0].at - callback.at < 2 and "Rendering" in content(edits[0])
    assert edits[0].json["components"][0]["components"][0]["custom_id"].startswith("imagebot:cancel:")
    assert edits[-1] is final and not cancel_buttons(final)  # the progress is over
    assert [c["label"].split(" · ")[0] for c in buttons(final)] == RESULT_LABELS
    image = decoded(final)
    assert image.size == (1536, 1024) and image.format == "JPEG"
    assert "1536x1024 low jpeg" in content(final) and "a lighthouse at dawn" in content(final)
    assert "offline" in content(final)
    assert (
        bot.server.calls[0].partial_images == 0
    )  # a low 1K render: previews would cost more than they are worth
    [row] = rows
    assert row["status"] == "delivered" and 0 < row["actual_micros"] <= row["reserved_micros"]
    assert (row["platform"], row["workspace"], row["channel"], row["user"]) == (
        "discord",
        str(fake.guild_id),
        str(fake.channel_id),
        str(fake.user_id),
    )
    assert json.loads(row["request_ids"])[0] in content(final)
    original = fake.message(int(final.json.get("id") or fake.messages[fake.channel_id][0]["id"]))
    assert original is not None and json.loads(row["context"]) == {
        "channel_id": str(fake.channel_id),
        "message_id": original["id"],
        "locale": "en",  # the requester's language goes with the job (a restart speaks it too)
    }


async def test_edit_with_two_references_and_a_mask(discord: Any) -> None:
    fake, bot = discord
    files = {
        "ref1": fake.add_attachment(filename="photo.png", data=png(1024, 1024), content_type="image/png"),
        "ref2": fake.add_attachment(
            filename="style.png", data=png(512, 512, color="blue"), content_type="image/png"
        ),
        "mask": fake.add_attachment(
            filename="m.png", data=png(1024, 1024, alpha=True), content_type="image/png"
        ),
    }
    ix = await imagine(fake, "put the style on the photo", attachments=files, quality="low")
    [row] = await bot.settled(1)
    call = bot.server.calls[-1]
    assert call.endpoint == "edits" and call.images == 2 and call.mask
    assert call.prompt == "put the style on the photo"
    assert row["status"] == "delivered"
    assert len(fake.cdn_requests) == 3 and all(
        r.status == 200 and r.query.get("hm") for r in fake.cdn_requests
    )
    final = await first_call(fake, lambda c: c in original_edits(fake, ix) and final_result(c))
    assert "Editing" in content(original_edits(fake, ix)[0]) and decoded(final).size == (1024, 1024)


async def test_oversize_image_is_re_encoded_before_upload_and_again_on_413(tmp_path: Path) -> None:
    # The interaction says 60 kB (and so does the upload check); the guild's boost tier says 10 MiB.
    async with discord_bot(tmp_path, fake_kwargs={"filesize_limit_override": 60_000}) as (fake, bot):
        ix = await imagine(fake, "a detailed map", size="1024x1024", quality="low", format="png")
        final = await first_call(
            fake, lambda c: c in original_edits(fake, ix) and final_result(c) and c.status == 200
        )
        assert "re-encoded as JPEG" in content(final)
        assert decoded(final).format == "JPEG" and len(final.files[0][2]) <= 60_000
        await bot.settled(1)

        # A reply-to-edit posts in the channel, where only the guild's 10 MiB is known: 413, then smaller.
        await fake.send_message(
            content="now at night --format png --quality low",
            mentions_bot=True,
            referenced_message=fake.messages[fake.channel_id][0],
        )
        channel = rf"/channels/{fake.channel_id}/messages"
        posted = await first_call(
            fake, lambda c: c.method == "POST" and c.path == channel and final_result(c) and c.status == 200
        )
        # Discord said 413 (to a preview, or to the image): the image was fitted under what it refused.
        assert any(c.status == 413 for c in fake.calls if c.path.startswith(channel))
        assert "re-encoded as JPEG" in content(posted) and len(posted.files[0][2]) <= 60_000
        rows = await bot.settled(2)
        assert [r["status"] for r in rows] == ["delivered", "delivered"]


@pytest.mark.parametrize("expiry", ["token rejected", "token age"])
async def test_past_the_interaction_token_the_job_finishes_in_the_channel(
    tmp_path: Path, expiry: str
) -> None:
    async with discord_bot(tmp_path) as (fake, bot):
        bot.server.latency = 1.0
        if expiry == "token age":
            bot.adapters["discord"].token_lifetime = 0.3
        ix = await imagine(fake, "a slow render", quality="low")
        await first_call(fake, lambda c: c in original_edits(fake, ix))
        original = fake.messages[fake.channel_id][0]
        if expiry == "token rejected":
            fake.expire_interaction_tokens()
        channel = rf"/channels/{fake.channel_id}/messages"
        final = await first_call(fake, lambda c: c.method == "POST" and c.path == channel and final_result(c))
        assert final.status == 200 and str(final.json["message_reference"]["message_id"]) == original["id"]
        assert f"<@{fake.user_id}>" in content(final) and final.json["allowed_mentions"]["parse"] == []
        assert decoded(final).size == (1024, 1024)
        if expiry == "token rejected":
            assert any(c.status == 401 for c in original_edits(fake, ix))
        else:
            assert all(c.status == 200 for c in original_edits(fake, ix))
        [row] = await bot.settled(1)
        assert row["status"] == "delivered"


async def test_reply_to_an_image_edits_it(discord: Any) -> None:
    fake, bot = discord
    ix = await imagine(fake, "a red square", size="1024x1024", quality="low", format="png")
    await first_call(fake, lambda c: c in original_edits(fake, ix) and final_result(c))
    await bot.settled(1)
    image_message = fake.messages[fake.channel_id][0]

    # Without the mention Discord hides the text from us: nothing happens.
    await fake.send_message(content="nice", referenced_message=image_message)
    ref = fake.add_attachment(
        filename="texture.png", data=png(300, 300, color="blue"), content_type="image/png"
    )
    reply = await fake.send_message(
        content="make it blue --quality low",
        referenced_message=image_message,
        mentions_bot=True,
        attachments=[ref],
    )
    channel = rf"/channels/{fake.channel_id}/messages"
    final = await first_call(fake, lambda c: c.method == "POST" and c.path == channel and final_result(c))
    rows = await bot.settled(2)
    edit = bot.server.calls[-1]
    assert len(bot.server.calls) == 2
    assert edit.endpoint == "edits" and edit.images == 2 and edit.prompt == "make it blue"
    assert str(final.json["message_reference"]["message_id"]) == reply["id"]
    assert decoded(final).size == (1024, 1024)
    assert [r["status"] for r in rows] == ["delivered", "delivered"]


async def test_quota_refusal_is_ephemeral_and_costs_nothing(tmp_path: Path) -> None:
    async with discord_bot(tmp_path, IMAGEBOT_USER_DAILY_IMAGES="1") as (fake, bot):
        await imagine(fake, "first", quality="low")
        await bot.settled(1)
        ix = await imagine(fake, "second", quality="low")
        [refusal] = await fake.wait_for("POST", rf"/webhooks/{fake.application_id}/{ix['token']}")
        assert "daily images" in content(refusal) and refusal.json["flags"] & EPHEMERAL
        # The public "thinking" message of the refused job is gone; only the requester sees why.
        [public] = [m for m in fake.messages[fake.channel_id] if not m["flags"] & EPHEMERAL]
        assert "first" in public["content"]
        [private] = [m for m in fake.messages[fake.channel_id] if m["flags"] & EPHEMERAL]
        assert "daily images" in private["content"] and "resets" in private["content"]
        assert len(bot.server.calls) == 1 and len(await bot.ledger()) == 1


async def test_provider_failure_says_so_with_the_request_id_and_charges_nothing(discord: Any) -> None:
    fake, bot = discord
    bot.server.push_faults("500*")
    ix = await imagine(fake, "a storm", quality="low")
    [row] = await bot.settled(1)
    failure = await first_call(
        fake, lambda c: c in original_edits(fake, ix) and "Nothing was charged" in content(c)
    )
    assert "HTTP 500" in content(failure) and json.loads(row["request_ids"])[-1] in content(failure)
    assert failure.json["components"] == [] and not failure.files
    assert row["status"] == "failed" and row["actual_micros"] == 0


async def test_admin_commands_are_hidden_refused_to_members_and_allowed_to_managers(discord: Any) -> None:
    fake, bot = discord
    [admin] = [c for c in fake.registered_commands if c["name"] == "imagine-admin"]
    assert int(admin["default_member_permissions"]) == MANAGE_GUILD
    quota = [
        {"name": "quota", "type": 1, "options": [{"name": "limits", "type": 3, "value": "daily_images=2"}]}
    ]
    ix = await fake.send_interaction(name="imagine-admin", options=quota, permissions="0")
    [refused] = await fake.wait_for("POST", rf"/webhooks/{fake.application_id}/{ix['token']}")
    assert "Only admins" in content(refused)
    assert fake.message(int(fake.messages[fake.channel_id][-1]["id"]))["flags"] & EPHEMERAL  # type: ignore[index]
    other = fake.user_id + 1
    quota[0]["options"].append({"name": "user", "type": 6, "value": str(other)})
    ix = await fake.send_interaction(name="imagine-admin", options=quota, permissions=str(MANAGE_GUILD))
    [allowed] = await fake.wait_for("POST", rf"/webhooks/{fake.application_id}/{ix['token']}")
    assert f"Limits for user {other} set: daily_images=2" in content(allowed)


async def test_everyone_in_a_prompt_pings_nobody(discord: Any) -> None:
    fake, bot = discord
    ix = await imagine(fake, "hello @everyone and <@&123> **loud**", quality="low")
    await first_call(fake, lambda c: c in original_edits(fake, ix) and final_result(c))
    await bot.settled(1)
    echoed = [c for c in fake.calls if "@everyone" in content(c)]
    assert len(echoed) >= 2 and all(c.json["allowed_mentions"]["parse"] == [] for c in echoed)
    assert all("\\*\\*loud\\*\\*" in c.json["content"] for c in echoed)


async def test_cancel_button_works_only_for_the_requester(discord: Any) -> None:
    fake, bot = discord
    bot.server.latency = 5
    ix = await imagine(fake, "a slow one", quality="low")
    first = await first_call(fake, lambda c: c in original_edits(fake, ix))
    button = first.json["components"][0]["components"][0]
    message = fake.messages[fake.channel_id][0]
    other = fake.user_id + 1
    press = await fake.send_interaction(
        type=3, custom_id=button["custom_id"], component_type=2, target_message=message, user_id=other
    )
    [ack] = await fake.wait_for("POST", rf"/interactions/{press['id']}/[^/]+/callback")
    assert ack.json["type"] == 6  # answered first, without a word; then, only to the one who pressed:
    [refused] = await fake.wait_for("POST", rf"/webhooks/{fake.application_id}/{press['token']}")
    assert refused.json["flags"] & EPHEMERAL and "Only the person who started this job" in content(refused)
    press = await fake.send_interaction(
        type=3, custom_id=button["custom_id"], component_type=2, target_message=message
    )
    [rows, cancelled] = await asyncio.gather(
        bot.settled(1),
        first_call(
            fake, lambda c: c in original_edits(fake, ix) and content(c).startswith("> a slow one\nCancelled")
        ),
    )
    assert rows[0]["status"] == "cancelled" and cancelled.json["components"] == []
    assert fake.calls_matching("POST", rf"/interactions/{press['id']}/[^/]+/callback")[0].json["type"] == 6


async def test_edit_image_message_command_asks_for_the_instruction(discord: Any) -> None:
    fake, bot = discord
    photo = fake.add_attachment(filename="cat.jpg", data=png(800, 800), content_type="image/png")
    await fake.send_message(content="my cat", attachments=[photo])
    await fake.send_interaction(
        name="Edit image", command_type=3, target_message=fake.messages[fake.channel_id][0]
    )
    await fake.wait_for("POST", r"/interactions/\d+/[^/]+/callback")
    assert fake.modals[-1]["title"] == "Edit image"
    submit = await fake.send_interaction(type=5, modal_values={"Instruction": "give it a hat --quality low"})
    final = await first_call(fake, lambda c: c in original_edits(fake, submit) and final_result(c))
    [row] = await bot.settled(1)
    call = bot.server.calls[-1]
    assert call.endpoint == "edits" and call.images == 1 and call.prompt == "give it a hat"
    assert decoded(final).size == (1024, 1024) and row["status"] == "delivered"


async def test_usage_report_with_chart_quota_privately_and_size_suggestions(discord: Any) -> None:
    fake, bot = discord
    ix = await imagine(fake, "one", quality="low")
    await first_call(fake, lambda c: c in original_edits(fake, ix) and final_result(c))
    await bot.settled(1)
    usage = await fake.send_interaction(
        name="imagine-usage", options=[{"name": "days", "type": 4, "value": 7}]
    )
    [report] = await fake.wait_for("POST", rf"/webhooks/{fake.application_id}/{usage['token']}")
    assert "last 7 days: 1 images" in content(report) and not report.json.get("flags")
    assert decoded(report).format == "PNG"
    mine = await fake.send_interaction(name="imagine-quota")
    [quota] = await fake.wait_for("POST", rf"/webhooks/{fake.application_id}/{mine['token']}")
    assert "quota" in content(quota).lower()
    [callback] = fake.calls_matching("POST", rf"/interactions/{mine['id']}/[^/]+/callback")
    assert callback.json["data"]["flags"] & EPHEMERAL
    await fake.send_interaction(
        type=4,
        name="imagine",
        options=[
            {"name": "prompt", "type": 3, "value": "x"},
            {"name": "size", "type": 3, "value": "2048", "focused": True},
        ],
    )
    await fake.wait_for("POST", r"/interactions/\d+/[^/]+/callback", count=4)
    offered = [c["value"] for c in fake.autocomplete_results[-1]["choices"]]
    assert offered[0] == "2048" and "2048x1152" in offered and "2048x2048" in offered


async def test_interrupted_job_is_told_in_the_channel(discord: Any) -> None:
    fake, bot = discord
    anchor = await fake.send_message(content="earlier")
    job = Interrupted(
        "job1",
        "discord",
        str(fake.channel_id),
        str(fake.user_id),
        {"channel_id": str(fake.channel_id), "message_id": anchor["id"]},
        0,
        1,
    )
    await bot.adapters["discord"].tell_interrupted(job)
    [told] = await fake.wait_for("POST", rf"/channels/{fake.channel_id}/messages")
    assert "interrupted" in content(told) and "nothing was charged" in content(told)
    assert str(told.json["message_reference"]["message_id"]) == anchor["id"]
    assert told.json["allowed_mentions"]["parse"] == []
