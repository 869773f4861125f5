"""The adapters' own translation functions, without a network: blocks and messages built from the core's data,
attachment classification, markup escaping, which file URLs may carry the bot token, upload fitting."""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import Any

import discord
import pytest
from PIL import Image

from adapters import discord as discord_adapter
from adapters.slack import blocks as slack_blocks
from adapters.slack.files import trusted_file_url
from bot.app import is_image_attachment, is_mask_name
from bot.jobs import texts
from bot.jobs.outcomes import Progress
from bot.model.pricing import load_prices
from bot.model.request import Requester, parse_request

WHO = Requester("slack", "T1", "C1", "U1")


def progress(
    text: str = "a <fox> & *bold* @everyone --size 1536x1024 --quality high --count 2",
    *,
    state: str = "rendering",
    done: int = 1,
    elapsed: float = 30,
    offline: bool = False,
) -> Progress:
    request = parse_request(text, prices=load_prices())
    return Progress(
        job_id="job1",
        request=request,
        state=state,
        elapsed=elapsed,
        expected=60.0,
        queue_position=3 if state == "queued" else None,
        done=done,
        count=request.count,
        preview=None,
        offline=offline,
    )


# --- Slack -------------------------------------------------------------------------------------------


def test_slack_progress_blocks_show_prompt_settings_status_and_a_cancel_button_for_the_job() -> None:
    blocks = slack_blocks.progress_blocks(progress(offline=True), WHO)
    section, settings, status, actions = blocks
    assert section["text"] == {"type": "plain_text", "emoji": True, "text": progress().request.prompt}
    assert settings["elements"][0]["text"] == "<@U1> · 1536x1024 high jpeg · x2 · offline image server"
    assert status["elements"][0]["text"].endswith("30 s of ~60 s · 1/2 done")
    [button] = actions["elements"]
    assert (button["action_id"], button["value"], button["text"]["text"]) == (
        slack_blocks.CANCEL_ACTION,
        "job1",
        "Cancel",
    )


def test_slack_queued_status_names_the_position() -> None:
    [_, _, status, _] = slack_blocks.progress_blocks(progress(state="queued"), WHO)
    assert status["elements"][0]["text"] == "queued, position 3 · 30 s"


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("<!channel> & <@U2>", "&lt;!channel&gt; &amp; &lt;@U2&gt;"),
        ("<https://evil.example|click>", "&lt;https://evil.example|click&gt;"),
        ("plain", "plain"),
    ],
)
def test_slack_escape_leaves_no_mention_or_link_in_mrkdwn(text: str, escaped: str) -> None:
    assert slack_blocks.escape(text) == escaped


@pytest.mark.parametrize(
    ("url", "api", "trusted"),
    [
        ("https://files.slack.com/files-pri/T1-F1/x.png", "https://slack.com/api/", True),
        ("http://files.slack.com/files-pri/T1-F1/x.png", "https://slack.com/api/", False),
        ("https://files.slack.com.evil.example/x.png", "https://slack.com/api/", False),
        ("https://user:pw@files.slack.com/x.png", "https://slack.com/api/", False),
        ("http://127.0.0.1:8080/files-pri/x.png", "http://127.0.0.1:8080/api/", True),
        ("http://127.0.0.1:8081/files-pri/x.png", "http://127.0.0.1:8080/api/", False),
        ("https://127.0.0.1:8080/files-pri/x.png", "http://127.0.0.1:8080/api/", False),
    ],
)
def test_the_bot_token_goes_only_to_slacks_file_host_over_https(url: str, api: str, trusted: bool) -> None:
    assert trusted_file_url(url, api) is trusted


# --- Discord -----------------------------------------------------------------------------------------


def test_discord_progress_text_quotes_the_prompt_escaped_and_marks_the_bar_as_code() -> None:
    text = discord_adapter.progress_text(progress())
    head, quoted, status = text.split("\n")
    assert head == "**Rendering** · 1536x1024 high jpeg · x2"
    assert quoted.startswith("> a <fox> & \\*bold\\*")
    assert status.startswith("`") and status.endswith("30 s of ~60 s · 1/2 done")
    assert len(discord_adapter.progress_text(progress("x" * 5000))) <= discord_adapter.MAX_CONTENT


def test_discord_queued_status_is_capitalised() -> None:
    assert discord_adapter.progress_text(progress(state="queued")).endswith("Queued, position 3 · 30 s")


def attachment(filename: str, content_type: str | None) -> discord.Attachment:
    data: dict[str, Any] = {
        "id": 1,
        "filename": filename,
        "size": 10,
        "url": "https://cdn.example/a",
        "proxy_url": "https://cdn.example/a",
    }
    if content_type is not None:
        data["content_type"] = content_type
    return discord.Attachment(data=data, state=SimpleNamespace(http=None))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "kind", "image"),
    [
        ("photo.png", "image/png", True),
        ("photo", "image/jpeg", True),
        ("PHOTO.WEBP", None, True),
        ("anim.gif", "image/gif", True),
        ("notes.txt", "text/plain", False),
        ("doc.pdf", None, False),
    ],
)
def test_both_platforms_take_the_same_files_for_images(name: str, kind: str | None, image: bool) -> None:
    assert is_image_attachment(name, kind) is image
    assert discord_adapter.is_image(attachment(name, kind)) is image


@pytest.mark.parametrize(
    ("name", "mask"), [("mask.png", True), ("my-MASK.PNG", True), ("mask.jpg", False), ("base.png", False)]
)
def test_a_png_named_mask_is_the_mask(name: str, mask: bool) -> None:
    assert is_mask_name(name) is mask


def test_discord_token_expiry_and_too_large_are_recognised() -> None:
    def http_error(status: int, code: int) -> discord.HTTPException:
        class Response:
            reason = "x"

        response: Any = Response()
        response.status = status
        return discord.HTTPException(response, {"code": code, "message": "x"})

    assert discord_adapter.token_gone(http_error(401, 50027))
    assert discord_adapter.token_gone(http_error(404, 10015))
    assert not discord_adapter.token_gone(http_error(500, 0))
    assert discord_adapter.too_large(http_error(413, 40005))


def test_images_over_the_upload_limit_are_reencoded_under_it_and_say_so() -> None:
    out = io.BytesIO()
    Image.effect_noise((1024, 1024), 100).convert("RGB").save(out, "PNG")
    big = out.getvalue()
    uploads, notes = discord_adapter.fit_images([(big, "image-1024x1024.png")], len(big) // 4)
    [(name, data)] = uploads
    assert len(data) <= len(big) // 4 and Image.open(io.BytesIO(data)).size[0] <= 1024
    assert notes and "image-1024x1024.png" in notes[0]


# --- the words themselves (bot/jobs/texts.py), as both platforms show them -------------------------------------


def test_the_status_line_is_one_text_for_every_platform() -> None:
    line = texts.status_line(progress())
    assert line in slack_blocks.progress_blocks(progress(), WHO)[2]["elements"][0]["text"]
    assert line.replace(
        texts.bar(progress().fraction), f"`{texts.bar(progress().fraction)}`"
    ) in discord_adapter.progress_text(progress())
