"""Block Kit for the Slack adapter: the messages, buttons, forms and Home tab the bot shows, built from the
core's results. Pure functions of their arguments (no Web API call); every text from a person or the model is
escaped here, so no `<!channel>`, mention or link can be smuggled into a message."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from bot import commands
from bot.i18n import ENGLISH, say, translate
from bot.jobs import texts
from bot.jobs.actions import Button, Kind
from bot.jobs.outcomes import Progress
from bot.model.request import Requester, clip
from bot.policy.preferences import Preferences

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
RENDER_KINDS = frozenset({Kind.REROLL, Kind.VARY, Kind.UPSCALE})
PROMPT_SHOWN = 280  # characters of the prompt in a progress message
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


def hidden_files(message: Mapping[str, Any]) -> list[str]:
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
