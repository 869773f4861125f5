"""`imagebot run`: the core, every adapter whose tokens are set, one HTTP server, graceful shutdown.

The HTTP server (IMAGEBOT_HTTP_HOST:IMAGEBOT_HTTP_PORT) carries /livez, /readyz (and /healthz, its alias),
/metrics, the web dashboard under /dashboard (adapters/dashboard), and Slack's /slack/events in HTTP mode. It is up before anything else, so that while the database
or a chat platform is not reachable yet the process says so (/readyz 503, naming what is not ready) and keeps
trying, and SIGTERM stops it whatever it is waiting for.

Start-up errors come in two kinds. A configuration error (a token or a password refused, a URL that cannot
work) is fatal: one line and exit status 2 (bot.errors.ConfigError, raised by an adapter's `start` or by
opening the database). An outage (no DNS, connection refused, a 5xx) is retried with backoff, one log line per
attempt, while /readyz says what it is waiting for: the database at start (here), Slack's auth.test and
Socket Mode connection, Discord's login (in each adapter's `start`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import importlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, cast

from aiohttp import web

from adapters.console import Files
from adapters.dashboard import Dashboard
from adapters.startup import Stopped, until_up
from bot import metrics
from bot.app import Core
from bot.config import Settings
from bot.database import DatabaseUnavailable
from bot.errors import ConfigError
from bot.jobs.actions import ImageStore
from bot.jobs.job import JobView
from bot.model.request import Requester
from bot.store.ledger import Interrupted
from bot.store.probe import Probe

log = logging.getLogger("imagebot.service")

PROBE_TIMEOUT = 2.0  # seconds /readyz waits for the database's answer
PROBE_CONNECT_TIMEOUT = 2  # seconds to open the probe's own PostgreSQL connection
CLOSE_TIMEOUT = 5.0  # seconds an adapter gets to close (a Socket Mode client may be mid-reconnect)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Adapter(Protocol):
    """What `imagebot run` needs of a chat adapter."""

    @property
    def connected(self) -> bool:
        """Ready for events: logged in and (Socket Mode, Discord) the socket is up."""
        ...

    def routes(self) -> list[web.RouteDef]: ...

    async def start(self, web_app: web.Application | None) -> None:
        """Log in and connect, retrying outages with backoff (adapters/startup.py); return once connected (or
        connecting in the background). Raise ConfigError when the platform refuses the token."""
        ...

    async def close(self) -> None: ...

    async def tell_interrupted(self, job: Interrupted) -> None: ...

    def view_for(self, who: Requester, context: dict[str, Any]) -> JobView:
        """A view of a job that began in another life of the bot, from where it lives (relax delivery)."""
        ...


def build_adapters(core: Core) -> dict[str, Adapter]:
    """The adapters whose tokens are set, by platform name."""
    adapters: dict[str, Adapter] = {}
    if core.settings.slack_enabled:
        from .slack import SlackAdapter

        adapters["slack"] = SlackAdapter(core)
    if core.settings.discord_enabled:
        from .discord import DiscordAdapter

        adapters["discord"] = DiscordAdapter(core)
    return adapters


def import_adapters(settings: Settings) -> None:
    """Import the adapters `run` will build (slack_bolt, discord.py: up to a second of CPU each, more when their
    bytecode is not compiled yet), in a thread before the core starts: imported in build_adapters, they held
    the event loop while the core's lease was running, and a short lease lapsed before its first renewal."""
    for name in platforms(settings):
        importlib.import_module(f"{__package__}.{name}")


def platforms(settings: Settings) -> list[str]:
    """The adapters `imagebot run` starts with these settings."""
    return [
        name for name, on in (("slack", settings.slack_enabled), ("discord", settings.discord_enabled)) if on
    ]


class DatabaseProbe:
    """A trivial query on a connection (and a thread) of its own (bot/store/probe.py): the ledger's single queue
    may hold thousands of jobs' queries, and a health check behind them would time out under load while
    telling nothing. One check at a time; concurrent requests share its answer."""

    def __init__(self, target: Path | str) -> None:
        self.target = target
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imagebot-probe")
        self._probe = Probe(target, timeout=PROBE_TIMEOUT, connect_timeout=PROBE_CONNECT_TIMEOUT)
        self._running: asyncio.Future[None] | None = None

    async def check(self) -> str:
        """ "ok", or one line saying what is wrong (no secret: the exception's type only)."""
        if self._running is None or self._running.done():
            self._running = asyncio.get_running_loop().run_in_executor(self._pool, self._probe.ping)
        try:
            await asyncio.wait_for(asyncio.shield(self._running), PROBE_TIMEOUT)
        except TimeoutError:
            return f"no answer within {PROBE_TIMEOUT:g} s"
        except Exception as exc:
            return f"error: {type(exc).__name__}"
        return "ok"

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._pool.submit(self._probe.close)
        self._pool.shutdown(wait=False)


class Service:
    """The HTTP side of `imagebot run`, up from the first moment: health, metrics, and the adapters' routes
    once they exist. /readyz: 200 when the database answers on the probe's own connection, every started
    adapter is connected and the process is not stopping; else 503 naming what is not ready."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.core: Core | None = None
        self.adapters: dict[str, Adapter] = {}
        self.database = "connecting"  # until the core is up: what opening the database says
        self.stopping = False
        self.probe = DatabaseProbe(settings.db_path)
        self.routes: dict[tuple[str, str], Handler] = {}  # added after start-up (the adapters' routes)
        self.app = self._app()
        self.runner: web.AppRunner | None = None
        # Once open, the port it listens on (IMAGEBOT_HTTP_PORT=0: any free one, named in the log).
        self.port = settings.http_port

    def add_routes(self, routes: list[web.RouteDef]) -> None:
        for route in routes:
            self.routes[(route.method.upper(), route.path)] = route.handler  # type: ignore[assignment]

    async def open(self) -> None:
        """Listen on IMAGEBOT_HTTP_HOST:IMAGEBOT_HTTP_PORT (ConfigError, one line, if that cannot be bound)."""
        settings = self.settings
        self.runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await self.runner.setup()
        try:
            await web.TCPSite(self.runner, settings.http_host, settings.http_port).start()
        except OSError as exc:
            await self.runner.cleanup()
            raise ConfigError(
                f"IMAGEBOT_HTTP_HOST:IMAGEBOT_HTTP_PORT={settings.http_host}:{settings.http_port} cannot be "
                f"listened on: {exc.strerror or exc}"
            ) from None
        self.port = next((int(address[1]) for address in self.runner.addresses), settings.http_port)
        log.info("http server listening", extra={"host": settings.http_host, "port": self.port})

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        self.probe.close()

    async def readiness(self) -> dict[str, str]:
        checks: dict[str, str] = {}
        if self.core is None:
            checks["database"] = self.database
        elif self.core.ledger.connection_lost:
            checks["database"] = "the ledger's connection was lost; opening it again"
        else:
            checks["database"] = await self.probe.check()
        for name in platforms(self.settings):
            adapter = self.adapters.get(name)
            if adapter is None:
                checks[name] = "starting"
            elif adapter.connected:
                checks[name] = "ok"
            else:
                checks[name] = str(getattr(adapter, "state", "") or "not connected")
        if self.stopping:
            checks["process"] = "shutting down"
        return checks

    def _database_lost(self) -> bool:
        """The ledger's connection is known broken (PostgreSQL; read without I/O, so cheap per request)."""
        return self.core is not None and self.core.ledger.connection_lost

    def _app(self) -> web.Application:
        # The adapters' routes are added once they exist (after the database is up): a middleware looks them up
        # first. In Socket Mode there is no /slack/events at all (docs/rules.md §7): Slack's adapter gives no route.
        # Slack's HTTP mode posts here; until the adapter exists (the database is not up yet) the answer is 503,
        # which Slack retries, not a 404.
        coming = (
            {("POST", "/slack/events")}
            if self.settings.slack_enabled and not self.settings.slack_socket_mode
            else set()
        )

        @web.middleware
        async def late_routes(request: web.Request, handler: Handler) -> web.StreamResponse:
            late = self.routes.get((request.method, request.path))
            if late is None and (request.method, request.path) in coming:
                return web.json_response({"ok": False, "error": "starting: not ready yet"}, status=503)
            if late is not None and (request.method, request.path) in coming and self._database_lost():
                # Nothing could be reserved or recorded: a 503 before bolt sees the event lets a load balancer
                # send it to another replica (deploy/compose.yaml's nginx does, and then skips this one for a
                # while); with no other replica, Slack retries events later.
                return web.json_response(
                    {"ok": False, "error": "not ready: the database connection was lost"}, status=503
                )
            return await (late or handler)(request)

        app = web.Application(client_max_size=4 * 1024 * 1024, middlewares=[late_routes])

        async def livez(_: web.Request) -> web.Response:
            return web.json_response({"ok": True})  # the process answers: no I/O at all

        async def readyz(_: web.Request) -> web.Response:
            checks = await self.readiness()
            not_ready = [name for name, state in checks.items() if state != "ok"]
            body: dict[str, Any] = {"ok": not not_ready, "checks": checks}
            if not_ready:
                body["not_ready"] = not_ready
            return web.json_response(body, status=503 if not_ready else 200)

        async def metrics_view(request: web.Request) -> web.Response:
            # Spend is not for everyone: with IMAGEBOT_METRICS_TOKEN set, only a scraper that sends it gets it.
            token = self.settings.metrics_token
            if token is not None:
                scheme, _, given = request.headers.get("Authorization", "").partition(" ")
                # Bytes: compare_digest refuses non-ASCII str, and a header may carry anything.
                if scheme.lower() != "bearer" or not hmac.compare_digest(
                    given.strip().encode("utf-8", "surrogateescape"), token.reveal().encode()
                ):
                    return web.Response(
                        status=401,
                        headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
                        text="/metrics needs Authorization: Bearer <IMAGEBOT_METRICS_TOKEN>\n",
                    )
            return web.Response(body=metrics.exposition(), content_type="text/plain", charset="utf-8")

        app.router.add_get("/livez", livez)
        app.router.add_get("/readyz", readyz)
        app.router.add_get("/healthz", readyz)  # the old name: an alias of /readyz
        app.router.add_get("/metrics", metrics_view)
        # The web dashboard: its pages answer 503 until the core is up.
        app.router.add_routes(Dashboard(self.settings, lambda: self.core, self.image_store).routes())
        return app

    def image_store(self, platform: str) -> ImageStore | None:
        """Where the images of `platform`'s jobs live, for the dashboard: the chat adapter this process runs
        for it; console and CLI images are files on this host. None: not served here."""
        if platform in ("console", "cli"):
            return Files()
        adapter = self.adapters.get(platform)
        return cast(ImageStore, adapter) if adapter is not None else None


async def _start_adapters(adapters: dict[str, Adapter], app: web.Application, stop: asyncio.Event) -> bool:
    """Start every adapter at once; True when all are started, False when `stop` came first (the starts still
    under way are cancelled). A ConfigError from one (a refused token) cancels the others and is raised."""
    starting = {
        asyncio.create_task(adapter.start(app), name=f"start {name}") for name, adapter in adapters.items()
    }
    stopping = asyncio.create_task(stop.wait())
    try:
        while starting:
            done, _ = await asyncio.wait({*starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if stopping in done:
                return False
            for task in done:
                starting.discard(task)
                task.result()  # a ConfigError (or a bug) ends the start here
        return True
    finally:
        stopping.cancel()
        for task in starting:
            task.cancel()
        if starting:
            await asyncio.wait(starting)


async def serve(
    core: Core,
    adapters: dict[str, Adapter],
    stop: asyncio.Event,
    ready: asyncio.Event | None = None,
    *,
    service: Service,
) -> None:
    """Run until `stop` is set, then shut down gracefully. `ready` is set once every adapter is up. `service`:
    the HTTP server, already listening (`run` opens it before the database); its opener closes it."""
    settings = core.settings
    service.core, service.adapters = core, adapters
    for adapter in adapters.values():  # Slack's /slack/events in HTTP mode
        service.add_routes(adapter.routes())
    lag_task: asyncio.Task[None] | None = None
    try:
        if await _start_adapters(adapters, service.app, stop):
            core.places.serve(adapters)  # the core delivers to them and tells their users from now on
            await core.sweep()  # and again every few seconds, for as long as we run
            probe = metrics.LoopLagProbe()
            metrics.LOOP_LAG_P99.set_function(probe.p99)
            lag_task = asyncio.create_task(probe.run())
            if ready is not None:
                ready.set()
            await stop.wait()
        service.stopping = True  # /readyz says so at once: a load balancer stops sending new work
        log.info("shutting down", extra={"grace_s": settings.shutdown_grace})
        await core.runner.shutdown(settings.shutdown_grace)
    finally:
        service.stopping = True
        if lag_task is not None:
            lag_task.cancel()
        for adapter in adapters.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(adapter.close(), CLOSE_TIMEOUT)


NO_PLATFORM = (
    "imagebot: no chat platform configured: set SLACK_BOT_TOKEN with SLACK_SIGNING_SECRET (Slack HTTP mode) "
    "or with SLACK_APP_TOKEN (Socket Mode), and/or DISCORD_TOKEN. To try it without one: imagebot console, "
    'or imagebot imagine "a poster for our launch" --out poster.jpg'
)


async def run(settings: Settings) -> int:
    if not platforms(settings):
        if not sys.stdin.isatty():
            # A container (no terminal) with a mistyped env file must not look finished: exit 2.
            print(NO_PLATFORM, file=sys.stderr)
            return 2
        # At a terminal, the console adapter is the chat platform: same core, same commands
        # (and JSON log lines would only get in the way of the prompt).
        print(f"{NO_PLATFORM}. Starting the console.", file=sys.stderr)
        logging.getLogger().setLevel(max(logging.WARNING, logging.getLogger().level))
        from . import console

        local = await Core.start(settings)
        try:
            await console.loop(local, Requester("console", "local", "console", "console"), settings.out_dir)
        finally:
            await local.close()
        return 0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    service = Service(settings)
    await service.open()  # /livez and /readyz answer while the database is not reachable yet
    await asyncio.to_thread(import_adapters, settings)
    try:
        core = await _open_core(settings, service, stop)
        if core is None:
            return 0  # stopped while waiting for the database
        ready = asyncio.Event()

        async def settle_heap() -> None:
            await ready.wait()
            # Everything made so far (modules, the SDKs' models, caches) lives as long as the process: keep it
            # out of the collector's full passes, which otherwise stall the loop ~100 ms at a time under load.
            gc.freeze()

        freezer = asyncio.create_task(settle_heap())
        try:
            await serve(core, build_adapters(core), stop, ready, service=service)
        finally:
            freezer.cancel()
            await core.close()
    finally:
        await service.close()
    return 0


async def _open_core(settings: Settings, service: Service, stop: asyncio.Event) -> Core | None:
    """Core.start, again and again while the database does not answer (DatabaseUnavailable: no such host yet,
    connection refused), with backoff and one log line per attempt (adapters/startup.py); None if `stop` comes
    first. A configuration error (a refused password, a bad path) is raised: one line, exit 2."""

    def outage(exc: Exception) -> str | None:
        return str(exc) if isinstance(exc, DatabaseUnavailable) else None

    def retrying(reason: str, attempt: int, delay: float) -> None:
        service.database = f"connecting (attempt {attempt}): {reason}"
        log.warning(
            "database not reachable; retrying",
            extra={"error": reason, "attempt": attempt, "retry_in_s": delay},
        )

    try:
        return await until_up(lambda: Core.start(settings), outage, retrying, stop=stop)
    except Stopped:
        return None
