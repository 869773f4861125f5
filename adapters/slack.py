"""The Slack adapter: bolt listeners that parse, hand to the core, and render (docs/rules.md §2, Slack).

Everything that is not Slack-specific (parsing, quotas, the API call, the ledger) is the core's.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.app.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import HttpRequest, HttpResponse, RetryState
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot import commands, texts
from bot.app import Attachment, Core, decode_attachments, is_image_attachment
from bot.concurrency import TokenBucket
from bot.errors import CannotPost, ConfigError, DeliveryFailed, UserError
from bot.i18n import ENGLISH, msg, say, translate
from bot.jobs.actions import Button, Kind
from bot.jobs.outcomes import JobFailure, JobResult, Progress
from bot.model.images import ImageInput, load_image, read_capped
from bot.model.request import Requester, clip
from bot.policy import preferences
from bot.policy.access import MembershipUnknown
from bot.policy.preferences import Preferences
from bot.store.ledger import Interrupted

from .mentions import read_admin
from .service import backoff

log = logging.getLogger("imagebot.slack")

# Start-up (ops): Slack's answers that mean the token itself is wrong. Trying again cannot help: exit 2.
REFUSED_TOKEN_ERRORS = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "not_allowed_token_type",
        "team_disabled",
        "invalid_token",
    }
)

CANCEL_ACTION = "imagebot_cancel"
# A result button's action_id is this prefix + its key (unique within the message); its value is the key.
RESULT_ACTION_PREFIX = "imagebot_action:"
RESULT_ACTION = re.compile(rf"^{re.escape(RESULT_ACTION_PREFIX)}")
RENDER_ACTION = "imagebot_render"  # the price check's buttons; value: "<token>:<thread ts or empty>"
DECLINE_ACTION = "imagebot_decline"
EDIT_CALLBACK = "imagebot_edit"  # the Edit form (a modal); private_metadata: {"key", "channel", "thread"}
EDIT_BLOCK = "instruction"
EDIT_INPUT = "instruction"
EDIT_MAX_CHARS = 3000  # Slack's limit for a plain_text_input
SETTINGS_CALLBACK = "imagebot_settings"  # /imagine-settings' form (a modal); private_metadata: {"channel"}
SHOW_ACTION = "imagebot_show"  # a hidden image's Show button (a channel with spoiler=on); value: its file id
# The settings form: free text for the size and the ratio, a choice for the others ("default": not set).
SETTING_CHOICES = {
    "quality": ("low", "medium", "high", "auto"),
    "format": ("png", "jpeg", "webp"),
    "count": ("1", "2", "3", "4"),
    "mode": ("fast", "relax"),
    "language": ("en", "zh-CN"),
}
SETTING_TEXTS = texts.SETTING_HINTS
DEFAULT_CHOICE = "default"
ACTIONS_PER_BLOCK = 25  # Slack's limit for one actions block
LOCALE_CACHE_SECONDS = 3600.0  # how long a user's Slack locale is trusted before users.info again
MAX_KNOWN_LOCALES = 10_000  # users whose locale is kept (the oldest is forgotten first)
GROUP_CACHE_SECONDS = 60.0  # how long a user group's members are trusted before usergroups.users.list again
RENDER_KINDS = frozenset({Kind.REROLL, Kind.VARY, Kind.UPSCALE})
GONE_FILE_ERRORS = frozenset({"file_not_found", "file_deleted"})
PROMPT_SHOWN = 280  # characters of the prompt in a progress message
# Slack's chat.update is Tier 3: ~50 calls a minute per workspace. Stay under it across all jobs.
UPDATES_PER_MINUTE = 45
DEFAULT_PORTS = {"https": 443, "http": 80}
SECTION_MAX = 3000  # Slack's limit for a section's text
HOME_PROMPT_SHOWN = 200  # characters of a prompt on the Home tab
# Mentions that name an id and nothing else: safe to keep live on the Home tab (a view notifies nobody).
_ID_MENTION = re.compile(r"&lt;((?:@[UW]|#[CG]|!subteam\^S)[A-Z0-9]+)&gt;")
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]+$")
_MESSAGE_TS = re.compile(r"^\d+\.\d+$")


def escape(text: str) -> str:
    """Slack's own escaping for mrkdwn: no <!channel>, <@user> or links can be smuggled in."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def progress_blocks(progress: Progress, who: Requester, locale: str = ENGLISH) -> list[dict[str, Any]]:
    """The live progress message: prompt, settings, a bar, time, queue position, Cancel."""
    request = progress.request
    settings = escape(texts.settings_line(request, progress.offline, locale))
    return [
        {
            "type": "section",
            "text": {"type": "plain_text", "text": clip(request.prompt, PROMPT_SHOWN), "emoji": True},
        },
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"<@{who.user}> · {settings}",
                }
            ],
        },
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": escape(texts.status_line(progress, locale=locale))}],
        },
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "action_id": CANCEL_ACTION,
                    "style": "danger",
                    "text": {"type": "plain_text", "text": say(locale, "discord.cancel")},
                    "value": progress.job_id,
                }
            ],
        },
    ]


def button_element(button: Button, locale: str = ENGLISH) -> dict[str, Any]:
    """One result button: the core's label; the key both in the action_id (unique in the message) and value."""
    element: dict[str, Any] = {
        "type": "button",
        "action_id": f"{RESULT_ACTION_PREFIX}{button.key}",
        "text": {"type": "plain_text", "text": clip(translate(button.label, locale), 75), "emoji": True},
        "value": button.key,
    }
    if button.kind == Kind.REMOVE:
        element["style"] = "danger"
    return element


def done_blocks(text: str, buttons: Sequence[Button] = (), locale: str = ENGLISH) -> list[dict[str, Any]]:
    """The progress message's final state: the done (or failed) line, then the result buttons: one row for
    what renders (Re-roll, Vary, Upscale, with their prices), one for Edit and Delete; a row holds at most 25."""
    blocks: list[dict[str, Any]] = [{"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}]
    renders = [b for b in buttons if b.kind in RENDER_KINDS]
    others = [b for b in buttons if b.kind not in RENDER_KINDS]
    for row in (renders, others):
        for start in range(0, len(row), ACTIONS_PER_BLOCK):
            chunk = row[start : start + ACTIONS_PER_BLOCK]
            blocks.append({"type": "actions", "elements": [button_element(b, locale) for b in chunk]})
    return blocks


def confirm_blocks(text: str, value: str, locale: str = ENGLISH) -> list[dict[str, Any]]:
    """The private price check: the question, then Render and Cancel (each carrying `value`)."""
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "action_id": RENDER_ACTION,
                    "style": "primary",
                    "text": {"type": "plain_text", "text": say(locale, "discord.render")},
                    "value": value,
                },
                {
                    "type": "button",
                    "action_id": DECLINE_ACTION,
                    "text": {"type": "plain_text", "text": say(locale, "discord.cancel")},
                    "value": value,
                },
            ],
        },
    ]


def edit_form(title: str, metadata: dict[str, Any], locale: str = ENGLISH) -> dict[str, Any]:
    """The Edit button's modal: one multiline input for the instruction."""
    return {
        "type": "modal",
        "callback_id": EDIT_CALLBACK,
        "title": {"type": "plain_text", "text": clip(title, 24)},
        "submit": {"type": "plain_text", "text": say(locale, "discord.render")},
        "close": {"type": "plain_text", "text": say(locale, "discord.cancel")},
        "private_metadata": json.dumps(metadata),
        "blocks": [
            {
                "type": "input",
                "block_id": EDIT_BLOCK,
                "label": {"type": "plain_text", "text": say(locale, "slack.what_should_change")},
                "element": {
                    "type": "plain_text_input",
                    "action_id": EDIT_INPUT,
                    "multiline": True,
                    "max_length": EDIT_MAX_CHARS,
                    "placeholder": {"type": "plain_text", "text": say(locale, "slack.edit_placeholder")},
                },
            }
        ],
    }


def settings_form(mine: Preferences, metadata: dict[str, Any]) -> dict[str, Any]:
    """`/imagine-settings`' modal: the caller's own defaults, each shown as it is and changeable; a field left
    empty (or "default") goes back to the bot's default."""
    blocks: list[dict[str, Any]] = []
    for name, hint in SETTING_TEXTS.items():
        element: dict[str, Any] = {
            "type": "plain_text_input",
            "action_id": name,
            "max_length": 40,
            "placeholder": {"type": "plain_text", "text": hint},
        }
        if getattr(mine, name):
            element["initial_value"] = str(getattr(mine, name))
        blocks.append(_input(name, element))
    for name, values in SETTING_CHOICES.items():
        options = [_option(v, v) for v in values] + [_option(texts.SETTING_NOT_SET, DEFAULT_CHOICE)]
        element = {"type": "static_select", "action_id": name, "options": options}
        current = getattr(mine, name)
        if current is not None:
            element["initial_option"] = _option(str(current), str(current))
        blocks.append(_input(name, element))
    return {
        "type": "modal",
        "callback_id": SETTINGS_CALLBACK,
        "title": {"type": "plain_text", "text": clip(texts.SETTINGS_FORM_TITLE, 24)},
        "submit": {"type": "plain_text", "text": texts.SETTINGS_FORM_SAVE},
        "close": {"type": "plain_text", "text": texts.SETTINGS_FORM_CANCEL},
        "private_metadata": json.dumps(metadata),
        "blocks": blocks,
    }


def _input(name: str, element: dict[str, Any]) -> dict[str, Any]:
    label = texts.SETTING_LABELS[name]
    return {
        "type": "input",
        "block_id": name,
        "optional": True,
        "label": {"type": "plain_text", "text": label[:1].upper() + label[1:]},
        "element": element,
    }


def _option(text: str, value: str) -> dict[str, Any]:
    return {"text": {"type": "plain_text", "text": text}, "value": value}


def settings_words(values: Mapping[str, Any]) -> str:
    """A settings form's submitted state as /imagine-settings words (`size=2k quality=default ...`)."""
    words = []
    for name in [*SETTING_TEXTS, *SETTING_CHOICES]:
        state = (values.get(name) or {}).get(name) or {}
        chosen = state.get("selected_option") or {}
        value = str(state.get("value") or chosen.get("value") or "").strip()
        words.append(f"{name}={''.join(value.split()) or DEFAULT_CHOICE}")
    return " ".join(words)


def hidden_blocks(text: str, file_ids: Sequence[str]) -> list[dict[str, Any]]:
    """A hidden image's message (spoiler=on): the summary, then Show (one per image) for whoever wants to see it."""
    numbered = len(file_ids) > 1
    buttons = [
        {
            "type": "button",
            "action_id": f"{SHOW_ACTION}:{n}",
            "text": {"type": "plain_text", "text": texts.SHOW_LABEL + (f" {n}" if numbered else "")},
            "value": file_id,
        }
        for n, file_id in enumerate(file_ids, start=1)
    ]
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": clip(text, SECTION_MAX)}},
        {"type": "actions", "elements": buttons[:ACTIONS_PER_BLOCK]},
    ]


def _hidden_files(message: Mapping[str, Any]) -> list[str]:
    """The file ids behind a hidden image message's Show buttons (`hidden_blocks`), in order."""
    return [
        str(element.get("value") or "")
        for block in message.get("blocks") or []
        if block.get("type") == "actions"
        for element in block.get("elements") or []
        if str(element.get("action_id") or "").startswith(f"{SHOW_ACTION}:")
    ]


def mrkdwn(text: str, limit: int = SECTION_MAX) -> str:
    """`text` escaped for mrkdwn and cut to `limit` characters, never in the middle of an entity (`&amp;`)."""
    shown = escape(text)
    if len(shown) <= limit:
        return shown
    cut = shown[: limit - 1]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


def message_link(site_url: str, where: Mapping[str, Any]) -> str | None:
    """A link to the message a job's thread hangs from (`where`: its channel and thread_ts), or None when the
    workspace's URL or the place is unknown (or not the ids Slack gives: nothing else goes into a link)."""
    channel, ts = str(where.get("channel") or ""), str(where.get("thread_ts") or "")
    if not site_url or not _CHANNEL_ID.match(channel) or not _MESSAGE_TS.match(ts):
        return None
    return f"{site_url.rstrip('/')}/archives/{channel}/p{ts.replace('.', '')}"


def home_blocks(home: commands.Home, site_url: str, locale: str = ENGLISH) -> list[dict[str, Any]]:
    """The Home tab (docs/rules.md §10): the user's quota and last images; for admins, the tenant's settings and spend."""

    def section(text: str) -> dict[str, Any]:
        return {"type": "section", "text": {"type": "mrkdwn", "text": text}}

    def header(text: str) -> dict[str, Any]:
        return {"type": "header", "text": {"type": "plain_text", "text": text, "emoji": True}}

    blocks = [
        header("imagebot"),
        section(mrkdwn(translate(home.quota, locale))),
        header(say(locale, "slack.home_last_images")),
    ]
    for image in home.recent:
        link = message_link(site_url, image.where)
        opened = [f"<{link}|{escape(say(locale, 'slack.home_open'))}>"] if link else []
        facts = " · ".join([escape(image.size), escape(translate(image.cost, locale)), *opened])
        blocks.append(section(f"{mrkdwn(clip(translate(image.prompt, locale), HOME_PROMPT_SHOWN))}\n{facts}"))
    if not home.recent:
        blocks.append(section(say(locale, "slack.home_no_images")))
    if home.settings is not None or home.spend is not None:
        blocks += [{"type": "divider"}, header(say(locale, "slack.home_admin"))]
        if home.settings:
            blocks.append(section(_ID_MENTION.sub(r"<\1>", mrkdwn(translate(home.settings, locale)))))
        if home.spend:
            blocks.append(section(mrkdwn(translate(home.spend, locale))))
    return blocks


def trusted_file_url(url: str, api_url: str) -> bool:
    """May the bot token go to `url`? Only over https to Slack's file host, or to the Web API's own host with
    the API's own scheme: plain http only when SLACK_API_URL itself is http:// (a loopback fake)."""
    parts, api = urlsplit(url), urlsplit(api_url)
    try:
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
        api_port = api.port or DEFAULT_PORTS.get(api.scheme)
    except ValueError:  # a port that is not a number
        return False
    if parts.username is not None or parts.password is not None or port is None:
        return False
    return (parts.scheme, parts.hostname, port) in {
        ("https", "files.slack.com", 443),
        (api.scheme, api.hostname, api_port),
    }


def why_not(exc: Exception) -> str:
    """A Web API failure in a few words: Slack's error code, or the kind of connection trouble."""
    if isinstance(exc, SlackApiError) and exc.response is not None:
        return str(exc.response.get("error"))
    return type(exc).__name__


@dataclass
class Privately:
    """Where to tell one person something only they see: the command's response_url, else an ephemeral."""

    adapter: SlackAdapter
    who: Requester
    respond: Any = None  # bolt's respond(): a slash command's, or a click's on a private message
    thread_ts: str | None = None
    replace: bool = False  # `respond` is a click's on our private message: the reply replaces that message
    locale: str | None = None  # their language, once known (`language`)

    async def language(self) -> str:
        """The person's language (bot/i18n.py): asked once (their setting, else their Slack locale), then kept."""
        if self.locale is None:
            self.locale = await self.adapter.language(self.who)
        return self.locale

    async def tell(self, text: str, blocks: list[dict[str, Any]] | None = None) -> None:
        """An ephemeral reply in the person's language, where Slack still takes one (a failure here is logged,
        not raised)."""
        text = translate(text, await self.language())
        try:
            if self.respond is not None:
                extra = {"replace_original": True} if self.replace else {}
                await self.respond(text=escape(text), blocks=blocks, response_type="ephemeral", **extra)
            else:
                await self.adapter.client.chat_postEphemeral(
                    channel=self.who.channel,
                    user=self.who.user,
                    text=escape(text),
                    blocks=blocks,
                    thread_ts=self.thread_ts,
                )
        except Exception as exc:
            log.warning("slack private reply failed", extra={"user": self.who.user, "error": why_not(exc)})


@dataclass
class SlackJobView:
    """Shows one job in Slack: a progress message (in `thread_ts` for edits and clicks, else at the channel
    root), then the image uploaded into its thread, and the message's final line with the result buttons.

    `question`: the respond() of a click on a private price check; once the job has its message, the question
    (with its Render and Cancel buttons) is removed."""

    adapter: SlackAdapter
    asker: Privately
    thread_ts: str | None = None
    ts: str = ""
    job_id: str = ""
    question: Any = None
    admin: bool | None = None  # platform_admin(), once asked (the rules may ask more than once per job)
    previews = False  # chat.update cannot show a partial image
    confirms = True  # an expensive render asks its requester first, privately, with Render and Cancel

    @property
    def who(self) -> Requester:
        return self.asker.who

    @property
    def channel(self) -> str:
        return self.who.channel

    @property
    def thread(self) -> str:
        return self.thread_ts or self.ts

    async def open(self, first: Progress) -> dict[str, Any]:
        self.job_id = first.job_id
        locale = await self.asker.language()
        try:
            posted = await self.adapter.client.chat_postMessage(
                channel=self.channel,
                thread_ts=self.thread_ts,
                text=say(locale, "slack.queued", prompt=escape(clip(first.request.prompt, 100))),
                blocks=progress_blocks(first, self.who, locale),
            )
        except SlackApiError as exc:
            raise CannotPost(msg("slack.cannot_post", why=why_not(exc))) from exc
        self.ts = posted["ts"]
        if self.question is not None:  # a confirmed price check: its question has been answered
            self.adapter.spawn(self._retire(self.question))
            self.question = None
            self.asker = Privately(self.adapter, self.who, thread_ts=self.thread, locale=locale)
        # The language goes with the job: a restart that delivers it (or tells of it) speaks the same one.
        return {"channel": self.channel, "thread_ts": self.thread, "ts": self.ts, "locale": locale}

    async def _retire(self, respond: Any) -> None:
        try:
            await respond(delete_original=True)
        except Exception as exc:
            log.warning("slack price check not removed", extra={"job_id": self.job_id, "error": why_not(exc)})

    async def platform_admin(self) -> bool:
        if self.admin is None:
            self.admin = await self.adapter._is_workspace_admin(self.who)
        return self.admin

    async def member_of(self, groups: Collection[str]) -> bool:
        return await self.adapter.in_groups(self.who.user, groups)

    async def refused(self, text: str) -> None:
        """Only the requester (or the clicker) sees why: the command's response_url, else an ephemeral in the
        channel (in the thread of a click); on a price check's Render or Cancel, in place of the question."""
        await self.asker.tell(text)

    async def confirm(self, text: str, token: str) -> None:
        """The private price check. The buttons carry the token and the thread the render will go to."""
        value = f"{token}:{self.thread_ts or ''}"
        locale = await self.asker.language()
        text = translate(text, locale)
        await self.asker.tell(text, blocks=confirm_blocks(escape(text), value, locale))

    async def progress(self, progress: Progress) -> None:
        if not self.adapter.budget.take():
            return  # over the workspace's chat.update budget: skip this tick, the next one catches up
        locale = await self.asker.language()
        await self.adapter.client.chat_update(
            channel=self.channel,
            ts=self.ts,
            text=say(locale, "slack.rendering", prompt=escape(clip(progress.request.prompt, 100))),
            blocks=progress_blocks(progress, self.who, locale),
        )

    async def deliver(self, result: JobResult) -> list[dict[str, Any]] | None:
        """Upload the images into the thread; the progress message becomes the done line with the buttons.
        Returns where each image lives (its file id, channel and thread), in order; None if not posted."""
        locale = await self.asker.language()
        summary = texts.summary(result, locale)
        uploads = [
            {"file": image.data, "filename": image.filename, "title": clip(result.request.prompt, 100)}
            for image in result.images
        ]
        hidden = result.request.spoiler  # the channel's spoiler=on: uploaded unshared, shown on Show
        try:
            if hidden:
                response = await self.adapter.client.files_upload_v2(
                    file_uploads=uploads, request_file_info=False
                )
                said = f"<@{self.who.user}> {escape(summary)}\n{escape(texts.SPOILER_HIDDEN)}"
                ids = [str(f["id"]) for f in response.get("files") or []]
                await self.adapter.client.chat_postMessage(
                    channel=self.channel, thread_ts=self.thread, text=said, blocks=hidden_blocks(said, ids)
                )
            else:
                response = await self.adapter.client.files_upload_v2(
                    channel=self.channel,
                    thread_ts=self.thread,
                    file_uploads=uploads,
                    initial_comment=f"<@{self.who.user}> {escape(summary)}",
                    request_file_info=False,
                )
        except SlackApiError as exc:
            # Slack answered no: worth another try only if it was a 5xx or a rate limit (the client's own
            # retry handlers have already tried those a few times).
            status = getattr(exc.response, "status_code", 0) or 0
            log.warning("slack upload refused", extra={"job_id": self.job_id, "error": why_not(exc)})
            raise DeliveryFailed(
                msg("slack.upload_refused", why=why_not(exc)), retry=status >= 500 or status == 429
            ) from exc
        except (
            Exception
        ) as exc:  # a broken connection, no answer: the outbox keeps the image, the core retries
            log.warning("slack upload failed", extra={"job_id": self.job_id, "error": why_not(exc)})
            raise DeliveryFailed(msg("slack.upload_failed", why=why_not(exc))) from exc
        self._finish(escape(texts.done_line(result, locale=locale)), result.buttons, locale)
        files = response.get("files") or []
        return [
            {"file_id": f["id"], "channel": self.channel, "thread_ts": self.thread} for f in files
        ] or None

    async def undelivered(self, text: str) -> None:
        """Paid for but not shown, after every retry: never silently (cost, request ids, how to get it)."""
        text = translate(text, await self.asker.language())
        await self._say(f"<@{self.who.user}> {escape(text)}")
        self._finish(clip(escape(text), 2900))

    async def failed(self, failure: JobFailure) -> None:
        text = escape(texts.summary(failure, await self.asker.language()))
        await self._say(f"<@{self.who.user}> {text}")
        self._finish(clip(text, 2900))

    async def _say(self, text: str) -> None:
        """Post in the job's thread; if Slack cannot take it, the final progress line still says it."""
        try:
            await self.adapter.client.chat_postMessage(channel=self.channel, thread_ts=self.thread, text=text)
        except Exception as exc:
            log.warning("slack thread message failed", extra={"job_id": self.job_id, "error": why_not(exc)})

    def _finish(self, text: str, buttons: Sequence[Button] = (), locale: str = ENGLISH) -> None:
        """Turn the progress message into its final line (with the result buttons), within the chat.update
        budget. Runs as its own task: the user already has the image (or the error) in the thread.
        """

        async def update() -> None:
            await self.adapter.budget.wait()
            await self.adapter.client.chat_update(
                channel=self.channel, ts=self.ts, text=text, blocks=done_blocks(text, buttons, locale)
            )

        self.adapter.spawn(update())


@dataclass
class ClickStore:
    """The adapter's images (bot.jobs.actions.ImageStore) as one click sees them: a Delete is confirmed to the
    clicker, privately."""

    adapter: SlackAdapter
    asker: Privately

    async def fetch(self, where: dict[str, Any]) -> bytes:
        return await self.adapter.fetch(where)

    async def delete(self, where: dict[str, Any]) -> None:
        await self.adapter.delete(where)
        await self.asker.tell(texts.DELETED)


class SafeConnectionErrorRetryHandler(AsyncConnectionErrorRetryHandler):
    """slack_sdk's retry of a dropped or reset connection, for the methods that are safe to send twice (the
    upload steps, reads, edits): a repeated chat.postMessage whose answer was lost would post twice."""

    POSTS = ("chat.postMessage", "chat.postEphemeral", "chat.meMessage", "views.open", "views.push")

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if request.url.rstrip("/").endswith(self.POSTS):
            return False
        return await super()._can_retry_async(state=state, request=request, response=response, error=error)


class SlackAdapter:
    """Registers bolt listeners; runs in HTTP mode (a route on our aiohttp app) or Socket Mode."""

    def __init__(self, core: Core) -> None:
        settings = core.settings
        assert settings.slack_bot_token is not None
        self.core = core
        self.token = settings.slack_bot_token.reveal()
        # One pooled session for every Web API call (slack_sdk otherwise opens a session per call).
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
        self.client = AsyncWebClient(
            token=self.token,
            base_url=settings.slack_api_url,
            session=self.http,
            # slack_sdk's own retries: 429 (waiting out Retry-After), a dropped or reset connection, and 500/503.
            # Handing in a list replaces the client's defaults, so the connection handler is named here too:
            # without it one dropped files.getUploadURLExternal lost a paid image's upload.
            retry_handlers=[
                AsyncRateLimitErrorRetryHandler(max_retry_count=2),
                SafeConnectionErrorRetryHandler(max_retry_count=2),
                AsyncServerErrorRetryHandler(max_retry_count=2),
            ],
        )
        # Signature verification stays on: bolt skips it only for Socket Mode envelopes (its
        # RequestVerification._can_skip checks req.mode == "socket_mode"), and in Socket Mode there is no
        # HTTP route at all (see routes()), so nothing unsigned ever reaches a listener. "" rather than None:
        # bolt would otherwise read SLACK_SIGNING_SECRET from os.environ behind the settings' back.
        self.app = AsyncApp(
            client=self.client,
            signing_secret=settings.slack_signing_secret.reveal() if settings.slack_signing_secret else "",
            # Listeners ack and hand the work to a task at once, so bolt can answer as soon as they return
            # (without it bolt polls for the ack every 10 ms). So no listener may await Slack before returning.
            process_before_response=True,
        )
        self.budget = TokenBucket(per_second=UPDATES_PER_MINUTE / 60, burst=10)
        self.tasks: set[asyncio.Task[Any]] = set()
        self.bot_user_id: str | None = None
        self.bot_id: str | None = None
        self.mention: re.Pattern[str] | None = None  # <@BOT_USER_ID> (or <@BOT_USER_ID|name>), once known
        self.socket_handler: Any = None
        self.state = "starting"  # why not connected yet, for /readyz ("" once connected)
        self.site_url = ""  # https://<workspace>.slack.com/ from auth.test: links to messages (the Home tab)
        self._groups: dict[str, tuple[float, frozenset[str]]] = {}  # user group -> (read at, its members)
        # (workspace, user) -> (read at, their Slack locale): `slack_locale`, oldest first.
        self._locales: OrderedDict[tuple[str, str], tuple[float, str | None]] = OrderedDict()
        self._register()

    # -- lifecycle ------------------------------------------------------------------------

    # -- start-up (ops: retried with backoff; a refused token is fatal) ----------------------------------

    async def start(self, web_app: web.Application | None) -> None:
        """Learn who we are (auth.test), then listen: Socket Mode if an app token is set, else HTTP. An outage
        (no route, DNS, a 5xx) is retried with backoff while `connected` is False (/readyz: not ready); a token
        Slack refuses raises ConfigError (one line, exit 2). Returns once events can arrive."""
        auth = await self._until_answered("auth.test", "SLACK_BOT_TOKEN", self.client.auth_test)
        self.bot_user_id, self.bot_id = auth.get("user_id"), auth.get("bot_id")
        self.site_url = str(auth.get("url") or "")
        if self.bot_user_id:
            self.mention = re.compile(rf"<@{re.escape(self.bot_user_id)}(?:\|[^>]*)?>")
        settings = self.core.settings
        if settings.slack_app_token is None:
            self.state = ""
            log.info("slack http mode at /slack/events")
            return
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        app_token = settings.slack_app_token.reveal()
        # Ask for the socket's address ourselves first: the SDK's own loop would retry a refused app token
        # every 10 s forever, with a traceback each time, and never give up.
        opened = await self._until_answered(
            "apps.connections.open",
            "SLACK_APP_TOKEN",
            lambda: self.client.apps_connections_open(app_token=app_token),
        )
        self.socket_handler = AsyncSocketModeHandler(self.app, app_token=app_token)
        self.socket_handler.client.wss_uri = opened["url"]
        self.state = "connecting the Socket Mode websocket"
        await self.socket_handler.connect_async()
        self.state = ""
        log.info("slack socket mode connected")

    async def _until_answered(self, method: str, token_name: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """`call()` (a Web API method) until Slack answers it: a refused token is a ConfigError naming
        `token_name`; anything else (no answer, 5xx, an error that may pass) is logged (one line) and tried
        again with backoff, with `state` saying so for /readyz."""
        pause = backoff()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await call()
            except SlackApiError as exc:
                error = str(exc.response.get("error") or exc.response.status_code)
                if error in REFUSED_TOKEN_ERRORS:
                    raise ConfigError(f"{token_name} was refused by Slack ({method}: {error})") from None
                reason = f"Slack answered {method} with {error}"
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                reason = f"{method} failed: {type(exc).__name__}: {' '.join(str(exc).split())}"[:300]
            self.state = f"{reason} (attempt {attempt}); retrying"
            log.warning("slack start-up: retrying", extra={"error": reason, "attempt": attempt})
            await pause()

    def routes(self) -> list[web.RouteDef]:
        """Slack's HTTP mode posts events, commands and actions here. In Socket Mode nothing is served: the
        app has no signing secret to check, so the route could only be open to anyone (docs/rules.md §7)."""
        if self.core.settings.slack_socket_mode:
            return []
        return [web.post("/slack/events", self._http_events)]

    async def _http_events(self, request: web.Request) -> web.Response:
        async with self.core.acking():  # bolt's answer is the ack: jobs start after it
            bolt_response = await self.app.async_dispatch(await to_bolt_request(request))
            return await to_aiohttp_response(bolt_response)

    async def close(self) -> None:
        if self.socket_handler is not None:
            await self.socket_handler.close_async()
        await self.http.close()

    @property
    def connected(self) -> bool:
        """auth.test answered and, in Socket Mode, the websocket is open (not merely being retried)."""
        if self.bot_user_id is None:
            return False
        if not self.core.settings.slack_socket_mode:
            return True
        client = self.socket_handler.client if self.socket_handler is not None else None
        session = getattr(client, "current_session", None)
        return (
            client is not None
            and not client.closed
            and not getattr(client, "stale", False)
            and session is not None
            and not session.closed
        )

    def spawn(self, coro: Any, asker: Privately | None = None) -> asyncio.Task[Any]:
        """Work done after the ack; kept so shutdown can wait for it. The one place a UserError (a bad flag,
        an image we cannot read, ...) becomes a reply that only `asker` sees."""
        task = asyncio.create_task(self._privately(coro, asker) if asker is not None else coro)
        self.tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    async def _once(self, payload: Mapping[str, Any], coro: Coroutine[Any, Any, Any]) -> None:
        """Run `coro` for a slash command, a click or a form submission the first time its `trigger_id` is seen
        (across processes and restarts, like events): the same signed request replayed within Slack's 5
        minutes was acked, and is otherwise ignored: no job, no message."""
        trigger = str(payload.get("trigger_id") or "")
        try:
            first = not trigger or await self.core.first_time(f"slack:trigger:{trigger}")
        except BaseException:
            coro.close()  # the dedupe store could not answer (a database outage): no work, and no leak
            raise
        if not first:
            coro.close()
            log.info("slack request replayed; ignored", extra={"trigger_id": trigger})
            return
        await coro

    @staticmethod
    async def _privately(coro: Any, asker: Privately) -> None:
        try:
            await asker.adapter.core.calm()  # every ack of a burst goes out before any work after one
            await coro
        except UserError as exc:
            await asker.tell(exc.text)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("slack task failed", exc_info=task.exception())

    # -- listeners ------------------------------------------------------------------------

    def _register(self) -> None:
        app = self.app

        @app.command("/imagine")
        async def imagine(ack: Any, command: dict[str, Any], respond: Any) -> None:
            await ack()
            asker = Privately(self, self._who(command), respond)
            self.spawn(self._once(command, self._imagine(asker, command.get("text", ""))), asker)

        @app.command("/imagine-usage")
        async def usage(ack: Any, command: dict[str, Any], respond: Any) -> None:
            await ack()
            asker = Privately(self, self._who(command), respond)
            usage = commands.usage(self.core, asker.who, command.get("text", ""))
            self.spawn(self._once(command, self._reply(asker, usage)), asker)

        @app.command("/imagine-quota")
        async def my_quota(ack: Any, command: dict[str, Any], respond: Any) -> None:
            await ack()
            asker = Privately(self, self._who(command), respond)
            self.spawn(
                self._once(command, self._reply(asker, commands.my_quota(self.core, asker.who))), asker
            )

        @app.command("/imagine-admin")
        async def admin(ack: Any, command: dict[str, Any], respond: Any) -> None:
            await ack()
            asker = Privately(self, self._who(command), respond)
            self.spawn(self._once(command, self._admin(asker, command.get("text", ""))), asker)

        @app.command("/imagine-settings")
        async def my_settings(ack: Any, command: dict[str, Any], respond: Any) -> None:
            await ack()
            asker = Privately(self, self._who(command), respond)
            text = str(command.get("text") or "")
            if text.strip():
                reply = commands.my_settings(self.core, asker.who, text)
                self.spawn(self._once(command, self._reply(asker, reply)), asker)
            else:
                self.spawn(self._once(command, self._open_settings_form(asker, command)), asker)

        @app.command("/imagine-info")
        async def info(ack: Any, command: dict[str, Any], respond: Any) -> None:
            await ack()
            asker = Privately(self, self._who(command), respond)
            self.spawn(self._once(command, self._info(asker, str(command.get("text") or ""))), asker)

        @app.command("/imagine-history")
        async def history(ack: Any, command: dict[str, Any], respond: Any) -> None:
            await ack()
            asker = Privately(self, self._who(command), respond)
            reply = commands.my_history(self.core, asker.who, str(command.get("text") or ""), link=self._link)
            self.spawn(self._once(command, self._reply(asker, reply)), asker)

        @app.view(SETTINGS_CALLBACK)
        async def settings_submitted(ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
            words = settings_words((view.get("state") or {}).get("values") or {})
            problems = self._settings_problems(words)
            if problems:  # the form stays open and says what is wrong, by the field
                await ack(response_action="errors", errors=problems)
                return
            await ack()
            metadata = json.loads(view.get("private_metadata") or "{}")
            who = Requester(
                "slack", self._team(body), str(metadata.get("channel") or ""), str(body["user"]["id"])
            )
            asker = Privately(self, who)
            self.spawn(
                self._once(body, self._reply(asker, commands.my_settings(self.core, who, words))), asker
            )

        @app.action(re.compile(rf"^{SHOW_ACTION}:"))
        async def show(ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
            await ack()
            asker = Privately(self, self._clicker(body), thread_ts=self._click_thread(body))
            self.spawn(self._once(body, self._show(asker, str(action.get("value") or ""))), asker)

        @app.action(CANCEL_ACTION)
        async def cancel(ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
            await ack()
            self.spawn(self._once(body, self._cancel(body, action)))

        # Every listener below acks first and hands the rest to a task: no Web API call before the ack.
        @app.action(RESULT_ACTION)
        async def result_action(ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
            await ack()
            key = str(action.get("value") or action.get("action_id", "")[len(RESULT_ACTION_PREFIX) :])
            asker = Privately(self, self._clicker(body), thread_ts=self._click_thread(body))
            if key.startswith(f"{Kind.EDIT}:"):
                self.spawn(self._once(body, self._open_edit_form(asker, body, action, key)), asker)
            else:
                self.spawn(self._once(body, self._act(asker, key)), asker)

        @app.view(EDIT_CALLBACK)
        async def edit_submitted(ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
            await ack()  # no response_action: the form closes
            metadata = json.loads(view.get("private_metadata") or "{}")
            values = (view.get("state") or {}).get("values") or {}
            instruction = str(((values.get(EDIT_BLOCK) or {}).get(EDIT_INPUT) or {}).get("value") or "")
            who = Requester(
                "slack", self._team(body), str(metadata.get("channel") or ""), str(body["user"]["id"])
            )
            asker = Privately(self, who, thread_ts=metadata.get("thread") or None)
            self.spawn(self._once(body, self._act(asker, str(metadata.get("key") or ""), instruction)), asker)

        @app.action(RENDER_ACTION)
        async def render(ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any) -> None:
            await ack()
            self._answer_price_check(body, action, respond, render=True)

        @app.action(DECLINE_ACTION)
        async def decline(ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any) -> None:
            await ack()
            self._answer_price_check(body, action, respond, render=False)

        # A mention arrives twice, as `message` and as `app_mention`; whichever comes first makes the job.
        @app.event("message")
        async def message(event: dict[str, Any], body: dict[str, Any]) -> None:
            self._on_event(event, body)

        @app.event("app_mention")
        async def mention(event: dict[str, Any], body: dict[str, Any]) -> None:
            self._on_event(event, body)

        @app.event("app_home_opened")
        async def home_opened(event: dict[str, Any], body: dict[str, Any], context: Any) -> None:
            if event.get("tab") != "home" or not event.get("user"):  # the Messages tab sends it too
                return
            team = body.get("team_id") or body.get("context_team_id") or context.get("team_id") or ""
            # The Home tab is in no channel: the quota shown is the person's (and the workspace's).
            self.spawn(self._publish_home(Requester("slack", str(team), "", str(event["user"]))))

    async def _cancel(self, body: dict[str, Any], action: dict[str, Any]) -> None:
        who = self._clicker(body)
        if not self.core.cancel(action.get("value", ""), who):
            await Privately(self, who).tell(texts.CANCEL_REFUSED)

    @staticmethod
    def _team(body: dict[str, Any]) -> str:
        return str((body.get("team") or {}).get("id") or (body.get("user") or {}).get("team_id") or "")

    def _clicker(self, body: dict[str, Any]) -> Requester:
        """Who clicked a button, in which workspace and channel."""
        channel = str(
            (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id") or ""
        )
        return Requester("slack", self._team(body), channel, str(body["user"]["id"]))

    @staticmethod
    def _click_thread(body: dict[str, Any]) -> str | None:
        """The thread of the message a button is on (a job's own message: the root of its thread)."""
        container = body.get("container") or {}
        message = body.get("message") or {}
        return (
            message.get("thread_ts")
            or container.get("thread_ts")
            or message.get("ts")
            or container.get("message_ts")
            or None
        )

    # -- result buttons and the price check ---------------------------------------------

    async def _act(self, asker: Privately, key: str, instruction: str = "") -> None:
        """A result button (or the Edit form) of `asker`: a job of theirs in the same thread, or Delete."""
        platform_admin = key.startswith(
            (f"{Kind.REMOVE}:", f"{Kind.INFO}:")
        ) and await self._is_workspace_admin(asker.who)
        view = SlackJobView(self, asker, thread_ts=asker.thread_ts)
        await self.core.act(
            key,
            asker.who,
            view,
            store=ClickStore(self, asker),
            instruction=instruction,
            platform_admin=platform_admin,
        )

    async def _info(self, asker: Privately, args: str) -> None:
        platform_admin = await self._is_workspace_admin(asker.who)
        reply = commands.info(self.core, asker.who, args, platform_admin=platform_admin, link=self._link)
        await self._reply(asker, reply)

    def _link(self, where: dict[str, Any]) -> str | None:
        """A job's message (the root of its thread), for its card and the history."""
        return message_link(self.site_url, where)

    async def _open_settings_form(self, asker: Privately, command: dict[str, Any]) -> None:
        """`/imagine-settings` alone: the form with the caller's own defaults (views.open within Slack's 3 s of
        the command: one database read comes first). The submission (settings_submitted) saves them."""
        mine = await self.core.preferences(asker.who)
        form = settings_form(mine, {"channel": asker.who.channel})
        try:
            await self.client.views_open(trigger_id=str(command.get("trigger_id") or ""), view=form)
        except SlackApiError as exc:
            log.warning(
                "slack settings form not opened", extra={"user": asker.who.user, "error": why_not(exc)}
            )
            await self._reply(asker, commands.my_settings(self.core, asker.who, ""))  # the text instead

    def _settings_problems(self, words: str) -> dict[str, str]:
        """What is wrong with a settings form's fields, by field (Slack shows each under its field): the same
        checks as /imagine-settings' words, one field at a time. Empty when all of them are good."""
        problems = {}
        for word in words.split():
            try:
                preferences.parse_changes(word, self.core.prices, self.core.settings.model)
            except UserError as exc:
                problems[word.partition("=")[0]] = clip(str(exc), 2000)
        return problems

    async def _show(self, asker: Privately, file_id: str) -> None:
        """Show: a hidden image (spoiler=on) to the clicker alone, as an image block of its uploaded file."""
        try:
            info = await self.client.files_info(file=file_id)
            title = str((info.get("file") or {}).get("title") or "image")
        except SlackApiError:
            await asker.tell(texts.SPOILER_GONE)
            return
        block = {"type": "image", "slack_file": {"id": file_id}, "alt_text": clip(title, 2000)}
        await asker.tell(title, blocks=[block])

    async def _open_edit_form(
        self, asker: Privately, body: dict[str, Any], action: dict[str, Any], key: str
    ) -> None:
        """Edit: the form for the instruction, unless the access rules refuse the clicker (then only they are
        told). Slack takes views.open only within 3 s of the click, so nothing slower than those rules (a
        database read, users.info and a cached user group) comes before it; the submission (edit_submitted)
        makes the job."""
        await self.core.may_render(asker.who, SlackJobView(self, asker, thread_ts=asker.thread_ts))
        locale = await asker.language()
        title = str((action.get("text") or {}).get("text") or say(locale, "discord.edit_image"))
        metadata = {"key": key, "channel": asker.who.channel, "thread": asker.thread_ts}
        try:
            await self.client.views_open(
                trigger_id=body.get("trigger_id", ""), view=edit_form(title, metadata, locale)
            )
        except SlackApiError as exc:
            log.warning("slack edit form not opened", extra={"user": asker.who.user, "error": why_not(exc)})
            raise UserError(msg("slack.form_not_opened", why=why_not(exc))) from None

    def _answer_price_check(
        self, body: dict[str, Any], action: dict[str, Any], respond: Any, *, render: bool
    ) -> None:
        """Render or Cancel on a private price check. The render goes where the question was asked: the thread
        the button carries, else a new message at the channel root (like /imagine)."""
        token, _, thread = str(action.get("value") or "").partition(":")
        who = self._clicker(body)
        asker = Privately(self, who, respond, thread_ts=thread or None, replace=True)
        view = SlackJobView(self, asker, thread_ts=thread or None, question=respond)
        self.spawn(self._once(body, self.core.price_check(token, who, view, render=render)), asker)

    # -- the Home tab -----------------------------------------------------------------------

    async def _publish_home(self, who: Requester) -> None:
        """Build `who`'s Home tab (bot/commands.py `home`) and publish it. A failure is logged: the tab keeps
        the view it had."""
        try:
            await self.core.calm()  # the event's ack goes out first
            platform_admin = await self._is_workspace_admin(who)
            home = await commands.home(self.core, who, platform_admin=platform_admin)
            view = {"type": "home", "blocks": home_blocks(home, self.site_url, await self.language(who))}
            await self.client.views_publish(user_id=who.user, view=view)
        except Exception as exc:
            log.warning(
                "slack home tab not published",
                extra={"user": who.user, "error": why_not(exc)},
                exc_info=not isinstance(exc, SlackApiError),
            )

    # -- where our images live (bot.jobs.actions.ImageStore) ----------------------------------

    async def fetch(self, where: dict[str, Any]) -> bytes:
        """The bytes of an image the bot uploaded: files.info for its private URL, then the download."""
        try:
            info = await self.client.files_info(file=str(where.get("file_id", "")))
            return await self.download(info.get("file") or {})
        except SlackApiError as exc:
            if why_not(exc) in GONE_FILE_ERRORS:
                raise UserError(msg("slack.image_deleted")) from None
            raise UserError(msg("slack.cannot_read_image", why=why_not(exc))) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UserError(msg("slack.cannot_read_image", why=why_not(exc))) from None

    async def delete(self, where: dict[str, Any]) -> None:
        """Delete an uploaded image (files.delete: the bot may delete the files it uploaded)."""
        try:
            await self.client.files_delete(file=str(where.get("file_id", "")))
        except SlackApiError as exc:
            if why_not(exc) in GONE_FILE_ERRORS:
                raise UserError(msg("slack.already_deleted")) from None
            raise UserError(msg("slack.not_deleted", why=why_not(exc))) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UserError(msg("slack.not_deleted", why=why_not(exc))) from None

    def _on_event(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        """Hand a message that mentions the bot to a task; anything else is not a job and calls nothing."""
        if self._mentions_me(event) and self._from_a_person(event):
            channel = event.get("channel", "")
            who = Requester(
                "slack", body.get("team_id") or event.get("team") or "", channel, event.get("user", "")
            )
            asker = Privately(self, who, thread_ts=event.get("thread_ts"))
            self.spawn(self._on_message(asker, event), asker)

    def _mentions_me(self, event: dict[str, Any]) -> bool:
        return self.mention is not None and self.mention.search(event.get("text") or "") is not None

    def _from_a_person(self, event: dict[str, Any]) -> bool:
        """Skip bots (ourselves included) and edits/deletes; keep plain messages and file shares."""
        return (
            not event.get("bot_id")
            and event.get("subtype") in (None, "file_share", "thread_broadcast")
            and event.get("user") != self.bot_user_id
        )

    @staticmethod
    def _who(payload: dict[str, Any]) -> Requester:
        return Requester(
            "slack",
            payload.get("team_id") or payload.get("team") or "",
            payload.get("channel_id") or payload.get("channel") or "",
            payload.get("user_id") or payload.get("user") or "",
        )

    async def _admin(self, asker: Privately, args: str) -> None:
        platform_admin = await self._is_workspace_admin(asker.who)
        request = read_admin(args, asker.who.platform)
        await self._reply(asker, commands.admin(self.core, asker.who, request, platform_admin=platform_admin))

    async def _reply(self, asker: Privately, make: Awaitable[commands.Reply]) -> None:
        reply = await make
        who, respond = asker.who, asker.respond
        text = translate(reply.text, await asker.language())
        if respond is None:  # no command to answer (a form's submission): an ephemeral in the channel
            await asker.tell(text)
        elif reply.chart and not reply.private:
            try:
                await self.client.files_upload_v2(
                    channel=who.channel,
                    file=reply.chart,
                    filename="usage.png",
                    title=say(asker.locale or ENGLISH, "slack.chart_title"),
                    initial_comment=escape(text),
                    request_file_info=False,
                )
            except SlackApiError as exc:
                failed = say(asker.locale or ENGLISH, "slack.chart_not_posted", why=exc.response.get("error"))
                await respond(text=f"{escape(text)}\n{escape(failed)}", response_type="ephemeral")
        elif reply.chart:
            await respond(text=escape(text), response_type="ephemeral")
        else:
            await respond(text=escape(text), response_type="ephemeral" if reply.private else "in_channel")

    async def language(self, who: Requester) -> str:
        """The language to speak to `who` in: their own setting, else their Slack locale, else English
        (bot/i18n.py `language_for`)."""
        return await self.core.language(who, await self.slack_locale(who))

    async def slack_locale(self, who: Requester) -> str | None:
        """The person's Slack locale (`users.info` with include_locale, e.g. `zh-CN`), or None if Slack does not
        say. Asked after the ack, never before it; kept per user for LOCALE_CACHE_SECONDS in a bounded cache,
        so a burst of jobs asks once. A failed call is not kept: the next message asks again."""
        key = (who.workspace, who.user)
        now = time.monotonic()
        known = self._locales.get(key)
        if known is not None and now - known[0] < LOCALE_CACHE_SECONDS:
            return known[1]
        try:
            info = await self.client.users_info(user=who.user, include_locale=True)
        except Exception as exc:
            log.info("slack locale not read", extra={"user": who.user, "error": why_not(exc)})
            return None
        locale = (info.get("user") or {}).get("locale")
        self._locales[key] = (now, str(locale) if locale else None)
        self._locales.move_to_end(key)
        while len(self._locales) > MAX_KNOWN_LOCALES:
            self._locales.popitem(last=False)
        return self._locales[key][1]

    async def _is_workspace_admin(self, who: Requester) -> bool:
        """An admin or owner of this workspace. A Slack Connect guest's is_admin is about their own
        workspace (their users.info team_id), so it counts only when that is the command's workspace."""
        try:
            info = await self.client.users_info(user=who.user)
        except SlackApiError:
            return False
        person = info.get("user") or {}
        return person.get("team_id") == who.workspace and bool(
            person.get("is_admin") or person.get("is_owner")
        )

    async def in_groups(self, user: str, groups: Collection[str]) -> bool:
        """A member of any of these user groups (usergroups.users.list, each read at most once a minute): True
        if in one, False if in none. A group that cannot be read proves nothing either way: unless the user is
        in another one, MembershipUnknown (the rules then refuse, for allow and deny alike)."""
        unreadable = False
        for group in groups:
            try:
                if user in await self._group_members(group):
                    return True
            except MembershipUnknown:
                unreadable = True
        if unreadable:
            raise MembershipUnknown(user)
        return False

    async def _group_members(self, group: str) -> frozenset[str]:
        """A user group's members, cached for GROUP_CACHE_SECONDS; a failed read raises MembershipUnknown and is
        never cached (the next request asks again)."""
        now = time.monotonic()
        cached = self._groups.get(group)
        if cached is not None and now - cached[0] < GROUP_CACHE_SECONDS:
            return cached[1]
        try:
            answer = await self.client.usergroups_users_list(usergroup=group)
            members = frozenset(answer.get("users") or ())
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            # A deleted group, no usergroups:read, a rate limit, a network failure: nobody can tell.
            log.warning("slack user group unreadable", extra={"group": group, "error": why_not(exc)})
            raise MembershipUnknown(group) from None
        self._groups[group] = (now, members)
        return members

    # -- jobs -----------------------------------------------------------------------------

    async def _imagine(self, asker: Privately, text: str) -> None:
        request = await self.core.parse_for(asker.who, text)
        await self.core.submit(request, asker.who, SlackJobView(self, asker))

    async def _on_message(self, asker: Privately, event: dict[str, Any]) -> None:
        """A message that mentions the bot (docs/rules.md §2): in the thread of one of our images, an edit of the latest;
        elsewhere a fusion of its images, or without images a new image. Answers in the message's thread."""
        channel, ts = event.get("channel", ""), event.get("ts", "")
        # Keyed by the message, not the event: its `message` and `app_mention` twins and Slack's retries
        # (X-Slack-Retry-Num) all carry the same channel and ts, so exactly one of them makes the job.
        if not await self.core.first_time(f"slack:{channel}:{ts}"):
            return
        thread_ts = event.get("thread_ts")
        view = SlackJobView(self, asker, thread_ts=thread_ts or ts)
        # The place and person rules before reading the thread or downloading files that could only be refused.
        await self.core.may_render(asker.who, view)
        assert self.mention is not None  # _mentions_me() let it through
        text = self.mention.sub("", event.get("text") or "").strip()
        files = [
            Attachment(f.get("name") or "image", f.get("size"), functools.partial(self.download, f))
            for f in event.get("files") or []
            if is_image_attachment(f.get("name"), f.get("mimetype"))
        ]
        self.core.check_attachments(text, files)  # counted, sizes checked: before any download
        try:
            base = await self._thread_base(channel, thread_ts) if thread_ts else None
            references, mask = await decode_attachments(files, base=base, slot=self.core.downloading)
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:  # nothing is reserved yet
            log.warning(
                "slack message not read", extra={"channel": channel, "error": why_not(exc)}, exc_info=True
            )
            raise UserError(msg("slack.cannot_read_message", why=why_not(exc))) from None
        request = await self.core.parse_for(asker.who, text, references, mask)
        await self.core.submit(request, asker.who, view)

    async def _thread_base(self, channel: str, thread_ts: str) -> ImageInput | None:
        """The bot's latest image in the thread, or None if the thread has none."""
        replies = await self.client.conversations_replies(channel=channel, ts=thread_ts, limit=200)
        for message in reversed(replies.get("messages") or []):
            mine = (self.bot_id is not None and message.get("bot_id") == self.bot_id) or (
                self.bot_user_id is not None and message.get("user") == self.bot_user_id
            )
            images = [
                f for f in message.get("files") or [] if is_image_attachment(f.get("name"), f.get("mimetype"))
            ]
            if mine and images:
                data = await self.download(images[0])
                return await asyncio.to_thread(load_image, images[0].get("name") or "base.png", data)
            hidden = _hidden_files(message) if mine else []  # a spoiler=on channel's image, behind Show
            if hidden:
                data = await self.fetch({"file_id": hidden[0]})
                return await asyncio.to_thread(load_image, "base.png", data)
        return None

    async def download(self, file: dict[str, Any]) -> bytes:
        """Fetch a private file with the bot token, only from Slack's own file host, at most 50 MB."""
        url = file.get("url_private_download") or file.get("url_private") or ""
        if not trusted_file_url(url, self.core.settings.slack_api_url):
            raise UserError(msg("slack.not_hosted", name=file.get("name") or msg("slack.a_file")))
        async with (
            self.core.downloading(),  # at most IMAGEBOT_MAX_DOWNLOADS files at once in this process
            self.http.get(
                url, headers={"Authorization": f"Bearer {self.token}"}, allow_redirects=False
            ) as response,
        ):
            if response.status != 200 or response.content_type.startswith("text/html"):
                raise UserError(
                    msg(
                        "slack.download_http",
                        name=file.get("name") or msg("slack.a_file"),
                        status=response.status,
                    )
                )
            return await read_capped(
                response.content.iter_chunked(1 << 16), file.get("name", "a file"), response.content_length
            )

    # -- crash recovery -------------------------------------------------------------------

    async def tell_interrupted(self, job: Interrupted) -> None:
        channel = job.context.get("channel") or job.channel
        locale = str(job.context.get("locale") or ENGLISH)  # the job's language, kept with it (`open`)
        await self.client.chat_postMessage(
            channel=channel,
            thread_ts=job.context.get("thread_ts"),
            text=f"<@{job.user}> {escape(texts.interrupted(job).render(locale))}",
        )

    def view_for(self, who: Requester, context: dict[str, Any]) -> SlackJobView:
        """A relax job from another life of the bot: its message and thread, from where it was posted."""
        ts = str(context.get("ts") or context.get("thread_ts") or "")
        thread = context.get("thread_ts")
        asker = Privately(self, who, thread_ts=thread, locale=context.get("locale"))
        return SlackJobView(self, asker, thread_ts=thread if thread != ts else None, ts=ts)
