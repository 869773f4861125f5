"""Spoilers and the people's commands on Discord, what only Discord has, end to end: the real discord.py client
and command tree, the fake Discord, the offline image server and the SQLite file. Defaults, a job's card and
history, the same on Slack, are in tests/e2e/test_people_rules.py."""

from __future__ import annotations

from pathlib import Path

from tests.support.discord import admin, guild, image_message


async def test_spoiler_on_posts_the_image_as_a_spoiler(tmp_path: Path) -> None:
    async with guild(tmp_path) as (fake, bot):
        assert "spoiler=on" in await admin(fake, "channel", channel=fake.channel_id, settings="spoiler=on")
        message = await image_message(fake, bot, "a surprise")
        [attachment] = message["attachments"]
        assert attachment["filename"].startswith("SPOILER_")


async def test_the_new_commands_are_registered(tmp_path: Path) -> None:
    async with guild(tmp_path) as (fake, _bot):
        names = {c["name"] for c in fake.registered_commands}
        assert {"imagine-settings", "imagine-info", "imagine-history"} <= names
