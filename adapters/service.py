"""`imagebot run`: the core, every adapter whose tokens are set, one HTTP server, graceful shutdown.

The HTTP server (IMAGEBOT_HTTP_HOST:IMAGEBOT_HTTP_PORT) carries /healthz and /metrics, and Slack's
/slack/events in HTTP mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import logging
import signal
import sys
from typing import Any, Protocol

from aiohttp import web

from bot import metrics
from bot.app import Core
from bot.config import Settings
from bot.jobs import JobView
from bot.ledger import Interrupted
from bot.request import Requester

log = logging.getLogger("imagebot.service")


class Adapter(Protocol):
    """What `imagebot run` needs of a chat adapter."""

    @property
    def connected(self) -> bool: ...

    def routes(self) -> list[web.RouteDef]: ...

    async def start(self, web_app: web.Application | None) -> None: ...

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


def web_app(core: Core, adapters: dict[str, Adapter]) -> web.Application:
    app = web.Application(client_max_size=4 * 1024 * 1024)

    async def healthz(_: web.Request) -> web.Response:
        checks: dict[str, Any] = {}
        try:
            await core.ledger.query("SELECT 1")
            checks["database"] = "ok"
        except Exception as exc:  # the point of a health check is to say so, not to raise
            checks["database"] = f"error: {type(exc).__name__}"
        for name, adapter in adapters.items():
            checks[name] = "ok" if adapter.connected else "disconnected"
        healthy = all(v == "ok" for v in checks.values())
        return web.json_response({"ok": healthy, "checks": checks}, status=200 if healthy else 503)

    async def metrics_view(request: web.Request) -> web.Response:
        # Spend is not for everyone: with IMAGEBOT_METRICS_TOKEN set, only a scraper that sends it gets it.
        token = core.settings.metrics_token
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

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_view)
    for adapter in adapters.values():  # Slack's /slack/events in HTTP mode
        app.router.add_routes(adapter.routes())
    return app


async def serve(
    core: Core, adapters: dict[str, Adapter], stop: asyncio.Event, ready: asyncio.Event | None = None
) -> None:
    """Run until `stop` is set, then shut down gracefully. `ready` is set once every adapter is up."""
    settings = core.settings
    runner = web.AppRunner(web_app(core, adapters), handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.http_host, settings.http_port)
    await site.start()
    log.info("http server listening", extra={"host": settings.http_host, "port": settings.http_port})
    try:
        for adapter in adapters.values():
            await adapter.start(runner.app)

        async def tell(job: Interrupted) -> None:
            await adapters[job.platform].tell_interrupted(job)

        core.platforms, core.notify = frozenset(adapters), tell

        def view_for(who: Requester, context: dict[str, Any]) -> JobView | None:
            adapter = adapters.get(who.platform)
            return adapter.view_for(who, context) if adapter is not None else None

        core.relax.view_for, core.relax.platforms = view_for, frozenset(adapters)
        await core.sweep()  # and again every few seconds, for as long as we run
        probe = metrics.LoopLagProbe()
        metrics.LOOP_LAG_P99.set_function(probe.p99)
        lag_task = asyncio.create_task(probe.run())
        if ready is not None:
            ready.set()
        await stop.wait()
        lag_task.cancel()
        log.info("shutting down", extra={"grace_s": settings.shutdown_grace})
        await core.runner.shutdown(settings.shutdown_grace)
    finally:
        for adapter in adapters.values():
            with contextlib.suppress(Exception):
                await adapter.close()
        await runner.cleanup()


async def run(settings: Settings) -> int:
    if not (settings.slack_enabled or settings.discord_enabled):
        print(
            "imagebot: no chat platform configured. Set SLACK_BOT_TOKEN (+ SLACK_APP_TOKEN for Socket Mode, "
            "or SLACK_SIGNING_SECRET for HTTP mode) and/or DISCORD_TOKEN.\n"
            'Try it locally meanwhile: imagebot imagine "a poster for our launch" --out poster.jpg, '
            "or imagebot console.",
            file=sys.stderr,
        )
        if not sys.stdin.isatty():
            return 0
        # At a terminal, the console adapter is the chat platform: same core, same commands
        # (and JSON log lines would only get in the way of the prompt).
        from bot.request import Requester

        logging.getLogger().setLevel(max(logging.WARNING, logging.getLogger().level))
        from . import console

        core = await Core.start(settings)
        try:
            await console.loop(core, Requester("console", "local", "console", "console"), settings.out_dir)
        finally:
            await core.close()
        return 0
    core = await Core.start(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    ready = asyncio.Event()

    async def settle_heap() -> None:
        await ready.wait()
        # Everything made so far (modules, the SDKs' models, caches) lives as long as the process: keep it
        # out of the collector's full passes, which otherwise stall the loop ~100 ms at a time under load.
        gc.freeze()

    freezer = asyncio.create_task(settle_heap())
    try:
        await serve(core, build_adapters(core), stop, ready)
    finally:
        freezer.cancel()
        await core.close()
    return 0
