"""Clicks and the forms they open: a job's Cancel, its result buttons (Re-roll, Vary, Upscale, Edit, Delete,
Info), the Edit form, a private price check's Render and Cancel, and a hidden image's Show. A click comes acked
(middleware.py; the Edit form acks itself); each listener hands its work to `run`, and whatever only the clicker
may see is told to them alone."""

from __future__ import annotations

import logging
import re
from typing import Any

from slack_bolt.app.async_app import AsyncApp
from slack_sdk.errors import SlackApiError

from bot.errors import UserError
from bot.i18n import msg, say
from bot.jobs import texts
from bot.jobs.actions import Kind
from bot.model.request import Requester, clip

from .blocks import (
    CANCEL_ACTION,
    DECLINE_ACTION,
    EDIT_BLOCK,
    EDIT_CALLBACK,
    EDIT_INPUT,
    RENDER_ACTION,
    RESULT_ACTION,
    RESULT_ACTION_PREFIX,
    SHOW_ACTION,
    edit_form,
)
from .client import why_not
from .listeners import Listeners
from .middleware import Once, metadata
from .view import ClickStore, Privately, SlackJobView

log = logging.getLogger("imagebot.slack")
SHOW = re.compile(rf"^{SHOW_ACTION}:")


class Actions(Listeners):
    """The buttons' and the Edit form's listeners, and their work."""

    def register(self, app: AsyncApp) -> None:
        app.action(SHOW)(self.show)
        app.action(CANCEL_ACTION)(self.cancel)
        app.action(RESULT_ACTION)(self.result_action)
        app.view(EDIT_CALLBACK)(self.edit_submitted)
        app.action(RENDER_ACTION)(self.render)
        app.action(DECLINE_ACTION)(self.decline)

    async def show(self, action: dict[str, Any], asker: Privately, run: Once) -> None:
        run(self._show(asker, str(action.get("value") or "")), asker)

    async def cancel(self, action: dict[str, Any], who: Requester, run: Once) -> None:
        run(self._cancel(who, str(action.get("value", ""))))

    async def result_action(
        self, body: dict[str, Any], action: dict[str, Any], asker: Privately, run: Once
    ) -> None:
        key = str(action.get("value") or action.get("action_id", "")[len(RESULT_ACTION_PREFIX) :])
        if key.startswith(f"{Kind.EDIT}:"):
            run(self._open_edit_form(asker, body, action, key), asker)
        else:
            run(self._act(asker, key), asker)

    async def edit_submitted(
        self, ack: Any, body: dict[str, Any], view: dict[str, Any], asker: Privately, run: Once
    ) -> None:
        await ack()  # no response_action: the form closes
        values = (view.get("state") or {}).get("values") or {}
        instruction = str(((values.get(EDIT_BLOCK) or {}).get(EDIT_INPUT) or {}).get("value") or "")
        run(self._act(asker, str(metadata(body).get("key") or ""), instruction), asker)

    async def render(self, action: dict[str, Any], who: Requester, respond: Any, run: Once) -> None:
        self._answer_price_check(action, who, respond, run, render=True)

    async def decline(self, action: dict[str, Any], who: Requester, respond: Any, run: Once) -> None:
        self._answer_price_check(action, who, respond, run, render=False)

    # -- the work, after the ack -------------------------------------------------------------

    async def _cancel(self, who: Requester, job_id: str) -> None:
        if not self.core.cancel(job_id, who):
            await Privately(self.slack, who).tell(texts.CANCEL_REFUSED)

    async def _act(self, asker: Privately, key: str, instruction: str = "") -> None:
        """A result button (or the Edit form) of `asker`: a job of theirs in the same thread, or Delete."""
        platform_admin = key.startswith(
            (f"{Kind.REMOVE}:", f"{Kind.INFO}:")
        ) and await self.slack.people.is_workspace_admin(asker.who)
        view = SlackJobView(self.slack, asker, thread_ts=asker.thread_ts)
        await self.core.act(
            key,
            asker.who,
            view,
            store=ClickStore(self.slack, asker),
            instruction=instruction,
            platform_admin=platform_admin,
        )

    async def _show(self, asker: Privately, file_id: str) -> None:
        """Show: a hidden image (spoiler=on) to the clicker alone, as an image block of its uploaded file."""
        try:
            info = await self.slack.client.files_info(file=file_id)
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
        await self.core.may_render(asker.who, SlackJobView(self.slack, asker, thread_ts=asker.thread_ts))
        locale = await asker.language()
        title = str((action.get("text") or {}).get("text") or say(locale, "discord.edit_image"))
        metadata = {"key": key, "channel": asker.who.channel, "thread": asker.thread_ts}
        try:
            await self.slack.client.views_open(
                trigger_id=body.get("trigger_id", ""), view=edit_form(title, metadata, locale)
            )
        except SlackApiError as exc:
            log.warning("slack edit form not opened", extra={"user": asker.who.user, "error": why_not(exc)})
            raise UserError(msg("slack.form_not_opened", why=why_not(exc))) from None

    def _answer_price_check(
        self, action: dict[str, Any], who: Requester, respond: Any, run: Once, *, render: bool
    ) -> None:
        """Render or Cancel on a private price check. The render goes where the question was asked: the thread
        the button carries, else a new message at the channel root (like /imagine)."""
        token, _, thread = str(action.get("value") or "").partition(":")
        asker = Privately(self.slack, who, respond, thread_ts=thread or None, replace=True)
        view = SlackJobView(self.slack, asker, thread_ts=thread or None, question=respond)
        run(self.core.price_check(token, who, view, render=render), asker)
