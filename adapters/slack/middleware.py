"""Bolt middleware: what every listener of the Slack adapter would otherwise do for itself.

Bolt's own run first: the request's signature is checked, auth.test tells bolt who the bot is (once), and
IgnoringSelfEvents acks and drops every event the bot itself caused (its user id or its bot id) before any
listener sees it. Then ours (`install`), for every request:

- `Acknowledge`: a slash command or a click is acked at once, before its listener runs (Slack wants the ack
  within 3 s, and no Web API call may come before it). A form's submission acks itself: the settings form may
  answer with the errors to show under its fields.
- `Identify`: the listeners' `who` (the requester: workspace, channel, person) and `asker` (how to tell them
  something only they see).
- `RunOnce`: the listeners' `run(work, asker)`: the work as a task after the ack, the first time the request's
  trigger_id is seen (`Once`).

And on messages, as listener middleware, `PeopleOnly`: a message is a job only if a person (not a bot) wrote
it, mentioning the bot; an edit or a deletion is none.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from slack_bolt.app.async_app import AsyncApp
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from bot.model.request import Requester

from .view import Privately

if TYPE_CHECKING:
    from .parts import SlackSide

log = logging.getLogger("imagebot.slack")

Next = Callable[[], Awaitable[BoltResponse]]
# The subtypes of a message a person wrote: a plain one has none; the others are edits, deletions, joins...
PERSON_SUBTYPES = (None, "file_share", "thread_broadcast")


def install(app: AsyncApp, slack: SlackSide) -> None:
    """Our global middleware, after bolt's own. Each is an AsyncMiddleware, as bolt's own are: a function's
    keyword arguments would be rebuilt by inspection on every request, a cost paid by every ack of a burst."""
    app.use(Acknowledge())
    app.use(Identify(slack))
    app.use(RunOnce(slack))


class Acknowledge(AsyncMiddleware):
    """A slash command or a click is acked before its listener runs; a form acks itself."""

    async def async_process(
        self, *, req: AsyncBoltRequest, resp: BoltResponse, next: Next
    ) -> BoltResponse | None:
        if "command" in req.body or req.body.get("type") == "block_actions":
            await req.context.ack()
        return await next()


@dataclass
class Identify(AsyncMiddleware):
    """The listeners' `who` (the requester) and `asker`: how to tell them something only they see (a command's
    response_url; else an ephemeral, in the thread of the click, the form or the message)."""

    slack: SlackSide

    async def async_process(
        self, *, req: AsyncBoltRequest, resp: BoltResponse, next: Next
    ) -> BoltResponse | None:
        who = requester(req.body)
        if who is not None:
            respond = req.context.respond if "command" in req.body else None
            req.context["who"] = who
            req.context["asker"] = Privately(self.slack, who, respond, thread_ts=thread(req.body))
        return await next()


@dataclass
class RunOnce(AsyncMiddleware):
    """The listeners' `run`: the request's work as a task after the ack, once per trigger_id (`Once`)."""

    slack: SlackSide

    async def async_process(
        self, *, req: AsyncBoltRequest, resp: BoltResponse, next: Next
    ) -> BoltResponse | None:
        req.context["run"] = Once(self.slack, str(req.body.get("trigger_id") or ""))
        return await next()


@dataclass
class PeopleOnly(AsyncMiddleware):
    """Listener middleware for messages: on to the listener only a message a person wrote that mentions the
    bot; anything else (another bot's, an edit, a deletion, no mention) is acked and calls nothing. The bot's
    own never get here: bolt's IgnoringSelfEvents dropped them (its user id or bot id)."""

    slack: SlackSide

    async def async_process(
        self, *, req: AsyncBoltRequest, resp: BoltResponse, next: Next
    ) -> BoltResponse | None:
        event = req.body.get("event") or {}
        mention = self.slack.mention
        by_a_person = not event.get("bot_id") and event.get("subtype") in PERSON_SUBTYPES
        if by_a_person and mention is not None and mention.search(event.get("text") or ""):
            return await next()
        return await req.context.ack()


@dataclass
class Once:
    """`run(work, asker)`: `work` as a task after the ack (`SlackAdapter.spawn`: a UserError becomes a reply
    only `asker` sees), done the first time the request's trigger_id is seen, across processes and restarts:
    the same signed request replayed within Slack's 5 minutes was acked, and is otherwise ignored (no job, no
    message). An event has no trigger_id: a message is made a job once by its channel and ts instead."""

    slack: SlackSide
    trigger: str

    def __call__(self, work: Coroutine[Any, Any, Any], asker: Privately | None = None) -> None:
        self.slack.spawn(self._first_time(work), asker)

    async def _first_time(self, work: Coroutine[Any, Any, Any]) -> None:
        try:
            first = not self.trigger or await self.slack.core.first_time(f"slack:trigger:{self.trigger}")
        except BaseException:
            work.close()  # the dedupe store could not answer (a database outage): no work, and no leak
            raise
        if not first:
            work.close()
            log.info("slack request replayed; ignored", extra={"trigger_id": self.trigger})
            return
        await work


def requester(body: dict[str, Any]) -> Requester | None:
    """Who sent a command, a click, a form or an event: workspace, channel, person (None: nobody we know)."""
    if "command" in body:
        return Requester(
            "slack",
            str(body.get("team_id") or ""),
            str(body.get("channel_id") or ""),
            str(body.get("user_id") or ""),
        )
    kind = body.get("type")
    if kind in ("block_actions", "view_submission"):
        return Requester("slack", team(body), channel(body), str(body["user"]["id"]))
    event = body.get("event") or {}
    if kind == "event_callback" and isinstance(event.get("user"), str):
        workspace = body.get("team_id") or body.get("context_team_id") or event.get("team") or ""
        return Requester("slack", str(workspace), str(event.get("channel") or ""), event["user"])
    return None


def team(body: dict[str, Any]) -> str:
    return str((body.get("team") or {}).get("id") or (body.get("user") or {}).get("team_id") or "")


def channel(body: dict[str, Any]) -> str:
    """A click's channel; a form's, the one our form carries."""
    if body.get("type") == "view_submission":
        return str(metadata(body).get("channel") or "")
    return str((body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id") or "")


def thread(body: dict[str, Any]) -> str | None:
    """The thread a request comes from: a click's message's, the one our form carries, a message's."""
    kind = body.get("type")
    if kind == "block_actions":
        return click_thread(body)
    if kind == "view_submission":
        return str(metadata(body).get("thread") or "") or None
    return (body.get("event") or {}).get("thread_ts") or None


def click_thread(body: dict[str, Any]) -> str | None:
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


def metadata(body: dict[str, Any]) -> dict[str, Any]:
    """What our form carries in its private_metadata: {"channel"}, and the Edit form's "key" and "thread"."""
    try:
        carried = json.loads((body.get("view") or {}).get("private_metadata") or "{}")
    except ValueError:
        return {}
    return carried if isinstance(carried, dict) else {}
