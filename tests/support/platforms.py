"""One scenario, both platforms: a small driver per platform that does what a person does there (an admin sets
a rule, a member runs /imagine, reads what only they were told) through the fake Slack or the fake Discord, so a
rule that is the same on both is written once (tests/e2e/test_rules_on_both_platforms.py) and run on each.

Users are named by their part: "member" (the one who usually asks), "other" (a second member), "admin" (a
workspace admin on Slack, Manage Server on Discord). Channels: "here" (the one the tests use) and "elsewhere"."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

from tests.e2e.harness import RunningBot, running_bot, slack_env
from tests.fakes.discord import FakeDiscord
from tests.fakes.slack import FakeSlack
from tests.support import discord as on_discord
from tests.support import slack as on_slack
from tests.support.waits import until

HERE = 1100000000000000003  # the fake Discord's own channel (FakeDiscord's default channel_id)
ELSEWHERE = 1100000000000000077  # a second text channel of the Discord guild


class Driver(Protocol):
    """What a scenario may do on a platform, and the ids the ledger stores for its people and places."""

    bot: RunningBot
    users: dict[str, str]  # part -> the user id in the ledger
    channels: dict[str, str]  # "here" / "elsewhere" -> the channel id in the ledger

    async def set_channel(self, settings: str) -> str:
        """`/imagine-admin channel <here> <settings>` by the admin: what only they were told."""
        ...

    def images_posted(self, where: str = "here") -> list[dict[str, Any]]:
        """The public messages in the channel that carry an image."""
        ...

    async def settings(self, text: str = "") -> str:
        """`/imagine-admin settings [text]` by the admin: what only they were told."""
        ...

    async def render(
        self,
        prompt: str,
        *,
        user: str = "member",
        size: str | None = None,
        quality: str = "low",
        where: str = "here",
        relax: bool = False,
    ) -> dict[str, Any]:
        """/imagine that renders: its ledger row, once delivered."""
        ...

    async def start(self, prompt: str, *, user: str = "member", size: str | None = None) -> Any:
        """/imagine at low quality, without waiting for it: a handle for `finish`."""
        ...

    async def finish(self, handle: Any) -> dict[str, Any]:
        """Wait until the job `start` began has posted its image and its row is delivered: the row."""
        ...

    async def refuse(
        self,
        prompt: str,
        *,
        user: str = "member",
        size: str | None = None,
        quality: str = "low",
        where: str = "here",
        relax: bool = False,
    ) -> str:
        """/imagine that the rules refuse: what only its user was told. Nothing was posted in public, no image
        API was called and no ledger row was written."""
        ...


class SlackDriver:
    """The bolt app in HTTP mode against the fake Slack; U9 is a workspace admin."""

    users = {"member": "U1", "other": "U2", "admin": on_slack.ADMIN}
    channels = {"here": "C1", "elsewhere": "C2"}

    def __init__(self, slack: FakeSlack, bot: RunningBot) -> None:
        self.slack, self.bot = slack, bot

    def images_posted(self, where: str = "here") -> list[dict[str, Any]]:
        return [m for m in self.slack.messages.get(self.channels[where], []) if m.get("files")]

    async def set_channel(self, settings: str) -> str:
        return await on_slack.admin(self.slack, self.bot, f"channel {on_slack.GENERAL} {settings}")

    async def settings(self, text: str = "") -> str:
        return await on_slack.admin(self.slack, self.bot, f"settings {text}".strip())

    def _text(self, prompt: str, size: str | None, quality: str, relax: bool) -> str:
        return (
            f"{prompt} --quality {quality}"
            + (f" --size {size}" if size else "")
            + (" --relax" if relax else "")
        )

    async def render(
        self,
        prompt: str,
        *,
        user: str = "member",
        size: str | None = None,
        quality: str = "low",
        where: str = "here",
        relax: bool = False,
    ) -> dict[str, Any]:
        text = self._text(prompt, size, quality, relax)
        return await on_slack.imagine_row(
            self.slack, self.bot, text, user=self.users[user], channel=self.channels[where]
        )

    async def start(self, prompt: str, *, user: str = "member", size: str | None = None) -> Any:
        text = self._text(prompt, size, "low", False)
        await self.slack.send_slash_command(self.bot.events_url, text=text, user_id=self.users[user])
        return prompt

    async def finish(self, handle: Any) -> dict[str, Any]:
        rows = await until(lambda: self.bot.ledger("prompt=? AND status='delivered'", [handle]), 20)
        thread = json.loads(rows[0]["context"])["ts"]  # its job message: the image goes in its thread
        assert [u for u in self.slack.uploaded if u.thread_ts == thread], self.slack.uploaded
        return rows[0]

    async def refuse(
        self,
        prompt: str,
        *,
        user: str = "member",
        size: str | None = None,
        quality: str = "low",
        where: str = "here",
        relax: bool = False,
    ) -> str:
        text = self._text(prompt, size, quality, relax)
        return await on_slack.refused(
            self.slack, self.bot, text, user=self.users[user], channel=self.channels[where]
        )


class DiscordDriver:
    """The discord.py client against the fake Discord: a guild with an admin, another member and a second
    channel."""

    def __init__(self, fake: FakeDiscord, bot: RunningBot) -> None:
        self.fake, self.bot = fake, bot
        self.users = {
            "member": str(fake.user_id),
            "other": str(on_discord.OTHER),
            "admin": str(on_discord.ADMIN),
        }
        self.channels = {"here": str(fake.channel_id), "elsewhere": str(ELSEWHERE)}

    def images_posted(self, where: str = "here") -> list[dict[str, Any]]:
        return [
            m
            for m in self.fake.messages.get(int(self.channels[where]), [])
            if not m["flags"] & on_discord.EPHEMERAL and m["attachments"]
        ]

    async def set_channel(self, settings: str) -> str:
        return await on_discord.admin(self.fake, "channel", channel=self.fake.channel_id, settings=settings)

    async def settings(self, text: str = "") -> str:
        return await on_discord.admin(self.fake, "settings", **({"text": text} if text else {}))

    async def _imagine(
        self, prompt: str, user: str, size: str | None, quality: str, where: str, relax: bool
    ) -> dict[str, Any]:
        options = [
            {"name": "prompt", "type": 3, "value": prompt},
            {"name": "quality", "type": 3, "value": quality},
        ]
        if size:
            options.append({"name": "size", "type": 3, "value": size})
        if relax:  # Discord's boolean option
            options.append({"name": "relax", "type": 5, "value": True})
        return await self.fake.send_interaction(
            name="imagine",
            options=options,
            user_id=int(self.users[user]),
            channel_id=int(self.channels[where]),
        )

    async def render(
        self,
        prompt: str,
        *,
        user: str = "member",
        size: str | None = None,
        quality: str = "low",
        where: str = "here",
        relax: bool = False,
    ) -> dict[str, Any]:
        rows = len(await self.bot.ledger())
        ix = await self._imagine(prompt, user, size, quality, where, relax)
        await on_discord.finished(self.fake, self.bot, ix, rows + 1)
        row = (await self.bot.ledger())[-1]
        assert row["user"] == self.users[user] and row["status"] == "delivered", row
        return row

    async def start(self, prompt: str, *, user: str = "member", size: str | None = None) -> Any:
        return prompt, await self._imagine(prompt, user, size, "low", "here", False)

    async def finish(self, handle: Any) -> dict[str, Any]:
        prompt, ix = handle
        row = (await until(lambda: self.bot.ledger("prompt=? AND status='delivered'", [prompt]), 20))[0]
        message = await on_discord.finished(self.fake, self.bot, ix, 1)
        assert message["attachments"] and message["attachments"][0]["width"] == int(row["size"].split("x")[0])
        return row

    async def refuse(
        self,
        prompt: str,
        *,
        user: str = "member",
        size: str | None = None,
        quality: str = "low",
        where: str = "here",
        relax: bool = False,
    ) -> str:
        rows = len(await self.bot.ledger())
        ix = await self._imagine(prompt, user, size, quality, where, relax)
        said = await on_discord.refused(self.fake, self.bot, ix, "", rows)
        assert "Nothing was charged" in said, said
        return said


@contextlib.asynccontextmanager
async def driver(platform: str, tmp_path: Path, **env: str) -> AsyncIterator[Driver]:
    """The bot on `platform` ("slack" or "discord") against its fake, with price checks off and `env` (in a
    value, "{here}" and "{elsewhere}" stand for the platform's channel ids)."""
    here, elsewhere_id = {"slack": ("C1", "C2"), "discord": (str(HERE), str(ELSEWHERE))}[platform]
    env = {name: value.format(here=here, elsewhere=elsewhere_id) for name, value in env.items()}
    if platform == "slack":
        slack = FakeSlack()
        await slack.start()
        slack.admins.add(on_slack.ADMIN)
        try:
            async with running_bot(tmp_path, slack_env(slack, **env), latency=0.05) as bot:
                yield SlackDriver(slack, bot)
        finally:
            await slack.stop()
        return
    elsewhere = lambda fake: fake.add_channel(ELSEWHERE, "elsewhere")  # noqa: E731
    async with on_discord.guild(tmp_path, elsewhere, **env) as (fake, bot):
        assert str(fake.channel_id) == here
        yield DiscordDriver(fake, bot)
