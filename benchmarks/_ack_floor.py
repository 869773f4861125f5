"""The ack floor: the platform library alone, acking and doing nothing else, in its own process.

  slack    a slack-bolt AsyncApp behind aiohttp (as the bot runs it) whose /imagine listener only acks
  discord  a discord.py client whose /imagine command only defers

Reads a JSON line on stdin ({"mode", "port", "secret", "token", "slack_url"} for Slack; {"mode",
"api_url", "token"} for Discord),
prints "ready" once it listens (Slack) or its gateway session is up (Discord), then runs until stdin
closes. Whatever the bot's ack time is above this, our code added.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import discord
import yarl
from aiohttp import web
from discord import app_commands
from discord.gateway import DiscordWebSocket
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.app.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient


async def slack(job: dict[str, Any]) -> None:
    client = AsyncWebClient(token=job["token"], base_url=job["slack_url"])
    app = AsyncApp(client=client, signing_secret=job["secret"], process_before_response=True)

    @app.command("/imagine")
    async def imagine(ack: Any) -> None:
        await ack()

    async def events(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await app.async_dispatch(await to_bolt_request(request)))

    server = web.Application()
    server.router.add_post("/slack/events", events)
    runner = web.AppRunner(server, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", job["port"]).start()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await runner.cleanup()


async def discord_floor(job: dict[str, Any]) -> None:
    discord.http.Route.BASE = job["api_url"].rstrip("/")
    ready = asyncio.Event()

    class Client(discord.Client):
        def __init__(self) -> None:
            super().__init__(intents=discord.Intents.default())
            self.tree = app_commands.CommandTree(self)

        async def setup_hook(self) -> None:
            _shards, url, _limits = await self.http.get_bot_gateway()
            DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)

        async def on_ready(self) -> None:
            ready.set()

    client = Client()

    @client.tree.command(name="imagine", description="ack floor")
    async def imagine(
        interaction: discord.Interaction[Any],
        prompt: str,
        size: str | None = None,
        quality: str | None = None,
    ) -> None:
        await interaction.response.defer(thinking=True)

    await client.login(job["token"])
    task = asyncio.create_task(client.connect(reconnect=False))
    await ready.wait()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await client.close()
    task.cancel()


if __name__ == "__main__":
    spec = json.loads(sys.stdin.readline())
    asyncio.run(slack(spec) if spec["mode"] == "slack" else discord_floor(spec))
