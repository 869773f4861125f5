"""The Discord adapter: app commands and replies that parse, hand to the core, and render (docs/rules.md §2, Discord).

Everything that is not Discord-specific (parsing, quotas, the API call, the ledger) is the core's. What is
Discord's: deferring within 3 s, editing the interaction's response for progress, the 15-minute life of an
interaction token (after it, the job carries on in a channel message that replies to the original), the
guild's upload limit (images over it are re-encoded with the core's `fit_under`), and a network that
fails: every Discord call of a job has a deadline, and whatever fails, the requester hears what became of
their money.

Result actions and price checks (docs/rules.md §9, bot/jobs/actions.py): every button is a discord.py `DynamicItem` whose
custom id carries all it needs (`imagebot:act:<key>`, `imagebot:render:<token>`, `imagebot:decline:<token>`),
and the Edit form's custom id carries its key (`imagebot:edit:<key>`, answered from `on_interaction`), so
nothing is kept in memory and every button works after a restart. Each press is answered (deferred) before
any other Discord call; then the core decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import io
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import replace
from typing import Any, cast

import aiohttp
import discord
import yarl
from aiohttp import web
from discord import app_commands
from discord.gateway import DiscordWebSocket
from discord.utils import MISSING

from bot import commands, texts
from bot.app import Attachment, Core, decode_attachments, is_image_attachment
from bot.commands import AdminRequest, Target
from bot.concurrency import TokenBucket
from bot.errors import CannotPost, ConfigError, DeliveryFailed, UserError
from bot.i18n import CATALOGS, ENGLISH, Msg, msg, say, supported, translate
from bot.jobs import actions
from bot.jobs.actions import Kind
from bot.jobs.outcomes import JobFailure, JobResult, Progress
from bot.model.images import ImageInput, fit_under, image_size, load_image, read_capped
from bot.model.request import FORMATS, QUALITIES, ImageRequest, Requester
from bot.model.request import clip as clip_to
from bot.model.sizes import KNOWN_SIZES
from bot.policy import preferences
from bot.policy.access import UNCHECKABLE, MembershipUnknown
from bot.store.ledger import Interrupted

from .service import backoff

log = logging.getLogger("imagebot.discord")

RECENT_INTERACTIONS = 10_000  # interaction ids remembered for replays (Discord replays within a session)
MAX_CONTENT = 2000  # Discord's message length limit
BAR = 20
NO_PINGS = discord.AllowedMentions.none()
SIZE_SUGGESTIONS = ("auto", "1k", "2k", "4k", *(f"{w}x{h}" for w, h in KNOWN_SIZES))
CANCEL_PREFIX = "imagebot:cancel:"
ACTION_PREFIX = "imagebot:act:"  # + a result button's key (bot/jobs/actions.py Button.key)
RENDER_PREFIX = "imagebot:render:"  # + a price check's token
DECLINE_PREFIX = "imagebot:decline:"  # + a price check's token
EDIT_FORM_PREFIX = "imagebot:edit:"  # + an Edit button's key: the custom id of its form
ACTION_KEY = r"[a-z]+:[A-Za-z0-9_-]+:[0-9]+"  # kind:job:image
ROW_WIDTH, MAX_ROWS = 5, 5  # Discord: at most 5 buttons in an action row, 5 rows in a message
MAX_LABEL = 80
# Rows of a finished job's buttons by kind (Re-roll leads the Vary row), when one row cannot hold them all.
ROW_KINDS = ((Kind.REROLL, Kind.VARY), (Kind.UPSCALE,), (Kind.EDIT,), (Kind.REMOVE,))
STYLES = {Kind.REROLL: discord.ButtonStyle.primary, Kind.REMOVE: discord.ButtonStyle.danger}
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
SPOILER = "SPOILER_"  # Discord's own marker: an attachment named so is blurred until clicked
DEFAULT_CHOICE = "default"  # a /imagine-settings choice that clears the setting
MAX_KNOWN_PARENTS = 10_000  # threads whose parent channel was looked up (a thread's parent never changes)
UPLOAD_ATTEMPTS = 4
# Discord codes: 50027 invalid webhook token (interaction past 15 min), 10015 unknown webhook,
# 10008 unknown message (the original response was deleted), 40005 request entity too large.
TOKEN_GONE_CODES = (50027, 10015, 10008)
Deferred = discord.InteractionCallbackResponse[Any] | None  # what defer() answers: the original's message id
# Says `text` (with buttons, if a view is given) to the requester alone, wherever their job came from.
Tell = Callable[[str, discord.ui.View | None], Awaitable[Any]]


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
    """A failed Discord call, in words for the requester (a Text: logged in English, shown in theirs)."""
    if isinstance(exc, discord.HTTPException):
        return msg("discord.http_refused", status=exc.status, code=exc.code, text=exc.text)
    if isinstance(exc, TimeoutError):  # before OSError, of which it is one
        return msg("discord.no_answer")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return msg("discord.connection_failed", error=type(exc).__name__)
    return f"{type(exc).__name__}: {exc}"


def progress_text(progress: Progress, locale: str = ENGLISH) -> str:
    """The live progress message: settings, prompt, a bar, elapsed/expected time, queue position."""
    request = progress.request
    status = texts.status_line(
        progress, code=lambda bar: f"`{bar}`", locale=locale
    )  # our own words and numbers: no escaping
    settings = escape(texts.settings_line(request, progress.offline, locale))
    head = f"**{texts.heading(request, locale)}** · {settings}"
    return clip(f"{head}\n{quote(request.prompt)}\n{status[0].upper()}{status[1:]}")


def cancel_view(job_id: str, locale: str = ENGLISH) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id, locale))
    return view


def button_rows(buttons: Sequence[actions.Button]) -> list[list[actions.Button]]:
    """A finished job's buttons in action rows: one row if they fit (a single image: Re-roll, Vary, Upscale,
    Edit, Delete), else a row per kind (Re-roll and Vary 1..N, Upscale 1..N, Edit 1..N, Delete 1..N: 17
    buttons in 4 rows for four images); five to a row and five rows at most, as Discord allows. Info (the
    job's card) ends the last row where it has room, else it starts a row of its own."""
    info = [b for b in buttons if b.kind == Kind.INFO]
    rows = _rows([b for b in buttons if b.kind != Kind.INFO])
    if info and rows and len(rows[-1]) < ROW_WIDTH:
        rows[-1] = [*rows[-1], *info]
    elif info and len(rows) < MAX_ROWS:
        rows.append(info)
    return rows


def _rows(buttons: Sequence[actions.Button]) -> list[list[actions.Button]]:
    if len(buttons) <= ROW_WIDTH:
        return [list(buttons)] if buttons else []
    grouped = [[b for b in buttons if b.kind in kinds] for kinds in ROW_KINDS]
    grouped.append([b for b in buttons if not any(b.kind in kinds for kinds in ROW_KINDS)])
    rows = [group[i : i + ROW_WIDTH] for group in grouped for i in range(0, len(group), ROW_WIDTH)]
    if len(rows) > MAX_ROWS:  # not for up to four images; packed tight rather than dropped
        rows = [list(buttons[i : i + ROW_WIDTH]) for i in range(0, len(buttons), ROW_WIDTH)]
    if len(rows) > MAX_ROWS:
        log.warning("more result buttons than a message can carry", extra={"buttons": len(buttons)})
    return rows[:MAX_ROWS]


def result_view(buttons: Sequence[actions.Button], locale: str = ENGLISH) -> discord.ui.View | None:
    """The buttons of a finished job (None if it has none): persistent, nothing to re-send after a restart."""
    if not buttons:
        return None
    view = discord.ui.View(timeout=None)
    for row, line in enumerate(button_rows(buttons)):
        for button in line:
            style = STYLES.get(button.kind, discord.ButtonStyle.secondary)
            label = clip(translate(button.label, locale), MAX_LABEL)
            view.add_item(ActionButton(button.key, label, style, row=row))
    return view


def confirm_view(token: str, locale: str = ENGLISH) -> discord.ui.View:
    """Render and Cancel under a price check."""
    view = discord.ui.View(timeout=None)
    view.add_item(PriceCheckButton("render", token, locale))
    view.add_item(PriceCheckButton("decline", token, locale))
    return view


def form_value(data: Any, custom_id: str) -> str:
    """A text input's value in a modal submit's components (in action rows, or in labels)."""
    for top in (data or {}).get("components") or []:
        inner = top.get("components") or ([top["component"]] if top.get("component") else [])
        for component in inner:
            if component.get("custom_id") == custom_id:
                return str(component.get("value") or "")
    return ""


def fit_images(images: Sequence[tuple[bytes, str]], budget: int) -> tuple[list[tuple[str, bytes]], list[Msg]]:
    """(data, filename) pairs -> uploads each at most `budget` bytes, plus notes on what was re-encoded.

    CPU work: run in a thread.
    """
    uploads: list[tuple[str, bytes]] = []
    notes: list[Msg] = []
    for data, filename in images:
        fitted, fmt, note = fit_under(data, budget)
        if note is None:
            uploads.append((filename, data))
            continue
        width, height = image_size(fitted)
        uploads.append((f"image-{width}x{height}.{'jpg' if fmt == 'jpeg' else fmt}", fitted))
        notes.append(msg("discord.refitted", filename=filename, note=note))
    return uploads, notes


async def first_time(interaction: discord.Interaction[Any]) -> bool:
    """Not a replay: the interaction's id has not been seen before (across processes and restarts)."""
    return await cast(_Client, interaction.client).adapter.first_time(interaction)


class _Once:
    """A persistent button that ignores a replayed press (the same interaction id) before answering it."""

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        return await first_time(interaction)


class CancelButton(
    _Once,
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=CANCEL_PREFIX + r"(?P<job>[A-Za-z0-9]+)",
):
    """The Cancel button of a progress message; its custom id carries the job id, so it survives restarts."""

    def __init__(self, job_id: str, locale: str = ENGLISH) -> None:
        super().__init__(
            discord.ui.Button(
                label=say(locale, "discord.cancel"),
                style=discord.ButtonStyle.danger,
                custom_id=CANCEL_PREFIX + job_id,
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


class ActionButton(
    _Once,
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=ACTION_PREFIX + rf"(?P<key>{ACTION_KEY})",
):
    """Re-roll, Vary n, Upscale n, Edit n or Delete n under a finished job: its custom id is the core's key."""

    def __init__(
        self,
        key: str,
        label: str = "Action",
        style: discord.ButtonStyle = discord.ButtonStyle.secondary,
        *,
        row: int | None = None,
    ) -> None:
        super().__init__(discord.ui.Button(label=label, style=style, custom_id=ACTION_PREFIX + key), row=row)
        self.key = key

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ActionButton:
        return cls(match["key"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await cast(_Client, interaction.client).adapter.on_action(interaction, self.key)


class PriceCheckButton(
    _Once,
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"imagebot:(?P<verb>render|decline):(?P<token>[A-Za-z0-9_-]+)",
):
    """Render or Cancel under a price check; the custom id carries the check's token."""

    def __init__(self, verb: str, token: str, locale: str = ENGLISH) -> None:
        render = verb == "render"
        super().__init__(
            discord.ui.Button(
                label=say(locale, "discord.render" if render else "discord.cancel"),
                style=discord.ButtonStyle.success if render else discord.ButtonStyle.secondary,
                custom_id=(RENDER_PREFIX if render else DECLINE_PREFIX) + token,
            )
        )
        self.render, self.token = render, token

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> PriceCheckButton:
        return cls(match["verb"], match["token"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await cast(_Client, interaction.client).adapter.on_price_check(interaction, self.token, self.render)


def _instruction(locale: str, placeholder: str, **extra: Any) -> discord.ui.TextInput[Any]:
    """The text input of an edit form, in the reader's language."""
    return discord.ui.TextInput(
        label=say(locale, "discord.instruction"),
        style=discord.TextStyle.paragraph,
        max_length=4000,
        placeholder=say(locale, placeholder),
        **extra,
    )


class ActionEditForm(discord.ui.Modal, title="Edit image"):
    """The Edit button's form. Its custom id carries the button's key and its submit is answered by
    `DiscordAdapter.on_interaction`, so discord.py keeps no copy (stopped at birth): a form submitted after a
    restart, or by two people at once, still works. Its words are in the presser's language."""

    def __init__(self, key: str, locale: str = ENGLISH) -> None:
        super().__init__(
            title=say(locale, "discord.edit_image"), custom_id=EDIT_FORM_PREFIX + key, timeout=None
        )
        self.instruction = _instruction(locale, "discord.edit_placeholder", custom_id="instruction")
        self.add_item(self.instruction)
        self.stop()


class EditModal(discord.ui.Modal, title="Edit image"):
    """Asks for the edit instruction of the "Edit image" message command."""

    def __init__(
        self,
        adapter: DiscordAdapter,
        target: discord.Message,
        image: discord.Attachment,
        locale: str = ENGLISH,
    ) -> None:
        super().__init__(title=say(locale, "discord.edit_image"), timeout=600)
        self.instruction = _instruction(locale, "discord.edit_placeholder_flags")
        self.add_item(self.instruction)
        self.adapter = adapter
        self.target = target
        self.image = image

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        return await first_time(interaction)

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        await self.adapter.edit_from_menu(interaction, self.target, self.image, self.instruction.value)

    async def on_error(self, interaction: discord.Interaction[Any], error: Exception, /) -> None:  # type: ignore[override]
        await self.adapter.on_error(interaction, error)


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
    role, channel) and text for the rest. Each only writes the core's text grammar (bot/commands.py HELP) and
    hands it to `DiscordAdapter.admin`, which answers privately and checks again who may use it."""

    def __init__(self, adapter: DiscordAdapter) -> None:
        super().__init__()
        self.adapter = adapter

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
        await self.adapter.admin(
            interaction, AdminRequest(verb="quota", target=target, words=tuple(limits.split()))
        )

    @app_commands.command(description="Usage and spend across the whole server")
    @app_commands.describe(days="How many days back (default 30)")
    async def report(
        self, interaction: discord.Interaction[Any], days: app_commands.Range[int, 1, 366] = 30
    ) -> None:
        await self.adapter.admin(interaction, AdminRequest(verb="report", days=days))

    @app_commands.command(description="Turn imagebot on or off in a channel, or set the channel's ceilings")
    @app_commands.describe(
        channel="The channel",
        settings="on, off, max_size=2k max_quality=medium models=NAME moderation=low confirm=USD (=default clears)",
    )
    async def channel(self, interaction: discord.Interaction[Any], channel: Channel, settings: str) -> None:
        request = AdminRequest(verb="channel", target=_channel(channel), words=tuple(settings.split()))
        await self.adapter.admin(interaction, request)

    @app_commands.command(description="Let a role (or everyone) render; then only they and admins may")
    @app_commands.describe(role="The role to allow", everyone="Allow everyone (instead of a role)")
    async def allow(
        self,
        interaction: discord.Interaction[Any],
        role: discord.Role | None = None,
        everyone: bool | None = None,
    ) -> None:
        await self.adapter.admin(
            interaction, AdminRequest(verb="allow", target=self._group("allow", role, everyone))
        )

    @app_commands.command(description="Stop a role (or everyone) from rendering; admins still may")
    @app_commands.describe(role="The role to deny", everyone="Deny everyone (instead of a role)")
    async def deny(
        self,
        interaction: discord.Interaction[Any],
        role: discord.Role | None = None,
        everyone: bool | None = None,
    ) -> None:
        await self.adapter.admin(
            interaction, AdminRequest(verb="deny", target=self._group("deny", role, everyone))
        )

    @app_commands.command(
        description="Refuse a user everywhere in this server: commands, replies and buttons"
    )
    @app_commands.describe(user="The user to block")
    async def block(self, interaction: discord.Interaction[Any], user: discord.User) -> None:
        await self.adapter.admin(interaction, AdminRequest(verb="block", target=_user(user)))

    @app_commands.command(description="Let a blocked user render again")
    @app_commands.describe(user="The user to unblock")
    async def unblock(self, interaction: discord.Interaction[Any], user: discord.User) -> None:
        await self.adapter.admin(interaction, AdminRequest(verb="unblock", target=_user(user)))

    @app_commands.command(description="Show every setting of this server; set its pace")
    @app_commands.describe(
        text="cooldown=SECONDS max_jobs=N (each =default to clear); leave out to only show"
    )
    async def settings(self, interaction: discord.Interaction[Any], text: str = "") -> None:
        await self.adapter.admin(interaction, AdminRequest(verb="settings", words=tuple(text.split())))

    @app_commands.command(description="A one-time link, only for you, to this server's web dashboard")
    async def dashboard(self, interaction: discord.Interaction[Any]) -> None:
        await self.adapter.admin(interaction, AdminRequest(verb="dashboard"))

    @app_commands.command(name="help", description="What each /imagine-admin command does")
    async def help_(self, interaction: discord.Interaction[Any]) -> None:
        await self.adapter.admin(interaction, AdminRequest(verb="help"))

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


def command_key(context: app_commands.TranslationContextTypes) -> str | None:
    """The catalog id of a command's (or option's) name or description: `discord.cmd.<command path>[.<option>]`
    + `.name` / `.description`, the path lowercased with dots for spaces
    (`discord.cmd.imagine-admin.quota.limits.description`, the context menu `discord.cmd.edit.image.name`).
    None for what we do not translate (choices are flag values, typed as they are)."""
    where = context.location
    data: Any = context.data
    kinds = app_commands.TranslationContextLocation
    if where in (kinds.command_name, kinds.group_name, kinds.command_description, kinds.group_description):
        path = data.qualified_name
    elif where in (kinds.parameter_name, kinds.parameter_description):
        path = f"{data.command.qualified_name} {data.name}"
    else:
        return None
    part = "name" if where in (kinds.command_name, kinds.group_name, kinds.parameter_name) else "description"
    return f"discord.cmd.{path.lower().replace(' ', '.')}.{part}"


class CommandTranslator(app_commands.Translator):
    """Command and option names and descriptions in every language we have a catalog for (discord.py's own
    way: the tree sends them as `name_localizations` / `description_localizations`, so a zh-CN client shows
    the Chinese ones). None where the catalog has none: Discord then shows the English of the code."""

    async def translate(
        self,
        string: app_commands.locale_str,
        locale: discord.Locale,
        context: app_commands.TranslationContextTypes,
    ) -> str | None:
        language = supported(locale.value)
        key = command_key(context)
        if language is None or language == ENGLISH or key is None:
            return None
        return CATALOGS.own(language, key)


class _Client(discord.Client):
    """discord.py's client, pointed at DISCORD_API_URL's gateway, forwarding messages to the adapter."""

    def __init__(self, adapter: DiscordAdapter, **shards: Any) -> None:
        # No message cache: replies carry the message they answer, and a cache of our own progress messages
        # would only be kept up to date (parsed, then collected) on every edit.
        # Only the events the bot uses: guilds (and their channels) and guild messages (replies that edit an
        # image). Typing, reactions, voice and the rest would be parsed and dropped, one event per keystroke.
        intents = discord.Intents.none()
        intents.guilds = True
        intents.guild_messages = True
        super().__init__(intents=intents, allowed_mentions=NO_PINGS, max_messages=None, **shards)
        self.adapter = adapter
        self.tree: app_commands.CommandTree[_Client] = _Tree(self)

    async def setup_hook(self) -> None:
        # Client.connect (and AutoShardedClient, given a shard count) dials a built-in gateway address; ask the
        # configured REST base for the real one.
        _shards, url, _limits = await self.http.get_bot_gateway()
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)
        self.add_dynamic_items(CancelButton, ActionButton, PriceCheckButton)
        await self.tree.set_translator(CommandTranslator())

    async def on_message(self, message: discord.Message) -> None:
        await self.adapter.on_message(message)

    async def on_interaction(self, interaction: discord.Interaction[Any]) -> None:
        await self.adapter.on_interaction(interaction)


class _Tree(app_commands.CommandTree["_Client"]):
    """The command tree, which ignores a replayed command (the same interaction id) before answering it."""

    async def interaction_check(self, interaction: discord.Interaction[_Client], /) -> bool:
        if interaction.type is discord.InteractionType.autocomplete:
            return True  # answers suggestions only: nothing to repeat, and one per keystroke
        return await first_time(interaction)


class _ShardedClient(_Client, discord.AutoShardedClient):
    """The same client running some shards of the bot (docs/rules.md §12): one gateway connection per shard, each
    identifying as [id, count], so Discord sends it only the events of the guilds on that shard."""


def _client(adapter: DiscordAdapter, count: int | None, ids: Sequence[int]) -> _Client:
    """Unsharded (one connection, as Discord expects of a small bot) unless DISCORD_SHARD_COUNT is set; then
    the shards DISCORD_SHARD_IDS names, or all of them."""
    if count is None:
        return _Client(adapter)
    return _ShardedClient(adapter, shard_count=count, shard_ids=list(ids) or None)


class DiscordJobView:
    """Shows one job: edits the interaction's original response (or, once the interaction token is past its
    life, a channel message replying to the original), then puts the image there."""

    previews = True  # an edit of the message can carry the latest partial image
    confirms = True  # an expensive render first asks its requester privately, with Render and Cancel

    def __init__(
        self,
        adapter: DiscordAdapter,
        who: Requester,
        tell: Tell,
        *,
        interaction: discord.Interaction[Any] | None,
        born: float,
        anchor: int | None,
        upload_limit: int,
        person: discord.abc.User | None = None,
        place: str | None = None,
        locale: str = ENGLISH,
    ) -> None:
        self.adapter = adapter
        self.who = who
        self.locale = locale  # the requester's language: everything this job says is in it (bot/i18n.py)
        # Where the job is shown: a thread or forum post itself, while `who.channel` (whose rules and budget
        # apply) is its parent channel.
        self.place = place or who.channel
        self.person = (
            person  # the requester as the gateway sent them (a Member in a guild: roles, permissions)
        )
        self.tell = tell  # a reply only the requester sees
        self.refusals = 0  # how many times the core told the requester why nothing was done
        self.interaction = interaction
        self.born = born  # monotonic time the interaction arrived: its token lives 15 minutes from then
        self.anchor = anchor  # the message replies go to: the original response, or the user's message
        self.upload_limit = upload_limit
        self.channel = adapter.client.get_partial_messageable(int(self.place), guild_id=int(who.workspace))
        self.job_id = ""
        self.prompt = ""
        self.expired = interaction is None
        self.progress_message: discord.Message | None = None
        self._pending: asyncio.Task[None] | None = None
        self._last_edit = float("-inf")
        self._last_preview = float("-inf")
        self._preview: bytes | None = None

    # -- who the requester is (access.Standing) -------------------------------------------

    async def platform_admin(self) -> bool:
        """Manage Server: as the interaction reports it, else from the member's roles."""
        if self.interaction is not None:
            return bool(self.interaction.permissions.manage_guild)
        permissions = getattr(self.person, "guild_permissions", None)
        return bool(permissions is not None and permissions.manage_guild)

    async def member_of(self, groups: Collection[str]) -> bool:
        """Holds any of these roles (ids), by the member's roles (`Member.roles`, resolved against the guild's
        roles, which the gateway keeps current). MembershipUnknown when they cannot be read: the event named a
        user but not their roles, or the guild is unavailable (its roles may be stale): the rules fail closed."""
        person = self.person
        if not isinstance(person, discord.Member) or person.guild.unavailable:
            raise MembershipUnknown(self.who.user)
        return not {str(role.id) for role in person.roles}.isdisjoint(groups)

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
            channel_id=int(self.place),
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
                    content=f"{quote(self.prompt)}\n{texts.TOKEN_EXPIRING.render(self.locale)}",
                    allowed_mentions=NO_PINGS,
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
                        progress_text(first, self.locale),
                        view=cancel_view(self.job_id, self.locale),
                        reference=self.reference,
                        allowed_mentions=NO_PINGS,
                    )
            except discord.HTTPException as exc:
                raise CannotPost(msg("discord.cannot_post_permissions", why=describe(exc))) from exc
            except Exception as exc:  # dropped or unanswered
                raise CannotPost(msg("discord.try_again", why=describe(exc))) from exc
            self._last_edit = time.monotonic()
        # The language goes with the job: a restart that delivers it (or tells of it) speaks the same one.
        return {
            "channel_id": self.place,
            "message_id": str(self.anchor) if self.anchor else None,
            "locale": self.locale,
        }

    async def refused(self, text: str) -> None:
        self.refusals += 1
        try:
            async with asyncio.timeout(self.adapter.post_timeout):
                await self.tell(translate(text, self.locale), None)
        except Exception:
            log.warning("could not tell the requester", exc_info=True, extra={"job_id": self.job_id})

    async def confirm(self, text: str, token: str) -> None:
        """The price check, to the requester alone, with Render and Cancel (nothing is reserved yet)."""
        async with asyncio.timeout(self.adapter.post_timeout):
            await self.tell(translate(text, self.locale), confirm_view(token, self.locale))

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
        self._pending = asyncio.create_task(
            self._show_progress(progress_text(progress, self.locale), progress, preview)
        )

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
                        view=cancel_view(self.job_id, self.locale),
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
                        view=cancel_view(self.job_id, self.locale),
                        reference=self.reference,
                        allowed_mentions=NO_PINGS,
                    )
                else:
                    await self.progress_message.edit(
                        content=content,
                        attachments=attachments,
                        view=cancel_view(self.job_id, self.locale),
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

    async def _final(
        self, content: str, uploads: list[tuple[str, bytes]], view: discord.ui.View | None = None
    ) -> discord.Message:
        """Replace the progress with `content`, `uploads` and `view` (the result's buttons; None: no buttons):
        in the original response while its token lives, else as a new channel message replying to the
        original (which pings the requester). Returns the message that carries them. Raises if Discord
        refuses, drops the connection or does not answer in time."""

        def files() -> list[discord.File]:  # a File is read once: fresh ones for every attempt
            return [discord.File(io.BytesIO(data), name) for name, data in uploads]

        edited: list[discord.Message] = []

        async def edit(ix: discord.Interaction[Any]) -> None:
            edited.append(
                await ix.edit_original_response(
                    content=clip(content), attachments=files(), view=view, allowed_mentions=NO_PINGS
                )
            )

        deadline = self.adapter.upload_timeout if uploads else self.adapter.post_timeout
        async with asyncio.timeout(deadline):
            if await self._via_interaction(edit):
                return edited[0]
        async with asyncio.timeout(deadline):
            posted = await self.channel.send(
                clip(f"<@{self.who.user}>\n{content}"),
                files=files(),
                view=view if view is not None else MISSING,
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
        return posted

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

    async def _upload(self, result: JobResult) -> discord.Message:
        """Post the images with the summary and the result's buttons, fitted under the upload limit: the
        message that carries them. Raises DeliveryFailed, worth retrying on a 5xx, a 429 or a broken
        connection (discord.py has waited out its own rate limits by then)."""
        images = [(image.data, image.filename) for image in result.images]
        budget = self.upload_limit // len(images)  # per image, so the whole message fits too
        # The channel's spoiler=on: Discord blurs an attachment whose file name starts with SPOILER_.
        hide = (lambda name: f"{SPOILER}{name}") if result.request.spoiler else (lambda name: name)
        problem = "no attempt was made"
        for _ in range(UPLOAD_ATTEMPTS):
            try:
                if max(len(data) for data, _name in images) > budget:
                    uploads, notes = await asyncio.to_thread(fit_images, images, budget)
                else:
                    uploads, notes = [(name, data) for data, name in images], []
                uploads = [(hide(name), data) for name, data in uploads]
                message = await self._final(
                    "\n".join(
                        [
                            quote(result.request.prompt),
                            escape(texts.summary(result, self.locale)),
                            *(escape(translate(note, self.locale)) for note in notes),
                        ]
                    ),
                    uploads,
                    result_view(result.buttons, self.locale),
                )
                return message
            except discord.HTTPException as exc:
                if not too_large(exc):
                    raise DeliveryFailed(describe(exc), retry=exc.status >= 500 or exc.status == 429) from exc
                # Discord's limit is lower than it told us: re-encode smaller and try again.
                budget = max(len(data) for _name, data in uploads) // 2
                problem = msg("discord.too_large", kib=f"{budget * 2 / 1024:.0f}")
                log.warning(
                    "upload too large, re-encoding smaller", extra={"job_id": self.job_id, "budget": budget}
                )
            except (OSError, aiohttp.ClientError, TimeoutError) as exc:  # no answer, a dropped connection
                raise DeliveryFailed(describe(exc)) from exc
            except Exception as exc:  # an image that cannot be made small, say: trying again will not help
                log.exception("image upload failed", extra={"job_id": self.job_id})
                raise DeliveryFailed(describe(exc), retry=False) from exc
        raise DeliveryFailed(problem, retry=False)

    async def deliver(self, result: JobResult) -> list[dict[str, Any]] | None:
        """Upload the images with the summary and their buttons; return where each image lives (the message
        that carries it, and which of its attachments), for the buttons. Raises DeliveryFailed: the core
        keeps the images, retries, and in the end calls `undelivered`."""
        await self._drain()
        message = await self._upload(result)
        # The attachment's id names the image even after another of the message's images is deleted.
        ids = [str(a.id) for a in getattr(message, "attachments", [])]
        return [
            {"channel_id": str(message.channel.id), "message_id": str(message.id), "index": index}
            | ({"attachment_id": ids[index]} if index < len(ids) else {})
            for index in range(len(result.images))
        ]

    async def undelivered(self, text: str) -> None:
        """Paid for but not shown: say so, with what it cost, the request ids and how to get it."""
        await self._drain()
        await self._last_word(escape(translate(text, self.locale)), [])

    async def failed(self, failure: JobFailure) -> None:
        await self._drain()
        await self._last_word(
            f"{quote(failure.request.prompt)}\n{escape(texts.summary(failure, self.locale))}",
            failure.request_ids,
        )


class DiscordAdapter:
    """Registers app commands and a message listener on a discord.py client; thin: the core decides."""

    def __init__(self, core: Core) -> None:
        token = core.settings.discord_token
        assert token is not None, "built only when DISCORD_TOKEN is set"
        self.core, self.token = core, token.reveal()
        self.client = _client(self, core.settings.discord_shard_count, core.settings.discord_shard_ids)
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
        # A refusal on the reply path to someone whose DMs are closed is a reply deleted after this long.
        self.refusal_lifetime = 60.0
        self._parents: dict[int, str] = {}  # thread id -> its parent channel's id, for uncached threads
        self._recent: OrderedDict[int, None] = OrderedDict()  # interaction ids answered here (replays)
        self._records: set[asyncio.Task[Any]] = set()
        self.state = "logging in"  # why not connected yet, for /readyz
        self._register()

    # -- lifecycle ------------------------------------------------------------------------

    # -- start-up (ops: retried with backoff; a refused token is fatal) ----------------------------------

    async def start(self, web_app: web.Application | None) -> None:
        """Point discord.py at DISCORD_API_URL, log in, sync commands, connect to the gateway in the background.
        An outage at login (no DNS, connection refused, a 5xx) is retried with backoff, one log line each, while
        /readyz says so; a token Discord refuses raises ConfigError (one line, exit 2)."""
        settings = self.core.settings
        discord.http.Route.BASE = settings.discord_api_url.rstrip("/")
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
        pause = backoff()
        attempt = 0
        while True:
            attempt += 1
            try:
                await self.client.login(self.token)
                break
            except discord.LoginFailure:
                raise ConfigError("DISCORD_TOKEN was refused by Discord (401 Unauthorized)") from None
            except discord.HTTPException as exc:
                if exc.status < 500:
                    raise ConfigError(
                        f"Discord refused the login at DISCORD_API_URL: HTTP {exc.status} {exc.text}"[:300]
                    ) from None
                reason = f"Discord answered HTTP {exc.status}"
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                reason = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300]
            self.state = f"login failed: {reason} (attempt {attempt}); retrying"
            log.warning("discord login: retrying", extra={"error": reason, "attempt": attempt})
            # login() opened a session of its own: close it, and let the next attempt make a new connector.
            await self.client.http.close()
            self.client.http.connector = MISSING
            await pause()
        self.state = "connecting to the gateway"
        await self._sync_commands(settings.discord_guild_ids)
        self.task = asyncio.create_task(self._connect())

    async def _sync_commands(self, guild_ids: Sequence[int], *, force: bool = False) -> int:
        """Sync the commands (per guild when DISCORD_GUILD_IDS is set: instant; else globally: can take an hour
        to show), but only where they changed since the last sync of any replica, or when forced (`imagebot
        discord-sync`): discord.py's maintainers advise against a sync on every start. A hash of each scope's
        commands' JSON is kept in the database (bot/store/settings.py system settings), per application. In guild mode
        the global scope is empty, so the global commands of an earlier run are cleared (a PUT of []) and no
        command shows twice. Returns how many scopes were sent; a failure is logged and tried on the next start.
        """
        tree, app = self.tree, self.client.application_id
        scopes: list[discord.Object | None] = [None]
        for guild_id in guild_ids:
            guild = discord.Object(guild_id)
            tree.copy_global_to(guild=guild)
            scopes.append(guild)
        if guild_ids:
            tree.clear_commands(guild=None)  # served per guild; kept globally they would show twice
        sent = 0
        for scope in scopes:
            name = f"discord_commands:{app}:{'global' if scope is None else scope.id}"
            commands_ = tree.get_commands(guild=scope)
            translator = tree.translator
            payload = [
                await c.get_translated_payload(tree, translator) if translator else c.to_dict(tree)
                for c in commands_
            ]
            digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
            synced = await self.core.ledger.settings.system(name=name)
            if synced == digest and not force:
                continue
            try:
                await tree.sync(guild=scope)
            except discord.HTTPException:
                log.exception("discord command sync failed; commands may be missing or stale")
                continue
            await self.core.ledger.settings.set_system(name=name, value=digest)
            log.info("discord commands synced", extra={"scope": name, "commands": len(payload)})
            sent += 1
        return sent

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
            relax="Relax mode: half price through the Batch API, delivered when ready (usually minutes)",
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
            relax: bool | None = None,
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
                "relax": relax,
            }
            refs = [a for a in (ref1, ref2, ref3, ref4, ref5) if a is not None]
            await self._imagine(interaction, born, deferred, prompt, options, refs, mask)

        @tree.context_menu(name="Edit image")
        @app_commands.guild_only()
        async def edit_image(interaction: discord.Interaction[Any], message: discord.Message) -> None:
            image = next((a for a in message.attachments if is_image(a)), None)
            if image is None:
                await self._tell_privately(interaction, texts.NOT_AN_IMAGE_MESSAGE)
                return
            await self._open_form(
                interaction, EditModal(self, message, image, await self.language(interaction))
            )

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

        def choices(values: Sequence[str]) -> list[app_commands.Choice[str]]:
            return [app_commands.Choice(name=v, value=v) for v in values] + [
                app_commands.Choice(name=texts.SETTING_NOT_SET, value=DEFAULT_CHOICE)
            ]

        @tree.command(
            name="imagine-settings",
            description="Your own defaults for /imagine (only you see them); options given change them",
        )
        @app_commands.describe(
            size="auto, 1k, 2k, 4k or WxH (default: clear)",
            ar="Aspect ratio W:H for a 1k/2k/4k size, e.g. 16:9 (default: clear)",
            quality="Render quality",
            format="Output format",
            count="Images per request (1-4; 0 clears it)",
            mode="Fast, or relax (half price, delivered later)",
            language="The language the bot answers you in",
            reset="Clear all of your defaults",
        )
        @app_commands.choices(
            quality=choices(QUALITIES),
            format=choices(FORMATS),
            mode=choices(preferences.MODES),
            language=choices(preferences.LANGUAGES),
        )
        @app_commands.autocomplete(size=size_autocomplete)
        @app_commands.guild_only()
        async def my_settings(
            interaction: discord.Interaction[Any],
            size: str | None = None,
            ar: str | None = None,
            quality: str | None = None,
            format: str | None = None,
            count: app_commands.Range[int, 0, 4] | None = None,
            mode: str | None = None,
            language: str | None = None,
            reset: bool | None = None,
        ) -> None:
            await interaction.response.defer(thinking=True, ephemeral=True)
            given = {"size": size, "ar": ar, "quality": quality, "format": format, "mode": mode}
            given |= {"language": language, "count": None if count is None else str(count or DEFAULT_CHOICE)}
            words = " ".join(
                [*(["reset"] if reset else []), *(f"{n}={''.join(v.split())}" for n, v in given.items() if v)]
            )
            await self._reply(interaction, lambda who: commands.my_settings(self.core, who, words))

        @tree.command(
            name="imagine-info", description="A job's card: prompt, settings, cost (only you see it)"
        )
        @app_commands.describe(job="N from /imagine-history (1: your latest), or a job id")
        @app_commands.guild_only()
        async def info(interaction: discord.Interaction[Any], job: str = "1") -> None:
            await interaction.response.defer(thinking=True, ephemeral=True)
            admin = bool(interaction.permissions.manage_guild)
            await self._reply(
                interaction,
                lambda who: commands.info(
                    self.core, who, job, platform_admin=admin, link=self._linker(interaction)
                ),
            )

        @tree.command(
            name="imagine-history", description="Your last jobs with links and costs (only you see it)"
        )
        @app_commands.describe(count="How many (1-50, default 10)")
        @app_commands.guild_only()
        async def history(
            interaction: discord.Interaction[Any], count: app_commands.Range[int, 1, 50] = 10
        ) -> None:
            await interaction.response.defer(thinking=True, ephemeral=True)
            await self._reply(
                interaction,
                lambda who: commands.my_history(self.core, who, str(count), link=self._linker(interaction)),
            )

        tree.add_command(AdminCommands(self))

        @tree.error
        async def on_error(
            interaction: discord.Interaction[Any], error: app_commands.AppCommandError
        ) -> None:
            await self.on_error(interaction, getattr(error, "original", error))

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

    async def on_error(self, interaction: discord.Interaction[Any], error: BaseException) -> None:
        """The one place a UserError (a bad option, an image we cannot read, a quota) from a command, a form
        or a button becomes a reply only the requester sees; anything else is logged."""
        if isinstance(error, UserError):
            await self._tell_privately(interaction, error.text)
        else:
            log.error("discord interaction failed", exc_info=error)

    async def language(self, interaction: discord.Interaction[Any]) -> str:
        """The language to answer this interaction in: the user's own setting, else the locale of their
        Discord client (`interaction.locale`), else English (bot/i18n.py `language_for`)."""
        locale = getattr(interaction, "locale", None)
        return await self.core.language(self._who(interaction), getattr(locale, "value", locale))

    @staticmethod
    def _who(interaction: discord.Interaction[Any]) -> Requester:
        """Who asked, and the channel whose rules and budget apply: a thread's or forum post's parent (the
        interaction's `channel` object carries its `parent_id`), else the channel itself."""
        channel = interaction.channel
        rules = channel.parent_id if isinstance(channel, discord.Thread) else interaction.channel_id
        return Requester(
            "discord", str(interaction.guild_id or ""), str(rules or ""), str(interaction.user.id)
        )

    async def _requester(self, interaction: discord.Interaction[Any]) -> Requester:
        """`_who`, also for a channel discord.py could not type (a PartialMessageable): asked of Discord, so a
        thread never escapes its parent's rules. UserError if that cannot be read."""
        who = self._who(interaction)
        channel = interaction.channel
        if isinstance(channel, discord.PartialMessageable):
            who = replace(who, channel=await self._rules_channel(channel))
        return who

    async def _rules_channel(self, channel: discord.abc.Messageable) -> str:
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
            async with asyncio.timeout(self.post_timeout):
                fetched = await self.client.fetch_channel(ident)
        except Exception as exc:
            log.warning("could not read a channel: %s", describe(exc), extra={"channel": ident})
            raise UserError(UNCHECKABLE) from None
        parent = str(fetched.parent_id if isinstance(fetched, discord.Thread) else fetched.id)
        if len(self._parents) >= MAX_KNOWN_PARENTS:
            self._parents.clear()
        self._parents[ident] = parent
        return parent

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
        reply = await make(await self._requester(interaction))
        file = discord.File(io.BytesIO(reply.chart), "usage.png") if reply.chart else MISSING
        text = translate(reply.text, await self.language(interaction))
        await interaction.followup.send(
            clip(escape(text)), file=file, ephemeral=reply.private, allowed_mentions=NO_PINGS
        )

    @staticmethod
    def _linker(interaction: discord.Interaction[Any]) -> Callable[[dict[str, Any]], str | None]:
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

    async def admin(self, interaction: discord.Interaction[Any], request: AdminRequest) -> None:
        """`/imagine-admin <verb>` with its typed options (bot/commands.py `AdminRequest`): answered privately with "thinking" at once,
        then the core decides, and only the caller sees its reply."""
        async with self.core.acking():
            await interaction.response.defer(thinking=True, ephemeral=True)
        await self.core.calm()
        # Default permissions hide the command, but a server can override them: check again here.
        platform_admin = bool(interaction.permissions.manage_guild)
        await self._reply(
            interaction, lambda who: commands.admin(self.core, who, request, platform_admin=platform_admin)
        )

    async def _tell_privately(
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
        model = options.get("model")
        self.core.check_attachments(  # counted, sizes checked: before any download
            prompt,
            [
                Attachment(a.filename, a.size, functools.partial(self.download, a))
                for a in [*refs, *([mask] if mask else [])]
            ],
            model=model if isinstance(model, str) else None,
        )
        references = list(await asyncio.gather(*(self._decode(a) for a in refs)))
        decoded_mask = await self._decode(mask) if mask is not None else None
        who = await self._requester(interaction)
        request = await self.core.parse_for(who, prompt, references, decoded_mask, **options)
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
        who = await self._requester(interaction)
        request = await self.core.parse_for(who, instruction, [await self._decode(image)])
        await self._submit(interaction, born, deferred, request)

    async def _submit(
        self, interaction: discord.Interaction[Any], born: float, deferred: Deferred, request: ImageRequest
    ) -> None:
        """One job shown in the interaction's response (its original message anchors the replies)."""
        view = await self._job_view(interaction, born, await self._original(interaction, deferred))
        await self.core.submit(request, view.who, view)

    @staticmethod
    async def _original(interaction: discord.Interaction[Any], deferred: Deferred) -> int | None:
        """The id of the interaction's response message (the "thinking" one)."""
        original = deferred.message_id if deferred is not None else None
        if original is None:  # the callback answer did not say: ask
            with contextlib.suppress(Exception):
                original = (await interaction.original_response()).id
        return original

    async def _job_view(
        self, interaction: discord.Interaction[Any], born: float, anchor: int | None
    ) -> DiscordJobView:
        """A job shown in the interaction's response; replies past its token's life go to `anchor`."""
        return DiscordJobView(
            self,
            await self._requester(interaction),
            lambda text, view: self._tell_privately(interaction, text, view),
            interaction=interaction,
            born=born,
            anchor=anchor,
            upload_limit=self._limit(interaction, interaction.guild_id),
            person=interaction.user,
            place=str(interaction.channel_id or ""),
            locale=await self.language(interaction),
        )

    # -- result actions and price checks (docs/rules.md §9) ------------------------------------------

    async def on_action(self, interaction: discord.Interaction[Any], key: str) -> None:
        """A result button. Edit opens its form (that is the answer); the others are answered with "thinking"
        (private for Delete, whose only word is private), then the core acts: a new job of the clicker's,
        shown in this interaction's response (replies past its token's life go to the image's message)."""
        try:
            kind = actions.parse_key(key)[0]
            if kind == Kind.EDIT:
                await self._open_form(interaction, ActionEditForm(key, await self.language(interaction)))
                return
            born = time.monotonic()
            async with self.core.acking():
                # Delete answers silently (type 6): the clicked message stays this interaction's to edit, so
                # one image can be taken off it; its only words are a private follow-up.
                if kind == Kind.REMOVE:
                    deferred = await interaction.response.defer()
                elif kind == Kind.INFO:  # the card is the clicker's alone
                    deferred = await interaction.response.defer(thinking=True, ephemeral=True)
                else:
                    deferred = await interaction.response.defer(thinking=True)
            await self.core.calm()
            await self._act(interaction, born, deferred, key)
        except Exception as exc:
            await self.on_error(interaction, exc)

    async def _open_form(self, interaction: discord.Interaction[Any], form: discord.ui.Modal) -> None:
        """Open an edit form, unless the place or person rules (bot/policy/access.py) already refuse its submit: then
        say why privately instead. The form (or the refusal) is the interaction's answer, so the check is part
        of the ack; it reads the database and nothing of Discord's."""
        async with self.core.acking():
            standing = await self._job_view(interaction, time.monotonic(), None)
            try:
                await self.core.may_render(standing.who, standing)
            except UserError as exc:
                await self._tell_privately(interaction, exc.text)
                return
            await interaction.response.send_modal(form)

    async def on_interaction(self, interaction: discord.Interaction[Any]) -> None:
        """Every interaction passes here (after discord.py's own dispatch): the Edit button's form is ours."""
        if interaction.type is not discord.InteractionType.modal_submit:
            return
        data = cast(dict[str, Any], interaction.data or {})
        custom_id = str(data.get("custom_id") or "")
        if not custom_id.startswith(EDIT_FORM_PREFIX) or not await self.first_time(interaction):
            return
        try:
            born = time.monotonic()
            async with self.core.acking():
                deferred = await interaction.response.defer(thinking=True)
            await self.core.calm()
            key = custom_id[len(EDIT_FORM_PREFIX) :]
            await self._act(interaction, born, deferred, key, form_value(data, "instruction"))
        except Exception as exc:
            await self.on_error(interaction, exc)

    async def _act(
        self,
        interaction: discord.Interaction[Any],
        born: float,
        deferred: Deferred,
        key: str,
        instruction: str = "",
    ) -> None:
        """After the answer: hand the press to the core, with this adapter as the store of the images."""
        clicked = interaction.message  # the image's message (a form carries the message of its button)
        anchor = clicked.id if clicked is not None else await self._original(interaction, deferred)
        view = await self._job_view(interaction, born, anchor)
        await self.core.act(
            key,
            view.who,
            view,
            _ClickedMessage(self, interaction),
            instruction=instruction,
            platform_admin=bool(interaction.permissions.manage_guild),
        )
        if actions.parse_key(key)[0] == Kind.REMOVE and not view.refusals:
            await self._tell_privately(interaction, texts.DELETED)

    async def on_price_check(self, interaction: discord.Interaction[Any], token: str, render: bool) -> None:
        """Render (answered with a public "thinking": that message becomes the job's) or Cancel (answered
        privately); then the core claims the check: its requester's, once, Render within 10 minutes."""
        try:
            born = time.monotonic()
            async with self.core.acking():
                deferred = await interaction.response.defer(thinking=True, ephemeral=not render)
            await self.core.calm()
            view = await self._job_view(interaction, born, await self._original(interaction, deferred))
            await self.core.price_check(token, view.who, view, render=render)
        except Exception as exc:
            await self.on_error(interaction, exc)

    # bot.jobs.actions.ImageStore: where a finished job's images live is (channel, message, attachment index).

    async def fetch(self, where: dict[str, Any]) -> bytes:
        """An image we posted, downloaded again from its message (attachment URLs are signed and expire, so
        the message is fetched for a fresh one). UserError if it is gone."""
        channel = self.client.get_partial_messageable(int(where["channel_id"]))
        try:
            async with asyncio.timeout(self.post_timeout):
                message = await channel.fetch_message(int(where["message_id"]))
        except discord.NotFound:
            raise UserError(msg("discord.image_deleted")) from None
        except Exception as exc:
            raise UserError(msg("discord.cannot_fetch", why=describe(exc))) from None
        attachment = _attachment(message, where)
        if attachment is None:
            raise UserError(msg("discord.image_gone"))
        return await self.download(attachment)

    async def delete(self, where: dict[str, Any]) -> None:
        """Delete the image: the attachment, or the whole message when it was the message's only image
        (gone already counts as done)."""
        channel = self.client.get_partial_messageable(int(where["channel_id"]))
        try:
            async with asyncio.timeout(self.post_timeout):
                message = await channel.fetch_message(int(where["message_id"]))
                attachment = _attachment(message, where)
                if attachment is None:
                    return
                others = [a for a in message.attachments if a.id != attachment.id]
                if others:
                    await message.edit(attachments=others)
                else:
                    await message.delete()
        except discord.NotFound:
            return
        except Exception as exc:
            raise UserError(msg("discord.cannot_delete", why=describe(exc))) from None

    async def cancel(self, interaction: discord.Interaction[Any], job_id: str) -> None:
        """The Cancel button: only the requester may press it. The press is answered first: cancelling sets
        off the job's settling and its last edit, which must not race (or delay) the 3-second answer."""
        try:
            await interaction.response.defer()  # the job's own message turns into "Cancelled"
        except Exception:  # too late or unreachable: the press was still meant, so cancel all the same
            log.warning("could not answer the Cancel button", exc_info=True, extra={"job_id": job_id})
        if not self.core.cancel(job_id, self._who(interaction)) and interaction.response.is_done():
            text = texts.CANCEL_REFUSED.render(await self.language(interaction))
            await interaction.followup.send(text, ephemeral=True)

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
        text = re.sub(rf"<@!?{me.id}>", "", message.content).strip()
        # A message carries no locale of its author's: their own setting, else the server's language.
        asker = Requester("discord", str(message.guild.id), str(message.channel.id), str(message.author.id))
        server = getattr(message.guild, "preferred_locale", None)
        locale = await self.core.language(asker, getattr(server, "value", server))

        async def tell(reply: str, buttons: discord.ui.View | None = None) -> None:
            reply = translate(reply, locale)
            if buttons is None:  # a refusal: this path has no private reply, so it goes by DM
                await self._tell_by_dm(message, reply, locale)
                return
            await message.reply(  # a price check: its Render and Cancel work only here, and only for them
                clip(escape(reply)), view=buttons, mention_author=False, allowed_mentions=NO_PINGS
            )

        try:
            # A thread (or forum post) follows its parent channel's rules and counts against its budget.
            rules_channel = await self._rules_channel(message.channel)
        except UserError as exc:
            await tell(exc.text)
            return
        who = Requester("discord", str(message.guild.id), rules_channel, str(message.author.id))
        view = DiscordJobView(
            self,
            who,
            tell,
            interaction=None,
            born=time.monotonic(),
            anchor=message.id,
            upload_limit=self._limit(None, message.guild.id),
            person=message.author,
            place=str(message.channel.id),
            locale=locale,
        )
        try:
            await self.core.may_render(who, view)  # before any download: a refusal costs nothing at all
            files = [
                Attachment(a.filename, a.size, functools.partial(self.download, a))
                for a in message.attachments
                if is_image(a)
            ]
            self.core.check_attachments(text, files, base=True)  # counted, sizes checked: before any download
            base = await self._decode(image)
            references, mask = await decode_attachments(files, base=base, slot=self.core.downloading)
            request = await self.core.parse_for(who, text, references, mask)
        except UserError as exc:  # this path has no interaction: a DM is the private word
            await tell(exc.text)
            return
        await self.core.submit(request, who, view)

    async def _tell_by_dm(self, message: discord.Message, text: str, locale: str = ENGLISH) -> None:
        """Tell the author of `message` something only they should see, where no ephemeral reply exists: by DM
        (naming the message it is about); if their DMs are closed (50007) or the DM fails, by a reply that
        deletes itself after `refusal_lifetime` seconds. Never raises."""
        words = clip(escape(say(locale, "discord.about_message", url=message.jump_url, text=text)))
        try:
            async with asyncio.timeout(self.post_timeout):
                await message.author.send(words, allowed_mentions=NO_PINGS)
            return
        except discord.HTTPException as exc:
            log.info(
                "could not tell the author by DM; replying briefly instead",
                extra={"status": exc.status, "code": exc.code},
            )
        except Exception as exc:
            log.warning("could not tell the author by DM: %s", describe(exc))
        try:
            async with asyncio.timeout(self.post_timeout):
                await message.reply(
                    clip(escape(text)),
                    mention_author=False,
                    allowed_mentions=NO_PINGS,
                    delete_after=self.refusal_lifetime,
                )
        except Exception as exc:
            log.warning("could not tell the author: %s", describe(exc))

    async def _decode(self, attachment: discord.Attachment) -> ImageInput:
        data = await self.download(attachment)
        return await asyncio.to_thread(load_image, attachment.filename, data)

    async def download(self, attachment: discord.Attachment) -> bytes:
        """Fetch an attachment from its (signed) URL, reading at most 50 MB."""
        assert self.http is not None
        try:
            async with self.core.downloading(), self.http.get(attachment.url) as response:
                if response.status != 200:
                    raise UserError(
                        msg("discord.download_http", name=attachment.filename, status=response.status)
                    )
                return await read_capped(
                    response.content.iter_chunked(1 << 16), attachment.filename, attachment.size
                )
        except aiohttp.ClientError as exc:
            raise UserError(
                msg("discord.download_failed", name=attachment.filename, error=type(exc).__name__)
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
        locale = str(job.context.get("locale") or ENGLISH)
        await self.client.get_partial_messageable(channel_id).send(
            f"<@{job.user}> {escape(texts.interrupted(job).render(locale))}",
            reference=reference if reference else MISSING,
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

        return DiscordJobView(
            self,
            who,
            tell,
            interaction=None,
            born=time.monotonic(),
            anchor=anchor,
            upload_limit=self._limit(None, int(who.workspace)),
            place=str(channel.id),
            locale=locale,
        )


class _ClickedMessage:
    """The image store for one button press: an image on the very message pressed is taken off it through the
    press's own interaction (a bot cannot edit an interaction's message through the channel); anything else
    goes through the adapter."""

    def __init__(self, adapter: DiscordAdapter, interaction: discord.Interaction[Any]) -> None:
        self.adapter = adapter
        self.interaction = interaction

    async def fetch(self, where: dict[str, Any]) -> bytes:
        return await self.adapter.fetch(where)

    async def delete(self, where: dict[str, Any]) -> None:
        message = self.interaction.message
        pressed_on_it = message is not None and str(message.id) == str(where.get("message_id"))
        if (
            not pressed_on_it
            or self.interaction.response.type is not discord.InteractionResponseType.deferred_message_update
        ):
            await self.adapter.delete(where)
            return
        assert message is not None
        attachment = _attachment(message, where)
        others = [a for a in message.attachments if attachment is None or a.id != attachment.id]
        try:
            async with asyncio.timeout(self.adapter.post_timeout):
                if attachment is None:
                    return  # already gone
                if others:
                    await self.interaction.edit_original_response(attachments=others)
                else:
                    await message.delete()
        except discord.NotFound:
            return
        except Exception as exc:
            raise UserError(msg("discord.cannot_delete", why=describe(exc))) from None


def _attachment(message: discord.Message, where: dict[str, Any]) -> discord.Attachment | None:
    """The attachment `where` names: by its id (stable when others are deleted), else by its position."""
    if where.get("attachment_id"):
        return next((a for a in message.attachments if str(a.id) == where["attachment_id"]), None)
    index = int(where.get("index") or 0)
    return message.attachments[index] if index < len(message.attachments) else None


def is_image(attachment: discord.Attachment) -> bool:
    return is_image_attachment(attachment.filename, attachment.content_type)


async def sync_now(core: Core) -> int:
    """`imagebot discord-sync`: log in over REST (no gateway connection) and sync the commands now, changed or
    not. Returns the exit status."""
    settings = core.settings
    discord.http.Route.BASE = settings.discord_api_url.rstrip("/")
    adapter = DiscordAdapter(core)
    try:
        await adapter.client.login(adapter.token)
        sent = await adapter._sync_commands(settings.discord_guild_ids, force=True)
    finally:
        await adapter.client.close()
    scopes = 1 + len(settings.discord_guild_ids)
    print(f"imagebot: synced Discord commands in {sent} of {scopes} scope(s)")
    return 0 if sent == scopes else 1
