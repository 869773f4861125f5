"""A fake Discord (REST API v10, gateway websocket and attachment CDN) on loopback.

A real ``discord.Client`` with an ``app_commands.CommandTree`` runs against it
after :func:`point_discord_at` (REST and webhook base) and
:func:`use_gateway_from_api` (gateway address taken from ``GET /gateway/bot``).
Every REST call is recorded in :attr:`FakeDiscord.calls`; tests drive the bot
by dispatching ``INTERACTION_CREATE`` and ``MESSAGE_CREATE`` over the gateway.

Shapes follow discord.py 2.7 parsing and the Discord API documentation; the
behaviours a bot has to cope with are reproduced: 3 s acknowledgement window,
interaction tokens that expire (401 / 50027), the guild upload limit
(413 / 40005), signed attachment URLs, the message-content intent, the
first follow-up after a "thinking" defer replacing the loading message,
Discord's limits on message components (5 action rows of at most 5 buttons,
custom ids of 1-100 characters, unique in a message; labels of at most 80),
buttons that can only be pressed on a message that exists and carries them,
Discord's rules for registering commands (names, descriptions, 25 options, required
before optional, at every subcommand level), ``data.resolved`` for user, channel and
role options wherever they are nested, and a network that fails (a dropped connection, a call never answered, a late answer).
Sharding works as on Discord: IDENTIFY may carry ``shard: [id, count]`` (recorded in
:attr:`FakeDiscord.identified_shards`), and the guild's events (READY's guild list,
GUILD_CREATE, interactions, messages) go only to the session of the shard that owns
it, ``(guild_id >> 22) % count``; a session without ``shard`` owns every guild.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import mimetypes
import re
import secrets
import time
import traceback
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import BodyPartReader, WSMsgType, web

__all__ = [
    "FakeDiscord",
    "RestCall",
    "point_discord_at",
    "reset_discord_endpoints",
    "use_gateway_from_api",
]

API_PREFIX = "/api/v10"
DISCORD_EPOCH_MS = 1420070400000
MiB = 1024 * 1024
UPLOAD_LIMITS = {0: 10 * MiB, 1: 10 * MiB, 2: 50 * MiB, 3: 100 * MiB}

# Message flags and intents that matter here.
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7
THREAD_TYPES = (10, 11, 12)  # announcement, public and private threads (a forum post is a public thread)
INTENT_MESSAGE_CONTENT = 1 << 15
CLOSE_INVALID_SHARD = 4010  # gateway close code: the IDENTIFY's shard is not [id, count] with 0 <= id < count
MANAGE_MESSAGES = 1 << 13
ADMINISTRATOR_BIT = 1 << 3

# Application command limits (bulk overwrite: PUT .../commands), as Discord validates them.
MAX_COMMAND_OPTIONS = 25
MAX_OPTION_CHOICES = 25
MAX_COMMAND_NAME = 32
MAX_COMMAND_DESCRIPTION = 100
OPTION_SUB_COMMAND, OPTION_SUB_COMMAND_GROUP = 1, 2
OPTION_USER, OPTION_CHANNEL, OPTION_ROLE, OPTION_MENTIONABLE = 6, 7, 8, 9
OPTION_TYPES = range(1, 12)  # SUB_COMMAND .. ATTACHMENT
# The locales Discord accepts as keys of name_localizations / description_localizations (its Locales table).
LOCALES = frozenset(
    "id da de en-GB en-US es-ES es-419 fr hr it lt hu nl no pl pt-BR ro fi sv-SE vi tr cs el bg ru uk hi th "
    "zh-CN ja zh-TW ko".split()
)

# Message component limits (legacy action-row layout).
MAX_ACTION_ROWS = 5
MAX_ROW_COMPONENTS = 5
MAX_CUSTOM_ID = 100
MAX_BUTTON_LABEL = 80

# What the bot may do in the channel (VIEW_CHANNEL, SEND_MESSAGES, EMBED_LINKS,
# ATTACH_FILES, READ_MESSAGE_HISTORY, ADD_REACTIONS, USE_EXTERNAL_EMOJIS,
# USE_APPLICATION_COMMANDS, CREATE_PUBLIC_THREADS, SEND_MESSAGES_IN_THREADS).
BOT_PERMISSIONS = str(
    (1 << 10)
    | (1 << 11)
    | (1 << 14)
    | (1 << 15)
    | (1 << 16)
    | (1 << 6)
    | (1 << 18)
    | (1 << 31)
    | (1 << 35)
    | (1 << 38)
)
EVERYONE_PERMISSIONS = str((1 << 10) | (1 << 11) | (1 << 14) | (1 << 15) | (1 << 16) | (1 << 6) | (1 << 31))
ADMINISTRATOR = str(1 << 3)


# --------------------------------------------------------------------------- pointing discord.py at it


def point_discord_at(api_url: str, gateway_url: str | None = None) -> None:
    """Send discord.py's REST *and* webhook/interaction traffic to ``api_url``.

    ``discord.http.Route.BASE`` is the single base URL of every REST call,
    including the webhook adapter behind ``interaction.response``,
    ``interaction.followup`` and ``edit_original_response``. The gateway
    address is a separate class attribute (``DiscordWebSocket.DEFAULT_GATEWAY``)
    that ``Client.connect`` dials without asking ``GET /gateway/bot``; pass
    ``gateway_url`` if you know it, otherwise call :func:`use_gateway_from_api`
    after login (for example in ``setup_hook``). Both are process-wide.
    """
    import yarl
    from discord.gateway import DiscordWebSocket
    from discord.http import Route

    Route.BASE = api_url.rstrip("/")
    if gateway_url is not None:
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


async def use_gateway_from_api(client: Any) -> str:
    """Ask ``GET /gateway/bot`` on the current REST base and dial that gateway.

    Call after ``client.login()`` (the HTTP session exists then) and before
    ``client.connect()``; ``setup_hook`` is such a place and also works with
    ``client.start()``. Returns the gateway URL.
    """
    import yarl
    from discord.gateway import DiscordWebSocket

    _shards, url, _limits = await client.http.get_bot_gateway()
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)
    return url


def reset_discord_endpoints() -> None:
    """Restore discord.py's built-in REST base and gateway address."""
    import yarl
    from discord.gateway import DiscordWebSocket
    from discord.http import Route

    Route.BASE = "https://discord.com/api/v10"
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL("wss://gateway.discord.gg/")


# --------------------------------------------------------------------------- records


@dataclass
class RestCall:
    """One request the fake received under ``/api/v10`` (or on the CDN)."""

    method: str
    path: str  # relative to /api/v10, without the query string
    json: Any  # parsed JSON body; payload_json for multipart
    files: list[tuple[str, str, bytes]]  # (field name, filename, bytes)
    headers: dict[str, str]
    at: float  # time.monotonic() when the request arrived
    query: dict[str, str] = field(default_factory=dict)
    status: int = 0  # status the fake answered with; 0: no answer (see FakeDiscord.inject_fault)
    answered: float = 0.0  # time.monotonic() when the answer was sent; 0.0: never


@dataclass
class _Interaction:
    id: int
    token: str
    type: int
    command_type: int | None
    name: str
    channel_id: int
    user_id: int
    dispatched_at: float
    message_id: int | None = None  # message a component / modal interaction is attached to
    response_type: int | None = None
    original_id: int | None = None
    loading: bool = False
    message_ids: set[int] = field(default_factory=set)
    expired: bool = False


@dataclass
class _Hosted:
    data: bytes
    content_type: str
    hm: str


class _ApiError(Exception):
    def __init__(self, status: int, message: str, code: int, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"message": message, "code": code, **extra}


def _unknown(what: str, code: int) -> _ApiError:
    return _ApiError(404, f"Unknown {what}", code)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def shard_of(guild_id: int, shard_count: int) -> int:
    """The shard that receives a guild's events, by Discord's formula."""
    return (guild_id >> 22) % shard_count


def _valid_shard(shard: Any) -> bool:
    return (
        isinstance(shard, list)
        and len(shard) == 2
        and all(type(n) is int for n in shard)
        and 0 <= shard[0] < shard[1]
    )


class _GatewaySession:
    def __init__(self, ws: web.WebSocketResponse, compress: str | None) -> None:
        self.ws = ws
        self.seq = 0
        self.session_id: str | None = None
        self.intents = 0
        self.shard: list[int] | None = None  # [id, count] from IDENTIFY; None: unsharded
        self.identified = False
        self.lock = asyncio.Lock()
        self._zlib = zlib.compressobj() if compress == "zlib-stream" else None
        self._zstd: Any = None
        if compress == "zstd-stream":
            try:
                import zstandard  # type: ignore[import-not-found]

                self._zstd = zstandard.ZstdCompressor().compressobj()
                self._zstd_flush = zstandard.COMPRESSOBJ_FLUSH_BLOCK
            except ImportError:  # no compressor: text frames are accepted too
                self._zstd = None

    async def send(self, op: int, d: Any, t: str | None = None) -> None:
        async with self.lock:
            s = None
            if op == 0:
                self.seq += 1
                s = self.seq
            raw = json.dumps({"op": op, "d": d, "s": s, "t": t}, separators=(",", ":")).encode()
            if self.ws.closed:
                return
            if self._zlib is not None:
                await self.ws.send_bytes(self._zlib.compress(raw) + self._zlib.flush(zlib.Z_SYNC_FLUSH))
            elif self._zstd is not None:
                await self.ws.send_bytes(self._zstd.compress(raw) + self._zstd.flush(self._zstd_flush))
            else:
                await self.ws.send_str(raw.decode())


_Handler = Callable[["web.Request", "re.Match[str]", Any, list[tuple[str, str, bytes]]], Awaitable[Any]]


class FakeDiscord:
    """A loopback stand-in for Discord's REST API, gateway and CDN."""

    def __init__(
        self,
        *,
        token: str = "discord-test-token",
        application_id: int = 1100000000000000001,
        guild_id: int = 1100000000000000002,
        channel_id: int = 1100000000000000003,
        user_id: int = 1100000000000000004,
        owner_id: int = 1100000000000000005,
        premium_tier: int = 0,
        filesize_limit_override: int | None = None,
        ack_deadline: float | None = 3.0,
        bot_name: str = "imagebot",
    ) -> None:
        self.token = token
        self.application_id = application_id
        self.bot_user_id = application_id  # as for every modern bot application
        self.guild_id = guild_id
        self.channel_id = channel_id
        self.user_id = user_id  # default author of interactions and messages
        self.owner_id = owner_id
        self.premium_tier = premium_tier
        self.filesize_limit_override = filesize_limit_override
        self.ack_deadline = ack_deadline
        self.app_permissions = BOT_PERMISSIONS
        self._last_id = 0

        self.api_url = ""
        self.gateway_url = ""
        self.cdn_url = ""
        self.calls: list[RestCall] = []
        self.cdn_requests: list[RestCall] = []
        self.messages: dict[int, list[dict]] = {}
        self.registered_commands: list[dict] = []
        self.autocomplete_results: list[dict] = []
        self.modals: list[dict] = []  # data of type 9 callbacks, newest last
        self.errors: list[str] = []  # tracebacks of bugs in the fake itself (tests can assert it stays empty)
        # The ``shard`` of every IDENTIFY, in order ([id, count]; None when it carried none).
        self.identified_shards: list[list[int] | None] = []
        self.recommended_shards = 1  # what GET /gateway/bot recommends

        self.bot_user: dict = {
            "id": str(self.bot_user_id),
            "username": bot_name,
            "discriminator": "0",
            "global_name": None,
            "avatar": None,
            "bot": True,
            "verified": True,
            "mfa_enabled": False,
            "flags": 0,
            "public_flags": 0,
            "email": None,
            "locale": "en-US",
        }
        self.users: dict[int, dict] = {self.bot_user_id: self.bot_user}
        everyone = {
            "id": str(guild_id),
            "name": "@everyone",
            "permissions": EVERYONE_PERMISSIONS,
            "position": 0,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "icon": None,
            "unicode_emoji": None,
            "flags": 0,
        }
        self.bot_role_id = self._snowflake()
        self.admin_role_id = self._snowflake()
        self.roles: list[dict] = [
            everyone,
            {
                **everyone,
                "id": str(self.admin_role_id),
                "name": "Admin",
                "permissions": ADMINISTRATOR,
                "position": 2,
            },
            {
                **everyone,
                "id": str(self.bot_role_id),
                "name": bot_name,
                "permissions": BOT_PERMISSIONS,
                "position": 1,
                "managed": True,
                "tags": {"bot_id": str(self.bot_user_id)},
            },
        ]
        self.channels: dict[int, dict] = {}
        self._uncached_threads: set[int] = set()  # threads GUILD_CREATE does not announce
        self._dms: dict[int, dict] = {}  # user id -> the bot's DM channel with them
        self._closed_dms: set[int] = set()  # users whose DMs are closed to the bot
        self._memberless: set[int] = set()  # messages whose MESSAGE_CREATE carries no `member`
        self.add_channel(channel_id, "general")
        self.members: dict[int, dict] = {}
        self.members[self.bot_user_id] = self._member_object(self.bot_user_id, roles=[self.bot_role_id])
        self.members[self.bot_user_id]["permissions"] = BOT_PERMISSIONS
        self._ensure_member(owner_id)
        self._ensure_member(user_id)

        self._interactions: dict[int, _Interaction] = {}
        self._by_token: dict[str, _Interaction] = {}
        self._hosted: dict[str, _Hosted] = {}
        self._sessions: list[_GatewaySession] = []
        self._known_sessions: dict[str, _GatewaySession] = {}
        self._injected: list[tuple[str, str, int, dict, list[int]]] = []
        self._faults: list[tuple[str, str, str, float, Callable[[RestCall], bool] | None, list[int]]] = []
        self._stopping = asyncio.Event()  # releases calls held by a "hang" fault
        self._ready = asyncio.Event()
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._routes: list[tuple[str, re.Pattern[str], _Handler, bool]] = []
        self._install_routes()

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Serve on 127.0.0.1 with an ephemeral port."""
        self._stopping.clear()
        app = web.Application(client_max_size=1024 * MiB)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/cdn/attachments/{channel}/{id}/{filename}", self._cdn)
        app.router.add_get("/media/attachments/{channel}/{id}/{filename}", self._cdn)
        app.router.add_route("*", API_PREFIX + "{tail:/.*}", self._api)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        base = f"http://127.0.0.1:{port}"
        self.api_url = base + API_PREFIX
        self.gateway_url = f"ws://127.0.0.1:{port}/gateway"
        self.cdn_url = base

    async def stop(self) -> None:
        """Close gateway connections and the server (close the client first)."""
        self._stopping.set()
        for session in list(self._sessions):
            await session.ws.close(code=1001)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._ready.clear()

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ----------------------------------------------------------------- inspection

    @property
    def upload_limit(self) -> int:
        """Bytes of files one message may carry in this guild."""
        if self.filesize_limit_override is not None:
            return self.filesize_limit_override
        return UPLOAD_LIMITS.get(self.premium_tier, 10 * MiB)

    def calls_matching(self, method: str, path_regex: str) -> list[RestCall]:
        """Recorded calls whose method matches (``*`` for any) and whose path fully matches the regex."""
        pattern = re.compile(path_regex)
        return [
            c
            for c in self.calls
            if (method == "*" or c.method == method.upper()) and pattern.fullmatch(c.path)
        ]

    async def wait_for(
        self,
        method: str,
        path_regex: str,
        count: int = 1,
        timeout: float = 10,  # noqa: ASYNC109 - the documented API
    ) -> list[RestCall]:
        """Wait until at least ``count`` matching calls have been answered; return all matching ones."""

        def enough() -> bool:
            return len(self.calls_matching(method, path_regex)) >= count

        try:
            async with asyncio.timeout(timeout):
                async with self._changed:
                    await self._changed.wait_for(enough)
        except TimeoutError:
            seen = [f"{c.method} {c.path} -> {c.status}" for c in self.calls]
            raise AssertionError(
                f"timed out waiting for {count} x {method} {path_regex}; calls so far: {seen}"
            ) from None
        return self.calls_matching(method, path_regex)

    async def wait_ready(self, timeout: float = 10) -> None:  # noqa: ASYNC109 - the documented API
        """Wait until a client has IDENTIFYed and been sent READY and GUILD_CREATE (on the guild's shard, when
        sharded: a session of another shard never gets the guild)."""
        async with asyncio.timeout(timeout):
            await self._ready.wait()

    async def wait_identified(self, count: int, timeout: float = 10) -> None:  # noqa: ASYNC109
        """Wait until at least ``count`` gateway sessions are connected and identified."""
        try:
            async with asyncio.timeout(timeout):
                async with self._changed:
                    await self._changed.wait_for(lambda: self.identified_sessions >= count)
        except TimeoutError:
            raise AssertionError(
                f"timed out waiting for {count} identified sessions; shards identified: {self.identified_shards}"
            ) from None

    @property
    def identified_sessions(self) -> int:
        """How many gateway clients are connected and identified now."""
        return sum(1 for session in self._sessions if session.identified)

    def owns_guild(self, session: _GatewaySession) -> bool:
        """Whether the guild's events go to this session: its shard is the guild's (unsharded: always)."""
        return session.shard is None or shard_of(self.guild_id, session.shard[1]) == session.shard[0]

    def message(self, message_id: int) -> dict | None:
        """The stored message with this id, in any channel."""
        for msgs in self.messages.values():
            for m in msgs:
                if int(m["id"]) == int(message_id):
                    return m
        return None

    @staticmethod
    def buttons(message: dict) -> list[dict]:
        """The buttons on a message (its action rows flattened, in order)."""
        return [
            c
            for row in message.get("components") or []
            for c in row.get("components") or []
            if c.get("type") == 2
        ]

    async def press_button(self, message: dict, label: str, **spec: Any) -> dict:
        """Press the first button on ``message`` whose label starts with ``label`` (a type 3 interaction;
        keyword arguments as for :meth:`_build_interaction`, e.g. ``user_id``); return the interaction."""
        stored = self.message(int(message["id"])) or message
        found = [b for b in self.buttons(stored) if str(b.get("label") or "").startswith(label)]
        if not found:
            labels = [b.get("label") for b in self.buttons(stored)]
            raise AssertionError(f"no button labelled {label!r} on message {message['id']}: {labels}")
        spec.setdefault("channel_id", int(stored["channel_id"]))  # pressed where the message is
        return await self.send_interaction(
            type=3, custom_id=found[0]["custom_id"], component_type=2, target_message=stored, **spec
        )

    def expire_interaction_tokens(self) -> None:
        """From now on, webhook and callback endpoints of existing tokens answer 401 / 50027."""
        for ix in self._interactions.values():
            ix.expired = True

    def inject_error(self, method: str, path_regex: str, status: int, body: dict, times: int = 1) -> None:
        """Answer the next ``times`` matching REST calls with ``status`` and ``body``."""
        self._injected.append((method.upper(), path_regex, status, body, [times]))

    def inject_fault(
        self,
        method: str,
        path_regex: str,
        fault: str,
        *,
        times: int = 1,
        seconds: float = 0.0,
        when: Callable[[RestCall], bool] | None = None,
    ) -> None:
        """Misbehave on the next ``times`` matching REST calls (``method`` may be ``*``; ``when``, if
        given, picks among them by their body, e.g. only the edit that carries the image).

        ``"drop"``: read the request, then close the connection without an answer (the client sees
        a disconnect). ``"hang"``: read it and never answer (until :meth:`stop`), so only a client-side
        timeout ends the call. Neither acts on the request: it is recorded with status 0. ``"delay"``:
        act on it and answer as usual, ``seconds`` later.
        """
        if fault not in ("drop", "hang", "delay"):
            raise ValueError(f"unknown fault {fault!r}: drop, hang or delay")
        self._faults.append((method.upper(), path_regex, fault, seconds, when, [times]))

    def _take_fault(self, call: RestCall) -> tuple[str, float] | None:
        for method, regex, fault, seconds, when, left in self._faults:
            if (
                left[0] > 0
                and method in (call.method, "*")
                and re.fullmatch(regex, call.path)
                and (when is None or when(call))
            ):
                left[0] -= 1
                return fault, seconds
        return None

    # ----------------------------------------------------------------- world building

    def add_channel(self, channel_id: int, name: str, *, type: int = 0) -> dict:
        """Add a guild text channel (before the client connects, or it will not know it)."""
        channel = {
            "id": str(channel_id),
            "type": type,
            "guild_id": str(self.guild_id),
            "name": name,
            "position": len(self.channels),
            "permission_overwrites": [],
            "parent_id": None,
            "nsfw": False,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }
        self.channels[channel_id] = channel
        self.messages.setdefault(channel_id, [])
        return channel

    def add_thread(
        self, thread_id: int, name: str, *, parent_id: int, type: int = 11, cached: bool = True
    ) -> dict:
        """Add a thread (type 11 public, 12 private, 10 announcement) under `parent_id` (a text channel, or a
        forum / media channel (15 / 16), where a thread is a post). As on Discord, interaction payloads'
        ``channel`` and ``GET /channels/{id}`` carry its ``parent_id``. ``cached``: announced in GUILD_CREATE's
        ``threads`` (so the client knows it); otherwise the client learns of it only from what it is sent."""
        if parent_id not in self.channels:
            raise ValueError(f"no channel {parent_id} to hold thread {thread_id}")
        thread = {
            "id": str(thread_id),
            "type": type,
            "guild_id": str(self.guild_id),
            "parent_id": str(parent_id),
            "owner_id": str(self.user_id),
            "name": name,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "message_count": 0,
            "member_count": 1,
            "total_message_sent": 0,
            "flags": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": _now_iso(),
                "locked": False,
                "create_timestamp": _now_iso(),
            },
        }
        self.channels[thread_id] = thread
        self.messages.setdefault(thread_id, [])
        if not cached:
            self._uncached_threads.add(thread_id)
        return thread

    def close_dms(self, user_id: int) -> None:
        """The user does not take DMs from the bot: a message to their DM channel gets 403, code 50007."""
        self._closed_dms.add(user_id)

    def dm_messages(self, user_id: int) -> list[dict]:
        """What the bot sent `user_id` by DM, oldest first."""
        channel = self._dms.get(user_id)
        return list(self.messages.get(int(channel["id"]), [])) if channel is not None else []

    async def replay_interaction(self, payload: dict) -> None:
        """Dispatch INTERACTION_CREATE again with the very same payload (id and token): a replayed delivery."""
        await self._dispatch("INTERACTION_CREATE", payload)

    def add_member(
        self,
        user_id: int,
        *,
        roles: list[int] | None = None,
        permissions: str | None = None,
        username: str | None = None,
    ) -> dict:
        """Add or update a guild member; ``permissions`` is what interactions report for them."""
        member = self._ensure_member(user_id, username=username)
        if roles is not None:
            member["roles"] = [str(r) for r in roles]
        if permissions is not None:
            member["permissions"] = permissions
        return member

    def add_role(
        self,
        role_id: int,
        name: str,
        *,
        permissions: str = "0",
        color: int = 0,
        hoist: bool = False,
        mentionable: bool = False,
        position: int | None = None,
    ) -> dict:
        """Add a guild role (before the client connects: GUILD_CREATE carries ``roles``, or its cache will not
        know it); give it to members with ``add_member(..., roles=[role_id])``. Returns Discord's role object."""
        role = {
            "id": str(role_id),
            "name": name,
            "permissions": permissions,
            "position": position if position is not None else max(int(r["position"]) for r in self.roles) + 1,
            "color": color,
            "colors": {"primary_color": color, "secondary_color": None, "tertiary_color": None},
            "hoist": hoist,
            "managed": False,
            "mentionable": mentionable,
            "icon": None,
            "unicode_emoji": None,
            "flags": 0,
        }
        self.roles[:] = [r for r in self.roles if r["id"] != str(role_id)] + [role]
        return role

    def role(self, role_id: int) -> dict | None:
        """The guild role with this id (``@everyone`` has the guild's id)."""
        return next((r for r in self.roles if r["id"] == str(role_id)), None)

    def add_attachment(
        self, *, filename: str, data: bytes, content_type: str, channel_id: int | None = None
    ) -> dict:
        """Host ``data`` on the fake CDN and return a Discord attachment object for it."""
        return self._host(channel_id or self.channel_id, filename, data, content_type)

    # ----------------------------------------------------------------- driving the bot

    async def send_interaction(self, **spec: Any) -> dict:
        """Dispatch INTERACTION_CREATE and return the interaction (with ``id`` and ``token``); keyword
        arguments as for :meth:`_build_interaction`."""
        return (await self.send_interactions([spec]))[0][0]

    async def send_interactions(self, specs: list[dict]) -> list[tuple[dict, float]]:
        """A burst: build every interaction first (keyword arguments of :meth:`_build_interaction`), then
        write them back to back; returns each payload with the moment its frame was written."""
        await self.wait_ready()
        payloads = [self._build_interaction(**spec) for spec in specs]
        sent: list[tuple[dict, float]] = []
        for payload in payloads:
            self._by_token[payload["token"]].dispatched_at = time.monotonic()
            await self._dispatch("INTERACTION_CREATE", payload)
            sent.append((payload, time.monotonic()))
        return sent

    def _build_interaction(
        self,
        *,
        name: str = "",
        options: list[dict] | None = None,
        user_id: int | None = None,
        channel_id: int | None = None,
        attachments: dict[str, dict] | None = None,
        permissions: str | None = None,
        type: int = 2,
        command_type: int = 1,
        target_message: dict | None = None,
        custom_id: str | None = None,
        component_type: int | None = None,
        modal_values: dict[str, str] | None = None,
        values: list[str] | None = None,
        guild_command: bool | None = None,
        locale: str = "en-US",
    ) -> dict:
        """The INTERACTION_CREATE payload (with ``id`` and ``token``), registered but not yet sent.

        type 2: application command (``command_type`` 1 slash, 3 message menu with
        ``target_message``); type 3: component on ``target_message`` (``custom_id``,
        ``component_type``, ``values``); type 4: autocomplete; type 5: modal submit
        (``custom_id`` defaults to the last modal the bot opened; ``modal_values`` maps
        text-input custom ids or labels to values). ``attachments`` maps an option
        name to an attachment from :meth:`add_attachment` (an option of type 11).
        ``permissions`` defaults to the member's ``permissions`` (see :meth:`add_member`) or "0".

        ``options`` are the command's options as Discord sends them, subcommands (type 1) and groups (type 2)
        nesting their own ``options``. Values of USER (6), CHANNEL (7), ROLE (8) and MENTIONABLE (9) options
        are snowflakes (sent as strings) that Discord resolves into ``data.resolved``: ``users`` (and, for
        guild members, ``members`` without ``user``), ``channels`` (id, name, type, permissions) and ``roles``
        (full role objects), at whatever depth the option is. A user the fake does not know yet becomes a
        user who is not a member; an unknown channel or role is a mistake in the test (ValueError).
        """
        user_id = user_id or self.user_id
        channel_id = channel_id or self.channel_id
        member = dict(self._ensure_member(user_id))
        if permissions is None:
            permissions = member.get("permissions", "0")
        member["permissions"] = permissions
        interaction_id = self._snowflake()
        token = self._token(interaction_id)
        channel = {**self.channels[channel_id], "permissions": permissions}

        data: dict[str, Any]
        message: dict | None = None
        if type in (2, 4):
            data = self._command_data(
                name, command_type, options, attachments, target_message, guild_command, permissions
            )
        elif type == 3:
            if target_message is None or custom_id is None:
                raise ValueError("a component interaction needs target_message and custom_id")
            # Discord sends the message as it is now; a deleted message, or a button it no longer carries,
            # cannot be pressed.
            stored = self.message(int(target_message["id"]))
            if stored is None:
                raise ValueError(
                    f"message {target_message['id']} does not exist (deleted?): nothing to press"
                )
            on_it = [
                c.get("custom_id")
                for row in stored.get("components") or []
                for c in row.get("components") or []
            ]
            if custom_id not in on_it:
                raise ValueError(f"message {target_message['id']} carries no component {custom_id!r}")
            message = stored
            data = {"custom_id": custom_id, "component_type": component_type or 2}
            if values is not None:
                data["values"] = values
                data["resolved"] = {}
        elif type == 5:
            data = self._modal_data(custom_id, modal_values or {})
            message = target_message
        else:
            raise ValueError(f"unsupported interaction type {type}")

        payload: dict[str, Any] = {
            "id": str(interaction_id),
            "application_id": str(self.application_id),
            "type": type,
            "data": data,
            "guild_id": str(self.guild_id),
            "guild": {"id": str(self.guild_id), "locale": "en-US", "features": []},
            "channel_id": str(channel_id),
            "channel": channel,
            "member": member,
            "token": token,
            "version": 1,
            "app_permissions": self.app_permissions,
            "locale": locale,
            "guild_locale": "en-US",
            "entitlements": [],
            "entitlement_sku_ids": [],
            "authorizing_integration_owners": {"0": str(self.guild_id)},
            "context": 0,
            "attachment_size_limit": self.upload_limit,
        }
        if message is not None:
            payload["message"] = message
        ix = _Interaction(
            id=interaction_id,
            token=token,
            type=type,
            command_type=command_type if type in (2, 4) else None,
            name=name,
            channel_id=channel_id,
            user_id=user_id,
            dispatched_at=time.monotonic(),
            message_id=int(message["id"]) if message is not None else None,
        )
        self._interactions[interaction_id] = ix
        self._by_token[token] = ix
        return payload

    async def send_message(
        self,
        *,
        content: str,
        author_id: int | None = None,
        channel_id: int | None = None,
        attachments: list[dict] | None = None,
        referenced_message: dict | None = None,
        mentions_bot: bool = False,
        with_member: bool = True,
    ) -> dict:
        """Store a user's message and dispatch MESSAGE_CREATE; return the stored message.

        ``with_member=False`` leaves the author's ``member`` (their roles) out of the event, as Discord can
        for a member it could not resolve: the client then knows a user, not a member.

        ``mentions_bot`` puts the bot in ``mentions`` (for a message that is not a
        reply it also prefixes ``<@bot>`` to the content when missing); a reply
        carries ``message_reference`` and ``referenced_message``. Without the
        message-content intent the dispatched copy has empty content and
        attachments unless the bot is mentioned, as on Discord.
        """
        await self.wait_ready()
        author_id = author_id or self.user_id
        channel_id = channel_id or self.channel_id
        self._ensure_member(author_id)
        mentions: list[dict] = []
        if mentions_bot:
            mentions.append(self.bot_user)
            token = f"<@{self.bot_user_id}>"
            if referenced_message is None and token not in content:
                content = f"{token} {content}"
        msg = self._new_message(
            channel_id,
            author=self.users[author_id],
            content=content,
            attachments=attachments or [],
            referenced_message=referenced_message,
            mentions=mentions,
        )
        if not with_member:
            self._memberless.add(int(msg["id"]))
        await self._dispatch_message("MESSAGE_CREATE", msg)
        return msg

    # ----------------------------------------------------------------- model helpers

    def _snowflake(self) -> int:
        value = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        self._last_id = max(value, self._last_id + 1)
        return self._last_id

    def _token(self, interaction_id: int) -> str:
        raw = f"interaction:{interaction_id}:{secrets.token_urlsafe(48)}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def _ensure_member(self, user_id: int, *, username: str | None = None) -> dict:
        if user_id not in self.users:
            self.users[user_id] = {
                "id": str(user_id),
                "username": username or f"user{str(user_id)[-4:]}",
                "discriminator": "0",
                "global_name": username or f"User {str(user_id)[-4:]}",
                "avatar": None,
                "public_flags": 0,
                "bot": False,
            }
        if user_id not in self.members:
            self.members[user_id] = self._member_object(user_id, roles=[])
        return self.members[user_id]

    def _member_object(self, user_id: int, *, roles: list[int]) -> dict:
        return {
            "user": self.users[user_id],
            "nick": None,
            "avatar": None,
            "banner": None,
            "roles": [str(r) for r in roles],
            "joined_at": "2024-01-01T00:00:00.000000+00:00",
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
            "unusual_dm_activity_until": None,
        }

    @staticmethod
    def _plain_member(member: dict) -> dict:
        """A member as guild payloads carry it: interaction-only ``permissions`` left out."""
        return {k: v for k, v in member.items() if k != "permissions"}

    def _guild_object(self, *, gateway: bool) -> dict:
        guild: dict[str, Any] = {
            "id": str(self.guild_id),
            "name": "Fake Guild",
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(self.owner_id),
            "application_id": None,
            "region": "deprecated",
            "afk_channel_id": None,
            "afk_timeout": 300,
            "system_channel_id": str(self.channel_id),
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "widget_enabled": False,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "nsfw": False,
            "premium_tier": self.premium_tier,
            "premium_subscription_count": [0, 2, 7, 14][min(self.premium_tier, 3)],
            "premium_progress_bar_enabled": False,
            "preferred_locale": "en-US",
            "vanity_url_code": None,
            "max_members": 500000,
            "max_presences": None,
            "max_video_channel_users": 25,
            "max_stage_video_channel_users": 50,
            "features": [],
            "roles": self.roles,
            "emojis": [],
            "stickers": [],
            "incidents_data": None,
        }
        if gateway:
            guild.update(
                {
                    "joined_at": "2024-01-01T00:00:00.000000+00:00",
                    "large": False,
                    "unavailable": False,
                    "member_count": len(self.members),
                    "members": [self._plain_member(m) for m in self.members.values()],
                    "channels": [
                        {k: v for k, v in c.items() if k != "guild_id"}
                        for c in self.channels.values()
                        if c["type"] not in THREAD_TYPES
                    ],
                    "threads": [
                        c
                        for cid, c in self.channels.items()
                        if c["type"] in THREAD_TYPES and cid not in self._uncached_threads
                    ],
                    "voice_states": [],
                    "presences": [],
                    "stage_instances": [],
                    "guild_scheduled_events": [],
                    "soundboard_sounds": [],
                    "lazy": True,
                }
            )
        return guild

    def _host(self, channel_id: int, filename: str, data: bytes, content_type: str | None) -> dict:
        att_id = self._snowflake()
        content_type = content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        hm = hashlib.sha256(data + str(att_id).encode()).hexdigest()[:64]
        ex = format(int(time.time()) + 86400, "x")
        is_ = format(int(time.time()), "x")
        key = f"{channel_id}/{att_id}/{filename}"
        self._hosted[key] = _Hosted(data, content_type, hm)
        query = f"?ex={ex}&is={is_}&hm={hm}&"
        att: dict[str, Any] = {
            "id": str(att_id),
            "filename": filename,
            "size": len(data),
            "url": f"{self.cdn_url}/cdn/attachments/{key}{query}",
            "proxy_url": f"{self.cdn_url}/media/attachments/{key}{query}",
            "content_type": content_type,
            "width": None,
            "height": None,
        }
        if content_type.startswith("image/"):
            att.update(self._image_size(data))
        return att

    @staticmethod
    def _image_size(data: bytes) -> dict:
        try:
            from PIL import Image

            with Image.open(io.BytesIO(data)) as im:
                return {"width": im.width, "height": im.height}
        except Exception:  # not an image Pillow understands: Discord leaves them out too
            return {}

    def _new_message(
        self,
        channel_id: int,
        *,
        author: dict,
        content: str = "",
        attachments: list[dict] | None = None,
        embeds: list[dict] | None = None,
        components: list[dict] | None = None,
        flags: int = 0,
        msg_type: int = 0,
        referenced_message: dict | None = None,
        mentions: list[dict] | None = None,
        interaction: _Interaction | None = None,
        message_id: int | None = None,
    ) -> dict:
        msg: dict[str, Any] = {
            "id": str(message_id or self._snowflake()),
            "type": msg_type,
            "channel_id": str(channel_id),
            "author": author,
            "content": content,
            "timestamp": _now_iso(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": mentions or [],
            "mention_roles": [],
            "mention_channels": [],
            "attachments": attachments or [],
            "embeds": embeds or [],
            "components": components or [],
            "reactions": [],
            "pinned": False,
            "flags": flags,
        }
        if referenced_message is not None:
            msg["type"] = 19 if msg_type == 0 else msg_type
            msg["message_reference"] = {
                "type": 0,
                "message_id": referenced_message["id"],
                "channel_id": referenced_message["channel_id"],
                "guild_id": str(self.guild_id),
            }
            msg["referenced_message"] = referenced_message
        if interaction is not None:
            user = self.users[interaction.user_id]
            msg["webhook_id"] = str(self.application_id)
            msg["application_id"] = str(self.application_id)
            msg["interaction_metadata"] = {
                "id": str(interaction.id),
                "type": interaction.type,
                "user": user,
                "authorizing_integration_owners": {"0": str(self.guild_id)},
                **(
                    {"name": interaction.name, "command_type": interaction.command_type}
                    if interaction.command_type
                    else {}
                ),
                **(
                    {"interacted_message_id": str(interaction.message_id)}
                    if interaction.type == 3 and interaction.message_id is not None
                    else {}
                ),
            }
            if interaction.command_type:
                msg["interaction"] = {
                    "id": str(interaction.id),
                    "type": interaction.type,
                    "name": interaction.name,
                    "user": user,
                }
        self.messages.setdefault(channel_id, []).append(msg)
        if channel_id in self.channels:
            self.channels[channel_id]["last_message_id"] = msg["id"]
        return msg

    def _command_data(
        self,
        name: str,
        command_type: int,
        options: list[dict] | None,
        attachments: dict[str, dict] | None,
        target_message: dict | None,
        guild_command: bool | None,
        permissions: str = "0",
    ) -> dict:
        registered = self._find_command(name, command_type, guild_command)
        data: dict[str, Any] = {
            "id": registered["id"] if registered else str(self._snowflake()),
            "name": name,
            "type": command_type,
        }
        in_guild = (
            guild_command if guild_command is not None else bool(registered and registered.get("guild_id"))
        )
        if in_guild:
            data["guild_id"] = str(self.guild_id)
        if command_type == 1:
            opts = self._copy_options(options or [])
            resolved: dict[str, Any] = {}
            self._resolve_options(opts, resolved, permissions)
            for opt_name, att in (attachments or {}).items():
                for o in opts:
                    if o["name"] == opt_name:
                        o.update(type=11, value=att["id"])
                        break
                else:
                    opts.append({"name": opt_name, "type": 11, "value": att["id"]})
                resolved.setdefault("attachments", {})[att["id"]] = att
            data["options"] = opts
            if resolved:
                data["resolved"] = resolved
        elif command_type == 3:
            if target_message is None:
                raise ValueError("a message context-menu command needs target_message")
            data["target_id"] = target_message["id"]
            data["resolved"] = {"messages": {target_message["id"]: target_message}}
        return data

    @classmethod
    def _copy_options(cls, options: list[dict]) -> list[dict]:
        """A deep enough copy of interaction options (nested subcommand options included)."""
        copied = []
        for o in options:
            c = dict(o)
            if isinstance(c.get("options"), list):
                c["options"] = cls._copy_options(c["options"])
            copied.append(c)
        return copied

    def _user_object(self, user_id: int) -> dict:
        """A user Discord knows: one of the fake's, or a new one who is not in the guild."""
        if user_id not in self.users:
            self.users[user_id] = {
                "id": str(user_id),
                "username": f"user{str(user_id)[-4:]}",
                "discriminator": "0",
                "global_name": f"User {str(user_id)[-4:]}",
                "avatar": None,
                "public_flags": 0,
                "bot": False,
            }
        return self.users[user_id]

    def _resolve_options(self, options: list[dict], resolved: dict[str, Any], permissions: str) -> None:
        """Fill ``resolved`` for the USER / CHANNEL / ROLE / MENTIONABLE values in ``options`` (recursively
        through subcommands and groups), as Discord does; snowflake values become strings."""
        for opt in options:
            kind = opt.get("type")
            if kind in (OPTION_SUB_COMMAND, OPTION_SUB_COMMAND_GROUP):
                self._resolve_options(opt.get("options") or [], resolved, permissions)
                continue
            if (
                kind not in (OPTION_USER, OPTION_CHANNEL, OPTION_ROLE, OPTION_MENTIONABLE)
                or "value" not in opt
            ):
                continue
            opt["value"] = str(opt["value"])
            snowflake = int(opt["value"])
            role = self.role(snowflake)
            if kind == OPTION_ROLE or (kind == OPTION_MENTIONABLE and role is not None):
                if role is None:
                    raise ValueError(f"option {opt.get('name')!r}: no role {snowflake} (add_role first)")
                resolved.setdefault("roles", {})[str(snowflake)] = role
            elif kind == OPTION_CHANNEL:
                channel = self.channels.get(snowflake)
                if channel is None:
                    raise ValueError(
                        f"option {opt.get('name')!r}: no channel {snowflake} (add_channel first)"
                    )
                partial = {k: channel[k] for k in ("id", "name", "type")}
                partial["permissions"] = permissions  # the invoking member's, in that channel
                if channel["type"] in (10, 11, 12):  # threads also carry these
                    partial.update(
                        parent_id=channel.get("parent_id"), thread_metadata=channel.get("thread_metadata")
                    )
                resolved.setdefault("channels", {})[str(snowflake)] = partial
            else:  # a user, or a mentionable that is not a role
                resolved.setdefault("users", {})[str(snowflake)] = self._user_object(snowflake)
                member = self.members.get(snowflake)
                if member is not None:
                    partial = {k: v for k, v in member.items() if k not in ("user", "deaf", "mute")}
                    partial["permissions"] = member.get("permissions", "0")
                    resolved.setdefault("members", {})[str(snowflake)] = partial

    def _find_command(self, name: str, command_type: int, guild_command: bool | None) -> dict | None:
        found = [
            c for c in self.registered_commands if c["name"] == name and c.get("type", 1) == command_type
        ]
        guild = [c for c in found if c.get("guild_id")]
        glob = [c for c in found if not c.get("guild_id")]
        if guild_command is True:
            return guild[-1] if guild else None
        if guild_command is False:
            return glob[-1] if glob else None
        candidates = guild or glob
        return candidates[-1] if candidates else None

    def _modal_data(self, custom_id: str | None, values: dict[str, str]) -> dict:
        modal = None
        if custom_id is None:
            if not self.modals:
                raise ValueError("no modal was opened; pass custom_id")
            modal = self.modals[-1]
            custom_id = modal["custom_id"]
        else:
            modal = next((m for m in reversed(self.modals) if m.get("custom_id") == custom_id), None)
        if modal is None:
            rows = [
                {"type": 1, "components": [{"type": 4, "custom_id": k, "value": v}]}
                for k, v in values.items()
            ]
            return {"custom_id": custom_id, "components": rows}

        def value_for(item: dict, label: str | None) -> str:
            for key in (item.get("custom_id"), label, item.get("label")):
                if key is not None and key in values:
                    return values[key]
            return item.get("value") or ""

        components = []
        for top in modal.get("components", []):
            if top.get("type") == 1:  # action row of text inputs
                inner = [
                    {"type": 4, "custom_id": c["custom_id"], "value": value_for(c, None)}
                    for c in top.get("components", [])
                    if c.get("type") == 4
                ]
                components.append({"type": 1, "components": inner})
            elif top.get("type") == 18 and top.get("component", {}).get("type") == 4:  # label
                c = top["component"]
                components.append(
                    {
                        "type": 18,
                        "component": {
                            "type": 4,
                            "custom_id": c["custom_id"],
                            "value": value_for(c, top.get("label")),
                        },
                    }
                )
        return {"custom_id": custom_id, "components": components}

    # ----------------------------------------------------------------- gateway

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=0, autoping=True)
        await ws.prepare(request)
        session = _GatewaySession(ws, request.query.get("compress"))
        self._sessions.append(session)
        try:
            await session.send(10, {"heartbeat_interval": 41250, "_trace": ["fake-gateway"]})
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                payload = json.loads(msg.data)
                await self._gateway_op(session, payload.get("op"), payload.get("d"))
        finally:
            self._sessions.remove(session)
        return ws

    async def _gateway_op(self, session: _GatewaySession, op: int | None, d: Any) -> None:
        if op == 1:  # heartbeat
            await session.send(11, None)
        elif op == 2:  # identify
            if d.get("token") != self.token and d.get("token") != f"Bot {self.token}":
                await session.ws.close(code=4004, message=b"Authentication failed.")
                return
            shard = d.get("shard")
            self.identified_shards.append(shard)
            if shard is not None and not _valid_shard(shard):
                await session.ws.close(code=CLOSE_INVALID_SHARD, message=b"Invalid shard.")
                return
            session.intents = int(d.get("intents", 0))
            session.shard = shard
            session.session_id = secrets.token_hex(16)
            session.identified = True
            self._known_sessions[session.session_id] = session
            mine = self.owns_guild(session)
            ready: dict[str, Any] = {
                "v": 10,
                "user": self.bot_user,
                "guilds": [{"id": str(self.guild_id), "unavailable": True}] if mine else [],
                "session_id": session.session_id,
                "session_type": "normal",
                "resume_gateway_url": self.gateway_url,
                "application": {"id": str(self.application_id), "flags": 0},
                "private_channels": [],
                "relationships": [],
                "presences": [],
                "user_settings": {},
                "geo_ordered_rtc_regions": [],
                "guild_join_requests": [],
                "_trace": ["fake-gateway"],
            }
            if session.shard is not None:
                ready["shard"] = session.shard
            await session.send(0, ready, "READY")
            if mine:
                await session.send(0, self._guild_object(gateway=True), "GUILD_CREATE")
                self._ready.set()
            async with self._changed:
                self._changed.notify_all()
        elif op == 6:  # resume
            old = self._known_sessions.get(d.get("session_id", ""))
            if old is None or d.get("token") != self.token:
                await session.send(9, False)
                return
            session.session_id, session.intents, session.shard = old.session_id, old.intents, old.shard
            session.seq = max(old.seq, int(d.get("seq") or 0))
            session.identified = True
            self._known_sessions[old.session_id or ""] = session
            await session.send(0, {"_trace": ["fake-gateway"]}, "RESUMED")
            if self.owns_guild(session):
                self._ready.set()
            async with self._changed:
                self._changed.notify_all()
        elif op == 8:  # request guild members
            await session.send(
                0,
                {
                    "guild_id": str(self.guild_id),
                    "members": [self._plain_member(m) for m in self.members.values()],
                    "chunk_index": 0,
                    "chunk_count": 1,
                    "not_found": [],
                    **({"nonce": d["nonce"]} if d.get("nonce") else {}),
                },
                "GUILD_MEMBERS_CHUNK",
            )
        # op 3 (presence) and op 4 (voice state) need no answer

    async def _dispatch(self, event: str, data: dict, *, strip_content: bool = False) -> None:
        for session in list(self._sessions):
            if not session.identified or not self.owns_guild(session):
                continue  # every event here is the guild's: only its shard hears it
            payload = data
            if strip_content and not session.intents & INTENT_MESSAGE_CONTENT:
                payload = {**data, "content": "", "attachments": [], "embeds": [], "components": []}
                if "referenced_message" in data and data["referenced_message"] is not None:
                    ref = data["referenced_message"]
                    if ref["author"]["id"] != str(self.bot_user_id):
                        payload["referenced_message"] = {
                            **ref,
                            "content": "",
                            "attachments": [],
                            "embeds": [],
                        }
            await session.send(0, payload, event)

    async def _dispatch_message(self, event: str, msg: dict) -> None:
        if msg["flags"] & FLAG_EPHEMERAL:
            return  # ephemeral messages never reach the gateway
        author_id = int(msg["author"]["id"])
        data = {**msg, "guild_id": str(self.guild_id)}
        member = self.members.get(author_id)
        if member is not None and not msg.get("webhook_id") and int(msg["id"]) not in self._memberless:
            data["member"] = {k: v for k, v in member.items() if k not in ("user", "permissions")}
        data["mentions"] = [
            {
                **u,
                "member": {
                    k: v for k, v in self.members[int(u["id"])].items() if k not in ("user", "permissions")
                },
            }
            if int(u["id"]) in self.members
            else u
            for u in msg["mentions"]
        ]
        # Discord keeps content for the bot's own messages, DMs and messages that mention it.
        visible = author_id == self.bot_user_id or any(
            int(u["id"]) == self.bot_user_id for u in msg["mentions"]
        )
        await self._dispatch(event, data, strip_content=not visible)

    # ----------------------------------------------------------------- HTTP plumbing

    def _route(self, method: str, pattern: str, *, auth: bool = True) -> Callable[[_Handler], _Handler]:
        def register(fn: _Handler) -> _Handler:
            self._routes.append((method, re.compile(pattern), fn, auth))
            return fn

        return register

    async def _read_body(self, request: web.Request) -> tuple[Any, list[tuple[str, str, bytes]]]:
        files: list[tuple[str, str, bytes]] = []
        ctype = request.headers.get("Content-Type", "")
        if ctype.startswith("multipart/"):
            body: Any = None
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                if not isinstance(part, BodyPartReader):  # nested multipart: Discord does not use it
                    continue
                raw = await part.read(decode=False)
                name = part.name or ""
                if name == "payload_json":
                    body = json.loads(raw)
                elif part.filename is not None:
                    files.append((name, part.filename, bytes(raw)))
            return body, files
        raw = await request.read()
        if not raw:
            return None, files
        try:
            return json.loads(raw), files
        except ValueError:
            return raw.decode(errors="replace"), files

    def _ratelimit_headers(self, method: str, path: str) -> dict[str, str]:
        template = re.sub(r"\d{6,}", "{id}", path.split("/messages/")[0])
        bucket = hashlib.md5(f"{method} {template}".encode()).hexdigest()
        return {
            "X-RateLimit-Limit": "10000",
            "X-RateLimit-Remaining": "9999",
            "X-RateLimit-Reset": f"{time.time() + 1:.3f}",
            "X-RateLimit-Reset-After": "1.000",
            "X-RateLimit-Bucket": bucket,
            "Via": "1.1 google",
        }

    async def _api(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        path = request.path[len(API_PREFIX) :]
        method = request.method.upper()
        body, files = await self._read_body(request)
        call = RestCall(
            method=method,
            path=path,
            json=body,
            files=files,
            headers=dict(request.headers),
            at=arrived,
            query=dict(request.query),
        )
        headers = self._ratelimit_headers(method, path)
        fault = self._take_fault(call)
        if fault is not None and fault[0] in ("drop", "hang"):
            await self._record(call)
            if fault[0] == "hang":
                await self._stopping.wait()
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=204)  # never reaches the client: the connection is gone
        if fault is not None:
            await asyncio.sleep(fault[1])
        status, answer = await self._handle(request, method, path, body, files)
        call.status = status
        call.answered = time.monotonic()
        await self._record(call)
        if status == 204 or answer is None:
            return web.Response(status=status if status != 200 else 204, headers=headers)
        # Exactly "application/json": discord.py's json_or_text compares the header verbatim,
        # so aiohttp's json_response ("...; charset=utf-8") would reach the bot as a string.
        headers["Content-Type"] = "application/json"
        return web.Response(body=json.dumps(answer).encode(), status=status, headers=headers)

    async def _record(self, call: RestCall) -> None:
        self.calls.append(call)
        async with self._changed:
            self._changed.notify_all()

    async def _handle(
        self, request: web.Request, method: str, path: str, body: Any, files: list[tuple[str, str, bytes]]
    ) -> tuple[int, Any]:
        for inj in self._injected:
            inj_method, inj_regex, inj_status, inj_body, left = inj
            if left[0] > 0 and inj_method in (method, "*") and re.fullmatch(inj_regex, path):
                left[0] -= 1
                return inj_status, inj_body
        for route_method, pattern, handler, auth in self._routes:
            m = pattern.fullmatch(path)
            if m is None or route_method != method:
                continue
            if auth and request.headers.get("Authorization") != f"Bot {self.token}":
                return 401, {"message": "401: Unauthorized", "code": 0}
            try:
                result = await handler(request, m, body, files)
            except _ApiError as e:
                return e.status, e.body
            except Exception as e:  # a bug in the fake: answer 400 (a 5xx makes discord.py retry for seconds)
                self.errors.append(f"{method} {path}: {traceback.format_exc()}")
                return 400, {"message": f"fake discord error: {e!r}", "code": 0}
            if isinstance(result, tuple):
                return result
            return (204, None) if result is None else (200, result)
        return 404, {"message": "404: Not Found", "code": 0}

    def _check_upload(self, files: list[tuple[str, str, bytes]]) -> None:
        if sum(len(f[2]) for f in files) > self.upload_limit:
            raise _ApiError(413, "Request entity too large", 40005)

    @staticmethod
    def _check_components(components: Any) -> None:
        """Discord's limits on message components: 400 / 50035 (Invalid Form Body) naming the field."""
        errors: dict[str, Any] = {}

        def bad(path: list[str], code: str, message: str) -> None:
            node = errors
            for part in path:
                node = node.setdefault(part, {})
            node["_errors"] = [{"code": code, "message": message}]

        rows = components or []
        if len(rows) > MAX_ACTION_ROWS:
            bad(["components"], "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_ACTION_ROWS} or fewer in length.")
        seen: set[str] = set()
        for r, row in enumerate(rows):
            if row.get("type") != 1:
                continue  # components v2 are not modelled
            inner = row.get("components") or []
            if not 1 <= len(inner) <= MAX_ROW_COMPONENTS:
                bad(
                    ["components", str(r), "components"],
                    "BASE_TYPE_BAD_LENGTH",
                    f"Must be between 1 and {MAX_ROW_COMPONENTS} in length.",
                )
            for c, item in enumerate(inner):
                where = ["components", str(r), "components", str(c)]
                custom_id = item.get("custom_id")
                if item.get("type") == 2 and item.get("style") != 5 and not custom_id:
                    bad([*where, "custom_id"], "BASE_TYPE_REQUIRED", "This field is required")
                if custom_id is not None:
                    if not 1 <= len(str(custom_id)) <= MAX_CUSTOM_ID:
                        bad(
                            [*where, "custom_id"],
                            "BASE_TYPE_BAD_LENGTH",
                            f"Must be between 1 and {MAX_CUSTOM_ID} in length.",
                        )
                    if custom_id in seen:
                        bad(
                            [*where, "custom_id"],
                            "COMPONENT_CUSTOM_ID_DUPLICATED",
                            "Component custom id cannot be duplicated",
                        )
                    seen.add(str(custom_id))
                if len(str(item.get("label") or "")) > MAX_BUTTON_LABEL:
                    bad(
                        [*where, "label"],
                        "BASE_TYPE_MAX_LENGTH",
                        f"Must be {MAX_BUTTON_LABEL} or fewer in length.",
                    )
        if errors:
            raise _ApiError(400, "Invalid Form Body", 50035, errors=errors)

    @staticmethod
    def _check_commands(payload: Any) -> None:
        """Discord's rules for a bulk overwrite of application commands, at every level of subcommands; a
        breach rejects the whole PUT with 400 / 50035, errors keyed by command index then option path."""
        errors: dict[str, Any] = {}

        def bad(path: list[str], code: str, message: str) -> None:
            node = errors
            for part in path:
                node = node.setdefault(part, {})
            node.setdefault("_errors", []).append({"code": code, "message": message})

        def length(path: list[str], value: Any, low: int, high: int) -> bool:
            if not low <= len(str(value or "")) <= high:
                bad(path, "BASE_TYPE_BAD_LENGTH", f"Must be between {low} and {high} in length.")
                return False
            return True

        def check_name(path: list[str], name: Any, chat_input: bool) -> None:
            if not length(path, name, 1, MAX_COMMAND_NAME) or not chat_input:
                return
            # ^[-_'\p{L}\p{N}\p{sc=Deva}\p{sc=Thai}]{1,32}$, lowercase wherever a letter has a lowercase form
            if not all(ch.isalnum() or ch in "-_'" for ch in str(name)):
                bad(path, "STRING_TYPE_REGEX", "String value did not match validation regex.")
                bad(path, "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
            elif str(name) != str(name).lower():
                bad(path, "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")

        def check_localizations(path: list[str], item: dict, chat_input: bool) -> None:
            """name_localizations / description_localizations: a map of Discord locales to a name (the
            name's rules) or a description (1-100); null or absent is none."""
            for key in ("name_localizations", "description_localizations"):
                found = item.get(key)
                if found is None:
                    continue
                if not isinstance(found, dict):
                    bad([*path, key], "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
                    continue
                for locale, value in found.items():
                    where = [*path, key, locale]
                    if locale not in LOCALES:
                        bad(where, "LOCALE_INVALID", f"Invalid locale {locale!r}.")
                    elif key == "name_localizations":
                        check_name(where, value, chat_input)
                    else:
                        length(where, value, 1, MAX_COMMAND_DESCRIPTION)

        def check_options(path: list[str], options: Any, parent: int | None) -> None:
            if options is None:
                return
            if not isinstance(options, list):
                bad(path, "BASE_TYPE_ARRAY", "Must be an array.")
                return
            if len(options) > MAX_COMMAND_OPTIONS:
                bad(path, "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_COMMAND_OPTIONS} or fewer in length.")
            subs = (OPTION_SUB_COMMAND, OPTION_SUB_COMMAND_GROUP)
            first_is_sub = bool(options) and isinstance(options[0], dict) and options[0].get("type") in subs
            seen: set[str] = set()
            optional_seen = False
            for i, opt in enumerate(options):
                where = [*path, str(i)]
                if not isinstance(opt, dict):
                    bad(where, "MODEL_TYPE_CONVERT", "Only dictionaries may be used in a ModelType")
                    continue
                kind = opt.get("type")
                if kind is None:
                    bad([*where, "type"], "BASE_TYPE_REQUIRED", "This field is required")
                    continue
                if kind not in OPTION_TYPES:
                    allowed = ", ".join(str(t) for t in OPTION_TYPES)
                    bad([*where, "type"], "BASE_TYPE_CHOICES", f"Value must be one of {{{allowed}}}.")
                    continue
                is_sub = kind in subs
                if (
                    is_sub != first_is_sub
                    or (parent == OPTION_SUB_COMMAND_GROUP and kind != OPTION_SUB_COMMAND)
                    or (parent == OPTION_SUB_COMMAND and is_sub)
                ):
                    bad(
                        where,
                        "APPLICATION_COMMAND_OPTIONS_TYPE_INVALID",
                        "Sub-command and sub-command group option types are mutually exclusive to all other types",
                    )
                check_name([*where, "name"], opt.get("name"), True)
                length([*where, "description"], opt.get("description"), 1, MAX_COMMAND_DESCRIPTION)
                check_localizations(where, opt, True)
                if str(opt.get("name")) in seen:
                    bad(
                        [*where, "name"],
                        "APPLICATION_COMMAND_OPTIONS_NAME_ALREADY_EXISTS",
                        "Option name already exists",
                    )
                seen.add(str(opt.get("name")))
                if opt.get("required") and not is_sub and optional_seen:
                    bad(
                        where,
                        "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                        "Required options must be placed before non-required options",
                    )
                if not opt.get("required") and not is_sub:
                    optional_seen = True
                choices = opt.get("choices")
                if isinstance(choices, list) and len(choices) > MAX_OPTION_CHOICES:
                    bad(
                        [*where, "choices"],
                        "BASE_TYPE_MAX_LENGTH",
                        f"Must be {MAX_OPTION_CHOICES} or fewer in length.",
                    )
                if is_sub:
                    check_options([*where, "options"], opt.get("options"), kind)

        if not isinstance(payload, list):
            raise _ApiError(
                400,
                "Invalid Form Body",
                50035,
                errors={"_errors": [{"code": "BASE_TYPE_ARRAY", "message": "Must be an array."}]},
            )
        names: set[tuple[int, str]] = set()
        for c, cmd in enumerate(payload):
            where = [str(c)]
            if not isinstance(cmd, dict):
                bad(where, "MODEL_TYPE_CONVERT", "Only dictionaries may be used in a ModelType")
                continue
            kind = int(cmd.get("type") or 1)
            check_name([*where, "name"], cmd.get("name"), kind == 1)
            check_localizations(where, cmd, kind == 1)
            if kind == 1:
                length([*where, "description"], cmd.get("description"), 1, MAX_COMMAND_DESCRIPTION)
                check_options([*where, "options"], cmd.get("options"), None)
            if (kind, str(cmd.get("name"))) in names:
                bad(
                    [*where, "name"],
                    "APPLICATION_COMMANDS_DUPLICATE_NAME",
                    "Application command names must be unique",
                )
            names.add((kind, str(cmd.get("name"))))
        if errors:
            raise _ApiError(400, "Invalid Form Body", 50035, errors=errors)

    def _check_new_message(self, body: dict, files: list) -> None:
        self._check_components(body.get("components"))
        content = body.get("content") or ""
        if len(content) > 2000:
            raise _ApiError(
                400,
                "Invalid Form Body",
                50035,
                errors={
                    "content": {
                        "_errors": [
                            {"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length."}
                        ]
                    }
                },
            )
        if not (
            content
            or body.get("embeds")
            or files
            or body.get("components")
            or body.get("sticker_ids")
            or body.get("poll")
        ):
            raise _ApiError(400, "Cannot send an empty message", 50006)

    def _attachments_for(
        self, channel_id: int, body: dict, files: list[tuple[str, str, bytes]], existing: list[dict]
    ) -> list[dict]:
        """Resolve ``attachments`` of a create/edit body against uploaded ``files[n]`` parts."""
        uploads: dict[int, tuple[str, bytes]] = {}
        for i, (name, filename, data) in enumerate(files):
            m = re.fullmatch(r"files\[(\d+)\]", name)
            uploads[int(m.group(1)) if m else i] = (filename, data)
        old = {str(a["id"]): a for a in existing}
        result: list[dict] = []
        used: set[int] = set()
        if "attachments" in body and body["attachments"] is not None:
            for spec in body["attachments"]:
                sid = str(spec.get("id"))
                if sid in old:
                    result.append(old[sid])
                elif sid.isdigit() and int(sid) in uploads:
                    filename, data = uploads[int(sid)]
                    att = self._host(channel_id, spec.get("filename") or filename, data, None)
                    if spec.get("description"):
                        att["description"] = spec["description"]
                    result.append(att)
                    used.add(int(sid))
        else:
            result = list(existing)
        for idx, (filename, data) in sorted(uploads.items()):
            if idx not in used:
                result.append(self._host(channel_id, filename, data, None))
        return result

    def _apply_edit(self, msg: dict, body: dict, files: list[tuple[str, str, bytes]]) -> None:
        if "components" in body:
            self._check_components(body["components"])
        channel_id = int(msg["channel_id"])
        for key in ("content", "embeds", "components"):
            if key in body:
                msg[key] = body[key] if body[key] is not None else ([] if key != "content" else "")
        if "attachments" in body or files:
            msg["attachments"] = self._attachments_for(channel_id, body, files, msg["attachments"])
        if body.get("flags") is not None:
            # only SUPPRESS_EMBEDS (4) can be toggled on edit
            msg["flags"] = (msg["flags"] & ~4) | (int(body["flags"]) & 4)
        msg["flags"] &= ~FLAG_LOADING
        msg["edited_timestamp"] = _now_iso()

    def _find_message(self, channel_id: int, message_id: int) -> dict:
        if channel_id not in self.channels:
            raise _unknown("Channel", 10003)
        for m in self.messages.get(channel_id, []):
            if int(m["id"]) == message_id:
                return m
        raise _unknown("Message", 10008)

    def _create_bot_message(
        self,
        channel_id: int,
        body: dict,
        files: list[tuple[str, str, bytes]],
        *,
        interaction: _Interaction | None = None,
        flags: int = 0,
        message_id: int | None = None,
    ) -> dict:
        attachments = self._attachments_for(channel_id, body, files, [])
        referenced = None
        ref = body.get("message_reference")
        if ref and ref.get("message_id"):
            try:
                referenced = self._find_message(
                    int(ref.get("channel_id") or channel_id), int(ref["message_id"])
                )
            except _ApiError:
                if ref.get("fail_if_not_exists", True):
                    raise _ApiError(
                        400,
                        "Invalid Form Body",
                        50035,
                        errors={
                            "message_reference": {
                                "_errors": [
                                    {
                                        "code": "MESSAGE_REFERENCE_UNKNOWN_MESSAGE",
                                        "message": "Unknown message",
                                    }
                                ]
                            }
                        },
                    ) from None
        msg_type = 0
        if interaction is not None and interaction.command_type:
            msg_type = 20 if interaction.command_type == 1 else 23
        return self._new_message(
            channel_id,
            author=self.bot_user,
            content=body.get("content") or "",
            attachments=attachments,
            embeds=body.get("embeds") or [],
            components=body.get("components") or [],
            flags=flags,
            msg_type=msg_type,
            referenced_message=referenced,
            interaction=interaction,
            message_id=message_id,
        )

    async def _remove_message(self, msg: dict) -> None:
        """Delete a stored message and tell the gateway (MESSAGE_DELETE), as Discord does for visible ones."""
        self.messages[int(msg["channel_id"])].remove(msg)
        if not msg["flags"] & FLAG_EPHEMERAL:
            await self._dispatch(
                "MESSAGE_DELETE",
                {"id": msg["id"], "channel_id": msg["channel_id"], "guild_id": str(self.guild_id)},
            )

    # ----------------------------------------------------------------- interaction tokens

    def _interaction_for_token(self, token: str, application_id: str | None = None) -> _Interaction:
        if application_id is not None and application_id != str(self.application_id):
            raise _unknown("Webhook", 10015)
        ix = self._by_token.get(token)
        if ix is None or ix.expired:
            raise _ApiError(401, "Invalid Webhook Token", 50027)
        return ix

    def _interaction_reply(self, ix: _Interaction, body: dict, files: list) -> dict:
        """A new message answering `ix` (its response or a follow-up), ephemeral and silent as `body` says."""
        flags = int(body.get("flags") or 0) & (FLAG_EPHEMERAL | 4)
        return self._create_bot_message(ix.channel_id, body, files, interaction=ix, flags=flags)

    def _interaction_message(self, ix: _Interaction, message_ref: str) -> dict:
        if message_ref == "@original":
            if ix.response_type is None:
                raise _unknown("Webhook", 10015)
            mid = ix.original_id if ix.original_id is not None else ix.message_id
            if mid is None:
                raise _unknown("Message", 10008)
        else:
            mid = int(message_ref)
            if mid not in ix.message_ids and mid != ix.message_id:
                raise _unknown("Message", 10008)
        msg = self.message(mid)
        if msg is None:
            raise _unknown("Message", 10008)
        return msg

    # ----------------------------------------------------------------- routes

    def _install_routes(self) -> None:
        """Register the REST handlers: one table of small functions, matched in order."""
        route = self._route
        snow = r"(\d+)"

        @route("GET", r"/gateway/bot")
        async def gateway_bot(request: web.Request, m: re.Match[str], body: Any, files: list) -> Any:
            return {
                "url": self.gateway_url,
                "shards": self.recommended_shards,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": max(0, 1000 - len(self.identified_shards)),
                    "reset_after": 14400000,
                    "max_concurrency": 1,
                },
            }

        @route("GET", r"/gateway", auth=False)
        async def gateway(request: web.Request, m: re.Match[str], body: Any, files: list) -> Any:
            return {"url": self.gateway_url}

        @route("GET", r"/users/@me")
        async def users_me(request: web.Request, m: re.Match[str], body: Any, files: list) -> Any:
            return self.bot_user

        @route("GET", rf"/users/{snow}")
        async def get_user(request: web.Request, m: re.Match[str], body: Any, files: list) -> Any:
            user = self.users.get(int(m.group(1)))
            if user is None:
                raise _unknown("User", 10013)
            return user

        async def app_info(request: web.Request, m: re.Match[str], body: Any, files: list) -> Any:
            return {
                "id": str(self.application_id),
                "name": self.bot_user["username"],
                "icon": None,
                "description": "",
                "summary": "",
                "type": None,
                "hook": True,
                "bot_public": False,
                "bot_require_code_grant": False,
                "verify_key": "0" * 64,
                "flags": 0,
                "owner": self.users[self.owner_id],
                "team": None,
                "bot": self.bot_user,
                "redirect_uris": [],
                "interactions_endpoint_url": None,
                "install_params": None,
                "integration_types_config": {"0": {}},
                "approximate_guild_count": 1,
                "tags": [],
            }

        route("GET", r"/applications/@me")(app_info)
        route("GET", r"/oauth2/applications/@me")(app_info)

        def check_app(app_id: str) -> None:
            if app_id != str(self.application_id):
                raise _ApiError(403, "Missing Access", 50001)

        def upsert(payload: list[dict], guild_id: int | None) -> list[dict]:
            self._check_commands(payload)
            self.registered_commands[:] = [
                c
                for c in self.registered_commands
                if (int(c["guild_id"]) if c.get("guild_id") else None) != guild_id
            ]
            echoed = []
            for cmd in payload:
                c = {
                    "type": 1,
                    "description": "",
                    "options": [],
                    "default_member_permissions": None,
                    "nsfw": False,
                    "contexts": None,
                    "integration_types": [0],
                    **cmd,
                    "id": str(self._snowflake()),
                    "application_id": str(self.application_id),
                    "version": str(self._snowflake()),
                }
                if guild_id is not None:
                    c["guild_id"] = str(guild_id)
                    c.pop("contexts", None)
                    c.pop("integration_types", None)
                echoed.append(c)
            self.registered_commands.extend(echoed)
            return echoed

        @route("PUT", rf"/applications/{snow}/commands")
        async def put_global(request: web.Request, m: re.Match[str], body: Any, files: list) -> Any:
            check_app(m.group(1))
            return upsert(body or [], None)

        @route("PUT", rf"/applications/{snow}/guilds/{snow}/commands")
        async def put_guild(request: web.Request, m: re.Match[str], body: Any, files: list) -> Any:
            check_app(m.group(1))
            if int(m.group(2)) != self.guild_id:
                raise _ApiError(403, "Missing Access", 50001)
            return upsert(body or [], self.guild_id)

        @route("GET", rf"/applications/{snow}/commands")
        async def get_global(request: web.Request, m: re.Match[str], body: Any, files: list) -> Any:
            check_app(m.group(1))
            return [c for c in self.registered_commands if not c.get("guild_id")]

        @route("GET", rf"/applications/{snow}/guilds/{snow}/commands")
        async def get_guild_cmds(request: web.Request, m: re.Match[str], body: Any, files: list) -> Any:
            check_app(m.group(1))
            return [c for c in self.registered_commands if c.get("guild_id") == m.group(2)]

        # interactions ---------------------------------------------------------

        @route("POST", rf"/interactions/{snow}/([^/]+)/callback", auth=False)
        async def callback(request: web.Request, m: re.Match[str], body: Any, files: list) -> Any:
            ix = self._interactions.get(int(m.group(1)))
            if ix is None or ix.token != m.group(2):
                raise _unknown("interaction", 10062)
            if ix.expired:
                raise _ApiError(401, "Invalid Webhook Token", 50027)
            if (
                self.ack_deadline is not None
                and ix.response_type is None
                and time.monotonic() - ix.dispatched_at > self.ack_deadline
            ):
                raise _unknown("interaction", 10062)
            if ix.response_type is not None:
                raise _ApiError(400, "Interaction has already been acknowledged.", 40060)
            body = body or {}
            rtype = int(body.get("type", 0))
            data = body.get("data") or {}
            resource: dict[str, Any] | None = None
            if rtype == 4:
                self._check_new_message(data, files)
                self._check_upload(files)
                msg = self._interaction_reply(ix, data, files)
                ix.original_id = int(msg["id"])
                await self._dispatch_message("MESSAGE_CREATE", msg)
                resource = {"type": 4, "message": msg}
            elif rtype == 5:
                flags = FLAG_LOADING | (int(data.get("flags") or 0) & FLAG_EPHEMERAL)
                msg = self._create_bot_message(ix.channel_id, {}, [], interaction=ix, flags=flags)
                ix.original_id = int(msg["id"])
                ix.loading = True
                await self._dispatch_message("MESSAGE_CREATE", msg)
                resource = {"type": 5, "message": msg}
            elif rtype in (6, 7):
                if ix.message_id is None:
                    raise _ApiError(400, "Interaction has no message to update", 50035)
                msg = self._find_message(ix.channel_id, ix.message_id)
                if rtype == 7:
                    self._check_upload(files)
                    self._apply_edit(msg, data, files)
                    await self._dispatch_message("MESSAGE_UPDATE", msg)
                    resource = {"type": 7, "message": msg}
            elif rtype == 8:
                self.autocomplete_results.append(data)
            elif rtype == 9:
                self.modals.append(data)
                resource = {"type": 9}
            elif rtype != 1:
                raise _ApiError(400, "Invalid Form Body", 50035)
            ix.response_type = rtype
            if ix.original_id is not None:
                ix.message_ids.add(ix.original_id)
            if request.query.get("with_response") not in ("1", "true", "True"):
                return None
            info: dict[str, Any] = {"id": str(ix.id), "type": ix.type}
            original = self.message(ix.original_id) if ix.original_id is not None else None
            if original is not None:
                info.update(
                    response_message_id=original["id"],
                    response_message_loading=ix.loading,
                    response_message_ephemeral=bool(original["flags"] & FLAG_EPHEMERAL),
                )
            answer: dict[str, Any] = {"interaction": info}
            if resource is not None:
                answer["resource"] = resource
            return answer

        @route("GET", rf"/webhooks/{snow}/([^/]+)/messages/(@original|\d+)", auth=False)
        async def get_webhook_message(request: web.Request, m: re.Match[str], body: Any, files: list) -> Any:
            ix = self._interaction_for_token(m.group(2), m.group(1))
            return self._interaction_message(ix, m.group(3))

        @route("PATCH", rf"/webhooks/{snow}/([^/]+)/messages/(@original|\d+)", auth=False)
        async def edit_webhook_message(request: web.Request, m: re.Match[str], body: Any, files: list) -> Any:
            ix = self._interaction_for_token(m.group(2), m.group(1))
            msg = self._interaction_message(ix, m.group(3))
            self._check_upload(files)
            if int(msg["id"]) == ix.original_id:
                ix.loading = False
            self._apply_edit(msg, body or {}, files)
            await self._dispatch_message("MESSAGE_UPDATE", msg)
            return msg

        @route("DELETE", rf"/webhooks/{snow}/([^/]+)/messages/(@original|\d+)", auth=False)
        async def delete_webhook_message(
            request: web.Request, m: re.Match[str], body: Any, files: list
        ) -> Any:
            ix = self._interaction_for_token(m.group(2), m.group(1))
            msg = self._interaction_message(ix, m.group(3))
            await self._remove_message(msg)
            return None

        @route("POST", rf"/webhooks/{snow}/([^/]+)", auth=False)
        async def followup(request: web.Request, m: re.Match[str], body: Any, files: list) -> Any:
            ix = self._interaction_for_token(m.group(2), m.group(1))
            if ix.response_type is None:
                raise _unknown("Webhook", 10015)
            body = body or {}
            self._check_new_message(body, files)
            self._check_upload(files)
            if ix.loading and ix.original_id is not None:
                # The first follow-up after a "thinking" defer takes the loading message's place.
                msg = self._find_message(ix.channel_id, ix.original_id)
                self._apply_edit(msg, {"attachments": [], **body}, files)
                msg["edited_timestamp"] = None
                ix.loading = False
                await self._dispatch_message("MESSAGE_UPDATE", msg)
            else:
                msg = self._interaction_reply(ix, body, files)
                ix.message_ids.add(int(msg["id"]))
                await self._dispatch_message("MESSAGE_CREATE", msg)
            wait = request.query.get("wait", "false").lower() in ("1", "true")
            return msg if wait else None

        # channels and messages --------------------------------------------------

        def channel(cid: str) -> int:
            if int(cid) not in self.channels and not any(d["id"] == cid for d in self._dms.values()):
                raise _unknown("Channel", 10003)
            return int(cid)

        @route("GET", rf"/channels/{snow}")
        async def get_channel(request: web.Request, m: re.Match[str], body: Any, files: list) -> Any:
            cid = channel(m.group(1))
            return self.channels.get(cid) or next(d for d in self._dms.values() if d["id"] == str(cid))

        @route("POST", r"/users/@me/channels")
        async def create_dm(request: web.Request, m: re.Match[str], body: Any, files: list) -> Any:
            """Open (or find) the bot's DM channel with a user: Discord answers it even when their DMs are
            closed; only a message sent there is refused (50007)."""
            user_id = int((body or {}).get("recipient_id") or 0)
            if user_id not in self.users:
                raise _unknown("User", 10013)
            if user_id not in self._dms:
                dm_id = self._snowflake()
                self._dms[user_id] = {
                    "id": str(dm_id),
                    "type": 1,
                    "last_message_id": None,
                    "flags": 0,
                    "recipients": [self.users[user_id]],
                }
                self.messages.setdefault(dm_id, [])
            return self._dms[user_id]

        @route("POST", rf"/channels/{snow}/messages")
        async def create_message(request: web.Request, m: re.Match[str], body: Any, files: list) -> Any:
            cid = channel(m.group(1))
            body = body or {}
            self._check_new_message(body, files)
            self._check_upload(files)
            dm_with = next((u for u, d in self._dms.items() if d["id"] == str(cid)), None)
            if dm_with is not None and dm_with in self._closed_dms:
                raise _ApiError(403, "Cannot send messages to this user", 50007)
            msg = self._create_bot_message(cid, body, files, flags=int(body.get("flags") or 0) & 4)
            if dm_with is None:  # a DM is not the guild's: its shard's gateway does not hear it
                await self._dispatch_message("MESSAGE_CREATE", msg)
            return msg

        @route("GET", rf"/channels/{snow}/messages")
        async def history(request: web.Request, m: re.Match[str], body: Any, files: list) -> Any:
            cid = channel(m.group(1))
            msgs = [x for x in self.messages.get(cid, []) if not x["flags"] & FLAG_EPHEMERAL]
            if "before" in request.query:
                msgs = [x for x in msgs if int(x["id"]) < int(request.query["before"])]
            if "after" in request.query:
                msgs = [x for x in msgs if int(x["id"]) > int(request.query["after"])]
            limit = int(request.query.get("limit", 50))
            return list(reversed(msgs))[:limit]

        @route("GET", rf"/channels/{snow}/messages/{snow}")
        async def get_message(request: web.Request, m: re.Match[str], body: Any, files: list) -> Any:
            msg = self._find_message(channel(m.group(1)), int(m.group(2)))
            if msg["flags"] & FLAG_EPHEMERAL:
                raise _unknown("Message", 10008)
            return msg

        @route("PATCH", rf"/channels/{snow}/messages/{snow}")
        async def edit_message(request: web.Request, m: re.Match[str], body: Any, files: list) -> Any:
            msg = self._find_message(channel(m.group(1)), int(m.group(2)))
            if msg["author"]["id"] != str(self.bot_user_id) or msg.get("webhook_id"):
                raise _ApiError(403, "Cannot edit a message authored by another user", 50005)
            self._check_upload(files)
            self._apply_edit(msg, body or {}, files)
            await self._dispatch_message("MESSAGE_UPDATE", msg)
            return msg

        @route("DELETE", rf"/channels/{snow}/messages/{snow}")
        async def delete_message(request: web.Request, m: re.Match[str], body: Any, files: list) -> Any:
            cid = channel(m.group(1))
            msg = self._find_message(cid, int(m.group(2)))
            if msg["flags"] & FLAG_EPHEMERAL:  # only its interaction's token can reach an ephemeral message
                raise _unknown("Message", 10008)
            if msg["author"]["id"] != str(self.bot_user_id) and not int(self.app_permissions) & (
                MANAGE_MESSAGES | ADMINISTRATOR_BIT
            ):
                raise _ApiError(403, "Missing Permissions", 50013)
            await self._remove_message(msg)
            return None

        @route("POST", rf"/channels/{snow}/typing")
        async def typing(request: web.Request, m: re.Match[str], body: Any, files: list) -> Any:
            channel(m.group(1))
            return None

        @route("PUT", rf"/channels/{snow}/messages/{snow}/reactions/([^/]+)/@me")
        async def add_reaction(request: web.Request, m: re.Match[str], body: Any, files: list) -> Any:
            msg = self._find_message(channel(m.group(1)), int(m.group(2)))
            name, _, emoji_id = m.group(3).partition(":")
            for r in msg["reactions"]:
                if r["emoji"]["name"] == name:
                    if not r["me"]:
                        r["me"] = True
                        r["count"] += 1
                    return None
            msg["reactions"].append(
                {
                    "emoji": {"id": emoji_id or None, "name": name},
                    "count": 1,
                    "count_details": {"burst": 0, "normal": 1},
                    "me": True,
                    "me_burst": False,
                    "burst_colors": [],
                }
            )
            return None

        @route("DELETE", rf"/channels/{snow}/messages/{snow}/reactions/([^/]+)/@me")
        async def remove_reaction(request: web.Request, m: re.Match[str], body: Any, files: list) -> Any:
            msg = self._find_message(channel(m.group(1)), int(m.group(2)))
            name = m.group(3).partition(":")[0]
            for r in list(msg["reactions"]):
                if r["emoji"]["name"] == name and r["me"]:
                    r["me"] = False
                    r["count"] -= 1
                    if r["count"] == 0:
                        msg["reactions"].remove(r)
            return None

        # guilds -----------------------------------------------------------------

        def guild(gid: str) -> None:
            if int(gid) != self.guild_id:
                raise _unknown("Guild", 10004)

        @route("GET", rf"/guilds/{snow}")
        async def get_guild(request: web.Request, m: re.Match[str], body: Any, files: list) -> Any:
            guild(m.group(1))
            g = self._guild_object(gateway=False)
            if request.query.get("with_counts") in ("1", "true"):
                g.update(approximate_member_count=len(self.members), approximate_presence_count=1)
            return g

        @route("GET", rf"/guilds/{snow}/channels")
        async def guild_channels(request: web.Request, m: re.Match[str], body: Any, files: list) -> Any:
            guild(m.group(1))
            return list(self.channels.values())

        @route("GET", rf"/guilds/{snow}/roles")
        async def guild_roles(request: web.Request, m: re.Match[str], body: Any, files: list) -> Any:
            guild(m.group(1))
            return self.roles

        @route("GET", rf"/guilds/{snow}/members/{snow}")
        async def guild_member(request: web.Request, m: re.Match[str], body: Any, files: list) -> Any:
            guild(m.group(1))
            member = self.members.get(int(m.group(2)))
            if member is None:
                raise _unknown("Member", 10007)
            return {k: v for k, v in member.items() if k != "permissions"}

    # ----------------------------------------------------------------- CDN

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        key = f"{request.match_info['channel']}/{request.match_info['id']}/{request.match_info['filename']}"
        self.cdn_requests.append(
            RestCall(
                "GET", request.path, None, [], dict(request.headers), time.monotonic(), dict(request.query)
            )
        )
        hosted = self._hosted.get(key)
        # Attachment URLs are signed: without the right hm the CDN refuses, as Discord's does.
        if hosted is None or request.query.get("hm") != hosted.hm:
            self.cdn_requests[-1].status = 404
            return web.Response(status=404, text="This content is no longer available.")
        self.cdn_requests[-1].status = 200
        return web.Response(body=hosted.data, content_type=hosted.content_type)
