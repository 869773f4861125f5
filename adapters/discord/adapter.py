"""`DiscordAdapter`: the Discord side of `imagebot run`. It builds the client, its commands, listeners and button
handlers, handing itself in (they know it as parts.py's `AdapterSide`), starts and stops them, and holds what
an interaction needs of it: answered once, who asked under which channel's rules (asking Discord where it must),
a private word to the requester, and the job view that shows their job (interactions.py: what reads only the
interaction)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, ClassVar

import discord
from aiohttp import web
from discord.utils import MISSING

from bot import commands
from bot.app import Core
from bot.concurrency import TokenBucket
from bot.errors import UserError
from bot.i18n import ENGLISH, translate
from bot.jobs import texts
from bot.model.request import ImageRequest, Requester
from bot.store.ledger import Interrupted

from ..tasks import Tasks
from .client import make_client
from .images import Images
from .interactions import BORN, language, original, who
from .listeners import Listeners
from .presses import Presses
from .text import NO_PINGS, clip, escape, pings
from .view import DiscordJobView

log = logging.getLogger("imagebot.discord")

RECENT_INTERACTIONS = 10_000  # interaction ids remembered for replays (Discord replays within a session)
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024


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
        self._records = Tasks(log, "could not record an interaction id", logging.WARNING)
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
        self._records.spawn(self.core.first_time(f"discord:interaction:{interaction.id}"))
        return True

    async def on_error(self, interaction: discord.Interaction[Any], error: BaseException) -> None:
        """The one place a UserError (a bad option, an image we cannot read, a quota) from a command, a form
        or a button becomes a reply only the requester sees; anything else is logged."""
        if isinstance(error, UserError):
            await self.tell_privately(interaction, error.text)
        else:
            log.error("discord interaction failed", exc_info=error)

    async def requester(self, interaction: discord.Interaction[Any]) -> Requester:
        """`who`, also for a channel discord.py could not type (a PartialMessageable): asked of Discord, so a
        thread never escapes its parent's rules. UserError if that cannot be read."""
        asker = who(interaction)
        channel = interaction.channel
        if isinstance(channel, discord.PartialMessageable):
            asker = replace(asker, channel=await self.client.rules_channel(channel, self.post_timeout))
        return asker

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
        text = translate(reply.text, await language(self.core, interaction))
        await interaction.followup.send(
            clip(escape(text)), file=file, ephemeral=reply.private, allowed_mentions=NO_PINGS
        )

    async def tell_privately(
        self, interaction: discord.Interaction[Any], text: str, view: discord.ui.View | None = None
    ) -> None:
        """Only the requester sees `text` (and `view`'s buttons). After a public "thinking" defer the first
        follow-up would replace the loading message in public, whatever its flags: so end that message first,
        then follow up ephemerally. `text` is said in the requester's language."""
        text = translate(text, await language(self.core, interaction))
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
        view = await self.job_view(interaction, await original(interaction))
        await self.core.submit(request, view.who, view)

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
            locale=await language(self.core, interaction),
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
