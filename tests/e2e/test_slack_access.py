"""Slack access rules, what only Slack has, end to end (docs/rules.md §10): the real bolt app in HTTP mode (Socket
Mode where said), the fake Slack, the offline image server. A mention refused in its thread, a user group that
cannot be read, every rule in /imagine-admin settings, then the Home tab and the manifest.
The rules the same on Discord are in tests/e2e/test_access_rules.py."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.manifests import slack_manifest
from bot.model.pricing import format_usd
from bot.policy import quota
from tests.e2e.harness import RunningBot, running_bot, slack_env, socket_env
from tests.fakes.slack import FakeSlack
from tests.support.slack import ADMIN, GENERAL, admin, private_to, refused, told
from tests.support.slack import imagine_row as imagine
from tests.support.waits import until


@pytest.fixture
async def bot(slack: FakeSlack, tmp_path: Path) -> AsyncIterator[RunningBot]:
    """The bot with U9 a workspace admin, without price checks, at 0.05 s a render."""
    slack.admins.add(ADMIN)
    async with running_bot(tmp_path, slack_env(slack), latency=0.05) as running:
        yield running


def job_message(slack: FakeSlack) -> str:
    """The ts of the latest job's message: the root of the thread its image was uploaded into."""
    return str(slack.uploaded[-1].thread_ts)


async def buttons_ready(slack: FakeSlack, bot: RunningBot, ts: str) -> None:
    """The job at `ts` shows its result buttons and the core knows where its image lives."""
    await until(lambda: "Re-roll" in str(slack.messages["C1"]) and slack.button("Edit", message_ts=ts))
    job_id = str(slack.button("Re-roll", message_ts=ts)["value"]).split(":")[1]
    deadline = time.monotonic() + 10
    while not await bot.core.ledger.query(
        "SELECT 1 FROM results WHERE job_id=? AND images != '[]'", [job_id]
    ):
        assert time.monotonic() < deadline, "the job's images were never recorded"
        await asyncio.sleep(0.02)


def texts_of(view: dict[str, Any]) -> list[str]:
    """Each block's text of a published view, in order ("---" for a divider)."""
    return ["---" if block["type"] == "divider" else str(block["text"]["text"]) for block in view["blocks"]]


async def home(slack: FakeSlack, bot: RunningBot, user: str) -> dict[str, Any]:
    """Open the app's Home tab as `user`; the view the bot published for them."""
    published = len(slack.calls_to("views.publish"))
    status, _ = await slack.send_app_home_opened(bot.events_url, user=user)
    assert status == 200
    [call] = (await slack.wait_for("views.publish", published + 1))[published:]
    assert call.args["user_id"] == user
    view = slack.home_view(user)
    assert view is not None and view["type"] == "home"
    return view


# -- the person: blocked, allowed groups ---------------------------------------------------------------------


async def test_a_mention_from_a_blocked_or_denied_user_is_refused_in_its_thread_before_anything_is_read(
    slack: FakeSlack, bot: RunningBot
) -> None:
    """The mention path, which only Slack has: refused privately in the thread (chat.postEphemeral), before the
    thread or an attached file is read, and a relax job is never gathered."""
    await imagine(slack, bot, "a harbour --size 1024x1024 --quality low")  # U1's image, with its buttons
    ts = job_message(slack)
    await buttons_ready(slack, bot, ts)
    slack.add_usergroup("S1", ["U3"], handle="x")
    assert await admin(slack, bot, "block <@U2|bob>") == "<@U2> blocked (in slack:T0001)."
    assert "denied: <!subteam^S1>" in await admin(slack, bot, "deny <!subteam^S1|@x>")
    posts, rows = len(slack.calls_to("chat.postMessage")), await bot.ledger()
    photo = slack.add_file(name="ref.png", data=b"\x89PNG not read", mimetype="image/png", filetype="png")
    for user, words, relax in (
        ("U2", "You are blocked", ""),
        ("U3", "in a group that may not render", " --relax"),
    ):
        text = f"make it night{relax} --size 1024x1024 --quality low"
        mention = slack.message_event(text=text, user=user, thread_ts=ts, files=[photo], mention=True)
        before, work = len(private_to(slack, user)), bot.work()
        assert (await slack.send_event(bot.events_url, mention))[0] == 200
        answer = await told(slack, bot, user, before, work)
        assert answer["source"] == "chat.postEphemeral" and words in answer["text"]
        assert answer["thread_ts"] == ts
    await bot.idle()  # the mentions' work has ended (a job one had gathered would hold a reserved row)
    assert len(slack.calls_to("chat.postMessage")) == posts and len(bot.server.calls) == 1
    assert await bot.ledger() == rows and bot.server.batch_calls == []
    for method in ("views.open", "conversations.replies", "file_download", "files.info"):
        assert not slack.calls_to(method), method


@pytest.mark.parametrize("verb", ["deny", "allow"])
async def test_a_user_group_that_cannot_be_read_fails_closed_and_is_not_cached(
    slack: FakeSlack, bot: RunningBot, verb: str
) -> None:
    slack.add_usergroup("S0GROUP", ["U2"], handle="group")
    await admin(slack, bot, f"{verb} {slack.usergroup_mention('S0GROUP')}")
    # A denied member and an allowed outsider would both slip through an unreadable group read as empty;
    # whoever asks, nobody is let through on a guess.
    slack.fail_next["usergroups.users.list"] = {"error": "ratelimited", "status": 200}
    text = await refused(slack, bot, "a poster --quality low", user="U2" if verb == "deny" else "U3")
    assert "Access cannot be checked right now; nothing was charged" in text, text
    # Not cached: the next request reads the group again and the rule holds as it is.
    assert {c.args["usergroup"] for c in slack.calls_to("usergroups.users.list")} == {"S0GROUP"}
    lookups = len(slack.calls_to("usergroups.users.list"))
    if verb == "deny":
        text = await refused(slack, bot, "a poster --quality low", user="U2")
        assert "may not render" in text
        await imagine(slack, bot, "a poster --quality low", user="U3")
    else:
        text = await refused(slack, bot, "a poster --quality low", user="U3")
        assert "Only members of" in text
        await imagine(slack, bot, "a poster --quality low", user="U2")
    assert len(slack.calls_to("usergroups.users.list")) == lookups + 1  # once, then from the cache
    assert len(bot.server.calls) == 1 and len(await bot.ledger()) == 1


# -- the admin verbs -------------------------------------------------------------------------------------------


async def test_admin_settings_shows_every_rule(slack: FakeSlack, bot: RunningBot) -> None:
    assert await admin(slack, bot, "") == await admin(slack, bot, "help")  # no verb: the help
    assert "max_jobs: 4" in await admin(slack, bot, "settings")  # IMAGEBOT_USER_MAX_JOBS's default
    slack.add_usergroup("S0DESIGN", ["U2"], handle="designers")
    slack.add_usergroup("S0INTERN", ["U4"], handle="interns")
    for text in (
        f"allow {slack.usergroup_mention('S0DESIGN')}",
        f"deny {slack.usergroup_mention('S0INTERN')}",
        "block <@U5|eve>",
        f"channel {GENERAL} max_quality=medium moderation=low",
        "channel <#C2|random> off",
    ):
        await admin(slack, bot, text)
    answer = await admin(slack, bot, "settings cooldown=30 max_jobs=2")
    assert answer.splitlines() == [
        "Settings for slack:T0001:",
        "- allowed: <!subteam^S0DESIGN> (and admins)",
        "- denied: <!subteam^S0INTERN>",
        "- blocked: <@U5>",
        "- cooldown: 30 s between one user's jobs",
        "- max_jobs: 2 running or queued per user",
        "Channels:",
        "- <#C1>: max_quality=medium, moderation=low",
        "- <#C2>: off",
    ]
    assert await admin(slack, bot, "settings") == answer  # shown again, unchanged


# -- the Home tab ---------------------------------------------------------------------------------------------


async def test_home_tab_shows_a_users_quota_and_last_image(slack: FakeSlack, tmp_path: Path) -> None:
    env = slack_env(slack, IMAGEBOT_USER_DAILY_IMAGES="5")
    async with running_bot(tmp_path, env, latency=0.05) as bot:
        # The Messages tab sends app_home_opened too: nothing is published for it.
        assert (await slack.send_app_home_opened(bot.events_url, user="U1", tab="messages"))[0] == 200
        row = await imagine(slack, bot, "a lighthouse at dusk <!here> & gulls --size 1536x1024 --quality low")
        ts = job_message(slack)
        assert not slack.calls_to("views.publish")
        view = await home(slack, bot, "U1")
        shown = texts_of(view)
        assert shown[:3] == [
            "imagebot",
            shown[1],
            "Your last images",
        ] and shown[1].startswith("Your quota:\n- your daily images: 1 image used of 5 images, 4 images left")
        link = f"<https://{slack.team_domain}.slack.com/archives/C1/p{ts.replace('.', '')}|open>"
        assert shown[3:] == [
            "a lighthouse at dusk &lt;!here&gt; &amp; gulls\n"
            f"1536x1024 · {format_usd(row['actual_micros'])} · {link}"
        ]
        assert view["blocks"][0]["type"] == "header" and view["blocks"][3]["type"] == "section"
        # Opened again after another image: the newest first, the same view (Slack keeps its id).
        await imagine(slack, bot, "a second one --size 1024x1024 --quality low")
        again = await home(slack, bot, "U1")
        assert again["id"] == view["id"]
        assert [t.split("\n")[0] for t in texts_of(again)[3:]] == [
            "a second one",
            "a lighthouse at dusk &lt;!here&gt; &amp; gulls",
        ]
        # Someone with no images (and not an admin) gets the same tab, empty.
        assert texts_of(await home(slack, bot, "U2"))[2:] == [
            "Your last images",
            "No images yet: try `/imagine a lighthouse at dusk`.",
        ]


async def test_home_tab_for_an_admin_shows_settings_and_spend(slack: FakeSlack, bot: RunningBot) -> None:
    await admin(slack, bot, f"channel {GENERAL} max_size=2k")
    slack.add_usergroup("S0DESIGN", ["U1"], handle="designers")
    await admin(slack, bot, f"allow {slack.usergroup_mention('S0DESIGN')}")
    first = await imagine(slack, bot, "one --size 1024x1024 --quality low")
    second = await imagine(slack, bot, "two --size 1024x1024 --quality low")
    shown = texts_of(await home(slack, bot, ADMIN))
    assert shown[2:4] == ["Your last images", "No images yet: try `/imagine a lighthouse at dusk`."]
    divider = shown.index("---")
    settings, spend = shown[divider + 2 :]
    assert shown[divider + 1] == "Admin"
    # The ids in the settings stay live mentions (a Home tab notifies nobody); the rest is escaped text.
    assert "- allowed: <!subteam^S0DESIGN> (and admins)" in settings
    assert "- <#C1>: max_size=2048x2048" in settings
    month = quota.Periods.at(bot.core.ledger.clock(), bot.core.ledger.timezone).month
    total = first["actual_micros"] + second["actual_micros"]
    assert spend == f"{format_usd(total)} spent in slack:T0001 this month ({month})"
    # Not for a member: no settings, no spend.
    assert "---" not in texts_of(await home(slack, bot, "U1"))


async def test_home_tab_over_socket_mode(slack: FakeSlack, tmp_path: Path) -> None:
    env = socket_env(slack)
    async with running_bot(tmp_path, env, latency=0.05):
        await slack.wait_for("socket_connect")
        ack = await slack.socket_send_app_home_opened(user="U3")
        assert "envelope_id" in ack
        await slack.wait_for("views.publish")
        view = slack.home_view("U3")
        assert view is not None
        assert (
            texts_of(view)[1] == "You have no quota limits. Every image is still recorded in the cost ledger."
        )


async def test_a_home_tab_that_cannot_be_published_is_logged_and_nothing_breaks(
    slack: FakeSlack, bot: RunningBot, caplog: pytest.LogCaptureFixture
) -> None:
    slack.home_tab_enabled = (
        False  # the app's Home tab is off in its settings: views.publish says not_enabled
    )
    with caplog.at_level(logging.WARNING, logger="imagebot.slack"):
        assert (await slack.send_app_home_opened(bot.events_url, user="U1"))[0] == 200
        await slack.wait_for("views.publish")
        await until(lambda: [r for r in caplog.records if r.getMessage() == "slack home tab not published"])
    [record] = [r for r in caplog.records if r.getMessage() == "slack home tab not published"]
    assert getattr(record, "error", None) == "not_enabled"
    assert slack.home_view("U1") is None
    await imagine(slack, bot, "still fine --quality low")


# -- the manifest -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("socket_mode", [True, False])
def test_manifest_asks_for_user_groups_and_the_home_tab(socket_mode: bool) -> None:
    manifest = slack_manifest(socket_mode=socket_mode)
    assert "usergroups:read" in manifest["oauth_config"]["scopes"]["bot"]
    assert manifest["features"]["app_home"] == {
        "home_tab_enabled": True,
        "messages_tab_enabled": True,
        "messages_tab_read_only_enabled": True,
    }
    assert "app_home_opened" in manifest["settings"]["event_subscriptions"]["bot_events"]
    admin_command = [c for c in manifest["features"]["slash_commands"] if c["command"] == "/imagine-admin"]
    hint = admin_command[0]["usage_hint"]
    for verb in ("channel", "allow", "deny", "block", "unblock", "settings", "help"):
        assert verb in hint, verb


def test_home_blocks_stay_within_slacks_limits_and_link_only_known_places() -> None:
    from adapters.slack.blocks import home_blocks
    from bot.commands import Home, Recent

    long = "&<>" * 5000
    recent = (
        Recent(long, "1024x1024", "$0.0100", {"channel": "C1", "thread_ts": "1700000000.000100"}),
        Recent("no place", "1024x1024", "$0.0100", {}),
        Recent("odd place", "1024x1024", "$0.0100", {"channel": "C1|x>", "thread_ts": "1.2"}),
    )
    home = Home(quota=long, recent=recent, settings=long, spend="$0.0300 spent")
    blocks = home_blocks(home, "https://myteam.slack.com/")
    sections = [b["text"]["text"] for b in blocks if b["type"] == "section"]
    assert all(len(text) <= 3000 for text in sections)
    assert all(not re.search(r"&[a-z]*…", text) for text in sections)  # never cut inside an entity
    assert "<" not in sections[0] and sections[0].startswith("&amp;&lt;&gt;")
    assert sections[1].endswith("· <https://myteam.slack.com/archives/C1/p1700000000000100|open>")
    assert sections[2] == "no place\n1024x1024 · $0.0100" and "<" not in sections[3]
    unlinked = home_blocks(Home("q", recent[:1]), "")  # auth.test gave no URL
    assert "open>" not in str(unlinked) and "Admin" not in str(unlinked)
