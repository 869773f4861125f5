"""Access rules that are the same on Slack and Discord, written once and run on each (tests/support/platforms.py
drives the platform): a channel turned off, a channel's size and quality ceiling, a cooldown. Every refusal is
private, costs nothing, posts nothing in public and calls no image API. What only one platform has (Slack's
Home tab, Discord's typed subcommands, replies and DMs) stays in that platform's own test files."""

from __future__ import annotations

import re

import pytest

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
    assert row["status"] in ("reserved", "running") and row["prompt"] == "a slow one"
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
