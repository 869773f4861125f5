"""Your settings and spoilers on Slack, what only Slack has, end to end: the real bolt app in HTTP mode, the fake
Slack, the offline image server and the SQLite file: free-text settings, the settings form, Show behind a
spoiler, the manifest's commands. What is checked is what a person sees: the image's pixels, the ledger's row, the
private replies. Defaults, a job's card and history, the same on Discord, are in tests/e2e/test_people_rules.py."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from adapters.manifests import slack_manifest
from tests.e2e.harness import RunningBot, running_bot, slack_env
from tests.fakes.slack import FakeSlack
from tests.support.slack import imagine_ts as imagine
from tests.support.slack import private_to as private_messages
from tests.support.waits import until

ADMIN = "UADMIN"


def private_to(slack: FakeSlack, user: str) -> list[str]:
    """The texts only `user` saw, oldest first."""
    return [e["text"] for e in private_messages(slack, user)]


@pytest.fixture
async def bot(slack: FakeSlack, tmp_path: Path) -> AsyncIterator[RunningBot]:
    async with running_bot(tmp_path, slack_env(slack, IMAGEBOT_CONFIRM_USD="off"), latency=0.05) as running:
        yield running


async def command(slack: FakeSlack, bot: RunningBot, name: str, text: str = "", user: str = "U1") -> str:
    """Run a slash command as `user`; the private reply it got (the newest one to `user`)."""
    before = len(private_to(slack, user))
    status, _, _ = await slack.send_slash_command(bot.events_url, command=name, text=text, user_id=user)
    assert status == 200
    replies = await until(lambda: private_to(slack, user)[before:])
    return str(replies[-1])


def image_of(slack: FakeSlack, thread: str) -> Image.Image:
    [upload] = [u for u in slack.uploaded if u.thread_ts == thread]
    return Image.open(io.BytesIO(upload.bytes))


# -- your defaults ------------------------------------------------------------------------------------------


async def test_free_text_settings_name_what_is_wrong_and_change_nothing(
    slack: FakeSlack, bot: RunningBot
) -> None:
    """Typed as text, a setting can be anything (Discord's options are typed and chosen)."""
    await command(slack, bot, "/imagine-settings", "quality=low")
    unknown = await command(slack, bot, "/imagine-settings", "size=2k colour=red")
    assert "'colour=red' is not one of your settings" in unknown
    assert all(name in unknown for name in ("size=", "quality=", "format=", "count=", "mode=", "language="))
    bad = await command(slack, bot, "/imagine-settings", "quality=ultra")
    assert "low, medium, high, auto" in bad and "Nothing was changed" in bad
    language = await command(slack, bot, "/imagine-settings", "language=fr")
    assert "en, zh-CN" in language
    assert "quality: low (yours)" in await command(slack, bot, "/imagine-settings", "show")
    assert not [m for m in slack.messages.get("C1", []) if m.get("bot_id")]  # nothing public


async def test_the_settings_modal_shows_and_saves_the_defaults(slack: FakeSlack, bot: RunningBot) -> None:
    await command(slack, bot, "/imagine-settings", "format=png")
    await slack.send_slash_command(bot.events_url, command="/imagine-settings", text="", user_id="U1")
    [opened] = await slack.wait_for("views.open")
    view_id = next(iter(slack.views))
    view = slack.views[view_id]["view"]
    assert view["title"]["text"] and view["submit"]
    initial = {
        b["element"]["action_id"]: (b["element"].get("initial_option") or {}).get("value")
        or b["element"].get("initial_value")
        for b in view["blocks"]
        if b["type"] == "input"
    }
    assert initial["format"] == "png" and initial["language"] is None

    before = len(private_to(slack, "U1"))
    status, body = await slack.send_view_submission(
        bot.events_url, view_id, {"size": "huge", "quality": "high", "format": "png"}
    )
    assert status == 200 and "errors" in body and "size" in body  # the form stays open, says why
    status, body = await slack.send_view_submission(
        bot.events_url, view_id, {"size": "2k", "quality": "high", "format": "png", "language": "zh-CN"}
    )
    assert status == 200 and not body.strip()
    saved = await until(lambda: private_to(slack, "U1")[before:])
    # Saved with language=zh-CN: the answer is already in the language just chosen.
    assert "尺寸：2k（你的）" in saved[-1] and "语言：zh-CN（你的）" in saved[-1], saved[-1]
    assert "已保存。你在此工作区的默认设置" in saved[-1]
    bare = await imagine(slack, bot, "a lighthouse")
    assert image_of(slack, bare).size == (2048, 2048) and image_of(slack, bare).format == "PNG"


# -- a job's card and your history ---------------------------------------------------------------------------


# -- spoilers ------------------------------------------------------------------------------------------------


async def test_spoiler_on_hides_the_image_behind_show(slack: FakeSlack, bot: RunningBot) -> None:
    slack.admins.add(ADMIN)
    said = await command(slack, bot, "/imagine-admin", "channel <#C1> spoiler=on", user=ADMIN)
    assert "spoiler=on" in said
    ts = await imagine(slack, bot, "a surprise --quality low --size 1024x1024")
    [upload] = [u for u in slack.uploaded if u.title.startswith("a surprise")]
    assert upload.channel_id is None  # uploaded, not shared into the channel
    thread = [m for m in slack.thread("C1", ts) if m["ts"] != ts]
    assert thread and not any(m.get("files") for m in thread)
    before = len(private_to(slack, "U2"))
    shown = next(
        m for m in thread if any(el["text"]["text"] == "Show" for el in slack.buttons(m.get("blocks")))
    )
    await slack.press(bot.events_url, "Show", message_ts=shown["ts"], user_id="U2")
    await until(lambda: private_to(slack, "U2")[before:])
    [eph] = [e for e in slack.ephemerals if e["user"] == "U2"][-1:]
    images = [b for b in eph["blocks"] or [] if b["type"] == "image"]
    assert [b["slack_file"]["id"] for b in images] == [upload.id]
    assert not any(
        e["user"] == "U1" and e.get("blocks") and "image" in str(e["blocks"]) for e in slack.ephemerals
    )

    # A reply in the thread still edits that image, and the edit is hidden too.
    event = slack.message_event(text=f"<@{slack.bot_user_id}> make it green --quality low", thread_ts=ts)
    await slack.send_event(bot.events_url, event)
    await bot.settled(2)
    assert bot.server.calls[-1].endpoint == "edits"
    assert all(u.channel_id is None for u in slack.uploaded)


def test_the_manifest_has_the_new_commands() -> None:
    for socket_mode in (True, False):
        names = {c["command"] for c in slack_manifest(socket_mode=socket_mode)["features"]["slash_commands"]}
        assert {"/imagine-settings", "/imagine-info", "/imagine-history"} <= names


async def test_slack_sends_only_the_commands_the_manifest_declares(slack: FakeSlack, bot: RunningBot) -> None:
    with pytest.raises(ValueError, match="manifest does not declare it"):
        await slack.send_slash_command(bot.events_url, command="/imagine-nothing", text="")
    assert (await command(slack, bot, "/imagine-history")).startswith("You have no jobs here yet")
