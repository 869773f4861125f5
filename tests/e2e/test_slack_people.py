"""Your settings, a job's card, your history and spoilers on Slack, end to end: the real bolt app in HTTP mode,
the fake Slack, the offline image server and the SQLite file. What is checked is what a person sees: the
image's pixels, the ledger's row, the private replies."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from adapters.manifests import slack_manifest
from bot.model.pricing import format_usd
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


async def rows_of(bot: RunningBot, job_id: str) -> list[dict[str, Any]]:
    return await bot.ledger("job_id=?", [job_id])


def job_of(slack: FakeSlack, ts: str) -> str:
    return str(slack.button("Re-roll", message_ts=ts)["value"]).split(":")[1]


# -- your defaults ------------------------------------------------------------------------------------------


async def test_a_default_applies_to_a_bare_imagine_and_a_flag_overrides_it(
    slack: FakeSlack, bot: RunningBot
) -> None:
    said = await command(slack, bot, "/imagine-settings", "--size 2k --quality high")
    assert "Saved" in said and "size: 2k (yours)" in said and "quality: high (yours)" in said

    bare = await imagine(slack, bot, "a lighthouse")
    assert image_of(slack, bare).size == (2048, 2048)
    [row] = await rows_of(bot, job_of(slack, bare))
    assert (row["size"], row["quality"], row["status"]) == ("2048x2048", "high", "delivered")

    flagged = await imagine(slack, bot, "a fox --size 1536x1024 --quality low")
    assert image_of(slack, flagged).size == (1536, 1024)
    [row] = await rows_of(bot, job_of(slack, flagged))
    assert (row["size"], row["quality"]) == ("1536x1024", "low")

    # Another person's requests are not touched by U1's defaults.
    other = await imagine(slack, bot, "a cat --quality low", user="U2")
    [row] = await rows_of(bot, job_of(slack, other))
    assert row["size"] != "2048x2048" and row["user"] == "U2"


async def test_a_default_a_channel_forbids_is_refused_as_the_flag_would_be(
    slack: FakeSlack, bot: RunningBot
) -> None:
    slack.admins.add(ADMIN)
    await command(slack, bot, "/imagine-admin", "channel <#C1> max_quality=medium", user=ADMIN)
    await command(slack, bot, "/imagine-settings", "quality=high")
    refused = await command(slack, bot, "/imagine", "a lighthouse")
    assert "max_quality=medium" in refused and "your default" in refused and "/imagine-settings" in refused
    typed = await command(slack, bot, "/imagine", "a lighthouse --quality high", user="U2")
    assert "max_quality=medium" in typed and "your default" not in typed
    assert await bot.ledger() == []  # nothing reserved, nothing called
    assert bot.server.calls == []


async def test_bad_settings_are_refused_privately_and_change_nothing(
    slack: FakeSlack, bot: RunningBot
) -> None:
    await command(slack, bot, "/imagine-settings", "quality=low")
    unknown = await command(slack, bot, "/imagine-settings", "size=2k colour=red")
    assert "'colour=red' is not one of your settings" in unknown
    assert all(name in unknown for name in ("size=", "quality=", "format=", "count=", "mode=", "language="))
    bad = await command(slack, bot, "/imagine-settings", "quality=ultra")
    assert "low, medium, high, auto" in bad and "Nothing was changed" in bad
    language = await command(slack, bot, "/imagine-settings", "language=fr")
    assert "en, zh-CN" in language
    shown = await command(slack, bot, "/imagine-settings", "show")
    assert "quality: low (yours)" in shown and "size: auto (not set" in shown
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


async def test_info_shows_the_charged_cost_the_ledger_has_to_the_asker_and_admins(
    slack: FakeSlack, bot: RunningBot
) -> None:
    slack.admins.add(ADMIN)
    ts = await imagine(slack, bot, "a lighthouse --size 1536x1024 --quality low")
    job_id = job_of(slack, ts)
    [row] = await rows_of(bot, job_id)

    before = len(private_to(slack, "U1"))
    await slack.press(bot.events_url, "Info", message_ts=ts, user_id="U1")
    [card] = await until(lambda: private_to(slack, "U1")[before:])
    assert f"charged {format_usd(row['actual_micros'])}" in card
    assert f"reserved {format_usd(row['reserved_micros'])}" in card
    assert json.loads(row["request_ids"])[0] in card and "a lighthouse" in card and job_id in card
    assert "1536x1024" in card and "low" in card and "gpt-image-2" in card and "References: none" in card

    before = len(private_to(slack, "U2"))
    await slack.press(bot.events_url, "Info", message_ts=ts, user_id="U2")
    [refused] = await until(lambda: private_to(slack, "U2")[before:])
    assert refused.startswith("No such job") and "lighthouse" not in refused
    typed = await command(slack, bot, "/imagine-info", job_id, user="U2")
    assert typed == refused  # the same words as for a job that does not exist
    assert await command(slack, bot, "/imagine-info", "0123456789abcdef", user="U2") == refused.replace(
        job_id, "0123456789abcdef"
    )

    admin_card = await command(slack, bot, "/imagine-info", job_id, user=ADMIN)
    assert f"charged {format_usd(row['actual_micros'])}" in admin_card

    # Another workspace knows nothing of it, even its admins.
    slack.team_id = "T0002"
    try:
        elsewhere = await command(slack, bot, "/imagine-info", job_id, user="U1")
    finally:
        slack.team_id = "T0001"
    assert elsewhere.startswith("No such job") and "lighthouse" not in elsewhere


async def test_history_lists_exactly_the_callers_jobs_with_links_and_costs(
    slack: FakeSlack, bot: RunningBot
) -> None:
    mine = [await imagine(slack, bot, f"mine {n} --quality low --size 1024x1024") for n in range(2)]
    theirs = await imagine(slack, bot, "theirs --quality low --size 1024x1024", user="U2")
    listed = await command(slack, bot, "/imagine-history")
    for ts in mine:
        job_id = job_of(slack, ts)
        [row] = await rows_of(bot, job_id)
        assert job_id in listed and format_usd(row["actual_micros"]) in listed
        assert f"https://fake-team.slack.com/archives/C1/p{ts.replace('.', '')}" in listed
    assert job_of(slack, theirs) not in listed and "theirs" not in listed
    assert listed.index("mine 1") < listed.index("mine 0")  # newest first
    one = await command(slack, bot, "/imagine-history", "1")
    assert "mine 1" in one and "mine 0" not in one
    card = await command(slack, bot, "/imagine-info", "2")
    assert job_of(slack, mine[0]) in card
    bad = await command(slack, bot, "/imagine-history", "lots")
    assert "1 to 50" in bad


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
