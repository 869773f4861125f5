"""`DiscordAdapter`: the Discord side of `imagebot run`. It builds the client, its commands, listeners and button
handlers, starts and stops them, and holds what every interaction needs: who asked and in which channel's
rules, in which language to answer, a private word to the requester, and the job view that shows their job."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, ClassVar, cast

import discord
from aiohttp import web
from discord import app_commands
from discord.utils import MISSING

from bot import commands
from bot.app import Core
from bot.concurrency import TokenBucket
from bot.errors import UserError
from bot.i18n import ENGLISH, translate
from bot.jobs import texts
from bot.model.request import ImageRequest, Requester
from bot.store.ledger import Interrupted

from .client import make_client
from .images import Images
from .listeners import Listeners
from .presses import Presses
from .text import NO_PINGS, clip, escape, pings
from .view import DiscordJobView

log = logging.getLogger("imagebot.discord")

RECENT_INTERACTIONS = 10_000  # interaction ids remembered for replays (Discord replays within a session)
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
BORN, DEFERRED = "imagebot:born", "imagebot:deferred"  # what `answer` keeps in an interaction's extras


class DiscordAdapter:
    """Commands, buttons and a message listener on a discord.py client; thin: the core decides."""

    # How long discord.py waits after the last guild arrived (GUILD_CREATE) before it calls the bot ready and
    # /readyz says so: its own default. Commands are served meanwhile. Tests, whose fake sends every guild at
    # once, turn it down (tests/e2e/harness.py).
    guild_ready_timeout: ClassVar[float] = 2.0

    def __init__(self, core: Core) -> None:
        token = core.settings.discord_token
        assert token is not None, "built only when DISCORD_TOKEN is set"
        self.core, self.token = core, token.reveal()
        self.client = make_client(self, core.settings.discord_shard_count, core.settings.discord_shard_ids)
        self.tree = self.client.tree
        self.images = Images(self.client, core, lambda: self.post_timeout)
        self.presses = Presses(self)
        self.listeners = Listeners(self)
        self.task: asyncio.Task[None] | None = None
        # Knobs tests (and operators) can turn.
        self.token_lifetime = 14 * 60.0  # interaction tokens die at 15 min; switch to the channel before
        self.edit_interval = 2.5  # at least this many seconds between progress edits of one job
        # Progress edits across all jobs: well under Discord's 50 requests/s per bot, so that
        # a burst of jobs spends its requests (and our CPU) on images, not on progress bars.
        self.edits = TokenBucket(per_second=10, burst=20)
        self.preview_interval = 6.0  # at least this many seconds between preview uploads of one job
        # Deadlines for one Discord call of a job (discord.py's own is aiohttp's 5 minutes): Discord answers
        # a message in well under a second, so past `post_timeout` the progress message counts as failed (and
        # the job is released); an upload of up to 100 MiB gets longer.
        self.post_timeout: float = 30.0
        self.upload_timeout = 300.0
        self.upload_limit: int | None = None  # override the guild's upload limit (bytes)
        # A refusal on the reply path to someone whose DMs are closed is a reply deleted after this long.
        self.refusal_lifetime = 60.0
        self._recent: OrderedDict[int, None] = OrderedDict()  # interaction ids answered here (replays)
        self._records: set[asyncio.Task[Any]] = set()
        self.state = "logging in"  # why not connected yet, for /readyz

    # -- start-up (ops: retried with backoff; a refused token is fatal) ----------------------------------

    async def start(self, web_app: web.Application | None) -> None:
        """Point discord.py at DISCORD_API_URL, log in, sync commands, connect to the gateway in the background.
        An outage at login is retried with backoff while /readyz says so; a token Discord refuses raises
        ConfigError (one line, exit 2)."""
        settings = self.core.settings
        discord.http.Route.BASE = settings.discord_api_url.rstrip("/")
        self.images.open()
        await self.client.log_in(self.token, retrying=self._retrying)
        self.state = "connecting to the gateway"
        await self.client.sync_commands(self.core.ledger.settings, settings.discord_guild_ids)
        self.task = asyncio.create_task(self._connect())

    def _retrying(self, why: str) -> None:
        self.state = why

    async def _connect(self) -> None:
        try:
            await self.client.connect(reconnect=True)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("discord gateway connection ended")

    async def close(self) -> None:
        await self.client.close()
        if self.task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.task, 5)
        await self.images.close()

    @property
    def connected(self) -> bool:
        return self.client.is_ready() and not self.client.is_closed()

    def routes(self) -> list[web.RouteDef]:
        """Discord talks over its gateway: no HTTP routes of ours."""
        return []

    # -- every interaction ----------------------------------------------------------------

    async def first_time(self, interaction: discord.Interaction[Any]) -> bool:
        """A command, a button press or a form submission is handled once: the same interaction (its id)
        delivered again is ignored before it is answered (docs/rules.md §10), as the reply path's messages are."""
        # Discord delivers an interaction again only to the session that had it (a resumed gateway), so a
        # memory of the ids answered here decides at once: awaiting the database before every acknowledgement
        # delayed all of them under a burst. The id is still recorded in the store, after the answer.
        if interaction.id in self._recent:
            log.info("discord interaction replayed; ignored", extra={"interaction_id": interaction.id})
            return False
        self._recent[interaction.id] = None
        while len(self._recent) > RECENT_INTERACTIONS:
            self._recent.popitem(last=False)
        record = asyncio.create_task(self.core.first_time(f"discord:interaction:{interaction.id}"))
        self._records.add(record)
        record.add_done_callback(self._recorded)
        return True

    def _recorded(self, task: asyncio.Task[Any]) -> None:
        self._records.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("could not record an interaction id", exc_info=task.exception())

    async def answer(
        self, interaction: discord.Interaction[Any], *, thinking: bool = True, private: bool = False
    ) -> None:
        """Answer within Discord's 3 seconds, before any other work: "thinking" (a loading message, the job's
        own message later; `private`: only the requester sees it), or silently (`thinking=False`: a button
        whose message stays as it is). Work after an answer waits until a burst of them has gone out."""
        interaction.extras[BORN] = time.monotonic()  # the interaction token lives 15 minutes from about now
        async with self.core.acking():
            interaction.extras[DEFERRED] = await interaction.response.defer(
                thinking=thinking, ephemeral=private
            )
        await self.core.calm()

    async def answer_command(self, interaction: discord.Interaction[Any], *, private: bool) -> bool:
        """The `interaction_check` of a command answered with "thinking": the answer comes before its options
        are read or its callback runs. A failure to answer is the command's, for the tree's `on_error`."""
        try:
            await self.answer(interaction, private=private)
        except Exception as exc:
            command = cast(app_commands.Command[Any, ..., Any], interaction.command)
            raise app_commands.CommandInvokeError(command, exc) from exc
        return True

    async def on_error(self, interaction: discord.Interaction[Any], error: BaseException) -> None:
        """The one place a UserError (a bad option, an image we cannot read, a quota) from a command, a form
        or a button becomes a reply only the requester sees; anything else is logged."""
        if isinstance(error, UserError):
            await self.tell_privately(interaction, error.text)
        else:
            log.error("discord interaction failed", exc_info=error)

    async def language(self, interaction: discord.Interaction[Any]) -> str:
        """The language to answer this interaction in: the user's own setting, else the locale of their
        Discord client (`interaction.locale`), else English (bot/i18n.py `language_for`)."""
        locale = getattr(interaction, "locale", None)
        return await self.core.language(self.who(interaction), getattr(locale, "value", locale))

    @staticmethod
    def who(interaction: discord.Interaction[Any]) -> Requester:
        """Who asked, and the channel whose rules and budget apply: a thread's or forum post's parent (the
        interaction's `channel` object carries its `parent_id`), else the channel itself."""
        channel = interaction.channel
        rules = channel.parent_id if isinstance(channel, discord.Thread) else interaction.channel_id
        return Requester(
            "discord", str(interaction.guild_id or ""), str(rules or ""), str(interaction.user.id)
        )

    async def requester(self, interaction: discord.Interaction[Any]) -> Requester:
        """`who`, also for a channel discord.py could not type (a PartialMessageable): asked of Discord, so a
        thread never escapes its parent's rules. UserError if that cannot be read."""
        who = self.who(interaction)
        channel = interaction.channel
        if isinstance(channel, discord.PartialMessageable):
            who = replace(who, channel=await self.client.rules_channel(channel, self.post_timeout))
        return who

    def upload_limit_for(self, interaction: discord.Interaction[Any] | None, guild_id: int | None) -> int:
        """The upload limit: our override, else what the interaction says, else the guild's boost tier."""
        if self.upload_limit is not None:
            return self.upload_limit
        if interaction is not None and getattr(interaction, "filesize_limit", None):
            return int(interaction.filesize_limit)
        guild = self.client.get_guild(guild_id) if guild_id else None
        return guild.filesize_limit if guild is not None else DEFAULT_UPLOAD_LIMIT

    # -- answers --------------------------------------------------------------------------

    async def reply(
        self, interaction: discord.Interaction[Any], make: Callable[[Requester], Awaitable[commands.Reply]]
    ) -> None:
        """A command's answer from the core (`make`), after `answer`: privately if the reply says so."""
        reply = await make(await self.requester(interaction))
        file = discord.File(io.BytesIO(reply.chart), "usage.png") if reply.chart else MISSING
        text = translate(reply.text, await self.language(interaction))
        await interaction.followup.send(
            clip(escape(text)), file=file, ephemeral=reply.private, allowed_mentions=NO_PINGS
        )

    @staticmethod
    def linker(interaction: discord.Interaction[Any]) -> Callable[[dict[str, Any]], str | None]:
        """A job's message on this server (where its images are, else its progress message), for cards."""
        guild = interaction.guild_id

        def link(where: dict[str, Any]) -> str | None:
            images = [i for i in where.get("images") or [] if i.get("message_id")]
            place = images[0] if images else where
            channel, message = place.get("channel_id"), place.get("message_id")
            if not (guild and str(channel or "").isdigit() and str(message or "").isdigit()):
                return None
            return f"https://discord.com/channels/{guild}/{channel}/{message}"

        return link

    async def tell_privately(
        self, interaction: discord.Interaction[Any], text: str, view: discord.ui.View | None = None
    ) -> None:
        """Only the requester sees `text` (and `view`'s buttons). After a public "thinking" defer the first
        follow-up would replace the loading message in public, whatever its flags: so end that message first,
        then follow up ephemerally. `text` is said in the requester's language."""
        text = translate(text, await self.language(interaction))
        buttons = view if view is not None else MISSING
        if not interaction.response.is_done():
            await interaction.response.send_message(
                clip(text), view=buttons, ephemeral=True, allowed_mentions=NO_PINGS
            )
            return
        # Only a "thinking" answer left a loading message of ours to clear. After a button's silent answer
        # (type 6) the original response IS the clicked message: never touch it.
        if interaction.response.type is discord.InteractionResponseType.deferred_channel_message:
            try:
                original = await interaction.original_response()
                if not original.flags.ephemeral:
                    await interaction.edit_original_response(content="…")  # ends the loading state
                    await interaction.delete_original_response()
            except Exception:  # refused or unreachable: the private follow-up is still worth a try
                log.warning("could not clear the deferred response", exc_info=True)
        await interaction.followup.send(clip(text), view=buttons, ephemeral=True, allowed_mentions=NO_PINGS)

    # -- jobs -----------------------------------------------------------------------------

    async def submit(self, interaction: discord.Interaction[Any], request: ImageRequest) -> None:
        """One job shown in the interaction's response (its original message anchors the replies)."""
        view = await self.job_view(interaction, await self.original(interaction))
        await self.core.submit(request, view.who, view)

    @staticmethod
    async def original(interaction: discord.Interaction[Any]) -> int | None:
        """The id of the interaction's response message (the "thinking" one `answer` made)."""
        deferred = interaction.extras.get(DEFERRED)
        original = deferred.message_id if deferred is not None else None
        if original is None:  # the callback answer did not say: ask
            with contextlib.suppress(Exception):
                original = (await interaction.original_response()).id
        return original

    async def job_view(self, interaction: discord.Interaction[Any], anchor: int | None) -> DiscordJobView:
        """A job shown in the interaction's response; replies past its token's life go to `anchor`."""
        return DiscordJobView(
            self,
            await self.requester(interaction),
            lambda text, view: self.tell_privately(interaction, text, view),
            interaction=interaction,
            born=interaction.extras.get(BORN),
            anchor=anchor,
            person=interaction.user,
            place=str(interaction.channel_id or ""),
            locale=await self.language(interaction),
        )

    # -- bot.jobs.actions.ImageStore: where a finished job's images live --------------------------------

    async def fetch(self, where: dict[str, Any]) -> bytes:
        return await self.images.fetch(where)

    async def delete(self, where: dict[str, Any]) -> None:
        await self.images.delete(where)

    # -- after a restart ------------------------------------------------------------------

    async def tell_interrupted(self, job: Interrupted) -> None:
        """A job a restart cut short: its requester hears so, replying to the job's message, in its language."""
        channel_id = int(job.context.get("channel_id") or job.channel)
        message_id = job.context.get("message_id")
        reference = (
            discord.MessageReference(
                message_id=int(message_id), channel_id=channel_id, fail_if_not_exists=False
            )
            if message_id
            else MISSING
        )
        locale = str(job.context.get("locale") or ENGLISH)
        await self.client.get_partial_messageable(channel_id).send(
            f"<@{job.user}> {escape(texts.interrupted(job).render(locale))}",
            reference=reference,
            allowed_mentions=pings(job.user),
        )

    def view_for(self, who: Requester, context: dict[str, Any]) -> DiscordJobView:
        """A relax job from another life of the bot: its interaction token is long gone, so it is shown by a
        channel message replying to its original response (docs/rules.md §11)."""
        anchor = int(context["message_id"]) if context.get("message_id") else None
        channel = self.client.get_partial_messageable(int(context.get("channel_id") or who.channel))
        locale = str(context.get("locale") or ENGLISH)  # the job's language, kept with it (`open`)

        async def tell(text: str, buttons: discord.ui.View | None = None) -> None:
            text = translate(text, locale)
            reference = (
                discord.MessageReference(message_id=anchor, channel_id=channel.id, fail_if_not_exists=False)
                if anchor
                else MISSING
            )
            await channel.send(
                f"<@{who.user}> {clip(escape(text), 1900)}",
                reference=reference,
                view=buttons if buttons is not None else MISSING,
                allowed_mentions=pings(who.user),
            )

        return DiscordJobView(self, who, tell, anchor=anchor, place=str(channel.id), locale=locale)


async def sync_now(core: Core) -> int:
    """`imagebot discord-sync`: log in over REST (no gateway connection) and sync the commands now, changed or
    not. Returns the exit status."""
    settings = core.settings
    discord.http.Route.BASE = settings.discord_api_url.rstrip("/")
    adapter = DiscordAdapter(core)
    try:
        await adapter.client.login(adapter.token)
        sent = await adapter.client.sync_commands(
            core.ledger.settings, settings.discord_guild_ids, force=True
        )
    finally:
        await adapter.client.close()
    scopes = 1 + len(settings.discord_guild_ids)
    print(f"imagebot: synced Discord commands in {sent} of {scopes} scope(s)")
    return 0 if sent == scopes else 1
