"""Discord command sync: `tree.sync()` only when the command set changed (a hash of the commands' JSON per scope
is kept in the database), or on `imagebot discord-sync`; with DISCORD_GUILD_IDS the global commands synced
earlier are cleared, so no command shows twice. Real discord.py against the fake Discord."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from adapters.cli import main as cli
from tests.fakes.discord import FakeDiscord, RestCall, reset_discord_endpoints
from tests.support.discord import bot_on


def puts(fake: FakeDiscord) -> list[RestCall]:
    return [c for c in fake.calls if c.method == "PUT" and "/commands" in c.path]


def global_commands(fake: FakeDiscord) -> list[str]:
    return sorted(c["name"] for c in fake.registered_commands if not c.get("guild_id"))


def guild_commands(fake: FakeDiscord) -> list[str]:
    return sorted(c["name"] for c in fake.registered_commands if c.get("guild_id"))


async def test_commands_are_synced_only_when_they_changed(tmp_path: Path) -> None:
    fake = FakeDiscord()
    await fake.start()
    try:
        async with bot_on(fake, tmp_path):
            [first] = puts(fake)
            assert first.path == f"/applications/{fake.application_id}/commands" and first.status == 200
        assert "imagine" in global_commands(fake)

        async with bot_on(fake, tmp_path):  # connected: start-up, sync included, is over
            assert len(puts(fake)) == 1  # the same commands: no PUT

        # A build with other commands left another hash behind: the next start syncs once.
        async with bot_on(fake, tmp_path) as bot:
            name = f"discord_commands:{fake.application_id}:global"
            await bot.core.ledger.settings.set_system(name=name, value="0" * 64)
        async with bot_on(fake, tmp_path):
            assert len(puts(fake)) == 2 and puts(fake)[-1].status == 200
        async with bot_on(fake, tmp_path):
            assert len(puts(fake)) == 2
    finally:
        await fake.stop()
        reset_discord_endpoints()
    assert not fake.errors, fake.errors


async def test_guild_mode_clears_the_global_commands_synced_before(tmp_path: Path) -> None:
    fake = FakeDiscord()
    await fake.start()
    try:
        async with bot_on(fake, tmp_path):
            assert "imagine" in global_commands(fake) and guild_commands(fake) == []
        async with bot_on(fake, tmp_path, DISCORD_GUILD_IDS=str(fake.guild_id)) as bot:
            paths = [(c.path, c.json) for c in puts(fake)[1:]]
            assert (f"/applications/{fake.application_id}/commands", []) in paths
            assert any(
                p == f"/applications/{fake.application_id}/guilds/{fake.guild_id}/commands" for p, _ in paths
            )
            assert global_commands(fake) == [] and "imagine" in guild_commands(fake)
            # The guild's commands still work.
            ix = await fake.send_interaction(name="imagine-quota")
            await fake.wait_for("POST", rf"/webhooks/{fake.application_id}/{ix['token']}")
            assert len(bot.server.calls) == 0
        synced = len(puts(fake))
        async with bot_on(fake, tmp_path, DISCORD_GUILD_IDS=str(fake.guild_id)):
            assert len(puts(fake)) == synced  # nothing changed: nothing sent
    finally:
        await fake.stop()
        reset_discord_endpoints()
    assert not fake.errors, fake.errors


async def test_discord_sync_command_syncs_now(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeDiscord()
    await fake.start()
    try:
        async with bot_on(fake, tmp_path):
            assert len(puts(fake)) == 1
        for name, value in {
            "DISCORD_TOKEN": fake.token,
            "DISCORD_API_URL": fake.api_url,
            "IMAGEBOT_DB": str(tmp_path / "imagebot.sqlite3"),
            "IMAGEBOT_OFFLINE": "1",
        }.items():
            monkeypatch.setenv(name, value)
        identified = len(fake.identified_shards)
        assert await asyncio.to_thread(cli, ["discord-sync"]) == 0
        assert len(puts(fake)) == 2 and puts(fake)[-1].status == 200  # unchanged, but asked for
        assert len(fake.identified_shards) == identified  # REST only: no gateway connection for it
    finally:
        await fake.stop()
        reset_discord_endpoints()
    assert not fake.errors, fake.errors
