"""Access rules (docs/rules.md §10) that are the same on Slack and Discord, written once and run on each
(tests/support/platforms.py drives the platform): a channel turned off, a channel's size and quality ceiling and
moderation, a cooldown, IMAGEBOT_CHANNELS, max_jobs, a blocked user, an allowed or a denied group (a Slack user
group, a Discord role), who may use /imagine-admin, settings across a restart. Every refusal is private, costs nothing, posts nothing in
public and calls no image API. What only one platform has (Slack's Home tab, mentions and user-group lookups,
Discord's typed subcommands, replies and DMs, the Edit image menu) stays in that platform's own test files."""

from __future__ import annotations

import re
from typing import Any

import pytest

from bot.store import settings
from tests.support.platforms import Driver
from tests.support.waits import until

RELAX_ENV = {  # a relax job is gathered for 0.3 s, its batch polled every 0.1 s
    "IMAGEBOT_BATCH_WINDOW": "0.3",
    "IMAGEBOT_BATCH_POLL": "0.1",
    "IMAGEBOT_OFFLINE_BATCH_LATENCY": "0.5",
}
SQUARE = "1024x1024"  # at low quality: the cheapest image


async def test_a_channel_turned_off_refuses_imagine_privately_and_costs_nothing(on: Driver) -> None:
    here = on.channels["here"]
    assert (await on.set_channel("off")).startswith(f"Channel <#{here}> set: off")
    for user in ("member", "admin"):  # admins too: the place is off for everyone
        text = await on.refuse("a lighthouse", user=user)
        assert "turned off in this channel" in text and "/imagine-admin channel" in text
    assert on.bot.server.calls == [] and await on.bot.ledger() == []
    # Only that channel: another still renders, and this one does again once it is back on.
    assert (await on.render("a lighthouse", where="elsewhere"))["channel"] == on.channels["elsewhere"]
    assert "set: on" in await on.set_channel("on")
    assert (await on.render("back on"))["channel"] == here


async def test_a_channel_ceiling_refuses_a_larger_size_or_quality_naming_the_ceiling(on: Driver) -> None:
    answer = await on.set_channel("max_size=2k max_quality=medium")
    assert answer.startswith(f"Channel <#{on.channels['here']}> set: max_size=2048x2048"), answer
    assert "max_quality=medium" in answer
    text = await on.refuse("a wide valley", size="4k")
    assert "--size 3840x2160 is above this channel's ceiling max_size=2k (2048x2048" in text
    assert "use --size 2048x2048 or smaller" in text
    assert "max_quality=medium" in await on.refuse("a wide valley", size="1k", quality="high")
    row = await on.render("a small valley", size="1024x1024")  # within both: renders
    assert row["size"] == "1024x1024"
    [call] = on.bot.server.calls
    assert (call.size, call.quality) == ("1024x1024", "low")


async def test_a_cooldown_refuses_a_users_next_job_with_the_wait(on: Driver) -> None:
    assert "- cooldown: 60 s between one user's jobs" in await on.settings("cooldown=60")
    assert "cooldown: 60 s" in await on.settings()  # no text: only shows
    await on.render("first")
    text = await on.refuse("second")
    wait = re.search(r"You can start your next job in (\d+) s", text)
    assert wait is not None and 50 <= int(wait[1]) <= 60, text
    assert "one job per user every 60 s (cooldown)" in text
    await on.render("someone else's", user="other")  # per user
    assert [r["user"] for r in await on.bot.ledger()] == [on.users["member"], on.users["other"]]


@pytest.mark.env(
    IMAGEBOT_CHANNELS="{elsewhere_entry}", **RELAX_ENV
)  # only the other channel; quick relax batches
async def test_a_channel_outside_imagebot_channels_refuses_privately_fast_or_relax(on: Driver) -> None:
    text = await on.refuse("a lighthouse", size=SQUARE)
    assert "IMAGEBOT_CHANNELS" in text and "does not work in this channel" in text
    assert "IMAGEBOT_CHANNELS" in await on.refuse("a lighthouse", size=SQUARE, relax=True)  # relax jobs too
    assert "IMAGEBOT_CHANNELS" in await on.refuse(
        "an admin's lighthouse", size=SQUARE, user="admin"
    )  # admins too
    assert on.bot.server.calls == [] and on.bot.server.batch_calls == [] and await on.bot.ledger() == []
    # The pinned channel works, fast and relax; past a batch window nothing else was gathered: its batch
    # holds its own job alone.
    assert (await on.render("a lighthouse", size=SQUARE, where="elsewhere"))["channel"] == on.channels[
        "elsewhere"
    ]
    on.bot.server.batch_latency = 0.1
    await on.render("a relaxed lighthouse", size=SQUARE, where="elsewhere", relax=True)
    assert sum(1 for call in on.bot.server.batch_calls if call == ("POST", "/v1/batches")) == 1
    rows = await on.bot.ledger()
    assert [(r["channel"], r["mode"]) for r in rows] == [
        (on.channels["elsewhere"], m) for m in ("fast", "relax")
    ]
    assert on.images_posted("here") == []


@pytest.mark.env(IMAGEBOT_USER_MAX_JOBS="1")
async def test_max_jobs_refuses_a_users_second_job_while_the_first_runs(on: Driver) -> None:
    on.bot.server.latency = 2.0
    first = await on.start("a slow one", size=SQUARE)
    await until(lambda: on.bot.server.calls)  # its API call is out: the job is running
    text = await on.refuse("another one", size=SQUARE)
    assert "max_jobs=1" in text and "You have 1 job running or queued" in text
    [row] = await on.bot.ledger()
    assert row["status"] == "running" and row["prompt"] == "a slow one"  # moved to running before its call
    # Per user: someone else still gets in while it runs; the first one still lands.
    await on.render("someone else's", size=SQUARE, user="other")
    assert (await on.finish(first))["size"] == SQUARE
    rows = await on.bot.ledger()
    assert [(r["user"], r["status"]) for r in rows] == [
        (on.users["member"], "delivered"),
        (on.users["other"], "delivered"),
    ]
    assert all(r["actual_micros"] > 0 for r in rows)
    assert [c.prompt for c in on.bot.server.calls] == ["a slow one", "someone else's"]
    # Once it finished, the member may go again.
    on.bot.server.latency = 0.05
    assert (await on.render("another one", size=SQUARE))["prompt"] == "another one"
    assert [(r["prompt"], r["status"], r["mode"]) for r in await on.bot.ledger()] == [
        ("a slow one", "delivered", "fast"),
        ("someone else's", "delivered", "fast"),
        ("another one", "delivered", "fast"),
    ]


# -- the person: blocked, allowed and denied groups ------------------------------------------------------------


async def test_a_blocked_user_is_refused_on_every_button_and_it_costs_nothing(on: Driver) -> None:
    other = on.users["other"]
    mine = await on.result("a harbour", size=SQUARE)  # made before the block, with its buttons
    assert (await on.admin("block", user="other")).startswith(f"<@{other}> blocked (in {on.tenant})")
    assert "You are blocked" in await on.refuse("a cat", user="other")
    forms = on.forms_opened()
    for label in ("Re-roll", "Vary", "Edit"):  # someone else's result: no job, and no form opens
        assert "You are blocked" in await on.refused(await on.click(mine, label, user="other")), label
    assert on.forms_opened() == forms and len(on.bot.server.calls) == 1
    # Someone else still renders; unblocked, so do they.
    await on.render("a grey wolf", size=SQUARE)
    assert (await on.admin("unblock", user="other")).startswith(f"<@{other}> unblocked (in {on.tenant})")
    await on.render("a cat", user="other", size=SQUARE)
    assert [r["user"] for r in await on.bot.ledger()] == [on.users["member"], on.users["member"], other]


async def test_allowing_a_group_admits_its_members_and_admins_and_no_one_else(on: Driver) -> None:
    answer = await on.admin("allow", group=True)
    assert answer.startswith(f"Allowed: {on.artists}") and f"allowed: {on.artists} (and admins)" in answer
    text = await on.refuse("a poster", user="other", size=SQUARE)
    assert (
        f"Only members of {on.artists} (and admins) may render here" in text and "not in any of them" in text
    )
    theirs = await on.result("an artist's poster", user="artist", size=SQUARE)
    await on.render("an admin's poster", user="admin", size=SQUARE)  # an admin, in no group
    forms = on.forms_opened()  # an outsider's Edit opens no form; a member's does
    assert "Only members of" in await on.refused(await on.click(theirs, "Edit", user="other"))
    assert on.forms_opened() == forms
    await on.delivered(await on.edit(theirs, "make it blue", user="artist"))
    assert [(r["user"], r["status"]) for r in await on.bot.ledger()] == [
        (on.users[part], "delivered") for part in ("artist", "admin", "artist")
    ]


@pytest.mark.env(**RELAX_ENV)
async def test_a_denied_group_is_refused_fast_or_relax_while_others_render(on: Driver) -> None:
    assert f"denied: {on.artists}" in await on.admin("deny", group=True)
    for relax in (False, True):
        text = await on.refuse("an artist's fox", user="artist", size=SQUARE, relax=relax)
        assert "you are in a group that may not render" in text, text
    shown = await on.result("another's fox", user="other", size=SQUARE)
    assert (shown.row["mode"], shown.row["status"]) == ("fast", "delivered")
    assert 0 < shown.row["actual_micros"] <= shown.row["reserved_micros"]
    assert await on.image_sizes(shown) == [(1024, 1024)]
    assert [c.prompt for c in on.bot.server.calls] == ["another's fox"]
    # Past a batch window the artist's relax job was never gathered: a later one goes alone in its batch.
    on.bot.server.batch_latency = 0.1
    await on.render("a marker", user="other", size=SQUARE, relax=True)
    assert sum(1 for call in on.bot.server.batch_calls if call == ("POST", "/v1/batches")) == 1
    assert [(r["user"], r["mode"]) for r in await on.bot.ledger()] == [
        (on.users["other"], "fast"),
        (on.users["other"], "relax"),
    ]


# -- the channel's moderation, the admin verbs ------------------------------------------------------------------


async def test_a_channels_moderation_goes_on_generations_only(on: Driver) -> None:
    answer = await on.set_channel("moderation=low")
    assert answer.startswith(f"Channel <#{on.channels['here']}> set: moderation=low"), answer
    first = await on.result("a cartoon fox", size=SQUARE)
    generation = on.bot.server.calls[-1]
    assert generation.endpoint == "generations" and "moderation" in generation.fields
    assert generation.status == 200
    varied = await on.delivered(await on.click(first, "Vary"))
    vary = on.bot.server.calls[-1]
    assert (vary.endpoint, vary.images, vary.status) == ("edits", 1, 200) and "moderation" not in vary.fields
    assert await on.image_sizes(varied) == [(1024, 1024)]
    await on.delivered(await on.click(first, "Re-roll"))
    reroll = on.bot.server.calls[-1]
    assert reroll.endpoint == "generations" and "moderation" in reroll.fields
    rows = await on.bot.ledger()
    assert [(r["status"], r["mode"]) for r in rows] == [("delivered", "fast")] * 3
    assert all(r["actual_micros"] > 0 for r in rows)
    # Elsewhere no moderation is sent.
    await on.render("a cartoon fox", size=SQUARE, where="elsewhere")
    assert "moderation" not in on.bot.server.calls[-1].fields


async def stored_settings(on: Driver) -> list[tuple[Any, ...]]:
    """Every rule an admin has set, as stored."""
    return [
        *await on.bot.core.ledger.query("SELECT channel, name, value FROM channel_settings"),
        *await on.bot.core.ledger.query(
            "SELECT name, value FROM tenant_settings WHERE tenant != ?", [settings.SYSTEM]
        ),
    ]


async def test_admin_help_lists_the_verbs_and_only_admins_may_use_any(on: Driver) -> None:
    answer = await on.admin("help")
    for verb in on.admin_verbs:
        assert re.search(rf"^- {verb}\b", answer, re.MULTILINE), verb
    tries: list[tuple[str, dict[str, Any]]] = [
        ("help", {}),
        ("channel", {"where": "here", "settings": "off"}),
        ("block", {"user": "admin"}),
        ("settings", {"settings": "cooldown=60"}),
        ("allow", {"group": True}),
    ]
    for verb, named in tries:
        said = await on.admin(verb, by="member", **named)
        assert said.startswith("Only admins can use /imagine-admin"), (verb, said)
    assert await stored_settings(on) == []
    await on.render("still allowed", size=SQUARE)  # nothing changed


async def test_settings_survive_a_restart(on: Driver) -> None:
    await on.settings("cooldown=60")
    await on.admin("block", user="other")
    await on.set_channel("max_quality=low")
    shown = await on.settings()
    await on.restart()
    assert await on.settings() == shown
    assert "You are blocked" in await on.refuse("a cat", user="other")
    assert "above this channel's ceiling max_quality=low" in await on.refuse("a cat", quality="high")
    await on.render("a cat")
    assert "cooldown" in await on.refuse("a cat")
