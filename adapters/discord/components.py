"""How the bot's messages look on Discord and what their buttons carry: a job's progress (with Cancel), a
finished job's result buttons in action rows, a price check's Render and Cancel, and the edit forms.

Every button is a discord.py `DynamicItem` whose custom id carries all it needs (`imagebot:cancel:<job>`,
`imagebot:act:<key>`, `imagebot:render:<token>`, `imagebot:decline:<token>`), and the Edit button's form has
its key in its own custom id (`imagebot:edit:<key>`, answered by the listener in listeners.py), so nothing is
kept in memory and every button works after a restart. A press that replays one already handled (the same
interaction id) is ignored in the button's `interaction_check`; what a press does is presses.py's.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Self, cast

import discord

from bot.i18n import ENGLISH, say, translate
from bot.jobs import actions, texts
from bot.jobs.actions import Kind
from bot.jobs.outcomes import Progress

from .parts import adapter_of
from .text import clip, escape, quote

log = logging.getLogger("imagebot.discord")

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


Button = discord.ui.DynamicItem[discord.ui.Button[Any]]  # a button discord.py rebuilds from its custom id


class _Persistent:
    """A button whose custom id carries all it needs: discord.py rebuilds it from the id's named groups (its
    constructor's arguments). A replayed press (the same interaction id) is ignored before it is answered; what
    a press does (`pressed`) is presses.py's, and a refusal it raises is told to the presser alone."""

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> Self:
        return cast(Any, cls)(**match.groupdict())

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        return await adapter_of(interaction).first_time(interaction)

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        try:
            await self.pressed(interaction)
        except Exception as exc:
            await adapter_of(interaction).on_error(interaction, exc)

    async def pressed(self, interaction: discord.Interaction[Any]) -> None:
        raise NotImplementedError


class CancelButton(_Persistent, Button, template=CANCEL_PREFIX + r"(?P<job_id>[A-Za-z0-9]+)"):
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

    async def pressed(self, interaction: discord.Interaction[Any]) -> None:
        await adapter_of(interaction).presses.cancel(interaction, self.job_id)


class ActionButton(_Persistent, Button, template=ACTION_PREFIX + rf"(?P<key>{ACTION_KEY})"):
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

    async def pressed(self, interaction: discord.Interaction[Any]) -> None:
        await adapter_of(interaction).presses.action(interaction, self.key)


class PriceCheckButton(
    _Persistent, Button, template=r"imagebot:(?P<verb>render|decline):(?P<token>[A-Za-z0-9_-]+)"
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

    async def pressed(self, interaction: discord.Interaction[Any]) -> None:
        await adapter_of(interaction).presses.price_check(interaction, self.token, self.render)


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
    the listener in listeners.py, so discord.py keeps no copy (stopped at birth): a form submitted after a
    restart, or by two people at once, still works. Its words are in the presser's language."""

    def __init__(self, key: str, locale: str = ENGLISH) -> None:
        super().__init__(
            title=say(locale, "discord.edit_image"), custom_id=EDIT_FORM_PREFIX + key, timeout=None
        )
        self.instruction = _instruction(locale, "discord.edit_placeholder", custom_id="instruction")
        self.add_item(self.instruction)
        self.stop()


class EditModal(discord.ui.Modal, title="Edit image"):
    """Asks for the edit instruction of the "Edit image" message command; `submit` gets the instruction."""

    def __init__(
        self,
        submit: Callable[[discord.Interaction[Any], str], Awaitable[None]],
        locale: str = ENGLISH,
    ) -> None:
        super().__init__(title=say(locale, "discord.edit_image"), timeout=600)
        self.instruction = _instruction(locale, "discord.edit_placeholder_flags")
        self.add_item(self.instruction)
        self.submit = submit

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        return await adapter_of(interaction).first_time(interaction)

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        await self.submit(interaction, self.instruction.value)

    async def on_error(self, interaction: discord.Interaction[Any], error: Exception, /) -> None:  # type: ignore[override]
        await adapter_of(interaction).on_error(interaction, error)
