"""Your settings, a job's card, your history and spoilers on Discord, end to end: the real discord.py client
and command tree, the fake Discord, the offline image server and the SQLite file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bot.model.pricing import format_usd
from tests.fakes.discord import FakeDiscord
from tests.support.discord import (
    EPHEMERAL,
    MANAGE_GUILD,
    NO_CHECK,
    OTHER,
    discord_bot,
    finished,
    image_message,
    imagine,
)

ADMIN = 1100000000000000098


def option(name: str, value: Any) -> dict[str, Any]:
    kind = 5 if isinstance(value, bool) else 4 if isinstance(value, int) else 3
    return {"name": name, "type": kind, "value": value}


async def told(fake: FakeDiscord, ix: dict[str, Any]) -> str:
    """The private words that answered `ix` (an ephemeral follow-up or an ephemeral reply)."""
    pattern = rf"/webhooks/{fake.application_id}/{ix['token']}"
    calls = await fake.wait_for("POST", pattern)
    private = [c for c in calls if c.status == 200 and (c.json or {}).get("flags", 0) & EPHEMERAL]
    assert private, [c.json for c in calls]
    return str(private[-1].json.get("content") or "").replace("\\", "")


async def command(fake: FakeDiscord, name: str, user: int | None = None, **options: Any) -> str:
    ix = await fake.send_interaction(
        name=name, options=[option(k, v) for k, v in options.items()], **({"user_id": user} if user else {})
    )
    return await told(fake, ix)


def job_of(message: dict[str, Any]) -> str:
    return str(FakeDiscord.buttons(message)[0]["custom_id"]).split(":")[3]


async def test_a_default_applies_to_a_bare_imagine_and_a_flag_overrides_it(tmp_path: Path) -> None:
    async with discord_bot(tmp_path, **NO_CHECK) as (fake, bot):
        said = await command(fake, "imagine-settings", size="2k", quality="high")
        assert "size: 2k (yours)" in said and "quality: high (yours)" in said

        ix = await imagine(fake, "a lighthouse")
        bare = await finished(fake, bot, ix, rows=1)
        assert [a["width"] for a in bare["attachments"]] == [2048]
        [row] = await bot.ledger("job_id=?", [job_of(bare)])
        assert (row["size"], row["quality"]) == ("2048x2048", "high")

        flagged = await image_message(fake, bot, "a fox", rows=2, size="1536x1024", quality="low")
        [row] = await bot.ledger("job_id=?", [job_of(flagged)])
        assert (row["size"], row["quality"]) == ("1536x1024", "low")
        assert (flagged["attachments"][0]["width"], flagged["attachments"][0]["height"]) == (1536, 1024)


async def test_bad_settings_are_refused_privately_and_change_nothing(tmp_path: Path) -> None:
    async with discord_bot(tmp_path, **NO_CHECK) as (fake, bot):
        await command(fake, "imagine-settings", quality="low")
        bad = await command(fake, "imagine-settings", size="huge", quality="high")
        assert "size=huge" in bad and "Nothing was changed" in bad
        shown = await command(fake, "imagine-settings")
        assert "quality: low (yours)" in shown


async def test_info_and_history(tmp_path: Path) -> None:
    async with discord_bot(tmp_path, **NO_CHECK) as (fake, bot):
        fake.add_member(ADMIN, permissions=str(MANAGE_GUILD))
        message = await image_message(fake, bot, "a lighthouse")
        job_id = job_of(message)
        [row] = await bot.ledger("job_id=?", [job_id])

        press = await fake.press_button(message, "Info")
        card = await told(fake, press)
        assert f"charged {format_usd(row['actual_micros'])}" in card and job_id in card
        assert json.loads(row["request_ids"])[0] in card

        other = await fake.press_button(message, "Info", user_id=OTHER)
        refused = await told(fake, other)
        assert refused.startswith("No such job") and "lighthouse" not in refused
        assert (await command(fake, "imagine-info", OTHER, job=job_id)).startswith("No such job")
        admin = await command(fake, "imagine-info", ADMIN, job=job_id)
        assert f"charged {format_usd(row['actual_micros'])}" in admin
        # From another server, even its admin (the same person) finds nothing.
        home, fake.guild_id = fake.guild_id, fake.guild_id + 1
        try:
            elsewhere = await command(fake, "imagine-info", ADMIN, job=job_id)
        finally:
            fake.guild_id = home
        assert elsewhere.startswith("No such job") and "lighthouse" not in elsewhere

        second = await image_message(fake, bot, "a second one", rows=2)
        await fake.send_interaction(
            name="imagine",
            user_id=OTHER,
            options=[option("prompt", "theirs"), option("size", "1024x1024"), option("quality", "low")],
        )
        done = await bot.wait_rows(lambda rows: len(rows) == 3 and rows[-1]["status"] == "delivered")
        theirs = done[-1]
        assert theirs["user"] == str(OTHER)
        listed = await command(fake, "imagine-history")
        lines = [line for line in listed.splitlines() if " job " in line]
        assert [line.split(" job ")[-1] for line in lines] == [
            job_of(second),
            job_id,
        ]  # newest first, only mine
        assert theirs["job_id"] not in listed and "theirs" not in listed
        assert format_usd(row["actual_micros"]) in lines[1]
        link = f"https://discord.com/channels/{fake.guild_id}/{message['channel_id']}/{message['id']}"
        assert link in lines[1]
        assert "theirs" in await command(fake, "imagine-history", OTHER)


async def test_spoiler_on_posts_the_image_as_a_spoiler(tmp_path: Path) -> None:
    async with discord_bot(tmp_path, **NO_CHECK) as (fake, bot):
        fake.add_member(ADMIN, permissions=str(MANAGE_GUILD))
        ix = await fake.send_interaction(
            name="imagine-admin",
            user_id=ADMIN,
            options=[
                {
                    "name": "channel",
                    "type": 1,
                    "options": [
                        {"name": "channel", "type": 7, "value": str(fake.channel_id)},
                        {"name": "settings", "type": 3, "value": "spoiler=on"},
                    ],
                }
            ],
        )
        assert "spoiler=on" in await told(fake, ix)
        message = await image_message(fake, bot, "a surprise")
        [attachment] = message["attachments"]
        assert attachment["filename"].startswith("SPOILER_")


async def test_the_new_commands_are_registered(tmp_path: Path) -> None:
    async with discord_bot(tmp_path, **NO_CHECK) as (fake, _bot):
        names = {c["name"] for c in fake.registered_commands}
        assert {"imagine-settings", "imagine-info", "imagine-history"} <= names


async def test_a_default_a_channel_forbids_is_refused_privately_as_the_flag_would_be(tmp_path: Path) -> None:
    async with discord_bot(tmp_path, **NO_CHECK) as (fake, bot):
        fake.add_member(ADMIN, permissions=str(MANAGE_GUILD))
        ix = await fake.send_interaction(
            name="imagine-admin",
            user_id=ADMIN,
            options=[
                {
                    "name": "channel",
                    "type": 1,
                    "options": [
                        {"name": "channel", "type": 7, "value": str(fake.channel_id)},
                        {"name": "settings", "type": 3, "value": "max_quality=medium"},
                    ],
                }
            ],
        )
        assert "max_quality=medium" in await told(fake, ix)
        await command(fake, "imagine-settings", quality="high")
        refused = await told(fake, await imagine(fake, "a lighthouse"))
        assert "max_quality=medium" in refused and "your default" in refused
        typed = await told(fake, await imagine(fake, "a lighthouse", quality="high"))
        assert "max_quality=medium" in typed and "your default" not in typed
        assert await bot.ledger() == [] and bot.server.calls == []
