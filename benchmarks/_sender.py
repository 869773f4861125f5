"""Fires signed Slack requests from its own process, so the load generator's work does not land on the
fake Slack's event loop (or the bot's). Reads a JSON job from stdin, prints JSON results."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import sys
import time
import urllib.parse

import aiohttp


def sign(secret: str, body: bytes) -> dict[str, str]:
    ts = str(int(time.time()))
    digest = hmac.new(secret.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Signature": f"v0={digest}", "X-Slack-Request-Timestamp": ts,
            "Content-Type": "application/x-www-form-urlencoded"}


async def main(job: dict) -> dict:
    url, secret, payloads, warm = job["url"], job["secret"], job["payloads"], job["warm"]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def post(payload: dict) -> tuple[float, float]:
            body = urllib.parse.urlencode(payload).encode()
            headers = sign(secret, body)
            sent = time.monotonic()
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}")
            return sent, time.monotonic() - sent

        # Open the keep-alive connections first with invalid commands (refused privately, no cost).
        await asyncio.gather(*(post(warm) for _ in payloads))
        await asyncio.sleep(1)
        results = await asyncio.gather(*(post(p) for p in payloads))
    return {"sent": [s for s, _ in results], "acks": [a for _, a in results]}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.load(sys.stdin)))))
