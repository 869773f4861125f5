"""Events: a message that mentions the bot (a new image, a fusion of its attachments, or in the thread of one
of the bot's images an edit of the latest), and the Home tab when someone opens it."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

import aiohttp
from slack_bolt.app.async_app import AsyncApp
from slack_sdk.errors import SlackApiError

from bot import commands
from bot.app import Attachment, is_image_attachment
from bot.errors import UserError
from bot.i18n import msg
from bot.model.images import ImageInput, load_image
from bot.model.request import Requester

from .blocks import hidden_files, home_blocks
from .client import why_not
from .listeners import Listeners
from .middleware import Once, PeopleOnly
from .view import Privately, SlackJobView

log = logging.getLogger("imagebot.slack")
T = TypeVar("T")


class Events(Listeners):
    """The listeners of Slack's events, and their work."""

    def register(self, app: AsyncApp) -> None:
        # A mention arrives twice, as `message` and as `app_mention`; whichever comes first makes the job.
        people_only = [PeopleOnly(self.slack)]
        app.event("message", middleware=people_only)(self.message)
        app.event("app_mention", middleware=people_only)(self.message)
        app.event("app_home_opened")(self.home_opened)

    async def message(self, event: dict[str, Any], asker: Privately, run: Once) -> None:
        """A person's message that mentions the bot (middleware: `PeopleOnly`): a job, made by a task."""
        run(self._on_message(asker, event), asker)

    async def home_opened(self, event: dict[str, Any], who: Requester | None, run: Once) -> None:
        if event.get("tab") != "home" or who is None or not who.user:  # the Messages tab sends it too
            return
        # The Home tab is in no channel: the quota shown is the person's (and the workspace's).
        run(self._publish_home(replace(who, channel="")))

    # -- the work, after the ack -------------------------------------------------------------

    async def _on_message(self, asker: Privately, event: dict[str, Any]) -> None:
        """A message that mentions the bot (docs/rules.md §2): in the thread of one of our images, an edit of the latest;
        elsewhere a fusion of its images, or without images a new image. Answers in the message's thread."""
        channel, ts = event.get("channel", ""), event.get("ts", "")
        # Keyed by the message, not the event: its `message` and `app_mention` twins and Slack's retries
        # (X-Slack-Retry-Num) all carry the same channel and ts, so exactly one of them makes the job.
        if not await self.core.first_time(f"slack:{channel}:{ts}"):
            return
        thread_ts = event.get("thread_ts")
        view = SlackJobView(self.slack, asker, thread_ts=thread_ts or ts)
        assert self.slack.mention is not None  # _mentions_me() let it through
        text = self.slack.mention.sub("", event.get("text") or "").strip()
        files = [
            Attachment(
                f.get("name") or "image",
                f.get("size"),
                self._read(channel, functools.partial(self.slack.files.download, f)),
                f.get("mimetype"),
            )
            for f in event.get("files") or []
        ]
        base = (
            self._read(channel, functools.partial(self._thread_base, channel, thread_ts))
            if thread_ts
            else None
        )
        # The thread's image is not counted before the download: the thread may have none.
        await self.core.from_message(asker.who, view, text, files, base=base)

    @staticmethod
    def _read(channel: str, fetch: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
        """`fetch` (a file's download, the thread's image), with Slack's failure told to the requester in a few
        words (nothing is reserved yet) and logged."""

        async def read() -> T:
            try:
                return await fetch()
            except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
                log.warning(
                    "slack message not read", extra={"channel": channel, "error": why_not(exc)}, exc_info=True
                )
                raise UserError(msg("slack.cannot_read_message", why=why_not(exc))) from None

        return read

    async def _thread_base(self, channel: str, thread_ts: str) -> ImageInput | None:
        """The bot's latest image in the thread, or None if the thread has none."""
        replies = await self.slack.client.conversations_replies(channel=channel, ts=thread_ts, limit=200)
        for message in reversed(replies.get("messages") or []):
            mine = (self.slack.bot_id is not None and message.get("bot_id") == self.slack.bot_id) or (
                self.slack.bot_user_id is not None and message.get("user") == self.slack.bot_user_id
            )
            images = [
                f for f in message.get("files") or [] if is_image_attachment(f.get("name"), f.get("mimetype"))
            ]
            if mine and images:
                data = await self.slack.files.download(images[0])
                return await asyncio.to_thread(load_image, images[0].get("name") or "base.png", data)
            hidden = hidden_files(message) if mine else []  # a spoiler=on channel's image, behind Show
            if hidden:
                data = await self.slack.files.fetch({"file_id": hidden[0]})
                return await asyncio.to_thread(load_image, "base.png", data)
        return None

    async def _publish_home(self, who: Requester) -> None:
        """Build `who`'s Home tab (bot/commands.py `home`) and publish it. A failure is logged: the tab keeps
        the view it had."""
        try:
            await self.core.calm()  # the event's ack goes out first
            platform_admin = await self.slack.people.is_workspace_admin(who)
            home = await commands.home(self.core, who, platform_admin=platform_admin)
            view = {
                "type": "home",
                "blocks": home_blocks(home, self.slack.site_url, await self.slack.language(who)),
            }
            await self.slack.client.views_publish(user_id=who.user, view=view)
        except Exception as exc:
            log.warning(
                "slack home tab not published",
                extra={"user": who.user, "error": why_not(exc)},
                exc_info=not isinstance(exc, SlackApiError),
            )
