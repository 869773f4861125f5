"""Discord sharding (docs/rules.md §12): DISCORD_SHARD_COUNT and DISCORD_SHARD_IDS choose the shards one replica runs, so
replicas split the guilds between them. End to end against the fake Discord, which sends a guild's events only to
the session of the shard that owns it, `(guild_id >> 22) % count`, as Discord does."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import discord
import pytest

from adapters.discord import DiscordAdapter
from bot.config import Settings
from bot.errors import ConfigError
from tests.e2e.harness import RunningBot, running_bot
from tests.fakes.discord import FakeDiscord, reset_discord_endpoints, shard_of
from tests.support.discord import discord_bot, final_result, first_call, imagine
from tests.support.processes import run_once

ROOT = Path(__file__).resolve().parents[2]
GUILD = 1100000000000000002  # the fake's guild: on shard 1 of 2
assert shard_of(GUILD, 2) == 1
GUILD_ON_SHARD_0 = GUILD + (1 << 22)  # a guild created a millisecond later: the next shard
assert shard_of(GUILD_ON_SHARD_0, 2) == 0


def client_of(bot: RunningBot) -> discord.Client:
    adapter: DiscordAdapter = bot.adapters["discord"]
    return adapter.client


async def rendered(fake: FakeDiscord, prompt: str) -> dict[str, Any]:
    """/imagine `prompt` in the fake's guild, waiting for its image; the interaction."""
    ix = await imagine(fake, prompt, size="1024x1024", quality="low")
    await first_call(
        fake, lambda c: c.path.endswith(f"/{ix['token']}/messages/@original") and final_result(c)
    )
    return ix


# -- one replica ----------------------------------------------------------------------------------------------


async def test_unset_runs_one_unsharded_connection_as_before(tmp_path: Path) -> None:
    async with discord_bot(tmp_path) as (fake, bot):
        await rendered(fake, "a lighthouse")
        assert fake.identified_shards == [None]  # IDENTIFY without `shard`: Discord's single-connection bot
        assert fake.identified_sessions == 1
        assert not isinstance(client_of(bot), discord.AutoShardedClient)


async def test_a_replica_identifies_only_its_shard_and_answers_that_shards_guild(tmp_path: Path) -> None:
    async with discord_bot(
        tmp_path,
        fake_kwargs={"guild_id": GUILD_ON_SHARD_0},
        DISCORD_SHARD_COUNT="2",
        DISCORD_SHARD_IDS="0",
    ) as (fake, bot):
        await rendered(fake, "a lighthouse on shard zero")
        await bot.settled(1)
        # Messages come over the shard's connection too: a reply to the image edits it.
        reply = await fake.send_message(
            content="at night --quality low",
            referenced_message=fake.messages[fake.channel_id][0],
            mentions_bot=True,
        )
        channel = rf"/channels/{fake.channel_id}/messages"
        edited = await first_call(
            fake, lambda c: c.method == "POST" and c.path == channel and final_result(c)
        )
        assert str(edited.json["message_reference"]["message_id"]) == reply["id"]
        rows = await bot.settled(2)
        assert fake.identified_shards == [[0, 2]]
        # The gateway address still comes from GET /gateway/bot on DISCORD_API_URL (the fake), not discord.gg.
        assert fake.calls_matching("GET", "/gateway/bot")
        client = client_of(bot)
        assert isinstance(client, discord.AutoShardedClient)
        assert (client.shard_count, client.shard_ids) == (2, [0])
        guild = client.get_guild(GUILD_ON_SHARD_0)
        assert guild is not None and guild.shard_id == 0
        assert [(r["status"], r["platform"]) for r in rows] == [("delivered", "discord")] * 2


async def test_a_count_without_ids_runs_every_shard_in_this_replica(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def at_once(self: discord.Client, shard_id: int | None, *, initial: bool = False) -> None:
        """discord.py waits 5 s between IDENTIFYs (Discord's max_concurrency of 1); the fake does not mind."""

    monkeypatch.setattr(discord.AutoShardedClient, "before_identify_hook", at_once)
    async with discord_bot(tmp_path, DISCORD_SHARD_COUNT="2") as (fake, bot):
        await fake.wait_identified(2)
        await rendered(fake, "a lighthouse on shard one")
        assert sorted(fake.identified_shards, key=str) == [[0, 2], [1, 2]]
        assert client_of(bot).shard_count == 2


# -- replicas -------------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def replica(fake: FakeDiscord, home: Path, shard_ids: str) -> AsyncIterator[RunningBot]:
    """One replica of the bot on `fake`, running `shard_ids` of 2 shards."""
    home.mkdir()
    env = {
        "DISCORD_TOKEN": fake.token,
        "DISCORD_API_URL": fake.api_url,
        "DISCORD_SHARD_COUNT": "2",
        "DISCORD_SHARD_IDS": shard_ids,
    }
    async with running_bot(home, env) as bot:
        yield bot


async def test_two_replicas_split_the_shards_and_only_the_guilds_shard_answers(tmp_path: Path) -> None:
    fake = FakeDiscord()  # its guild is on shard 1
    await fake.start()
    try:
        async with (
            replica(fake, tmp_path / "a", "0") as first,
            replica(fake, tmp_path / "b", "1") as second,
        ):
            await fake.wait_identified(2)
            assert sorted(fake.identified_shards, key=str) == [[0, 2], [1, 2]]
            for bot in (first, second):
                adapter: DiscordAdapter = bot.adapters["discord"]
                adapter.edit_interval, adapter.preview_interval = 0.05, 0.1
            ix = await rendered(fake, "a lighthouse seen by one replica")
            assert len(await second.settled(1)) == 1  # shard 1's replica rendered it...
            assert await first.ledger() == []  # ...and shard 0's never heard of it
            [answer] = fake.calls_matching("POST", rf"/interactions/{ix['id']}/{ix['token']}/callback")
            assert answer.json["type"] == 5
            assert client_of(first).get_guild(GUILD) is None
            assert client_of(second).get_guild(GUILD) is not None
    finally:
        await fake.stop()
        reset_discord_endpoints()
    assert not fake.errors, fake.errors


# -- configuration --------------------------------------------------------------------------------------------


def load(**environ: str) -> Settings:
    return Settings.load(environ=environ, env_file=None)


def test_shard_settings_are_read() -> None:
    unset = load()
    assert (unset.discord_shard_count, unset.discord_shard_ids) == (None, ())
    assert (
        load(DISCORD_SHARD_COUNT="4").discord_shard_count,
        load(DISCORD_SHARD_COUNT="4").discord_shard_ids,
    ) == (
        4,
        (),
    )
    both = load(DISCORD_SHARD_COUNT="4", DISCORD_SHARD_IDS=" 3, 0,1 ")
    assert (both.discord_shard_count, both.discord_shard_ids) == (4, (3, 0, 1))
    assert load(DISCORD_SHARD_COUNT="10000", DISCORD_SHARD_IDS="9999").discord_shard_ids == (9999,)


@pytest.mark.parametrize(
    ("environ", "words"),
    [
        ({"DISCORD_SHARD_COUNT": "2", "DISCORD_SHARD_IDS": "2"}, ["DISCORD_SHARD_IDS", "'2'", "0 to 1"]),
        ({"DISCORD_SHARD_IDS": "0"}, ["DISCORD_SHARD_IDS", "DISCORD_SHARD_COUNT", "1-10000"]),
        ({"DISCORD_SHARD_COUNT": "0"}, ["DISCORD_SHARD_COUNT", "1-10000"]),
        ({"DISCORD_SHARD_COUNT": "10001"}, ["DISCORD_SHARD_COUNT", "1-10000"]),
        ({"DISCORD_SHARD_COUNT": "-1"}, ["DISCORD_SHARD_COUNT", "1-10000"]),
        ({"DISCORD_SHARD_COUNT": "x"}, ["DISCORD_SHARD_COUNT", "'x'", "1-10000"]),
        ({"DISCORD_SHARD_COUNT": "1.5"}, ["DISCORD_SHARD_COUNT", "1-10000"]),
        ({"DISCORD_SHARD_COUNT": "2", "DISCORD_SHARD_IDS": "x"}, ["DISCORD_SHARD_IDS", "'x'", "0 to 1"]),
        ({"DISCORD_SHARD_COUNT": "2", "DISCORD_SHARD_IDS": "-1"}, ["DISCORD_SHARD_IDS", "'-1'", "0 to 1"]),
        ({"DISCORD_SHARD_COUNT": "3", "DISCORD_SHARD_IDS": "1,1"}, ["DISCORD_SHARD_IDS", "twice", "0 to 2"]),
    ],
)
def test_a_bad_shard_setting_is_refused_in_one_line_naming_it(
    environ: dict[str, str], words: list[str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(**environ)
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_imagebot_run_with_a_bad_shard_id_exits_2(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "SLACK_", "DISCORD_", "IMAGEBOT_")) and "TOKEN" not in k
    }
    env.update({"DISCORD_SHARD_COUNT": "2", "DISCORD_SHARD_IDS": "2", "PYTHONPATH": str(ROOT)})
    result = run_once(tmp_path, env)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "DISCORD_SHARD_IDS" in line and "0 to 1" in line
