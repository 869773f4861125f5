"""The floor, from its own process (as the bot runs in its own): n plain SDK calls at once, each followed
by the platform's upload: files_upload_v2 to the fake Slack, or (Discord) the same streamed call with two
previews and a multipart channel message. Reads a JSON job on stdin, prints durations."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time

import aiohttp
import openai
from slack_sdk.web.async_client import AsyncWebClient


async def main(job: dict) -> list[float]:
    api = openai.AsyncOpenAI(
        base_url=job["base_url"], api_key="bench-key", timeout=600, http_client=openai.DefaultAioHttpClient()
    )  # the SDK's fastest pool, as the bot uses
    slack = AsyncWebClient(token=job["token"], base_url=job["slack_url"])
    durations: list[float] = []
    image = {
        "model": "gpt-image-2",
        "prompt": "load test",
        "size": job["size"],
        "quality": "low",
        "output_format": job["format"],
    }  # what each call asks for: the bot's job, without the bot

    discord = aiohttp.ClientSession(headers={"Authorization": f"Bot {job.get('discord_token')}"})

    async def slack_one(i: int) -> None:
        start = time.monotonic()
        response = await api.images.generate(**image)
        data = base64.b64decode(response.data[0].b64_json or "")  # type: ignore[index]
        await slack.files_upload_v2(
            channel=f"C{i % 8}", file=data, filename=f"floor.{job['format']}", initial_comment="floor"
        )
        durations.append(time.monotonic() - start)

    async def discord_one(i: int) -> None:
        start = time.monotonic()
        stream = await api.images.generate(**image, stream=True, partial_images=2)
        b64 = ""
        async for event in stream:
            if event.type.endswith("completed"):
                b64 = event.b64_json
        form = aiohttp.FormData()
        form.add_field("payload_json", json.dumps({"content": "floor"}), content_type="application/json")
        form.add_field("files[0]", base64.b64decode(b64), filename="floor.jpg", content_type="image/jpeg")
        async with discord.post(job["discord_channel_url"], data=form) as response:
            await response.read()
        durations.append(time.monotonic() - start)

    one = discord_one if job.get("discord_channel_url") else slack_one
    await asyncio.gather(*(one(i) for i in range(job["n"])))
    await api.close()
    await discord.close()
    return durations


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.load(sys.stdin)))))
