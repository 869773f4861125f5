"""`/imagine-admin`: the server's admin commands, one subcommand per verb (docs/rules.md §10), as a discord.py
`Group`. Each turns its typed options (a user, a role, a channel) into the core's `AdminRequest` with typed
targets; the core decides and checks again who may use it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from bot import commands
from bot.commands import AdminRequest, Target
from bot.errors import UserError
from bot.i18n import msg

from .interactions import answer_command

if TYPE_CHECKING:
    from .parts import AdapterSide

Ix = discord.Interaction[Any]


class Place(app_commands.Transformer[Any]):
    """A channel option of /imagine-admin: any channel whose rules apply to /imagine (text and announcement
    channels, voice and stage chats, and forums, whose posts follow them), as Discord resolved it: only its id
    is used. Threads are not offered: a thread follows its parent channel's rules (docs/rules.md §10)."""

    @property
    def type(self) -> discord.AppCommandOptionType:
        return discord.AppCommandOptionType.channel

    @property
    def channel_types(self) -> list[discord.ChannelType]:
        kinds = discord.ChannelType
        return [
            kinds.text,
            kinds.news,
            kinds.voice,
            kinds.stage_voice,
            kinds.forum,
            kinds.media,
        ]

    async def transform(self, interaction: discord.Interaction[Any], value: Any, /) -> Any:
        return value


Channel = app_commands.Transform[app_commands.AppCommandChannel, Place]


@app_commands.guild_only()
class AdminCommands(
    app_commands.Group,
    name="imagine-admin",
    description="Admin: quotas, spend, channel rules, who may render, pace",
    default_permissions=discord.Permissions(manage_guild=True),
):
    """`/imagine-admin`, one subcommand per verb (docs/rules.md §10), each with typed options for its target (user,
    role, channel) and text for the rest, and hands the core an `AdminRequest`, answered privately."""

    def __init__(self, adapter: AdapterSide) -> None:
        super().__init__()
        self.adapter = adapter

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        """Every subcommand is answered at once, privately ("thinking": only the caller sees what follows)."""
        return await answer_command(self.adapter.core, interaction, private=True)

    @app_commands.command(description="Set limits for a user, a channel, or (neither given) the whole server")
    @app_commands.describe(
        limits="daily_usd=N daily_images=N monthly_usd=N monthly_images=N (N, unlimited or default)",
        user="The user to limit",
        channel="The channel to limit",
    )
    async def quota(
        self,
        interaction: discord.Interaction[Any],
        limits: str,
        user: discord.User | None = None,
        channel: Channel | None = None,
    ) -> None:
        if user is not None and channel is not None:
            raise UserError(msg("discord.user_or_channel"))
        target = (
            _user(user)
            if user
            else _channel(channel)
            if channel
            else Target(kind="workspace", shown="workspace")
        )
        await self._ask(interaction, AdminRequest(verb="quota", target=target, words=tuple(limits.split())))

    @app_commands.command(description="Usage and spend across the whole server")
    @app_commands.describe(days="How many days back (default 30)")
    async def report(
        self, interaction: discord.Interaction[Any], days: app_commands.Range[int, 1, 366] = 30
    ) -> None:
        await self._ask(interaction, AdminRequest(verb="report", days=days))

    @app_commands.command(description="Turn imagebot on or off in a channel, or set the channel's ceilings")
    @app_commands.describe(
        channel="The channel",
        settings="on, off, max_size=2k max_quality=medium models=NAME moderation=low confirm=USD (=default clears)",
    )
    async def channel(self, interaction: discord.Interaction[Any], channel: Channel, settings: str) -> None:
        request = AdminRequest(verb="channel", target=_channel(channel), words=tuple(settings.split()))
        await self._ask(interaction, request)

    @app_commands.command(description="Let a role (or everyone) render; then only they and admins may")
    @app_commands.describe(role="The role to allow", everyone="Allow everyone (instead of a role)")
    async def allow(
        self, interaction: Ix, role: discord.Role | None = None, everyone: bool | None = None
    ) -> None:
        await self._ask(interaction, AdminRequest(verb="allow", target=self._group("allow", role, everyone)))

    @app_commands.command(description="Stop a role (or everyone) from rendering; admins still may")
    @app_commands.describe(role="The role to deny", everyone="Deny everyone (instead of a role)")
    async def deny(
        self, interaction: Ix, role: discord.Role | None = None, everyone: bool | None = None
    ) -> None:
        await self._ask(interaction, AdminRequest(verb="deny", target=self._group("deny", role, everyone)))

    @app_commands.command(
        description="Refuse a user everywhere in this server: commands, replies and buttons"
    )
    @app_commands.describe(user="The user to block")
    async def block(self, interaction: discord.Interaction[Any], user: discord.User) -> None:
        await self._ask(interaction, AdminRequest(verb="block", target=_user(user)))

    @app_commands.command(description="Let a blocked user render again")
    @app_commands.describe(user="The user to unblock")
    async def unblock(self, interaction: discord.Interaction[Any], user: discord.User) -> None:
        await self._ask(interaction, AdminRequest(verb="unblock", target=_user(user)))

    @app_commands.command(description="Show every setting of this server; set its pace")
    @app_commands.describe(
        text="cooldown=SECONDS max_jobs=N (each =default to clear); leave out to only show"
    )
    async def settings(self, interaction: discord.Interaction[Any], text: str = "") -> None:
        await self._ask(interaction, AdminRequest(verb="settings", words=tuple(text.split())))

    @app_commands.command(description="A one-time link, only for you, to this server's web dashboard")
    async def dashboard(self, interaction: discord.Interaction[Any]) -> None:
        await self._ask(interaction, AdminRequest(verb="dashboard"))

    @app_commands.command(name="help", description="What each /imagine-admin command does")
    async def help_(self, interaction: discord.Interaction[Any]) -> None:
        await self._ask(interaction, AdminRequest(verb="help"))

    async def _ask(self, interaction: discord.Interaction[Any], request: AdminRequest) -> None:
        """After the answer the core decides, and only the caller sees its reply. Default permissions hide the
        command, but a server can override them: the core checks again."""
        admin = bool(interaction.permissions.manage_guild)
        core = self.adapter.core
        await self.adapter.reply(
            interaction, lambda who: commands.admin(core, who, request, platform_admin=admin)
        )

    @staticmethod
    def _group(verb: str, role: discord.Role | None, everyone: bool | None) -> Target:
        """The target of allow/deny: exactly one of a role and everyone (the @everyone role counts as that)."""
        if (role is not None) == bool(everyone):  # both, or neither
            raise UserError(msg("discord.role_or_everyone", verb=verb))
        if role is None or role.is_default():
            return Target(kind="everyone", shown="everyone")
        return Target(kind="role", id=str(role.id), shown=f"<@&{role.id}>")


def _user(user: discord.abc.Snowflake) -> Target:
    """A typed user option as the core's target (no mention text to read back)."""
    return Target(kind="user", id=str(user.id), shown=f"<@{user.id}>")


def _channel(channel: discord.abc.Snowflake) -> Target:
    return Target(kind="channel", id=str(channel.id), shown=f"<#{channel.id}>")
