"""Attachments are counted and their declared sizes checked before any download (docs/rules.md §10), on Slack and on
Discord: too many files, or one declared over 50 MB, is refused privately with nothing downloaded at all."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.e2e.harness import RunningBot
from tests.fakes.discord import FakeDiscord
from tests.fakes.slack import FakeSlack
from tests.support.discord import discord_bot, final_result, first_call, imagine, original_edits


@pytest.fixture
async def on_discord(tmp_path: Path) -> AsyncIterator[tuple[FakeDiscord, RunningBot]]:
    async with discord_bot(tmp_path) as running:
        yield running


def png(side: int = 64) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (side, side), "red").save(out, "PNG")
    return out.getvalue()


def downloads(slack: FakeSlack) -> list[Any]:
    return [c for c in slack.calls if c.method == "file_download"]


async def test_slack_counts_the_files_before_downloading_any(slack: FakeSlack, bot: RunningBot) -> None:
    """Seen: 12 attachments of 40 MiB were downloaded and decoded (RSS +492 MiB) before the 5-image rule."""
    files = [
        slack.add_file(name=f"photo{i}.png", data=png(), mimetype="image/png", filetype="png")
        for i in range(12)
    ]
    await slack.send_event(bot.events_url, slack.message_event(text="fuse them", files=files, mention=True))
    [ephemeral] = await slack.wait_for("chat.postEphemeral")
    text = str(ephemeral.args["text"])
    assert "12 images given; at most 5" in text, text
    assert downloads(slack) == [] and bot.server.calls == [] and await bot.ledger() == []


async def test_slack_refuses_a_file_declared_over_50_mb_before_downloading_any(
    slack: FakeSlack, bot: RunningBot
) -> None:
    small = slack.add_file(name="small.png", data=png(), mimetype="image/png", filetype="png")
    huge = slack.add_file(
        name="huge.png", data=png(8) + b"\0" * (51 * 1000 * 1000), mimetype="image/png", filetype="png"
    )
    await slack.send_event(
        bot.events_url, slack.message_event(text="fuse", files=[small, huge], mention=True)
    )
    [ephemeral] = await slack.wait_for("chat.postEphemeral")
    assert "huge.png is over 50 MB" in str(ephemeral.args["text"])
    assert downloads(slack) == [] and bot.server.calls == []


async def test_discord_counts_a_replys_files_before_downloading_any(
    on_discord: tuple[FakeDiscord, RunningBot],
) -> None:
    fake, bot = on_discord
    ix = await imagine(fake, "a red square", size="1024x1024", quality="low", format="png")
    await first_call(fake, lambda c: c in original_edits(fake, ix) and final_result(c))
    await bot.settled(1)
    image_message = fake.messages[fake.channel_id][0]
    before = len(fake.cdn_requests)
    files = [
        fake.add_attachment(filename=f"p{i}.png", data=png(), content_type="image/png") for i in range(12)
    ]
    reply = await fake.send_message(
        content="fuse them", referenced_message=image_message, mentions_bot=True, attachments=files
    )
    # The reply path has no private reply: the refusal goes by DM, naming the message it is about.
    await first_call(
        fake, lambda c: any("images given" in m["content"] for m in fake.dm_messages(fake.user_id))
    )
    [told] = [m for m in fake.dm_messages(fake.user_id) if "images given" in m["content"]]
    assert reply["id"] in told["content"]
    assert "13 images given; at most 5" in told["content"]  # the image replied to, and 12 more
    assert len(fake.cdn_requests) == before and len(bot.server.calls) == 1
