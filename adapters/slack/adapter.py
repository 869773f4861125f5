"""The Slack adapter itself: builds the Web API client and the bolt app, registers the listeners, starts
(HTTP mode: a route on our aiohttp app; Socket Mode: a websocket), and keeps the work it hands to tasks."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.app.async_app import AsyncApp

from bot.app import Core
from bot.concurrency import TokenBucket
from bot.errors import UserError
from bot.i18n import ENGLISH
from bot.jobs import texts
from bot.model.request import Requester
from bot.store.ledger import Interrupted

from ..tasks import Tasks
from . import middleware
from .actions import Actions
from .blocks import escape, message_link
from .client import until_answered, web_client
from .commands import Commands
from .events import Events
from .files import Files
from .parts import Asker
from .people import People
from .view import Privately, SlackJobView

log = logging.getLogger("imagebot.slack")

# Slack's chat.update is Tier 3: ~50 calls a minute per workspace. Stay under it across all jobs.
UPDATES_PER_MINUTE = 45


class SlackAdapter:
    """Registers bolt listeners; runs in HTTP mode (a route on our aiohttp app) or Socket Mode."""

    def __init__(self, core: Core) -> None:
        settings = core.settings
        assert settings.slack_bot_token is not None
        self.core = core
        self.token = settings.slack_bot_token.reveal()
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
        self.client = web_client(self.token, settings.slack_api_url, self.http)
        self.people = People(self.client)
        self.files = Files(self.client, self.http, self.token, settings.slack_api_url, core.downloading)
        # Signature verification stays on: bolt skips it only for Socket Mode envelopes (its
        # RequestVerification._can_skip checks req.mode == "socket_mode"), and in Socket Mode there is no
        # HTTP route at all (see routes()), so nothing unsigned ever reaches a listener. "" rather than None:
        # bolt would otherwise read SLACK_SIGNING_SECRET from os.environ behind the settings' back.
        self.app = AsyncApp(
            client=self.client,
            signing_secret=settings.slack_signing_secret.reveal() if settings.slack_signing_secret else "",
            # The middleware acks and the listeners hand the work to a task (`run`) at once, so bolt can answer
            # as soon as they return (without it bolt polls for the ack every 10 ms). So no listener (and no
            # middleware) may await Slack before returning.
            process_before_response=True,
            # An event the bot itself caused (its user id or bot id, which bolt learns from auth.test) is acked
            # and dropped before any listener: bolt's IgnoringSelfEvents, on by default, named here as relied on.
            ignoring_self_events_enabled=True,
        )
        self.budget = TokenBucket(per_second=UPDATES_PER_MINUTE / 60, burst=10)
        self.tasks = Tasks(log, "slack task failed")  # the work after the acks
        self.bot_user_id: str | None = None
        self.bot_id: str | None = None
        self.mention: re.Pattern[str] | None = None  # <@BOT_USER_ID> (or <@BOT_USER_ID|name>), once known
        self.socket_handler: Any = None
        self.state = "starting"  # why not connected yet, for /readyz ("" once connected)
        self.site_url = ""  # https://<workspace>.slack.com/ from auth.test: links to messages (the Home tab)
        middleware.install(self.app, self)
        for listeners in (Commands(self), Actions(self), Events(self)):
            listeners.register(self.app)

    # -- start-up (ops: retried with backoff; a refused token is fatal) ----------------------------------

    async def start(self, web_app: web.Application | None) -> None:
        """Learn who we are (auth.test), then listen: Socket Mode if an app token is set, else HTTP. An outage
        (no route, DNS, a 5xx) is retried with backoff while `connected` is False (/readyz: not ready); a token
        Slack refuses raises ConfigError (one line, exit 2). Returns once events can arrive."""
        auth = await until_answered("auth.test", "SLACK_BOT_TOKEN", self.client.auth_test, self._waiting)
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
        opened = await until_answered(
            "apps.connections.open",
            "SLACK_APP_TOKEN",
            lambda: self.client.apps_connections_open(app_token=app_token),
            self._waiting,
        )
        self.socket_handler = AsyncSocketModeHandler(self.app, app_token=app_token)
        self.socket_handler.client.wss_uri = opened["url"]
        self.state = "connecting the Socket Mode websocket"
        await self.socket_handler.connect_async()
        self.state = ""
        log.info("slack socket mode connected")

    def _waiting(self, reason: str) -> None:
        self.state = reason

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

    def spawn(self, coro: Any, asker: Asker | None = None) -> asyncio.Task[Any]:
        """Work done after the ack; kept so shutdown can wait for it. The one place a UserError (a bad flag,
        an image we cannot read, ...) becomes a reply that only `asker` sees."""
        return self.tasks.spawn(self._privately(coro, asker) if asker is not None else coro)

    @staticmethod
    async def _privately(coro: Any, asker: Asker) -> None:
        try:
            await asker.adapter.core.calm()  # every ack of a burst goes out before any work after one
            await coro
        except UserError as exc:
            await asker.tell(exc.text)

    async def language(self, who: Requester) -> str:
        """The language to speak to `who` in: their own setting, else their Slack locale, else English
        (bot/i18n.py `language_for`)."""
        return await self.core.language(who, await self.people.slack_locale(who))

    def link(self, where: dict[str, Any]) -> str | None:
        """A job's message (the root of its thread), for its card and the history."""
        return message_link(self.site_url, where)

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
