"""The slash commands (`/imagine`, `/imagine-usage`, `/imagine-quota`, `/imagine-admin`, `/imagine-settings`,
`/imagine-info`, `/imagine-history`) and the settings form `/imagine-settings` opens. A command comes acked
(middleware.py; the form acks itself, perhaps with errors); each listener hands its work to `run`, and the answer
goes to the caller (or the channel, where the core says so)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

from slack_bolt.app.async_app import AsyncApp
from slack_sdk.errors import SlackApiError

from bot import commands
from bot.errors import UserError
from bot.i18n import ENGLISH, say, translate
from bot.model.request import clip
from bot.policy import preferences

from ..mentions import read_admin
from .blocks import SETTINGS_CALLBACK, escape, settings_form, settings_words
from .client import why_not
from .listeners import Listeners
from .middleware import Once
from .view import Privately, SlackJobView

log = logging.getLogger("imagebot.slack")


class Commands(Listeners):
    """The slash commands' listeners and their work."""

    def register(self, app: AsyncApp) -> None:
        app.command("/imagine")(self.imagine)
        app.command("/imagine-usage")(self.usage)
        app.command("/imagine-quota")(self.my_quota)
        app.command("/imagine-admin")(self.admin)
        app.command("/imagine-settings")(self.my_settings)
        app.command("/imagine-info")(self.info)
        app.command("/imagine-history")(self.history)
        app.view(SETTINGS_CALLBACK)(self.settings_submitted)

    async def imagine(self, command: dict[str, Any], asker: Privately, run: Once) -> None:
        run(self._imagine(asker, command.get("text", "")), asker)

    async def usage(self, command: dict[str, Any], asker: Privately, run: Once) -> None:
        run(self._reply(asker, commands.usage(self.core, asker.who, command.get("text", ""))), asker)

    async def my_quota(self, asker: Privately, run: Once) -> None:
        run(self._reply(asker, commands.my_quota(self.core, asker.who)), asker)

    async def admin(self, command: dict[str, Any], asker: Privately, run: Once) -> None:
        run(self._admin(asker, command.get("text", "")), asker)

    async def my_settings(self, command: dict[str, Any], asker: Privately, run: Once) -> None:
        """`/imagine-settings` with words changes the caller's defaults; alone, it opens the form."""
        text = str(command.get("text") or "")
        if text.strip():
            run(self._reply(asker, commands.my_settings(self.core, asker.who, text)), asker)
        else:
            run(self._open_settings_form(asker, command), asker)

    async def info(self, command: dict[str, Any], asker: Privately, run: Once) -> None:
        run(self._info(asker, str(command.get("text") or "")), asker)

    async def history(self, command: dict[str, Any], asker: Privately, run: Once) -> None:
        args = str(command.get("text") or "")
        run(self._reply(asker, commands.my_history(self.core, asker.who, args, link=self.slack.link)), asker)

    async def settings_submitted(self, ack: Any, view: dict[str, Any], asker: Privately, run: Once) -> None:
        """The settings form saved: the caller's new defaults, or (the form stays open) what is wrong, by field."""
        words = settings_words((view.get("state") or {}).get("values") or {})
        problems = self._settings_problems(words)
        if problems:
            await ack(response_action="errors", errors=problems)
            return
        await ack()
        run(self._reply(asker, commands.my_settings(self.core, asker.who, words)), asker)

    # -- the work, after the ack -------------------------------------------------------------

    async def _imagine(self, asker: Privately, text: str) -> None:
        request = await self.core.parse_for(asker.who, text)
        await self.core.submit(request, asker.who, SlackJobView(self.slack, asker))

    async def _admin(self, asker: Privately, args: str) -> None:
        platform_admin = await self.slack.people.is_workspace_admin(asker.who)
        request = read_admin(args, asker.who.platform)
        await self._reply(asker, commands.admin(self.core, asker.who, request, platform_admin=platform_admin))

    async def _info(self, asker: Privately, args: str) -> None:
        platform_admin = await self.slack.people.is_workspace_admin(asker.who)
        reply = commands.info(self.core, asker.who, args, platform_admin=platform_admin, link=self.slack.link)
        await self._reply(asker, reply)

    async def _open_settings_form(self, asker: Privately, command: dict[str, Any]) -> None:
        """`/imagine-settings` alone: the form with the caller's own defaults (views.open within Slack's 3 s of
        the command: one database read comes first). The submission (settings_submitted) saves them."""
        mine = await self.core.preferences(asker.who)
        form = settings_form(mine, {"channel": asker.who.channel})
        try:
            await self.slack.client.views_open(trigger_id=str(command.get("trigger_id") or ""), view=form)
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

    async def _reply(self, asker: Privately, make: Awaitable[commands.Reply]) -> None:
        reply = await make
        who, respond = asker.who, asker.respond
        text = translate(reply.text, await asker.language())
        if respond is None:  # no command to answer (a form's submission): an ephemeral in the channel
            await asker.tell(text)
        elif reply.chart and not reply.private:
            try:
                await self.slack.client.files_upload_v2(
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
