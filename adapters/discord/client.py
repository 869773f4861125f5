"""The bot's discord.py client: its gateway (pointed at DISCORD_API_URL's answer, one connection or some shards),
a login that rides out an outage, the command sync, and which channel's rules apply to a thread."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import discord
import yarl
from discord import app_commands
from discord.ext import commands as ext
from discord.gateway import DiscordWebSocket
from discord.utils import MISSING

from bot.errors import ConfigError, UserError
from bot.policy.access import UNCHECKABLE
from bot.store.settings import Settings

from ..startup import unreachable, until_up
from .commands import install
from .components import ActionButton, CancelButton, PriceCheckButton
from .localizations import CommandTranslator
from .text import NO_PINGS, describe

if TYPE_CHECKING:
    from .parts import AdapterSide

log = logging.getLogger("imagebot.discord")

MAX_KNOWN_PARENTS = 10_000  # threads whose parent channel was looked up (a thread's parent never changes)


class Client(ext.Bot):
    """discord.py's client (a `Bot`, for its cogs: the bot has no prefix commands), pointed at DISCORD_API_URL's
    gateway, carrying the adapter its handlers answer to."""

    def __init__(self, adapter: AdapterSide, **shards: Any) -> None:
        # No message cache: replies carry the message they answer, and a cache of our own progress messages
        # would only be kept up to date (parsed, then collected) on every edit.
        # Only the events the bot uses: guilds (and their channels) and guild messages (replies that edit an
        # image). Typing, reactions, voice and the rest would be parsed and dropped, one event per keystroke.
        intents = discord.Intents.none()
        intents.guilds = True
        intents.guild_messages = True
        super().__init__(
            ext.when_mentioned,
            help_command=None,
            tree_cls=Tree,
            intents=intents,
            allowed_mentions=NO_PINGS,
            max_messages=None,
            guild_ready_timeout=adapter.guild_ready_timeout,
            **shards,
        )
        self.adapter = adapter
        self._parents: dict[int, str] = {}  # thread id -> its parent channel's id, for uncached threads

    async def setup_hook(self) -> None:
        # Client.connect (and AutoShardedClient, given a shard count) dials a built-in gateway address; ask the
        # configured REST base for the real one.
        _shards, url, _limits = await self.http.get_bot_gateway()
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)
        self.add_dynamic_items(CancelButton, ActionButton, PriceCheckButton)
        await install(self, self.adapter)
        await self.add_cog(self.adapter.listeners)
        await self.tree.set_translator(CommandTranslator())

    async def on_message(self, message: discord.Message, /) -> None:
        """Not a Bot's prefix commands (the bot has none): messages are for the listeners (listeners.py)."""

    async def log_in(self, token: str, retrying: Callable[[str], None]) -> None:
        """Log in over REST (adapters/startup.py). An outage (no DNS, connection refused, a 5xx) is retried with
        backoff, one log line and one `retrying(why)` each; a token Discord refuses raises ConfigError (one line,
        exit 2)."""

        def outage(exc: Exception) -> str | None:
            if isinstance(exc, discord.LoginFailure):
                raise ConfigError("DISCORD_TOKEN was refused by Discord (401 Unauthorized)") from None
            if isinstance(exc, discord.HTTPException):
                if exc.status < 500:
                    raise ConfigError(
                        f"Discord refused the login at DISCORD_API_URL: HTTP {exc.status} {exc.text}"[:300]
                    ) from None
                return f"Discord answered HTTP {exc.status}"
            return unreachable(exc)

        async def again(reason: str, attempt: int, _delay: float) -> None:
            retrying(f"login failed: {reason} (attempt {attempt}); retrying")
            log.warning("discord login: retrying", extra={"error": reason, "attempt": attempt})
            # login() opened a session of its own: close it, and let the next attempt make a new connector.
            await self.http.close()
            self.http.connector = MISSING

        await until_up(lambda: self.login(token), outage, again)

    async def sync_commands(self, store: Settings, guild_ids: Sequence[int], *, force: bool = False) -> int:
        """Sync the commands (per guild when DISCORD_GUILD_IDS is set: instant; else globally: can take an hour
        to show), but only where they changed since the last sync of any replica, or when forced (`imagebot
        discord-sync`): discord.py's maintainers advise against a sync on every start. A hash of each scope's
        commands' JSON is kept in `store` (bot/store/settings.py system settings), per application. In guild
        mode the global scope is empty, so the global commands of an earlier run are cleared (a PUT of []) and
        no command shows twice. Returns how many scopes were sent; a failure is logged and tried on the next
        start."""
        scopes: list[discord.Object | None] = [None]
        for guild_id in guild_ids:
            guild = discord.Object(guild_id)
            self.tree.copy_global_to(guild=guild)
            scopes.append(guild)
        if guild_ids:
            self.tree.clear_commands(guild=None)  # served per guild; kept globally they would show twice
        sent = 0
        for scope in scopes:
            name = f"discord_commands:{self.application_id}:{'global' if scope is None else scope.id}"
            payload = await self._payload(scope)
            digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
            if await store.system(name=name) == digest and not force:
                continue
            try:
                await self.tree.sync(guild=scope)
            except discord.HTTPException:
                log.exception("discord command sync failed; commands may be missing or stale")
                continue
            await store.set_system(name=name, value=digest)
            log.info("discord commands synced", extra={"scope": name, "commands": len(payload)})
            sent += 1
        return sent

    async def _payload(self, scope: discord.Object | None) -> list[dict[str, Any]]:
        """The JSON the tree sends for `scope`'s commands, localized as sent."""
        tree, translator = self.tree, self.tree.translator
        return [
            await c.get_translated_payload(tree, translator) if translator else c.to_dict(tree)
            for c in tree.get_commands(guild=scope)
        ]

    async def rules_channel(self, channel: discord.abc.Messageable, deadline: float) -> str:
        """The channel whose rules and budget apply to a message in `channel`: a thread's or forum post's parent,
        else the channel itself. A channel the client has not cached (a thread it was not told of) is asked of
        Discord once (GET /channels/{id}): a thread's parent never changes. UserError if it cannot be read."""
        if isinstance(channel, discord.Thread):
            return str(channel.parent_id)
        ident = int(getattr(channel, "id", 0))
        if not isinstance(channel, discord.PartialMessageable):
            return str(ident)
        known = self._parents.get(ident)
        if known is not None:
            return known
        try:
            async with asyncio.timeout(deadline):
                fetched = await self.fetch_channel(ident)
        except Exception as exc:
            log.warning("could not read a channel: %s", describe(exc), extra={"channel": ident})
            raise UserError(UNCHECKABLE) from None
        parent = str(fetched.parent_id if isinstance(fetched, discord.Thread) else fetched.id)
        if len(self._parents) >= MAX_KNOWN_PARENTS:
            self._parents.clear()
        self._parents[ident] = parent
        return parent


class Tree(app_commands.CommandTree[Client]):
    """The command tree, which ignores a replayed command (the same interaction id) before answering it."""

    async def interaction_check(self, interaction: discord.Interaction[Client], /) -> bool:
        if interaction.type is discord.InteractionType.autocomplete:
            return True  # answers suggestions only: nothing to repeat, and one per keystroke
        return await interaction.client.adapter.first_time(interaction)

    async def on_error(
        self, interaction: discord.Interaction[Client], error: app_commands.AppCommandError, /
    ) -> None:
        await interaction.client.adapter.on_error(interaction, getattr(error, "original", error))


class ShardedClient(Client, ext.AutoShardedBot):
    """The same client running some shards of the bot (docs/rules.md §12): one gateway connection per shard, each
    identifying as [id, count], so Discord sends it only the events of the guilds on that shard."""


def make_client(adapter: AdapterSide, count: int | None, ids: Sequence[int]) -> Client:
    """Unsharded (one connection, as Discord expects of a small bot) unless DISCORD_SHARD_COUNT is set; then
    the shards DISCORD_SHARD_IDS names, or all of them."""
    if count is None:
        return Client(adapter)
    return ShardedClient(adapter, shard_count=count, shard_ids=list(ids) or None)
