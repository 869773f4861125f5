"""A person's own defaults, a job's card and their history, the same on Slack and Discord, written once and run
on each (tests/support/platforms.py drives the platform). What only one platform has (Slack's settings form and
free-text settings, spoilers, which commands each declares) stays in test_slack_people.py and
test_discord_people.py."""

from __future__ import annotations

import json

from bot.model.pricing import format_usd
from tests.support.platforms import Driver


async def test_a_default_applies_to_a_bare_imagine_and_a_flag_overrides_it(on: Driver) -> None:
    said = await on.my_settings(size="2k", quality="high")
    assert "Saved" in said and "size: 2k (yours)" in said and "quality: high (yours)" in said
    bare = await on.result("a lighthouse", quality=None)
    assert await on.image_sizes(bare) == [(2048, 2048)]
    assert (bare.row["size"], bare.row["quality"]) == ("2048x2048", "high")
    flagged = await on.result("a fox", size="1536x1024", quality="low")
    assert await on.image_sizes(flagged) == [(1536, 1024)]
    assert (flagged.row["size"], flagged.row["quality"]) == ("1536x1024", "low")
    # Another person's requests are not touched by the member's defaults.
    theirs = await on.result("a cat", user="other")
    assert theirs.row["size"] != "2048x2048"


async def test_a_default_a_channel_forbids_is_refused_as_the_flag_would_be(on: Driver) -> None:
    assert "max_quality=medium" in await on.set_channel("max_quality=medium")
    await on.my_settings(quality="high")
    refused = await on.refuse("a lighthouse", quality=None)
    assert "max_quality=medium" in refused and "your default" in refused and "/imagine-settings" in refused
    typed = await on.refuse("a lighthouse", quality="high", user="other")
    assert "max_quality=medium" in typed and "your default" not in typed
    assert await on.bot.ledger() == [] and on.bot.server.calls == []  # nothing reserved, nothing called


async def test_bad_settings_are_refused_privately_and_change_nothing(on: Driver) -> None:
    await on.my_settings(quality="low")
    bad = await on.my_settings(size="huge", quality="high")
    assert "size=huge" in bad and "Nothing was changed" in bad
    shown = await on.my_settings()
    assert "quality: low (yours)" in shown and "size: auto (not set" in shown
    assert on.images_posted() == []


async def test_info_shows_the_charged_cost_to_the_asker_and_admins_only(on: Driver) -> None:
    shown = await on.result("a lighthouse", size="1536x1024")
    row, job = shown.row, str(shown.row["job_id"])
    card = await on.told(await on.click(shown, "Info"))
    assert f"charged {format_usd(row['actual_micros'])}" in card
    assert f"reserved {format_usd(row['reserved_micros'])}" in card
    assert json.loads(row["request_ids"])[0] in card and "a lighthouse" in card and job in card
    assert "1536x1024" in card and "low" in card and "gpt-image-2" in card and "References: none" in card
    # Anyone else is told there is no such job: the same words as for a job that does not exist.
    refused = await on.told(await on.click(shown, "Info", user="other"))
    assert refused.startswith("No such job") and "lighthouse" not in refused
    assert await on.command("imagine-info", job, user="other") == refused
    missing = await on.command("imagine-info", "0123456789abcdef", user="other")
    assert missing == refused.replace(job, "0123456789abcdef")
    assert f"charged {format_usd(row['actual_micros'])}" in await on.command(
        "imagine-info", job, user="admin"
    )
    # Another workspace knows nothing of it, even its admins.
    with on.another_workspace():
        elsewhere = await on.command("imagine-info", job, user="admin")
    assert elsewhere.startswith("No such job") and "lighthouse" not in elsewhere


async def test_history_lists_exactly_the_callers_jobs_newest_first_with_links_and_costs(on: Driver) -> None:
    mine = [await on.result(f"mine {n}", size="1024x1024") for n in range(2)]
    theirs = await on.result("theirs", size="1024x1024", user="other")
    listed = await on.command("imagine-history")
    for shown in mine:
        assert str(shown.row["job_id"]) in listed and format_usd(shown.row["actual_micros"]) in listed
        assert on.link(shown) in listed
    assert str(theirs.row["job_id"]) not in listed and "theirs" not in listed
    assert listed.index("mine 1") < listed.index("mine 0")  # newest first
    one = await on.command("imagine-history", "1")
    assert "mine 1" in one and "mine 0" not in one
    assert str(mine[0].row["job_id"]) in await on.command("imagine-info", "2")  # N from the history
    assert "theirs" in await on.command("imagine-history", user="other")
