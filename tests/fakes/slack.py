"""A fake Slack on loopback that speaks Slack's real wire formats.

The real `slack_sdk.web.async_client.AsyncWebClient` and `slack_bolt.async_app.AsyncApp`
work against it unchanged when pointed at ``base_url=fake.api_url``. It plays both sides:

* the **Web API** (``/api/<method>``), the upload host, the private file host, response URLs
  and the Socket Mode websocket, recording every call in ``calls``;
* **Slack's outgoing requests**: signed slash commands, events, block actions (``press`` clicks a
  button of a posted or ephemeral message by its label) and modal submissions sent to the bot's
  ``/slack/events`` endpoint, and Socket Mode envelopes over the websocket.

Wire formats mirror what slack_sdk 3.48 / slack_bolt 1.30 send and expect (see the notes on each
handler); where Slack's behaviour is surprising, the fake copies the surprise.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import mimetypes
import re
import secrets
import struct
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientSession, ClientTimeout, WSCloseCode, WSMsgType, web

__all__ = ["FakeSlack", "RecordedCall", "UploadedFile"]

_DEFAULT_SCOPES = (
    "app_mentions:read,channels:history,chat:write,commands,files:read,files:write,"
    "groups:history,im:history,reactions:write,usergroups:read,users:read"
)

# Bot scopes a method needs beyond the token itself (only where the fake checks them): without one, Slack
# answers {"ok": false, "error": "missing_scope", "needed": ..., "provided": ...}.
_NEEDED_SCOPES = {"usergroups.users.list": "usergroups:read"}

# Block types a modal or a Home tab may carry (Slack's block reference, "Available in surfaces"); "file",
# "markdown" and "table" are for messages only.
_VIEW_BLOCK_TYPES = frozenset(
    {"actions", "context", "divider", "header", "image", "input", "rich_text", "section", "video"}
)
_VIEW_MAX_BYTES = 250 * 1024  # views.publish: view_too_large over 250kb


@dataclass
class RecordedCall:
    """One request the fake received (Web API method or one of its side hosts)."""

    method: str
    args: dict[str, Any]
    headers: dict[str, str]
    at: float
    status: int = 200
    # For a method in `hold_until_answered`: "answered" if it was released because every request the fake
    # sent to the bot had been answered, "timeout" if `hold_timeout` ran out first.
    held: str = ""


@dataclass
class UploadedFile:
    """A file uploaded with files.getUploadURLExternal + upload + files.completeUploadExternal."""

    id: str
    name: str
    title: str
    bytes: bytes
    channel_id: str | None
    thread_ts: str | None
    initial_comment: str | None
    mimetype: str = ""
    message_ts: str | None = None
    file: dict[str, Any] = field(default_factory=dict)


class _ApiError(Exception):
    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


def _title_case(name: str) -> str:
    return "-".join(part.capitalize() for part in name.split("-"))


def _headers(request: web.Request) -> dict[str, str]:
    # Keys normalised to Title-Case ("Authorization", "X-Slack-Retry-Num") so lookups are predictable.
    return {_title_case(k): v for k, v in request.headers.items()}


def _jsonish(value: Any) -> Any:
    """Form-encoded bodies carry blocks/attachments as JSON strings; JSON bodies carry lists."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _truthy(value: Any) -> bool:
    return value in (True, 1, "1", "true", "True")


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return w, h
    return None


def _rich_text(text: str) -> list[dict[str, Any]]:
    """The rich_text block Slack attaches to a user's message; `<@U..>` becomes a user element."""
    elements: list[dict[str, Any]] = []
    rest = text
    while rest:
        start = rest.find("<@")
        end = rest.find(">", start) if start >= 0 else -1
        if start < 0 or end < 0:
            elements.append({"type": "text", "text": rest})
            break
        if start:
            elements.append({"type": "text", "text": rest[:start]})
        elements.append({"type": "user", "user_id": rest[start + 2 : end]})
        rest = rest[end + 1 :]
    return [
        {
            "type": "rich_text",
            "block_id": secrets.token_hex(3),
            "elements": [{"type": "rich_text_section", "elements": elements}],
        }
    ]


class FakeSlack:
    """A Slack workspace with one bot, served by aiohttp on 127.0.0.1."""

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-test-token",
        signing_secret: str = "test-signing-secret",
        app_token: str = "xapp-test",
        team_id: str = "T0001",
        bot_user_id: str = "UBOT",
        bot_id: str = "BBOT",
    ) -> None:
        self.bot_token = bot_token
        self.signing_secret = signing_secret
        self.app_token = app_token
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.app_id = "A0FAKEAPP"
        self.team_domain = "fake-team"
        self.team_name = "Fake Team"
        self.verification_token = "fake-verification-token"
        self.bot_scopes = _DEFAULT_SCOPES

        self.api_url = ""
        self.host_url = ""
        self.calls: list[RecordedCall] = []
        self.messages: dict[str, list[dict[str, Any]]] = {}
        self.uploaded: list[UploadedFile] = []
        self.ephemerals: list[dict[str, Any]] = []
        self.response_posts: list[dict[str, Any]] = []
        self.admins: set[str] = set()
        # Users whose home workspace is another one (Slack Connect): users.info answers with that team_id,
        # and their is_admin/is_owner are about that workspace, not this one.
        self.home_teams: dict[str, str] = {}
        self.owners: set[str] = set()
        # Each user's Slack language (users.info answers it as `locale` only when asked with include_locale,
        # as Slack does); a user not listed is en-US.
        self.locales: dict[str, str] = {}
        # method -> how its next call(s) fail: {"error": ..., "status": ..., "retry_after": ..., "times": N},
        # or {"drop": True}: close the connection without an answer (the client sees a broken connection).
        self.fail_next: dict[str, dict[str, Any]] = {}
        # Every request the fake sent to the bot: (url, body, headers), for replay().
        self.sent_to_bot: list[tuple[str, bytes, dict[str, str]]] = []
        # Web API methods (and "response_url") answered only once every request the fake sent to the bot (a
        # command, an event, a click, a form) has been answered: a bot that calls one of them before its ack is
        # seen waiting (ordering tests).
        self.hold_until_answered: set[str] = set()
        self.hold_timeout: float = 5.0
        self.files: dict[str, dict[str, Any]] = {}
        self.deleted_files: list[UploadedFile] = []  # bot uploads removed with files.delete, in order
        # Modals opened with views.open: view id -> {"view": the view object, "user": who it opened for,
        # "closed": whether a submission closed it}.
        self.views: dict[str, dict[str, Any]] = {}
        # Home tabs published with views.publish: user id -> the view object Slack answered (see home_view).
        self.home_views: dict[str, dict[str, Any]] = {}
        # False reproduces an app whose Home tab is not enabled: views.publish answers not_enabled.
        self.home_tab_enabled = True
        # User groups (add_usergroup): id ("S0123ABC") -> {"id", "handle", "users"}.
        self.usergroups: dict[str, dict[str, Any]] = {}
        # A trigger_id is good for one views.open within this many seconds of the interaction (Slack: 3).
        self.trigger_ttl: float = 3.0
        self.channel_names: dict[str, str] = {}
        self.socket_acks: list[dict[str, Any]] = []
        # Slack shares a completed upload into the channel asynchronously; > 0 reproduces the lag.
        self.share_delay: float = 0.0
        # What files-pri answers without the bot token: "redirect" (302 to sign-in, as Slack does
        # when no token is sent) or "forbidden" (403).
        self.unauthorized_download: str = "redirect"
        self.response_url_max_posts = 5
        # The slash commands the app's manifest declares (None: any). Slack sends only those: a command the
        # manifest lacks never reaches the app (send_slash_command refuses to send it).
        self.slash_commands: set[str] | None = None

        self._file_bytes: dict[str, bytes] = {}
        self._pending_uploads: dict[str, dict[str, Any]] = {}
        self._upload_keys: dict[str, str] = {}
        self._response_urls: dict[str, dict[str, Any]] = {}
        self._tickets: set[str] = set()
        self._triggers: dict[str, dict[str, Any]] = {}  # trigger_id -> {"at", "user", "used"}
        self._gone: set[str] = set()  # ids of deleted files (files.info then answers file_deleted)
        self._sockets: list[web.WebSocketResponse] = []
        self._acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._last_us = 0
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._to_bot = 0  # requests sent to the bot over HTTP and not answered yet

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        app = web.Application(client_max_size=200 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_post("/upload/v1/{key}", self._handle_upload)
        app.router.add_get("/files-pri/{rest:.*}", self._handle_download)
        app.router.add_get("/signin", self._handle_signin)
        app.router.add_post("/commands/{team}/{n}/{key}", self._handle_response_url)
        app.router.add_post("/actions/{team}/{n}/{key}", self._handle_response_url)
        app.router.add_get("/link/", self._handle_socket)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.host_url = f"http://127.0.0.1:{port}"
        self.api_url = f"{self.host_url}/api/"
        self._session = ClientSession(timeout=ClientTimeout(total=30))

    async def stop(self) -> None:
        for fut in self._acks.values():
            if not fut.done():
                fut.cancel()
        for task in list(self._tasks):
            task.cancel()
        for ws in list(self._sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server stopping")
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeSlack:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ inspection

    def calls_to(self, method: str) -> list[RecordedCall]:
        return [c for c in self.calls if c.method == method]

    async def wait_for(self, method: str, count: int = 1, timeout: float = 10) -> list[RecordedCall]:  # noqa: ASYNC109
        """Wait until `method` was called `count` times (state is updated before a call is recorded)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.calls_to(method)
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                seen = [c.method for c in self.calls]
                raise TimeoutError(
                    f"{method} called {len(found)}/{count} times within {timeout}s; calls: {seen}"
                )
            await asyncio.sleep(0.01)

    def home_view(self, user_id: str) -> dict[str, Any] | None:
        """The Home tab view last published for `user_id` with views.publish (as Slack answered it), or None."""
        view = self.home_views.get(user_id)
        return json.loads(json.dumps(view)) if view is not None else None

    def thread(self, channel: str, ts: str) -> list[dict[str, Any]]:
        """The parent message and its replies, in order (what conversations.replies returns)."""
        parent = self._find(channel, ts)
        if parent is None:
            return []
        root = parent.get("thread_ts") or parent["ts"]
        return [m for m in self.messages.get(channel, []) if m["ts"] == root or m.get("thread_ts") == root]

    # ------------------------------------------------------------------ ids and storage

    def _next_ts(self) -> str:
        us = max(time.time_ns() // 1000, self._last_us + 1)
        self._last_us = us
        return f"{us // 1_000_000}.{us % 1_000_000:06d}"

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}0FAKE{next(self._ids):05d}"

    def _find(self, channel: str, ts: str) -> dict[str, Any] | None:
        for msg in self.messages.get(channel, []):
            if msg["ts"] == ts:
                return msg
        return None

    def _store(self, channel: str, msg: dict[str, Any]) -> None:
        """Store a message, keeping ts order and the parent's reply metadata up to date."""
        msgs = self.messages.setdefault(channel, [])
        msgs.append(msg)
        msgs.sort(key=lambda m: m["ts"])
        thread_ts = msg.get("thread_ts")
        if thread_ts and thread_ts != msg["ts"]:
            parent = self._find(channel, thread_ts)
            if parent is not None:
                msg.setdefault("parent_user_id", parent.get("user"))
                replies = [m for m in msgs if m.get("thread_ts") == thread_ts and m["ts"] != thread_ts]
                users = list(dict.fromkeys(m.get("user") for m in replies if m.get("user")))
                parent.update(
                    thread_ts=thread_ts,
                    reply_count=len(replies),
                    reply_users=users,
                    reply_users_count=len(users),
                    latest_reply=replies[-1]["ts"],
                )

    def _bot_message(self, text: str, blocks: Any, thread_ts: str | None) -> dict[str, Any]:
        msg: dict[str, Any] = {
            "user": self.bot_user_id,
            "type": "message",
            "ts": self._next_ts(),
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "text": text,
            "team": self.team_id,
            "bot_profile": {
                "id": self.bot_id,
                "app_id": self.app_id,
                "name": "imagebot",
                "deleted": False,
                "team_id": self.team_id,
            },
        }
        if blocks:
            msg["blocks"] = blocks
        if thread_ts:
            msg["thread_ts"] = thread_ts
        return msg

    def _channel_name(self, channel: str) -> str:
        return self.channel_names.get(channel, "general" if channel == "C1" else channel.lower())

    # ------------------------------------------------------------------ files

    def _file_object(
        self, file_id: str, *, name: str, title: str, mimetype: str, filetype: str, data: bytes, user: str
    ) -> dict[str, Any]:
        quoted = urllib.parse.quote(name)
        now = int(time.time())
        obj: dict[str, Any] = {
            "id": file_id,
            "created": now,
            "timestamp": now,
            "name": name,
            "title": title,
            "mimetype": mimetype,
            "filetype": filetype,
            "pretty_type": filetype.upper(),
            "user": user,
            "user_team": self.team_id,
            "editable": False,
            "size": len(data),
            "mode": "hosted",
            "is_external": False,
            "external_type": "",
            "is_public": False,
            "public_url_shared": False,
            "display_as_bot": False,
            "username": "",
            "url_private": f"{self.host_url}/files-pri/{self.team_id}-{file_id}/{quoted}",
            "url_private_download": f"{self.host_url}/files-pri/{self.team_id}-{file_id}/download/{quoted}",
            "permalink": f"{self.host_url}/files/{user}/{file_id}/{quoted}",
            "permalink_public": f"{self.host_url}/{self.team_id}-{file_id}-{secrets.token_hex(5)}",
            "is_starred": False,
            "has_rich_preview": False,
            "file_access": "visible",
            "channels": [],
            "groups": [],
            "ims": [],
            "shares": {},
            "comments_count": 0,
        }
        size = _png_size(data)
        if size is not None:
            obj["original_w"], obj["original_h"] = size
        return obj

    def add_file(
        self, *, name: str, data: bytes, mimetype: str, filetype: str, user: str = "U1"
    ) -> dict[str, Any]:
        """Host a private file (as if a user uploaded it) and return its Slack file object."""
        file_id = self._new_id("F")
        obj = self._file_object(
            file_id, name=name, title=name, mimetype=mimetype, filetype=filetype, data=data, user=user
        )
        self.files[file_id] = obj
        self._file_bytes[file_id] = data
        return dict(obj)

    def add_usergroup(self, group_id: str, users: list[str], handle: str | None = None) -> dict[str, Any]:
        """Create a user group (ids look like "S0123ABC"), or replace the members (and handle, if given) of an
        existing one; usergroups.users.list answers with `users` from then on."""
        group = self.usergroups.get(group_id)
        if group is None:
            group = self.usergroups[group_id] = {"id": group_id, "handle": handle or group_id.lower()}
        elif handle is not None:
            group["handle"] = handle
        group["users"] = list(users)
        return dict(group)

    def usergroup_mention(self, group_id: str) -> str:
        """How Slack writes a mention of the group in message and slash command text: <!subteam^S123|@handle>."""
        return f"<!subteam^{group_id}|@{self.usergroups[group_id]['handle']}>"

    # ------------------------------------------------------------------ recording and failures

    def _record(
        self, method: str, args: dict[str, Any], headers: dict[str, str], at: float, status: int
    ) -> RecordedCall:
        call = RecordedCall(method=method, args=args, headers=headers, at=at, status=status)
        self.calls.append(call)
        return call

    def _take_failure(self, method: str) -> dict[str, Any] | None:
        fail = self.fail_next.get(method)
        if fail is None:
            return None
        times = int(fail.get("times", 1))
        if times <= 1:
            del self.fail_next[method]
        else:
            self.fail_next[method] = {**fail, "times": times - 1}
        return fail

    def _dropped(
        self, request: web.Request, method: str, args: dict[str, Any], headers: dict[str, str], at: float
    ) -> web.Response:
        """Close the connection without an answer (recorded with status 0)."""
        self._record(method, args, headers, at, 0)
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=500)  # never written: the connection is gone

    async def _hold(self, method: str) -> str:
        """Wait until every request sent to the bot has been answered; "answered", or "timeout"."""
        if method not in self.hold_until_answered:
            return ""
        deadline = time.monotonic() + self.hold_timeout
        while self._to_bot:
            if time.monotonic() >= deadline:
                return "timeout"
            await asyncio.sleep(0.005)
        return "answered"

    @staticmethod
    def _failure_response(fail: dict[str, Any]) -> web.Response:
        status = int(fail.get("status", 200))
        error = fail.get("error") or ("ratelimited" if status == 429 else "fatal_error")
        headers = {}
        if status == 429 or "retry_after" in fail:
            headers["Retry-After"] = str(fail.get("retry_after", 1))
        return web.json_response({"ok": False, "error": error}, status=status, headers=headers)

    # ------------------------------------------------------------------ Web API

    @staticmethod
    async def _read_args(request: web.Request) -> dict[str, Any]:
        # slack_sdk sends chat.postMessage/update/postEphemeral as JSON, but auth.test,
        # chat.delete, files.*External and apps.connections.open as an (empty-bodied) POST with the
        # arguments in the QUERY STRING, and conversations.replies/users.info/files.info as GET.
        args: dict[str, Any] = dict(request.query.items())
        if request.method == "POST" and request.body_exists:
            ctype = request.content_type
            if ctype == "application/json":
                raw = await request.read()
                body = json.loads(raw) if raw else {}
                if isinstance(body, dict):
                    args.update(body)
            elif ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
                form = await request.post()
                for k, v in form.items():
                    args[k] = v.file.read() if isinstance(v, web.FileField) else v
        return args

    def _check_auth(self, method: str, args: dict[str, Any], headers: dict[str, str]) -> str | None:
        auth = headers.get("Authorization", "")
        token = auth[7:].strip() if auth.startswith("Bearer ") else args.get("token")
        if not token:
            return "not_authed"
        wanted = self.app_token if method == "apps.connections.open" else self.bot_token
        if token == wanted:
            return None
        if token in (self.app_token, self.bot_token):
            return "not_allowed_token_type"
        return "invalid_auth"

    async def _handle_api(self, request: web.Request) -> web.Response:
        at = time.monotonic()
        method = request.match_info["method"]
        args = await self._read_args(request)
        headers = _headers(request)
        held = await self._hold(method)
        fail = self._take_failure(method)
        if fail is not None and fail.get("drop"):
            return self._dropped(request, method, args, headers, at)
        if fail is not None:
            resp = self._failure_response(fail)
            self._record(method, args, headers, at, resp.status).held = held
            return resp
        error = self._check_auth(method, args, headers)
        needed = _NEEDED_SCOPES.get(method)
        if error is not None:
            body: dict[str, Any] = {"ok": False, "error": error}
        elif needed and needed not in self.bot_scopes.split(","):
            body = {"ok": False, "error": "missing_scope", "needed": needed, "provided": self.bot_scopes}
        else:
            handler = self._methods.get(method)
            if handler is None:
                body = {"ok": False, "error": "unknown_method", "req_method": method}
            else:
                try:
                    body = {"ok": True, **handler(self, args)}
                except _ApiError as e:
                    body = {"ok": False, "error": e.error, **e.extra}
        self._record(method, args, headers, at, 200).held = held
        # Slack answers ok:false with HTTP 200; only rate limits use a non-200 status.
        return web.json_response(
            body,
            headers={"X-OAuth-Scopes": self.bot_scopes, "X-Accepted-OAuth-Scopes": ""},
        )

    def _m_auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": f"https://{self.team_domain}.slack.com/",
            "team": self.team_name,
            "user": "imagebot",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _resolve_channel(self, args: dict[str, Any]) -> str:
        channel = args.get("channel")
        if not channel:
            raise _ApiError("channel_not_found")
        if channel[0] in "UW":  # posting to a user id opens/uses the DM with them
            return "D" + channel[1:]
        return channel

    def _m_chat_post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve_channel(args)
        text = args.get("text") or ""
        blocks = _jsonish(args.get("blocks"))
        if not text and not blocks and not _jsonish(args.get("attachments")):
            raise _ApiError("no_text")
        msg = self._bot_message(text, blocks, args.get("thread_ts") or None)
        if _truthy(args.get("reply_broadcast")) and msg.get("thread_ts"):
            msg["subtype"] = "thread_broadcast"
        metadata = _jsonish(args.get("metadata"))
        if metadata:
            msg["metadata"] = metadata
        self._store(channel, msg)
        return {"channel": channel, "ts": msg["ts"], "message": dict(msg)}

    def _own_message(self, args: dict[str, Any], refusal: str) -> tuple[str, str, dict[str, Any]]:
        """(channel, ts, message) for a call on one of the bot's own messages; Slack's errors otherwise."""
        channel = self._resolve_channel(args)
        ts = args.get("ts")
        msg = self._find(channel, ts) if ts else None
        if msg is None:
            raise _ApiError("message_not_found")
        if msg.get("bot_id") != self.bot_id and msg.get("user") != self.bot_user_id:
            raise _ApiError(refusal)
        return channel, str(ts), msg

    def _m_chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts, msg = self._own_message(args, "cant_update_message")
        if "text" in args and args["text"] is not None:
            msg["text"] = args["text"]
        blocks = _jsonish(args.get("blocks"))
        if blocks is not None:  # omitted blocks are kept; [] removes them
            if blocks:
                msg["blocks"] = blocks
            else:
                msg.pop("blocks", None)
        msg["edited"] = {"user": self.bot_user_id, "ts": self._next_ts()}
        return {"channel": channel, "ts": ts, "text": msg["text"], "message": dict(msg)}

    def _m_chat_post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve_channel(args)
        if not args.get("user"):
            raise _ApiError("user_not_found")
        text = args.get("text") or ""
        blocks = _jsonish(args.get("blocks"))
        if not text and not blocks and not _jsonish(args.get("attachments")):
            raise _ApiError("no_text")
        for block in blocks or []:
            file_id = ((block or {}).get("slack_file") or {}).get("id") if isinstance(block, dict) else None
            if (
                block.get("type") == "image"
                and file_id is not None
                and (file_id not in self.files or file_id in self._gone)
            ):
                raise _ApiError(
                    "invalid_blocks", response_metadata={"messages": [f"[ERROR] no file {file_id}"]}
                )
        ts = self._next_ts()
        self.ephemerals.append(
            {
                "source": "chat.postEphemeral",
                "channel": channel,
                "user": args["user"],
                "text": text,
                "blocks": blocks,
                "thread_ts": args.get("thread_ts"),
                "message_ts": ts,
            }
        )
        return {"message_ts": ts}

    def _m_chat_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts, msg = self._own_message(args, "cant_delete_message")
        self.messages[channel].remove(msg)
        return {"channel": channel, "ts": ts}

    def _m_conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = args.get("channel")
        if not channel or channel not in self.messages:
            raise _ApiError("channel_not_found")
        ts = args.get("ts")
        if not ts:
            raise _ApiError("invalid_arguments")
        thread = self.thread(channel, ts)
        if not thread:
            raise _ApiError("thread_not_found")
        return self._page(thread, args)

    def _m_conversations_history(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = args.get("channel")
        if not channel or channel not in self.messages:
            raise _ApiError("channel_not_found")
        top = [
            m
            for m in self.messages[channel]
            if m.get("thread_ts") in (None, m["ts"]) or m.get("subtype") == "thread_broadcast"
        ]
        return self._page(list(reversed(top)), args)

    @staticmethod
    def _page(items: list[dict[str, Any]], args: dict[str, Any]) -> dict[str, Any]:
        limit = int(args.get("limit") or 1000)
        cursor = str(args.get("cursor") or "")
        start = int(cursor[4:]) if cursor.startswith("idx_") else 0
        page = items[start : start + limit]
        more = start + limit < len(items)
        return {
            "messages": [dict(m) for m in page],
            "has_more": more,
            "response_metadata": {"next_cursor": f"idx_{start + limit}" if more else ""},
        }

    def _m_users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = args.get("user")
        if not user:
            raise _ApiError("user_not_found")
        is_bot = user == self.bot_user_id
        name = "imagebot" if is_bot else f"user{user.lower()}"
        return {
            "user": {
                "id": user,
                "team_id": self.home_teams.get(user, self.team_id),
                "name": name,
                "deleted": False,
                "real_name": name.title(),
                "tz": "Europe/Paris",
                "tz_offset": 3600,
                "profile": {"real_name": name.title(), "display_name": name, "team": self.team_id},
                "is_admin": user in self.admins or user in self.owners,
                "is_owner": user in self.owners,
                "is_primary_owner": False,
                "is_restricted": False,
                "is_ultra_restricted": False,
                "is_bot": is_bot,
                "is_app_user": False,
                "updated": int(time.time()),
                # Slack adds the user's locale only when asked (users.info include_locale=true).
                **(
                    {"locale": self.locales.get(user, "en-US")} if _truthy(args.get("include_locale")) else {}
                ),
            }
        }

    def _m_files_get_upload_url_external(self, args: dict[str, Any]) -> dict[str, Any]:
        filename = args.get("filename")
        length = args.get("length")
        if not filename or length in (None, ""):
            raise _ApiError("invalid_arguments")
        file_id = self._new_id("F")
        key = f"{self.team_id}-{file_id}-{secrets.token_hex(8)}"
        self._upload_keys[key] = file_id
        self._pending_uploads[file_id] = {
            "filename": filename,
            "length": int(length),
            "alt_txt": args.get("alt_txt"),
            "bytes": None,
        }
        return {"upload_url": f"{self.host_url}/upload/v1/{key}", "file_id": file_id}

    def _m_files_complete_upload_external(self, args: dict[str, Any]) -> dict[str, Any]:
        entries = _jsonish(args.get("files"))
        if not isinstance(entries, list) or not entries:
            raise _ApiError("invalid_arguments")
        channel = args.get("channel_id") or (str(args.get("channels") or "").split(",")[0] or None)
        thread_ts = args.get("thread_ts") or None
        comment = args.get("initial_comment") or None
        objs = []
        for entry in entries:
            pending = self._pending_uploads.get(entry.get("id", ""))
            if pending is None or pending["bytes"] is None:
                raise _ApiError("file_not_found")
        for entry in entries:
            file_id = entry["id"]
            pending = self._pending_uploads.pop(file_id)
            name = pending["filename"]
            data: bytes = pending["bytes"]
            mimetype = mimetypes.guess_type(name)[0] or "application/octet-stream"
            filetype = name.rsplit(".", 1)[-1].lower() if "." in name else "binary"
            obj = self._file_object(
                file_id,
                name=name,
                title=entry.get("title") or name,
                mimetype=mimetype,
                filetype=filetype,
                data=data,
                user=self.bot_user_id,
            )
            if pending.get("alt_txt"):
                obj["alt_txt"] = pending["alt_txt"]
            self.files[file_id] = obj
            self._file_bytes[file_id] = data
            objs.append(obj)
            # In the dataclass's order: id, name, title, bytes, channel, thread, comment, mimetype.
            upload = UploadedFile(file_id, name, obj["title"], data, channel, thread_ts, comment, mimetype)
            upload.file = obj
            self.uploaded.append(upload)
        if channel:
            if self.share_delay > 0:
                loop = asyncio.get_running_loop()
                task = loop.create_task(self._share_later(channel, thread_ts, comment, objs))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                self._share(channel, thread_ts, comment, objs)
        return {"files": [dict(o) for o in objs]}

    async def _share_later(
        self, channel: str, thread_ts: str | None, comment: str | None, objs: list[dict[str, Any]]
    ) -> None:
        await asyncio.sleep(self.share_delay)
        self._share(channel, thread_ts, comment, objs)

    def _share(
        self, channel: str, thread_ts: str | None, comment: str | None, objs: list[dict[str, Any]]
    ) -> None:
        """Post the bot's file message (text = initial_comment) and record the share on each file."""
        msg: dict[str, Any] = {
            "type": "message",
            "text": comment or "",
            "files": [],
            "upload": True,
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "display_as_bot": False,
            "ts": self._next_ts(),
            "team": self.team_id,
        }
        if thread_ts:
            msg["thread_ts"] = thread_ts
        share_kind = "public" if channel.startswith("C") else "private"
        for obj in objs:
            share = {
                "reply_users": [],
                "reply_users_count": 0,
                "reply_count": 0,
                "ts": msg["ts"],
                "channel_name": self._channel_name(channel),
                "team_id": self.team_id,
                "share_user_id": self.bot_user_id,
            }
            if thread_ts:
                share["thread_ts"] = thread_ts
            obj["shares"].setdefault(share_kind, {}).setdefault(channel, []).append(share)
            key = {"C": "channels", "G": "groups", "D": "ims"}.get(channel[0], "channels")
            obj[key].append(channel)
            obj["is_public"] = share_kind == "public"
            msg["files"].append({k: v for k, v in obj.items() if k != "shares"})
        self._store(channel, msg)
        for up in self.uploaded:
            if any(up.id == o["id"] for o in objs):
                up.message_ts = msg["ts"]

    def _file(self, file_id: str) -> dict[str, Any]:
        """A stored file, or Slack's error for one deleted or never uploaded."""
        if file_id in self._gone:
            raise _ApiError("file_deleted")
        obj = self.files.get(file_id)
        if obj is None:
            raise _ApiError("file_not_found")
        return obj

    def _m_files_info(self, args: dict[str, Any]) -> dict[str, Any]:
        obj = self._file(args.get("file") or "")
        return {"file": dict(obj), "comments": [], "response_metadata": {"next_cursor": ""}}

    def _m_files_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        """A bot token may delete the files its bot uploaded; the file's messages keep a tombstone."""
        file_id = args.get("file") or ""
        obj = self._file(file_id)
        if obj.get("user") != self.bot_user_id:
            raise _ApiError("cant_delete_file")
        del self.files[file_id]
        self._file_bytes.pop(file_id, None)
        self._gone.add(file_id)
        self.deleted_files += [u for u in self.uploaded if u.id == file_id]
        self.uploaded = [u for u in self.uploaded if u.id != file_id]
        for msgs in self.messages.values():
            for msg in msgs:
                if any(f.get("id") == file_id for f in msg.get("files") or []):
                    msg["files"] = [
                        {"id": file_id, "mode": "tombstone"} if f.get("id") == file_id else f
                        for f in msg["files"]
                    ]
        return {}

    def _m_views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        """Open a modal for the user whose interaction gave `trigger_id` (once, within `trigger_ttl` s)."""
        trigger_id = args.get("trigger_id") or ""
        trigger = self._triggers.get(trigger_id)
        if trigger is None:
            raise _ApiError("invalid_trigger_id")
        if trigger["used"]:
            raise _ApiError("exchanged_trigger_id")
        if time.monotonic() - trigger["at"] > self.trigger_ttl:
            raise _ApiError("expired_trigger_id")
        view = _jsonish(args.get("view"))
        problems = self._view_problems(view)
        if problems:
            raise _ApiError("invalid_arguments", response_metadata={"messages": problems})
        trigger["used"] = True
        view_id = self._new_id("V")
        blocks = [dict(b) for b in view.get("blocks") or []]
        for block in blocks:
            block.setdefault("block_id", secrets.token_hex(3))
        obj: dict[str, Any] = {
            "id": view_id,
            "team_id": self.team_id,
            "type": view["type"],
            "title": view["title"],
            "submit": view.get("submit"),
            "close": view.get("close"),
            "blocks": blocks,
            "private_metadata": view.get("private_metadata") or "",
            "callback_id": view.get("callback_id") or "",
            "state": {"values": {}},
            "hash": f"{int(time.time())}.{secrets.token_hex(4)}",
            "clear_on_close": bool(view.get("clear_on_close")),
            "notify_on_close": bool(view.get("notify_on_close")),
            "root_view_id": view_id,
            "previous_view_id": None,
            "app_id": self.app_id,
            "external_id": view.get("external_id") or "",
            "app_installed_team_id": self.team_id,
            "bot_id": self.bot_id,
        }
        self.views[view_id] = {"view": obj, "user": trigger["user"], "closed": False}
        return {"view": dict(obj)}

    @classmethod
    def _view_problems(cls, view: Any, surface: str = "modal") -> list[str]:
        """What Slack would reject in a modal (views.open) or a Home tab (views.publish): a few of its rules."""
        if not isinstance(view, dict):
            return ["[ERROR] view must be a JSON object"]
        problems = []
        if view.get("type") != surface:
            problems.append(f"[ERROR] must be a {surface} [json-pointer:/view/type]")
        if surface == "modal":
            title = (view.get("title") or {}).get("text") or ""
            if not title or len(title) > 24:
                problems.append("[ERROR] title must be 1-24 characters [json-pointer:/view/title/text]")
        if len(view.get("private_metadata") or "") > 3000:
            problems.append(
                "[ERROR] private_metadata over 3000 characters [json-pointer:/view/private_metadata]"
            )
        if len(view.get("callback_id") or "") > 255:
            problems.append("[ERROR] must be less than 256 characters [json-pointer:/view/callback_id]")
        blocks = view.get("blocks")
        if surface == "modal" and (not isinstance(blocks, list) or not 1 <= len(blocks) <= 100):
            problems.append("[ERROR] a modal has 1-100 blocks [json-pointer:/view/blocks]")
        elif not isinstance(blocks, list):
            problems.append("[ERROR] missing required field: blocks [json-pointer:/view/blocks]")
        elif len(blocks) > 100:
            problems.append("[ERROR] no more than 100 items allowed [json-pointer:/view/blocks]")
        elif (
            surface == "modal"
            and any(isinstance(b, dict) and b.get("type") == "input" for b in blocks)
            and not view.get("submit")
        ):
            problems.append("[ERROR] a modal with inputs needs submit [json-pointer:/view/submit]")
        if isinstance(blocks, list):
            problems += cls._block_problems(blocks)
        return problems

    @staticmethod
    def _block_problems(blocks: list[Any]) -> list[str]:
        """Slack's Block Kit limits for the blocks of a view (types, lengths, counts, unique block ids)."""
        problems: list[str] = []
        seen: set[str] = set()

        def text_of(obj: Any) -> str:
            return str(obj.get("text") or "") if isinstance(obj, dict) else ""

        for i, block in enumerate(blocks):
            at = f"/view/blocks/{i}"
            if not isinstance(block, dict) or block.get("type") not in _VIEW_BLOCK_TYPES:
                problems.append(f"[ERROR] failed to match all allowed schemas [json-pointer:{at}]")
                continue
            kind = block["type"]
            block_id = block.get("block_id")
            if block_id is not None:
                if not 1 <= len(str(block_id)) <= 255:
                    problems.append(f"[ERROR] must be less than 256 characters [json-pointer:{at}/block_id]")
                if block_id in seen:
                    problems.append(f"[ERROR] duplicate block_id [json-pointer:{at}/block_id]")
                seen.add(str(block_id))
            if kind == "section":
                text, fields = block.get("text"), block.get("fields")
                if not text and not fields:
                    problems.append(f"[ERROR] must provide either text or fields [json-pointer:{at}]")
                if len(text_of(text)) > 3000:
                    problems.append(
                        f"[ERROR] must be less than 3001 characters [json-pointer:{at}/text/text]"
                    )
                if isinstance(fields, list):
                    if len(fields) > 10:
                        problems.append(f"[ERROR] no more than 10 items allowed [json-pointer:{at}/fields]")
                    for f, item in enumerate(fields):
                        if len(text_of(item)) > 2000:
                            problems.append(
                                f"[ERROR] must be less than 2001 characters [json-pointer:{at}/fields/{f}/text]"
                            )
            elif kind == "header":
                text = block.get("text")
                if not isinstance(text, dict) or text.get("type") != "plain_text":
                    problems.append(f"[ERROR] must be a plain_text object [json-pointer:{at}/text]")
                elif not 1 <= len(text_of(text)) <= 150:
                    problems.append(f"[ERROR] must be less than 151 characters [json-pointer:{at}/text/text]")
            elif kind == "actions":
                elements = block.get("elements")
                if not isinstance(elements, list) or not 1 <= len(elements) <= 25:
                    problems.append(f"[ERROR] must provide 1-25 elements [json-pointer:{at}/elements]")
            elif kind == "context":
                elements = block.get("elements")
                if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                    problems.append(f"[ERROR] must provide 1-10 elements [json-pointer:{at}/elements]")
            elif kind == "input":
                if not isinstance(block.get("element"), dict):
                    problems.append(f"[ERROR] missing required field: element [json-pointer:{at}/element]")
                label = text_of(block.get("label"))
                if not 1 <= len(label) <= 2000:
                    problems.append(
                        f"[ERROR] must be less than 2001 characters [json-pointer:{at}/label/text]"
                    )
                element = block.get("element") or {}
                if isinstance(element, dict) and element.get("type") == "static_select":
                    options = element.get("options") or []
                    if not 1 <= len(options) <= 100:
                        problems.append(
                            f"[ERROR] must provide 1-100 options [json-pointer:{at}/element/options]"
                        )
                    initial = element.get("initial_option")
                    if initial is not None and initial not in options:
                        problems.append(
                            f"[ERROR] initial_option must match an option [json-pointer:{at}/element/initial_option]"
                        )
        return problems

    def _m_views_publish(self, args: dict[str, Any]) -> dict[str, Any]:
        """Publish the Home tab of `user_id`: validated like Slack, kept per user (home_view), answered with the
        view object. A `hash` that is not the current view's is a hash_conflict (a concurrent update won)."""
        user_id = args.get("user_id") or ""
        raw = args.get("view")
        if not user_id or raw in (None, ""):
            missing = "user_id" if not user_id else "view"
            raise _ApiError(
                "invalid_arguments",
                response_metadata={"messages": [f"[ERROR] missing required field: {missing}"]},
            )
        view = _jsonish(raw)
        if len(json.dumps(view).encode()) > _VIEW_MAX_BYTES:
            raise _ApiError("view_too_large")
        problems = self._view_problems(view, "home")
        if problems:
            raise _ApiError("invalid_arguments", response_metadata={"messages": problems})
        if not self.home_tab_enabled:
            raise _ApiError("not_enabled")
        current = self.home_views.get(user_id)
        if args.get("hash") and current is not None and args["hash"] != current["hash"]:
            raise _ApiError("hash_conflict")
        external_id = view.get("external_id") or ""
        if external_id:
            taken = [v for u, v in self.home_views.items() if u != user_id] + [
                o["view"] for o in self.views.values()
            ]
            if any(v.get("external_id") == external_id for v in taken):
                raise _ApiError("duplicate_external_id")
        # A user's Home tab keeps its view id across publishes; each publish gets a new hash.
        view_id = current["id"] if current is not None else self._new_id("V")
        blocks = [dict(b) for b in view["blocks"]]
        for block in blocks:
            block.setdefault("block_id", secrets.token_hex(3))
        obj: dict[str, Any] = {
            "id": view_id,
            "team_id": self.team_id,
            "type": "home",
            "close": None,
            "submit": None,
            "blocks": blocks,
            "private_metadata": view.get("private_metadata") or "",
            "callback_id": view.get("callback_id") or "",
            "state": {"values": {}},
            "hash": f"{int(time.time())}.{secrets.token_hex(4)}",
            "clear_on_close": False,
            "notify_on_close": False,
            "root_view_id": view_id,
            "previous_view_id": None,
            "app_id": self.app_id,
            "external_id": external_id,
            "app_installed_team_id": self.team_id,
            "bot_id": self.bot_id,
        }
        self.home_views[user_id] = obj
        return {"view": json.loads(json.dumps(obj))}

    def _m_usergroups_users_list(self, args: dict[str, Any]) -> dict[str, Any]:
        """The members of a user group (add_usergroup). `team_id` is ignored with a workspace token, as on
        Slack; `include_disabled` changes nothing here since the fake's groups are never disabled."""
        group_id = args.get("usergroup") or ""
        if not group_id:
            raise _ApiError(
                "invalid_arguments",
                response_metadata={"messages": ["[ERROR] missing required field: usergroup"]},
            )
        group = self.usergroups.get(group_id)
        if group is None:
            raise _ApiError("no_such_subteam")
        return {"users": list(group["users"])}

    def _m_reactions_add(self, args: dict[str, Any]) -> dict[str, Any]:
        msg = self._find(args.get("channel") or "", args.get("timestamp") or "")
        if msg is None:
            raise _ApiError("message_not_found")
        name = args.get("name") or ""
        reactions = msg.setdefault("reactions", [])
        for r in reactions:
            if r["name"] == name:
                if self.bot_user_id in r["users"]:
                    raise _ApiError("already_reacted")
                r["users"].append(self.bot_user_id)
                r["count"] += 1
                return {}
        reactions.append({"name": name, "users": [self.bot_user_id], "count": 1})
        return {}

    def _m_reactions_remove(self, args: dict[str, Any]) -> dict[str, Any]:
        msg = self._find(args.get("channel") or "", args.get("timestamp") or "")
        if msg is None:
            raise _ApiError("message_not_found")
        for r in msg.get("reactions", []):
            if r["name"] == args.get("name") and self.bot_user_id in r["users"]:
                r["users"].remove(self.bot_user_id)
                r["count"] -= 1
                if not r["count"]:
                    msg["reactions"].remove(r)
                return {}
        raise _ApiError("no_reaction")

    def _m_apps_connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        ticket = str(uuid.uuid4())
        self._tickets.add(ticket)
        ws_base = self.host_url.replace("http://", "ws://", 1)
        return {"url": f"{ws_base}/link/?ticket={ticket}&app_id={self.app_id}"}

    _methods = {
        "auth.test": _m_auth_test,
        "chat.postMessage": _m_chat_post_message,
        "chat.update": _m_chat_update,
        "chat.postEphemeral": _m_chat_post_ephemeral,
        "chat.delete": _m_chat_delete,
        "conversations.replies": _m_conversations_replies,
        "conversations.history": _m_conversations_history,
        "users.info": _m_users_info,
        "files.getUploadURLExternal": _m_files_get_upload_url_external,
        "files.completeUploadExternal": _m_files_complete_upload_external,
        "files.info": _m_files_info,
        "files.delete": _m_files_delete,
        "views.open": _m_views_open,
        "views.publish": _m_views_publish,
        "usergroups.users.list": _m_usergroups_users_list,
        "reactions.add": _m_reactions_add,
        "reactions.remove": _m_reactions_remove,
        "apps.connections.open": _m_apps_connections_open,
    }

    # ------------------------------------------------------------------ upload host

    async def _handle_upload(self, request: web.Request) -> web.Response:
        # slack_sdk's files_upload_v2 POSTs the raw bytes (no Authorization header, no multipart);
        # curl-style clients send multipart with a `file` field. Slack answers text/plain "OK - <size>".
        at = time.monotonic()
        headers = _headers(request)
        file_id = self._upload_keys.get(request.match_info["key"])
        if request.content_type == "multipart/form-data":
            form = await request.post()
            part = form.get("file") or next((v for v in form.values() if isinstance(v, web.FileField)), None)
            data = part.file.read() if isinstance(part, web.FileField) else str(part or "").encode()
        else:
            data = await request.read()
        args: dict[str, Any] = {"file_id": file_id, "size": len(data), **request.query}
        fail = self._take_failure("upload")
        if fail is not None and fail.get("drop"):
            return self._dropped(request, "upload", args, headers, at)
        if fail is not None:
            status = int(fail.get("status", 500))
            self._record("upload", args, headers, at, status)
            return web.Response(
                status=status, text=str(fail.get("error", "upload failed")), content_type="text/plain"
            )
        if file_id is None or file_id not in self._pending_uploads:
            self._record("upload", args, headers, at, 404)
            return web.Response(status=404, text="Not Found", content_type="text/plain")
        self._pending_uploads[file_id]["bytes"] = data
        self._record("upload", args, headers, at, 200)
        return web.Response(text=f"OK - {len(data)}", content_type="text/plain")

    # ------------------------------------------------------------------ private file host

    async def _handle_download(self, request: web.Request) -> web.StreamResponse:
        at = time.monotonic()
        headers = _headers(request)
        rest = request.match_info["rest"]
        prefix = rest.split("/", 1)[0]
        file_id = prefix.split("-", 1)[1] if "-" in prefix else ""
        args: dict[str, Any] = {"file_id": file_id, "path": request.path, **request.query}
        fail = self._take_failure("file_download")
        if fail is not None:
            resp = self._failure_response(fail)
            self._record("file_download", args, headers, at, resp.status)
            return resp
        if file_id not in self._file_bytes:
            self._record("file_download", args, headers, at, 404)
            return web.Response(status=404, text="File not found", content_type="text/html")
        if headers.get("Authorization", "") != f"Bearer {self.bot_token}":
            if self.unauthorized_download == "forbidden":
                self._record("file_download", args, headers, at, 403)
                return web.Response(status=403, text="Forbidden", content_type="text/html")
            # Slack sends unauthenticated requests to the workspace sign-in page, which answers
            # 200 text/html: a client that follows redirects "succeeds" with an HTML body.
            self._record("file_download", args, headers, at, 302)
            location = f"{self.host_url}/signin?redir={urllib.parse.quote(request.path_qs, safe='')}"
            return web.Response(status=302, headers={"Location": location})
        obj = self.files[file_id]
        self._record("file_download", args, headers, at, 200)
        disposition = "attachment" if "/download/" in rest else "inline"
        return web.Response(
            body=self._file_bytes[file_id],
            headers={
                "Content-Type": obj["mimetype"],
                "Content-Disposition": f'{disposition}; filename="{obj["name"]}"',
            },
        )

    async def _handle_signin(self, request: web.Request) -> web.Response:
        self._record("signin", dict(request.query), _headers(request), time.monotonic(), 200)
        html = (
            "<!DOCTYPE html><html><head><title>Slack</title></head>"
            f"<body><h1>Sign in to {self.team_name}</h1></body></html>"
        )
        return web.Response(text=html, content_type="text/html")

    # ------------------------------------------------------------------ response_url

    def response_url(
        self,
        *,
        channel_id: str | None = None,
        user_id: str | None = None,
        message_ts: str | None = None,
        kind: str = "commands",
    ) -> str:
        """A fresh response_url on the fake; `kind` is "commands" (slash) or "actions" (interactive)."""
        key = secrets.token_urlsafe(18)
        n = next(self._ids)
        self._response_urls[key] = {
            "channel": channel_id,
            "user": user_id,
            "message_ts": message_ts,
            "posts": 0,
        }
        return f"{self.host_url}/{kind}/{self.team_id}/{n}/{key}"

    def ephemeral(self, message_ts: str, user: str | None = None) -> dict[str, Any] | None:
        """The ephemeral message with this ts (shown to `user`, if given), as it is now."""
        for eph in self.ephemerals:
            if eph.get("message_ts") == message_ts and (user is None or eph["user"] == user):
                return eph
        return None

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        at = time.monotonic()
        headers = _headers(request)
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = dict(urllib.parse.parse_qsl(raw.decode()))
            body = _jsonish(body.get("payload")) if "payload" in body else body
        args = dict(body) if isinstance(body, dict) else {"body": body}
        url = str(request.url)
        info = self._response_urls.get(request.match_info["key"])
        held = await self._hold("response_url")
        fail = self._take_failure("response_url")
        if fail is not None:
            resp = self._failure_response(fail)
            self._record("response_url", args, headers, at, resp.status)
            return resp
        if info is None:
            self._record("response_url", args, headers, at, 404)
            return web.json_response({"ok": False, "error": "expired_url"}, status=404)
        if info["posts"] >= self.response_url_max_posts:
            self._record("response_url", args, headers, at, 404)
            return web.json_response({"ok": False, "error": "used_url"}, status=404)
        info["posts"] += 1
        channel, message_ts = info["channel"], info["message_ts"]
        self.response_posts.append({"url": url, **args})
        text = args.get("text") or ""
        blocks = _jsonish(args.get("blocks"))
        # A click on an ephemeral message: its response_url is the only way to change or remove it. Only the
        # user who sees an ephemeral can click it; a replace_original whose message this URL's user cannot see
        # (a forged click on someone else's) falls through to a new ephemeral for that user.
        eph = self.ephemeral(message_ts, info["user"]) if message_ts else None
        original = _truthy(args.get("delete_original")) or _truthy(args.get("replace_original"))
        if original and eph is not None:
            if _truthy(args.get("delete_original")):
                eph["deleted"] = True
            else:
                eph.setdefault("previous", []).append(eph["text"])
                eph["text"], eph["blocks"] = text, blocks
        elif _truthy(args.get("delete_original")) and channel and message_ts:
            msg = self._find(channel, message_ts)
            if msg is not None:
                self.messages[channel].remove(msg)
        elif (
            _truthy(args.get("replace_original"))
            and channel
            and message_ts
            and self._find(channel, message_ts)
        ):
            msg = self._find(channel, message_ts)
            if msg is not None:
                msg["text"] = text
                if blocks is not None:
                    msg["blocks"] = blocks
                msg["edited"] = {"user": self.bot_user_id, "ts": self._next_ts()}
        elif args.get("response_type") == "in_channel" and channel:
            thread_ts = args.get("thread_ts")
            self._store(channel, self._bot_message(text, blocks, thread_ts))
        else:  # response_url posts are ephemeral unless asked otherwise
            self.ephemerals.append(
                {
                    "source": "response_url",
                    "channel": channel,
                    "user": info["user"],
                    "text": text,
                    "blocks": blocks,
                    "thread_ts": args.get("thread_ts"),
                    "response_url": url,
                    "message_ts": self._next_ts(),
                }
            )
        self._record("response_url", args, headers, at, 200).held = held
        return web.json_response({"ok": True})

    # ------------------------------------------------------------------ payloads Slack sends

    def _trigger_id(self, user_id: str = "") -> str:
        """A fresh trigger_id for one interaction of `user_id` (views.open exchanges it, once)."""
        trigger_id = f"{next(self._ids)}.{int(time.time())}.{secrets.token_hex(16)}"
        self._triggers[trigger_id] = {"at": time.monotonic(), "user": user_id, "used": False}
        return trigger_id

    def slash_command_payload(
        self, *, command: str = "/imagine", text: str = "", user_id: str = "U1", channel_id: str = "C1"
    ) -> dict[str, str]:
        """The fields of a slash command, in Slack's order (form-encoded over HTTP, a dict over Socket Mode)."""
        if self.slash_commands is not None and command not in self.slash_commands:
            raise ValueError(f"Slack would not send {command}: the app's manifest does not declare it")
        return {
            "token": self.verification_token,
            "team_id": self.team_id,
            "team_domain": self.team_domain,
            "channel_id": channel_id,
            "channel_name": self._channel_name(channel_id),
            "user_id": user_id,
            "user_name": f"user{user_id.lower()}",
            "command": command,
            "text": text,
            "api_app_id": self.app_id,
            "is_enterprise_install": "false",
            "response_url": self.response_url(channel_id=channel_id, user_id=user_id),
            "trigger_id": self._trigger_id(user_id),
        }

    def event_envelope(self, event: dict[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
        """The event_callback wrapper the Events API (and Socket Mode's events_api payload) uses."""
        return {
            "token": self.verification_token,
            "team_id": self.team_id,
            "context_team_id": self.team_id,
            "context_enterprise_id": None,
            "api_app_id": self.app_id,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev{secrets.token_hex(5).upper()}",
            "event_time": int(float(event.get("event_ts") or event.get("ts") or time.time())),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.team_id,
                    "user_id": self.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": f"4-{secrets.token_urlsafe(24)}",
        }

    def block_action_payload(
        self, *, action_id: str, value: str, user_id: str = "U1", channel_id: str = "C1", message_ts: str
    ) -> dict[str, Any]:
        """A block_actions payload for a button click on a stored message (or a stub if unknown).

        On an ephemeral message (one in `ephemerals` with that ts) the payload has no `message`, its
        container says `is_ephemeral`, and its response_url is the one way to replace or delete it."""
        msg = self._find(channel_id, message_ts)
        eph = None if msg is not None else self.ephemeral(message_ts)
        message: dict[str, Any] = (
            dict(msg)
            if msg is not None
            else {
                "type": "message",
                "user": self.bot_user_id,
                "bot_id": self.bot_id,
                "text": eph["text"] if eph is not None else "",
                "ts": message_ts,
                **({"blocks": eph["blocks"]} if eph is not None and eph.get("blocks") else {}),
            }
        )
        block_id: str = "actions"
        button_text: Any = {"type": "plain_text", "text": action_id, "emoji": True}
        for block in message.get("blocks") or []:
            for el in block.get("elements", []) + ([block["accessory"]] if "accessory" in block else []):
                if isinstance(el, dict) and el.get("action_id") == action_id:
                    block_id = block.get("block_id", block_id)
                    button_text = el.get("text", button_text)
        user_name = f"user{user_id.lower()}"
        container: dict[str, Any] = {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel_id,
            "is_ephemeral": eph is not None,
        }
        thread_ts = (eph or {}).get("thread_ts") or message.get("thread_ts")
        if thread_ts:
            container["thread_ts"] = thread_ts
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": self.team_id},
            "api_app_id": self.app_id,
            "token": self.verification_token,
            "container": container,
            "trigger_id": self._trigger_id(user_id),
            "team": {"id": self.team_id, "domain": self.team_domain},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel_id, "name": self._channel_name(channel_id)},
            "message": message,
            "state": {"values": {}},
            "response_url": self.response_url(
                channel_id=channel_id, user_id=user_id, message_ts=message_ts, kind="actions"
            ),
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": block_id,
                    "text": button_text,
                    "value": value,
                    "type": "button",
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }
        if eph is not None:
            del payload["message"]
        return payload

    @staticmethod
    def buttons(blocks: Any) -> list[dict[str, Any]]:
        """Every button element in `blocks` (actions blocks and section accessories), in order."""
        found = []
        for block in blocks or []:
            for el in block.get("elements", []) + ([block["accessory"]] if "accessory" in block else []):
                if isinstance(el, dict) and el.get("type") == "button":
                    found.append(el)
        return found

    def button(self, label: str, *, message_ts: str, channel_id: str = "C1") -> dict[str, Any]:
        """The button labelled `label` (exactly, or followed by " · <price>") on a message or an ephemeral."""
        msg = self._find(channel_id, message_ts) or self.ephemeral(message_ts)
        if msg is None:
            raise LookupError(f"no message {message_ts} in {channel_id}")
        pattern = re.compile(rf"^{re.escape(label)}(?: ·|$)")
        for el in self.buttons(msg.get("blocks")):
            if pattern.match(el["text"]["text"]):
                return el
        labels = [el["text"]["text"] for el in self.buttons(msg.get("blocks"))]
        raise LookupError(f"no button {label!r} on {message_ts}: {labels}")

    async def press(
        self, events_url: str, label: str, *, message_ts: str, user_id: str = "U1", channel_id: str = "C1"
    ) -> tuple[int, str]:
        """Click the button labelled `label` on a message (or an ephemeral) as `user_id`, as Slack would."""
        el = self.button(label, message_ts=message_ts, channel_id=channel_id)
        return await self.send_block_action(
            events_url,
            action_id=el["action_id"],
            value=el.get("value", ""),
            user_id=user_id,
            channel_id=channel_id,
            message_ts=message_ts,
        )

    def view_submission_payload(
        self, view_id: str, values: dict[str, str], *, user_id: str | None = None
    ) -> dict[str, Any]:
        """A view_submission for an opened modal: `values` maps an input's action_id to what was typed.
        Like Slack's client, refuses to submit a required input left empty or one over its max_length."""
        opened = self.views[view_id]
        user_id = user_id or opened["user"]
        view = json.loads(json.dumps(opened["view"]))
        state: dict[str, dict[str, Any]] = {}
        for block in view["blocks"]:
            if block.get("type") != "input":
                continue
            element = block["element"]
            typed = values.get(element["action_id"])
            if typed is None and element["type"] == "static_select" and element.get("initial_option"):
                typed = element["initial_option"]["value"]  # a select keeps its initial choice
            elif typed is None and element.get("initial_value"):
                typed = element["initial_value"]  # a text input keeps its initial text
            if not typed and not block.get("optional"):
                raise ValueError(f"Slack would not submit: {element['action_id']} is required")
            if element["type"] == "static_select":
                # A select submits one of its options (or nothing), never free text.
                chosen = [o for o in element.get("options") or [] if o.get("value") == typed]
                if typed and not chosen:
                    raise ValueError(
                        f"Slack would not submit: {typed!r} is not an option of {element['action_id']}"
                    )
                state[block["block_id"]] = {
                    element["action_id"]: {
                        "type": "static_select",
                        "selected_option": chosen[0] if chosen else None,
                    }
                }
                continue
            if typed and len(typed) > int(element.get("max_length") or 3000):
                raise ValueError(f"Slack would not submit: {element['action_id']} is too long")
            state[block["block_id"]] = {
                element["action_id"]: {"type": element["type"], "value": typed or None}
            }
        view["state"] = {"values": state}
        user_name = f"user{user_id.lower()}"
        return {
            "type": "view_submission",
            "team": {"id": self.team_id, "domain": self.team_domain},
            "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": self.team_id},
            "api_app_id": self.app_id,
            "token": self.verification_token,
            "trigger_id": self._trigger_id(user_id),
            "view": view,
            "response_urls": [],
            "is_enterprise_install": False,
            "enterprise": None,
        }

    async def send_view_submission(
        self, events_url: str, view_id: str, values: dict[str, str], *, user_id: str | None = None
    ) -> tuple[int, str]:
        """POST a signed view_submission (form-encoded `payload=` JSON, like Slack); an empty 200 closes it."""
        payload = self.view_submission_payload(view_id, values, user_id=user_id)
        body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
        status, text, _ = await self._post_to_bot(events_url, body, "application/x-www-form-urlencoded")
        if status == 200 and not text.strip():
            self.views[view_id]["closed"] = True
        return status, text

    def message_event(
        self,
        *,
        text: str,
        user: str = "U1",
        channel: str = "C1",
        thread_ts: str | None = None,
        files: list[dict[str, Any]] | None = None,
        mention: bool = False,
        ts: str | None = None,
    ) -> dict[str, Any]:
        """A `message` event (or `app_mention` with `<@BOT>` prepended) as Slack sends it.

        The message is also stored in `messages`, so conversations.replies sees it. Pass the `ts`
        of an earlier message_event to build the twin event Slack sends for the same message
        (a mention arrives both as `message` and as `app_mention`). A `message` with files has
        subtype "file_share", as Slack sends it: a bot that drops every subtype loses uploads.
        """
        ts = ts or self._next_ts()
        body = f"<@{self.bot_user_id}> {text}" if mention else text
        event: dict[str, Any] = {
            "client_msg_id": str(uuid.uuid4()),
            "type": "app_mention" if mention else "message",
            "text": body,
            "user": user,
            "ts": ts,
            "blocks": _rich_text(body),
            "team": self.team_id,
        }
        if files:
            event["files"] = [dict(f) for f in files]
            event["upload"] = False
            event["display_as_bot"] = False
            if not mention:
                event["subtype"] = "file_share"
        if thread_ts:
            event["thread_ts"] = thread_ts
            parent = self._find(channel, thread_ts)
            if parent is not None and parent.get("user"):
                event["parent_user_id"] = parent["user"]
        event["channel"] = channel
        event["event_ts"] = ts
        if not mention:
            event["channel_type"] = {"C": "channel", "G": "group", "D": "im"}.get(channel[:1], "channel")
        if self._find(channel, ts) is None:
            stored = {k: v for k, v in event.items() if k not in ("channel", "event_ts", "channel_type")}
            stored["type"] = "message"
            stored.pop("subtype", None)
            self._store(channel, stored)
        return event

    def app_home_opened_event(
        self, user: str = "U1", *, tab: str = "home", channel: str | None = None
    ) -> dict[str, Any]:
        """The `app_home_opened` event Slack sends when `user` opens the app's Home (`tab` "home") or its
        Messages tab ("messages"). `channel` is the user's DM with the app (D + the user id's rest, as
        chat.postMessage to a user id uses). Once a Home view was published for the user, a Home opening
        carries it in `view`, as on Slack. Wrap it with event_envelope, or use send_app_home_opened /
        socket_send_app_home_opened."""
        event: dict[str, Any] = {
            "type": "app_home_opened",
            "user": user,
            "channel": channel or "D" + user[1:],
            "tab": tab,
            "event_ts": self._next_ts(),
        }
        view = self.home_view(user)
        if tab == "home" and view is not None:
            event["view"] = view
        return event

    async def send_app_home_opened(
        self, events_url: str, *, user: str = "U1", tab: str = "home", event_id: str | None = None
    ) -> tuple[int, str]:
        """POST a signed event_callback carrying app_home_opened for `user` (the Events API over HTTP)."""
        return await self.send_event(events_url, self.app_home_opened_event(user, tab=tab), event_id=event_id)

    async def socket_send_app_home_opened(
        self,
        *,
        user: str = "U1",
        tab: str = "home",
        event_id: str | None = None,
        timeout: float = 10,  # noqa: ASYNC109
    ) -> dict[str, Any]:
        """Send app_home_opened for `user` over Socket Mode (an events_api envelope); returns the ack."""
        envelope = self.event_envelope(self.app_home_opened_event(user, tab=tab), event_id=event_id)
        return await self.socket_send("events_api", envelope, timeout=timeout)

    # ------------------------------------------------------------------ sending to the bot over HTTP

    def sign(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        """Slack's v0 request signature headers for `body`."""
        ts = str(int(time.time()) if timestamp is None else timestamp)
        base = b"v0:" + ts.encode() + b":" + body
        digest = hmac.new(self.signing_secret.encode(), base, hashlib.sha256).hexdigest()
        return {"X-Slack-Signature": f"v0={digest}", "X-Slack-Request-Timestamp": ts}

    async def _post_to_bot(
        self,
        url: str,
        body: bytes,
        content_type: str,
        *,
        timestamp: int | None = None,
        bad_signature: bool = False,
        extra: dict[str, str] | None = None,
    ) -> tuple[int, str, float]:
        if self._session is None:
            raise RuntimeError("FakeSlack.start() first")
        headers = {
            "Content-Type": content_type,
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
            "Accept": "application/json,*/*",
            **self.sign(body, timestamp),
            **(extra or {}),
        }
        if bad_signature:
            headers["X-Slack-Signature"] = "v0=" + "0" * 64
        self.sent_to_bot.append((url, body, headers))
        start = time.monotonic()
        self._to_bot += 1
        try:
            async with self._session.post(url, data=body, headers=headers, allow_redirects=False) as resp:
                text = await resp.text()
                return resp.status, text, time.monotonic() - start
        finally:
            self._to_bot -= 1

    async def replay(self, index: int = -1) -> tuple[int, str]:
        """POST a request sent to the bot before (the last unless told) again, byte for byte with its signature
        and timestamp: a replay, valid for Slack's 5 minutes, as a network or an attacker could send it."""
        url, body, headers = self.sent_to_bot[index]
        status, text, _ = await self._post_to_bot(url, body, headers["Content-Type"], extra=headers)
        return status, text

    async def send_slash_command(
        self,
        events_url: str,
        *,
        command: str = "/imagine",
        text: str,
        user_id: str = "U1",
        channel_id: str = "C1",
        timestamp: int | None = None,
        bad_signature: bool = False,
    ) -> tuple[int, str, float]:
        """POST a signed, form-encoded slash command; returns (status, body, seconds until the ack)."""
        payload = self.slash_command_payload(
            command=command, text=text, user_id=user_id, channel_id=channel_id
        )
        body = urllib.parse.urlencode(payload).encode()
        return await self._post_to_bot(
            events_url,
            body,
            "application/x-www-form-urlencoded",
            timestamp=timestamp,
            bad_signature=bad_signature,
        )

    async def send_event(
        self,
        events_url: str,
        event: dict[str, Any],
        *,
        event_id: str | None = None,
        retry_num: int | None = None,
        retry_reason: str | None = None,
        timestamp: int | None = None,
        bad_signature: bool = False,
    ) -> tuple[int, str]:
        """POST a signed event_callback (JSON) with Slack's retry headers when given."""
        body = json.dumps(self.event_envelope(event, event_id=event_id)).encode()
        extra = {}
        if retry_num is not None:
            extra["X-Slack-Retry-Num"] = str(retry_num)
        if retry_reason is not None:
            extra["X-Slack-Retry-Reason"] = retry_reason
        status, text, _ = await self._post_to_bot(
            events_url,
            body,
            "application/json",
            timestamp=timestamp,
            bad_signature=bad_signature,
            extra=extra,
        )
        return status, text

    async def send_block_action(
        self,
        events_url: str,
        *,
        action_id: str,
        value: str,
        user_id: str = "U1",
        channel_id: str = "C1",
        message_ts: str,
    ) -> tuple[int, str]:
        """POST a signed block_actions click: form-encoded, the JSON in a single `payload` field."""
        payload = self.block_action_payload(
            action_id=action_id, value=value, user_id=user_id, channel_id=channel_id, message_ts=message_ts
        )
        body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
        status, text, _ = await self._post_to_bot(events_url, body, "application/x-www-form-urlencoded")
        return status, text

    # ------------------------------------------------------------------ Socket Mode

    async def _handle_socket(self, request: web.Request) -> web.StreamResponse:
        at = time.monotonic()
        headers = _headers(request)
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            self._record("socket_connect", dict(request.query), headers, at, 401)
            return web.Response(status=401, text="invalid ticket")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        self._record("socket_connect", dict(request.query), headers, at, 101)
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": len(self._sockets),
                "debug_info": {
                    "host": "applink-fake",
                    "build_number": 1,
                    "approximate_connection_time": 18060,
                },
                "connection_info": {"app_id": self.app_id},
            }
        )
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    continue
                envelope_id = data.get("envelope_id") if isinstance(data, dict) else None
                self._record(
                    "socket_ack" if envelope_id else "socket_message", data, headers, time.monotonic(), 200
                )
                fut = self._acks.get(envelope_id or "")
                if fut is not None and not fut.done():
                    fut.set_result(data)
        finally:
            if ws in self._sockets:
                self._sockets.remove(ws)
        return ws

    async def _live_socket(self, timeout: float) -> web.WebSocketResponse:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while True:
            live = [ws for ws in self._sockets if not ws.closed]
            if live:
                return live[-1]
            if time.monotonic() >= deadline:
                raise TimeoutError("no Socket Mode client connected")
            await asyncio.sleep(0.01)

    async def socket_send(
        self,
        payload_type: str,
        payload: dict[str, Any],
        *,
        timeout: float = 10,  # noqa: ASYNC109
        accepts_response_payload: bool | None = None,
        retry_attempt: int = 0,
        retry_reason: str = "",
    ) -> dict[str, Any]:
        """Send an envelope to the connected Socket Mode client and return its ack ({"envelope_id": ...})."""
        ws = await self._live_socket(timeout)
        envelope_id = str(uuid.uuid4())
        if accepts_response_payload is None:
            accepts_response_payload = payload_type == "slash_commands"
        envelope: dict[str, Any] = {
            "envelope_id": envelope_id,
            "payload": payload,
            "type": payload_type,
            "accepts_response_payload": accepts_response_payload,
        }
        if payload_type == "events_api":
            envelope["retry_attempt"] = retry_attempt
            envelope["retry_reason"] = retry_reason
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._acks[envelope_id] = fut
        start = time.monotonic()
        try:
            await ws.send_json(envelope)
            ack = await asyncio.wait_for(fut, timeout)
        finally:
            self._acks.pop(envelope_id, None)
        self.socket_acks.append(
            {
                "envelope_id": envelope_id,
                "type": payload_type,
                "ack": ack,
                "seconds": time.monotonic() - start,
            }
        )
        return ack

    async def socket_disconnect(self, reason: str = "refresh_requested", timeout: float = 10) -> None:  # noqa: ASYNC109
        """Ask the client to reconnect, as Slack does every few hours ({"type": "disconnect"})."""
        ws = await self._live_socket(timeout)
        await ws.send_json({"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-fake"}})
