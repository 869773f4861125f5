"""The Discord adapter: app commands and replies that parse, hand to the core, and render (SPEC §2, Discord).

Everything that is not Discord-specific (parsing, quotas, the API call, the ledger) is the core's. What is
Discord's: deferring within 3 s, editing the interaction's response for progress, the 15-minute life of an
interaction token (after it, the job carries on in a channel message that replies to the original), the
guild's upload limit (images over it are re-encoded with the core's `fit_under`), and a network that
fails: every Discord call of a job has a deadline, and whatever fails, the requester hears what became of
their money.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import aiohttp
import discord
import yarl
from aiohttp import web
from discord import app_commands
from discord.gateway import DiscordWebSocket
from discord.utils import MISSING

from bot import commands, texts
from bot.app import Core, decode_attachments, is_image_attachment
from bot.concurrency import TokenBucket
from bot.errors import CannotPost, UserError
from bot.images import ImageInput, fit_under, image_size, load_image, read_capped
from bot.ledger import Interrupted
from bot.outcomes import JobFailure, JobResult, Progress
from bot.request import FORMATS, QUALITIES, ImageRequest, Requester
from bot.request import clip as clip_to
from bot.sizes import KNOWN_SIZES

log = logging.getLogger("imagebot.discord")

MAX_CONTENT = 2000  # Discord's message length limit
BAR = 20
NO_PINGS = discord.AllowedMentions.none()
SIZE_SUGGESTIONS = ("auto", "1k", "2k", "4k", *(f"{w}x{h}" for w, h in KNOWN_SIZES))
CANCEL_PREFIX = "imagebot:cancel:"
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
UPLOAD_ATTEMPTS = 4
# Discord codes: 50027 invalid webhook token (interaction past 15 min), 10015 unknown webhook,
# 10008 unknown message (the original response was deleted), 40005 request entity too large.
TOKEN_GONE_CODES = (50027, 10015, 10008)
Deferred = discord.InteractionCallbackResponse[Any] | None  # what defer() answers: the original's message id


def escape(text: str) -> str:
    """Discord markdown escaped, so a prompt cannot format, spoil or quote its way into the message."""
    return discord.utils.escape_markdown(text)


def clip(text: str, limit: int = MAX_CONTENT) -> str:
    """Within Discord's message length."""
    return clip_to(text, limit)


def quote(prompt: str, limit: int = 300) -> str:
    """The prompt as a block quote, escaped and clipped."""
    return "\n".join("> " + line for line in escape(clip(prompt, limit)).splitlines() or [""])


def pings(user: str) -> discord.AllowedMentions:
    """Ping the requester and nobody else (no @everyone, roles or other users from the prompt)."""
    return discord.AllowedMentions(
        everyone=False, roles=False, users=[discord.Object(int(user))], replied_user=False
    )


def token_gone(exc: discord.HTTPException) -> bool:
    """The interaction token can no longer be used: past 15 minutes, or its message is gone."""
    return exc.status == 401 or exc.code in TOKEN_GONE_CODES


def too_large(exc: discord.HTTPException) -> bool:
    return exc.status == 413 or exc.code == 40005


def describe(exc: BaseException) -> str:
    """A failed Discord call, in words for the requester."""
    if isinstance(exc, discord.HTTPException):
        return f"Discord refused it (HTTP {exc.status}, code {exc.code}: {exc.text})"
    if isinstance(exc, TimeoutError):  # before OSError, of which it is one
        return "Discord did not answer in time"
    if isinstance(exc, aiohttp.ClientError | OSError):
        return f"the connection to Discord failed ({type(exc).__name__})"
    return f"{type(exc).__name__}: {exc}"


def progress_text(progress: Progress) -> str:
    """The live progress message: settings, prompt, a bar, elapsed/expected time, queue position."""
    request = progress.request
    status = texts.status_line(
        progress, code=lambda bar: f"`{bar}`"
    )  # our own words and numbers: no escaping
    head = f"**{'Editing' if request.is_edit else 'Rendering'}** · {escape(texts.settings_line(request, progress.offline))}"
    return clip(f"{head}\n{quote(request.prompt)}\n{status[0].upper()}{status[1:]}")


def cancel_view(job_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id))
    return view


def fit_images(images: Sequence[tuple[bytes, str]], budget: int) -> tuple[list[tuple[str, bytes]], list[str]]:
    """(data, filename) pairs -> uploads each at most `budget` bytes, plus notes on what was re-encoded.

    CPU work: run in a thread.
    """
    uploads: list[tuple[str, bytes]] = []
    notes: list[str] = []
    for data, filename in images:
        fitted, fmt, note = fit_under(data, budget)
        if note is None:
            uploads.append((filename, data))
            continue
        width, height = image_size(fitted)
        uploads.append((f"image-{width}x{height}.{'jpg' if fmt == 'jpeg' else fmt}", fitted))
        notes.append(f"{filename} {note}")
    return uploads, notes


class CancelButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=CANCEL_PREFIX + r"(?P<job>[A-Za-z0-9]+)"
):
    """The Cancel button of a progress message; its custom id carries the job id, so it survives restarts."""

    def __init__(self, job_id: str) -> None:
        super().__init__(
            discord.ui.Button(
                label="Cancel", style=discord.ButtonStyle.danger, custom_id=CANCEL_PREFIX + job_id
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> CancelButton:
        return cls(match["job"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await cast(_Client, interaction.client).adapter.cancel(interaction, self.job_id)


class EditModal(discord.ui.Modal, title="Edit image"):
    """Asks for the edit instruction of the "Edit image" message command."""

    instruction: discord.ui.TextInput[EditModal] = discord.ui.TextInput(
        label="Instruction",
        style=discord.TextStyle.paragraph,
        max_length=4000,
        placeholder="make the sky stormy --quality high",
    )

    def __init__(self, adapter: DiscordAdapter, target: discord.Message, image: discord.Attachment) -> None:
        super().__init__(timeout=600)
        self.adapter = adapter
        self.target = target
        self.image = image

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        await self.adapter.edit_from_menu(interaction, self.target, self.image, self.instruction.value)

    async def on_error(self, interaction: discord.Interaction[Any], error: Exception, /) -> None:  # type: ignore[override]
        await self.adapter.on_error(interaction, error)


class _Client(discord.Client):
    """discord.py's client, pointed at DISCORD_API_URL's gateway, forwarding messages to the adapter."""

    def __init__(self, adapter: DiscordAdapter) -> None:
        # No message cache: replies carry the message they answer, and a cache of our own progress messages
        # would only be kept up to date (parsed, then collected) on every edit.
        # Only the events the bot uses: guilds (and their channels) and guild messages (replies that edit an
        # image). Typing, reactions, voice and the rest would be parsed and dropped, one event per keystroke.
        intents = discord.Intents.none()
        intents.guilds = True
        intents.guild_messages = True
        super().__init__(intents=intents, allowed_mentions=NO_PINGS, max_messages=None)
        self.adapter = adapter
        self.tree = app_commands.CommandTree(self)

    async def setup_hook(self) -> None:
        # Client.connect dials a built-in gateway address; ask the configured REST base for the real one.
        _shards, url, _limits = await self.http.get_bot_gateway()
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)
        self.add_dynamic_items(CancelButton)

    async def on_message(self, message: discord.Message) -> None:
        await self.adapter.on_message(message)


class DiscordJobView:
    """Shows one job: edits the interaction's original response (or, once the interaction token is past its
    life, a channel message replying to the original), then puts the image there."""

    previews = True  # an edit of the message can carry the latest partial image

    def __init__(
        self,
        adapter: DiscordAdapter,
        who: Requester,
        tell: Callable[[str], Awaitable[Any]],
        *,
        interaction: discord.Interaction[Any] | None,
        born: float,
        anchor: int | None,
        upload_limit: int,
    ) -> None:
        self.adapter = adapter
        self.who = who
        self.tell = tell  # a reply only the requester sees
        self.interaction = interaction
        self.born = born  # monotonic time the interaction arrived: its token lives 15 minutes from then
        self.anchor = anchor  # the message replies go to: the original response, or the user's message
        self.upload_limit = upload_limit
        self.channel = adapter.client.get_partial_messageable(int(who.channel), guild_id=int(who.workspace))
        self.job_id = ""
        self.prompt = ""
        self.expired = interaction is None
        self.progress_message: discord.Message | None = None
        self._pending: asyncio.Task[None] | None = None
        self._last_edit = float("-inf")
        self._last_preview = float("-inf")
        self._preview: bytes | None = None

    # -- where to show it -----------------------------------------------------------------

    @property
    def token_alive(self) -> bool:
        return (
            self.interaction is not None
            and not self.expired
            and time.monotonic() - self.born < self.adapter.token_lifetime
        )

    @property
    def reference(self) -> discord.MessageReference:
        """A reply to the anchor that still posts if the anchor was deleted (MISSING: no anchor)."""
        if self.anchor is None:
            return MISSING
        return discord.MessageReference(
            message_id=self.anchor,
            channel_id=int(self.who.channel),
            guild_id=int(self.who.workspace),
            fail_if_not_exists=False,
        )

    async def _via_interaction(self, edit: Callable[[discord.Interaction[Any]], Awaitable[Any]]) -> bool:
        """Try `edit` with the interaction token; False (and from now on the channel) if the token is gone.
        Any other failure raises."""
        if self.interaction is None or self.expired:
            return False
        if not self.token_alive:  # about to expire: say where the job went while we still can
            self.expired = True
            with contextlib.suppress(Exception):
                await self.interaction.edit_original_response(
                    content=f"{quote(self.prompt)}\n{texts.TOKEN_EXPIRING}", allowed_mentions=NO_PINGS
                )
            return False
        try:
            await edit(self.interaction)
            return True
        except discord.HTTPException as exc:
            if not token_gone(exc):
                raise
            log.info(
                "interaction token gone; continuing in the channel",
                extra={"job_id": self.job_id, "status": exc.status, "code": exc.code},
            )
            self.expired = True
            return False

    # -- progress -------------------------------------------------------------------------

    async def open(self, first: Progress) -> dict[str, Any]:
        """The interaction's response is the progress message; without an interaction, post one now (within
        `post_timeout`). Returns what a restart needs to tell the user: the channel and the message to reply to."""
        self.job_id, self.prompt = first.job_id, first.request.prompt
        if self.interaction is None:
            try:
                async with asyncio.timeout(self.adapter.post_timeout):
                    self.progress_message = await self.channel.send(
                        progress_text(first),
                        view=cancel_view(self.job_id),
                        reference=self.reference,
                        allowed_mentions=NO_PINGS,
                    )
            except discord.HTTPException as exc:
                raise CannotPost(
                    f"{describe(exc)}; I need View Channel, Send Messages and Attach Files"
                ) from exc
            except Exception as exc:  # dropped or unanswered
                raise CannotPost(f"{describe(exc)}; try again") from exc
            self._last_edit = time.monotonic()
        return {"channel_id": self.who.channel, "message_id": str(self.anchor) if self.anchor else None}

    async def refused(self, text: str) -> None:
        try:
            async with asyncio.timeout(self.adapter.post_timeout):
                await self.tell(text)
        except Exception:
            log.warning("could not tell the requester", exc_info=True, extra={"job_id": self.job_id})

    async def progress(self, progress: Progress) -> None:
        if progress.preview is not None:
            self._preview = progress.preview
        now = time.monotonic()
        if (
            self._pending is not None and not self._pending.done()
        ) or now - self._last_edit < self.adapter.edit_interval:
            return  # Discord rate-limits edits: skip this tick, the next one catches up
        if not self.adapter.edits.take():
            return  # over the bot-wide progress budget (many jobs at once): skip, as above
        preview = None
        if self._preview is not None and now - self._last_preview >= self.adapter.preview_interval:
            preview, self._preview, self._last_preview = self._preview, None, now
        self._last_edit = now
        # Its own task: the core cancels its ticker when the image arrives, which must not cut an edit in half.
        self._pending = asyncio.create_task(self._show_progress(progress_text(progress), progress, preview))

    async def _show_progress(self, content: str, progress: Progress, preview: bytes | None) -> None:
        attachments: list[discord.File] = MISSING
        if preview is not None and len(preview) <= self.upload_limit:
            attachments = [discord.File(io.BytesIO(preview), "preview.jpg")]
        try:
            # A deadline: an edit that hangs would hold up the result (see _drain) and, on the interaction,
            # every later edit (discord.py sends one webhook call per token at a time).
            async with asyncio.timeout(self.adapter.post_timeout):
                if await self._via_interaction(
                    lambda ix: ix.edit_original_response(
                        content=content,
                        attachments=attachments,
                        view=cancel_view(self.job_id),
                        allowed_mentions=NO_PINGS,
                    )
                ):
                    return
                if attachments is not MISSING:  # a File is read once: make a fresh one for the channel
                    attachments = [discord.File(io.BytesIO(preview or b""), "preview.jpg")]
                if self.progress_message is None:
                    self.progress_message = await self.channel.send(
                        content,
                        files=attachments,
                        view=cancel_view(self.job_id),
                        reference=self.reference,
                        allowed_mentions=NO_PINGS,
                    )
                else:
                    await self.progress_message.edit(
                        content=content,
                        attachments=attachments,
                        view=cancel_view(self.job_id),
                        allowed_mentions=NO_PINGS,
                    )
        except discord.HTTPException as exc:
            if preview is not None and too_large(exc):
                # Discord's real limit is below what it told us: remember, so the image is fitted up front.
                self.upload_limit = min(self.upload_limit, len(preview) - 1)
            log.warning(
                "progress update failed",
                extra={"job_id": self.job_id, "status": exc.status, "code": exc.code},
            )
        except Exception as exc:  # a dropped connection, no answer: the next tick tries again
            log.warning("progress update failed: %s", describe(exc), extra={"job_id": self.job_id})

    async def _drain(self) -> None:
        """Let an edit in flight land first, so it cannot overwrite the result (it ends by `post_timeout`)."""
        if self._pending is not None:
            with contextlib.suppress(Exception):
                await self._pending

    # -- the outcome ----------------------------------------------------------------------

    async def _final(self, content: str, uploads: list[tuple[str, bytes]]) -> None:
        """Replace the progress with `content` and `uploads`: in the original response while its token lives,
        else as a new channel message replying to the original (which pings the requester). Raises if Discord
        refuses, drops the connection or does not answer in time."""

        def files() -> list[discord.File]:  # a File is read once: fresh ones for every attempt
            return [discord.File(io.BytesIO(data), name) for name, data in uploads]

        deadline = self.adapter.upload_timeout if uploads else self.adapter.post_timeout
        async with asyncio.timeout(deadline):
            if await self._via_interaction(
                lambda ix: ix.edit_original_response(
                    content=clip(content), attachments=files(), view=None, allowed_mentions=NO_PINGS
                )
            ):
                return
        async with asyncio.timeout(deadline):
            await self.channel.send(
                clip(f"<@{self.who.user}>\n{content}"),
                files=files(),
                reference=self.reference,
                allowed_mentions=pings(self.who.user),
            )
        if self.progress_message is not None:  # posted: a leftover progress message must not fail the job
            message, self.progress_message = self.progress_message, None
            try:
                async with asyncio.timeout(self.adapter.post_timeout):
                    await message.delete()
            except Exception as exc:
                log.warning(
                    "could not delete the progress message: %s", describe(exc), extra={"job_id": self.job_id}
                )

    async def _last_word(self, content: str, request_ids: Sequence[str]) -> None:
        """Post `content` where the job is shown; if that fails too, in the channel. Never raises."""
        while True:
            try:
                await self._final(content, [])
                return
            except Exception:
                log.exception(
                    "could not tell the requester how their job ended",
                    extra={"job_id": self.job_id, "request_ids": ",".join(request_ids)},
                )
                if self.expired:
                    return  # the channel failed as well: the log is all that is left
                self.expired = True  # the interaction's message cannot be edited: reply to it instead

    async def _upload(self, result: JobResult) -> str | None:
        """Post the images with the summary, fitted under the upload limit; None, or why it failed."""
        images = [(image.data, image.filename) for image in result.images]
        budget = self.upload_limit // len(images)  # per image, so the whole message fits too
        problem = "no attempt was made"
        for _ in range(UPLOAD_ATTEMPTS):
            try:
                if max(len(data) for data, _name in images) > budget:
                    uploads, notes = await asyncio.to_thread(fit_images, images, budget)
                else:
                    uploads, notes = [(name, data) for data, name in images], []
                await self._final(
                    "\n".join(
                        [
                            quote(result.request.prompt),
                            escape(texts.summary(result)),
                            *(escape(note) for note in notes),
                        ]
                    ),
                    uploads,
                )
                return None
            except discord.HTTPException as exc:
                if not too_large(exc):
                    return describe(exc)
                # Discord's limit is lower than it told us: re-encode smaller and try again.
                budget = max(len(data) for _name, data in uploads) // 2
                problem = f"Discord refused it as too large even at {budget * 2 / 1024:.0f} KiB"
                log.warning(
                    "upload too large, re-encoding smaller", extra={"job_id": self.job_id, "budget": budget}
                )
            except Exception as exc:  # no answer, a dropped connection, an image that cannot be made small
                log.exception("image upload failed", extra={"job_id": self.job_id})
                return describe(exc)
        return problem

    async def deliver(self, result: JobResult) -> None:
        """Upload the images with the summary; never fail a paid image silently, and never raise."""
        await self._drain()
        request_ids = [i for image in result.images for i in image.request_ids]
        try:
            problem = await self._upload(result)
        except Exception as exc:
            log.exception("image upload failed", extra={"job_id": self.job_id})
            problem = describe(exc)
        if problem is None:
            return
        # Paid for but not shown: say so, with what it cost and the request ids.
        await self._last_word(
            f"{quote(result.request.prompt)}\n{escape(texts.undelivered(problem, texts.summary(result)))}",
            request_ids,
        )

    async def failed(self, failure: JobFailure) -> None:
        await self._drain()
        await self._last_word(
            f"{quote(failure.request.prompt)}\n{escape(texts.summary(failure))}", failure.request_ids
        )


class DiscordAdapter:
    """Registers app commands and a message listener on a discord.py client; thin: the core decides."""

    def __init__(self, core: Core) -> None:
        token = core.settings.discord_token
        assert token is not None, "built only when DISCORD_TOKEN is set"
        self.core, self.token = core, token.reveal()
        self.client = _Client(self)
        self.tree = self.client.tree
        self.http: aiohttp.ClientSession | None = None
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
        self.post_timeout = 30.0
        self.upload_timeout = 300.0
        self.upload_limit: int | None = None  # override the guild's upload limit (bytes)
        self._register()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self, web_app: web.Application | None) -> None:
        """Point discord.py at DISCORD_API_URL, log in, sync commands, connect to the gateway in the background."""
        settings = self.core.settings
        discord.http.Route.BASE = settings.discord_api_url.rstrip("/")
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
        await self.client.login(self.token)
        await self._sync_commands(settings.discord_guild_ids)
        self.task = asyncio.create_task(self._connect())

    async def _sync_commands(self, guild_ids: Sequence[int]) -> None:
        """Per guild when DISCORD_GUILD_IDS is set (instant), else globally (can take an hour to show)."""
        try:
            if guild_ids:
                for guild_id in guild_ids:
                    guild = discord.Object(guild_id)
                    self.tree.copy_global_to(guild=guild)
                    await self.tree.sync(guild=guild)
            else:
                await self.tree.sync()
        except discord.HTTPException:
            log.exception("discord command sync failed; commands may be missing or stale")

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
        if self.http is not None:
            await self.http.close()

    @property
    def connected(self) -> bool:
        return self.client.is_ready() and not self.client.is_closed()

    def routes(self) -> list[web.RouteDef]:
        """Discord talks over its gateway: no HTTP routes of ours."""
        return []

    # -- commands -------------------------------------------------------------------------

    def _register(self) -> None:
        tree = self.tree
        quality_choices = [app_commands.Choice(name=q, value=q) for q in QUALITIES]
        format_choices = [app_commands.Choice(name=f, value=f) for f in FORMATS]

        async def size_autocomplete(
            interaction: discord.Interaction[Any], current: str
        ) -> list[app_commands.Choice[str]]:
            typed = current.strip().lower()
            found = [s for s in SIZE_SUGGESTIONS if s.startswith(typed) or typed in s]
            if typed and typed not in found:
                found.insert(0, typed)  # free text is allowed; the core validates it
            return [app_commands.Choice(name=s, value=s) for s in found[:25]]

        @tree.command(
            name="imagine", description="Make an image with gpt-image-2 (attach references to edit)"
        )
        @app_commands.describe(
            prompt="What to draw (flags like --ar 16:9 work here too)",
            size="auto, 1k, 2k, 4k or WxH",
            quality="Render quality",
            format="Output format",
            compression="0-100, jpeg/webp only",
            count="How many images (1-4)",
            ref1="Reference image (makes it an edit)",
            ref2="Reference image",
            ref3="Reference image",
            ref4="Reference image",
            ref5="Reference image",
            mask="PNG with alpha, the size of ref1: transparent pixels mark where to edit",
        )
        @app_commands.choices(quality=quality_choices, format=format_choices)
        @app_commands.autocomplete(size=size_autocomplete)
        @app_commands.guild_only()
        async def imagine(
            interaction: discord.Interaction[Any],
            prompt: str,
            size: str | None = None,
            quality: str | None = None,
            format: str | None = None,
            compression: app_commands.Range[int, 0, 100] | None = None,
            count: app_commands.Range[int, 1, 4] | None = None,
            ref1: discord.Attachment | None = None,
            ref2: discord.Attachment | None = None,
            ref3: discord.Attachment | None = None,
            ref4: discord.Attachment | None = None,
            ref5: discord.Attachment | None = None,
            mask: discord.Attachment | None = None,
        ) -> None:
            born = time.monotonic()
            async with self.core.acking():
                deferred = await interaction.response.defer(thinking=True)
            await self.core.calm()  # every answer of a burst goes out before any work after one
            options = {
                "size": "".join(size.split()) or None if size else None,  # "1536 x 1024" is one size
                "quality": quality,
                "format": format,
                "compression": compression,
                "count": count,
            }
            refs = [a for a in (ref1, ref2, ref3, ref4, ref5) if a is not None]
            await self._imagine(interaction, born, deferred, prompt, options, refs, mask)

        @tree.context_menu(name="Edit image")
        @app_commands.guild_only()
        async def edit_image(interaction: discord.Interaction[Any], message: discord.Message) -> None:
            image = next((a for a in message.attachments if is_image(a)), None)
            if image is None:
                await interaction.response.send_message(texts.NOT_AN_IMAGE_MESSAGE, ephemeral=True)
                return
            await interaction.response.send_modal(EditModal(self, message, image))

        @tree.command(name="imagine-usage", description="This channel's image usage and spend, with a chart")
        @app_commands.describe(days="How many days back (default 30)")
        @app_commands.guild_only()
        async def usage(
            interaction: discord.Interaction[Any], days: app_commands.Range[int, 1, 366] = 30
        ) -> None:
            await interaction.response.defer(thinking=True)
            await self._reply(interaction, lambda who: commands.usage(self.core, who, f"--days {days}"))

        @tree.command(name="imagine-quota", description="Your remaining image quota (only you see it)")
        @app_commands.guild_only()
        async def my_quota(interaction: discord.Interaction[Any]) -> None:
            await interaction.response.defer(thinking=True, ephemeral=True)
            await self._reply(interaction, lambda who: commands.my_quota(self.core, who))

        admin = app_commands.Group(
            name="imagine-admin",
            description="Admin: set quotas, see all spend",
            default_permissions=discord.Permissions(manage_guild=True),
            guild_only=True,
        )

        @admin.command(name="quota", description="Set limits for a user, a channel, or (neither) the server")
        @app_commands.describe(
            limits="daily_usd=N daily_images=N monthly_usd=N monthly_images=N (N, unlimited or default)",
            user="The user to limit",
            channel="The channel to limit",
        )
        async def admin_quota(
            interaction: discord.Interaction[Any],
            limits: str,
            user: discord.User | None = None,
            channel: discord.abc.GuildChannel | None = None,
        ) -> None:
            await interaction.response.defer(thinking=True, ephemeral=True)
            target = f"<@{user.id}>" if user else f"<#{channel.id}>" if channel else "workspace"
            await self._admin(interaction, f"quota {target} {limits}")

        @admin.command(name="report", description="Usage and spend across the whole server")
        @app_commands.describe(days="How many days back (default 30)")
        async def admin_report(
            interaction: discord.Interaction[Any], days: app_commands.Range[int, 1, 366] = 30
        ) -> None:
            await interaction.response.defer(thinking=True, ephemeral=True)
            await self._admin(interaction, f"report --all --days {days}")

        tree.add_command(admin)

        @tree.error
        async def on_error(
            interaction: discord.Interaction[Any], error: app_commands.AppCommandError
        ) -> None:
            await self.on_error(interaction, getattr(error, "original", error))

    async def on_error(self, interaction: discord.Interaction[Any], error: BaseException) -> None:
        """The one place a UserError (a bad option, an image we cannot read, a quota) from a command, a form
        or a button becomes a reply only the requester sees; anything else is logged."""
        if isinstance(error, UserError):
            await self._tell_privately(interaction, str(error))
        else:
            log.error("discord interaction failed", exc_info=error)

    @staticmethod
    def _who(interaction: discord.Interaction[Any]) -> Requester:
        return Requester(
            "discord",
            str(interaction.guild_id or ""),
            str(interaction.channel_id or ""),
            str(interaction.user.id),
        )

    def _limit(self, interaction: discord.Interaction[Any] | None, guild_id: int | None) -> int:
        """The upload limit: our override, else what the interaction says, else the guild's boost tier."""
        if self.upload_limit is not None:
            return self.upload_limit
        if interaction is not None and getattr(interaction, "filesize_limit", None):
            return int(interaction.filesize_limit)
        guild = self.client.get_guild(guild_id) if guild_id else None
        return guild.filesize_limit if guild is not None else DEFAULT_UPLOAD_LIMIT

    async def _reply(
        self, interaction: discord.Interaction[Any], make: Callable[[Requester], Awaitable[commands.Reply]]
    ) -> None:
        reply = await make(self._who(interaction))
        file = discord.File(io.BytesIO(reply.chart), "usage.png") if reply.chart else MISSING
        await interaction.followup.send(
            clip(escape(reply.text)), file=file, ephemeral=reply.private, allowed_mentions=NO_PINGS
        )

    async def _admin(self, interaction: discord.Interaction[Any], args: str) -> None:
        # Default permissions hide the command, but a server can override them: check again here.
        platform_admin = bool(interaction.permissions.manage_guild)
        await self._reply(
            interaction, lambda who: commands.admin(self.core, who, args, platform_admin=platform_admin)
        )

    async def _tell_privately(self, interaction: discord.Interaction[Any], text: str) -> None:
        """Only the requester sees `text`. After a public "thinking" defer the first follow-up would replace the
        loading message in public, whatever its flags: so end that message first, then follow up ephemerally."""
        if not interaction.response.is_done():
            await interaction.response.send_message(clip(text), ephemeral=True, allowed_mentions=NO_PINGS)
            return
        try:
            original = await interaction.original_response()
            if not original.flags.ephemeral:
                await interaction.edit_original_response(content="…")  # ends the loading state
                await interaction.delete_original_response()
        except Exception:  # refused or unreachable: the private follow-up is still worth a try
            log.warning("could not clear the deferred response", exc_info=True)
        await interaction.followup.send(clip(text), ephemeral=True, allowed_mentions=NO_PINGS)

    # -- jobs -----------------------------------------------------------------------------

    async def _imagine(
        self,
        interaction: discord.Interaction[Any],
        born: float,
        deferred: Deferred,
        prompt: str,
        options: dict[str, str | int | None],
        refs: Sequence[discord.Attachment],
        mask: discord.Attachment | None,
    ) -> None:
        """`/imagine` after the defer: download and decode attachments, build the request, submit."""
        references = list(await asyncio.gather(*(self._decode(a) for a in refs)))
        decoded_mask = await self._decode(mask) if mask is not None else None
        request = self.core.parse(prompt, references, decoded_mask, **options)
        await self._submit(interaction, born, deferred, request)

    async def edit_from_menu(
        self,
        interaction: discord.Interaction[Any],
        target: discord.Message,
        image: discord.Attachment,
        instruction: str,
    ) -> None:
        """The "Edit image" modal was submitted: edit the target message's image with the instruction."""
        born = time.monotonic()
        async with self.core.acking():
            deferred = await interaction.response.defer(thinking=True)
        await self.core.calm()
        request = self.core.parse(instruction, [await self._decode(image)])
        await self._submit(interaction, born, deferred, request)

    async def _submit(
        self, interaction: discord.Interaction[Any], born: float, deferred: Deferred, request: ImageRequest
    ) -> None:
        """One job shown in the interaction's response (its original message anchors the replies)."""
        original = deferred.message_id if deferred is not None else None
        if original is None:  # the callback answer did not say: ask
            with contextlib.suppress(Exception):
                original = (await interaction.original_response()).id
        who = self._who(interaction)
        view = DiscordJobView(
            self,
            who,
            lambda text: self._tell_privately(interaction, text),
            interaction=interaction,
            born=born,
            anchor=original,
            upload_limit=self._limit(interaction, interaction.guild_id),
        )
        await self.core.submit(request, who, view)

    async def cancel(self, interaction: discord.Interaction[Any], job_id: str) -> None:
        """The Cancel button: only the requester may press it. The press is answered first: cancelling sets
        off the job's settling and its last edit, which must not race (or delay) the 3-second answer."""
        try:
            await interaction.response.defer()  # the job's own message turns into "Cancelled"
        except Exception:  # too late or unreachable: the press was still meant, so cancel all the same
            log.warning("could not answer the Cancel button", exc_info=True, extra={"job_id": job_id})
        if not self.core.cancel(job_id, self._who(interaction)) and interaction.response.is_done():
            await interaction.followup.send(texts.CANCEL_REFUSED, ephemeral=True)

    # -- reply-to-edit --------------------------------------------------------------------

    async def on_message(self, message: discord.Message) -> None:
        """A reply (with the mention on) to one of our image messages is an edit of that image."""
        me = self.client.user
        if me is None or message.author.bot or message.guild is None or message.reference is None:
            return
        # Without the message-content intent Discord sends the text only if we are mentioned.
        if not any(user.id == me.id for user in message.mentions) or message.reference.message_id is None:
            return
        target = message.reference.resolved
        if not isinstance(target, discord.Message):
            try:
                target = await message.channel.fetch_message(message.reference.message_id)
            except discord.HTTPException:
                return
        image = next((a for a in target.attachments if is_image(a) and a.filename.startswith("image-")), None)
        if target.author.id != me.id or image is None:
            return  # not about an image we made (a usage chart is not one)
        if not await self.core.first_time(f"discord:{message.id}"):
            return
        who = Requester("discord", str(message.guild.id), str(message.channel.id), str(message.author.id))
        text = re.sub(rf"<@!?{me.id}>", "", message.content).strip()

        async def tell(reply: str) -> None:
            await message.reply(clip(escape(reply)), mention_author=False, allowed_mentions=NO_PINGS)

        try:
            base = await self._decode(image)
            files = [(a.filename, await self.download(a)) for a in message.attachments if is_image(a)]
            references, mask = await decode_attachments(files, base=base)
            request = self.core.parse(text, references, mask)
        except UserError as exc:  # this path has no interaction: the reply to the message is the private word
            await tell(str(exc))
            return
        view = DiscordJobView(
            self,
            who,
            tell,
            interaction=None,
            born=time.monotonic(),
            anchor=message.id,
            upload_limit=self._limit(None, message.guild.id),
        )
        await self.core.submit(request, who, view)

    async def _decode(self, attachment: discord.Attachment) -> ImageInput:
        data = await self.download(attachment)
        return await asyncio.to_thread(load_image, attachment.filename, data)

    async def download(self, attachment: discord.Attachment) -> bytes:
        """Fetch an attachment from its (signed) URL, reading at most 50 MB."""
        assert self.http is not None
        try:
            async with self.http.get(attachment.url) as response:
                if response.status != 200:
                    raise UserError(
                        f"could not download {attachment.filename} from Discord (HTTP "
                        f"{response.status}); attach it again"
                    )
                return await read_capped(
                    response.content.iter_chunked(1 << 16), attachment.filename, attachment.size
                )
        except aiohttp.ClientError as exc:
            raise UserError(
                f"could not download {attachment.filename} from Discord ({type(exc).__name__}); try again"
            ) from None

    # -- crash recovery -------------------------------------------------------------------

    async def tell_interrupted(self, job: Interrupted) -> None:
        channel_id = int(job.context.get("channel_id") or job.channel)
        message_id = job.context.get("message_id")
        reference = (
            discord.MessageReference(
                message_id=int(message_id), channel_id=channel_id, fail_if_not_exists=False
            )
            if message_id
            else None
        )
        await self.client.get_partial_messageable(channel_id).send(
            f"<@{job.user}> {escape(texts.interrupted(job))}",
            reference=reference if reference else MISSING,
            allowed_mentions=pings(job.user),
        )


def is_image(attachment: discord.Attachment) -> bool:
    return is_image_attachment(attachment.filename, attachment.content_type)
