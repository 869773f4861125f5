"""Hostile input through the Slack adapter: each gets a clear private error, no API call, no charge."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

from tests.e2e.harness import RunningBot
from tests.fakes.slack import FakeSlack


def png(width: int, height: int, mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height), "red").save(out, "PNG")
    return out.getvalue()


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A tiny PNG whose header claims 900 MP (the pixels compress to almost nothing)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
        + chunk(b"IDAT", raw)
        + chunk(b"IEND", b"")
    )


async def _image_thread(slack: FakeSlack, bot: RunningBot) -> str:
    await slack.send_slash_command(bot.events_url, text="base --size 1024x1024 --quality low --format png")
    await slack.wait_for("files.completeUploadExternal")
    await bot.settled(1)
    return slack.uploaded[0].thread_ts


async def _reply_with(slack: FakeSlack, bot: RunningBot, files: list[dict], text: str = "edit it") -> str:
    thread = await _image_thread(slack, bot)
    await slack.send_event(
        bot.events_url, slack.message_event(text=text, thread_ts=thread, files=files, mention=True)
    )
    [ephemeral] = await slack.wait_for("chat.postEphemeral")
    assert len(bot.server.calls) == 1  # only the base image: the hostile reply called no API
    rows = await bot.ledger()
    assert len(rows) == 1 and rows[0]["status"] == "delivered"
    return str(ephemeral.args["text"])


async def test_decompression_bomb(slack: FakeSlack, bot: RunningBot) -> None:
    f = slack.add_file(name="bomb.png", data=bomb_png(), mimetype="image/png", filetype="png")
    assert "decompression bomb" in await _reply_with(slack, bot, [f])


async def test_file_that_lies_about_its_type(slack: FakeSlack, bot: RunningBot) -> None:
    out = io.BytesIO()
    Image.new("RGB", (64, 64)).save(out, "GIF")
    f = slack.add_file(name="photo.png", data=out.getvalue(), mimetype="image/png", filetype="png")
    assert "GIF; images must be PNG, JPEG or WebP" in await _reply_with(slack, bot, [f])


async def test_60_mb_attachment_stops_reading_at_the_cap(slack: FakeSlack, bot: RunningBot) -> None:
    f = slack.add_file(
        name="huge.png", data=png(8, 8) + b"\0" * (60 * 1024 * 1024), mimetype="image/png", filetype="png"
    )
    assert "over 50 MB" in await _reply_with(slack, bot, [f])


async def test_mask_of_the_wrong_size(slack: FakeSlack, bot: RunningBot) -> None:
    f = slack.add_file(name="mask.png", data=png(512, 512, "RGBA"), mimetype="image/png", filetype="png")
    text = await _reply_with(slack, bot, [f])
    assert "512x512" in text and "1024x1024" in text and "same size" in text


async def test_mask_without_alpha(slack: FakeSlack, bot: RunningBot) -> None:
    f = slack.add_file(name="mask.png", data=png(1024, 1024, "RGB"), mimetype="image/png", filetype="png")
    assert "no alpha channel" in await _reply_with(slack, bot, [f])


async def test_six_images(slack: FakeSlack, bot: RunningBot) -> None:
    files = [
        slack.add_file(name=f"r{i}.png", data=png(300, 300), mimetype="image/png", filetype="png")
        for i in range(5)
    ]
    assert "6 images given; at most 5" in await _reply_with(slack, bot, files)


async def test_prompt_of_32001_characters(slack: FakeSlack, bot: RunningBot) -> None:
    await slack.send_slash_command(bot.events_url, text="x" * 32_001)
    await slack.wait_for("response_url")
    assert any("32,001 characters; the limit is 32,000" in str(e) for e in slack.ephemerals)
    assert bot.server.calls == [] and await bot.ledger() == []


async def test_markup_injection_is_echoed_safely(slack: FakeSlack, bot: RunningBot) -> None:
    prompt = "<!channel> <!here> <@U999> <https://evil.example|click> *bold* \x07bell @everyone"
    await slack.send_slash_command(bot.events_url, text=f"{prompt} --quality low")
    [upload] = await slack.wait_for("files.completeUploadExternal")
    comment = upload.args["initial_comment"]
    assert "<!channel>" not in comment and "<!here>" not in comment and "<@U999>" not in comment
    posted = slack.calls_to("chat.postMessage")[0].args
    section = posted["blocks"][0]["text"]
    assert section["type"] == "plain_text"  # the prompt is never parsed as mrkdwn in the progress message
    assert "<!channel>" not in str(posted.get("text", "")).replace("&lt;!channel&gt;", "")
