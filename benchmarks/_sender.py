"""Fires signed Slack requests from its own process, so the load generator's work does not land on the
fake Slack's event loop (or the bot's). Reads a JSON job from stdin, prints JSON results.

Slack sends from many machines, so the generator must not be the bottleneck: every request is built
and signed before the burst, written to its own open keep-alive connection in one tight loop, and
timed by a bare protocol that stamps the response on arrival. (An HTTP client library here spends
~0.5 ms per request of its own, which would show up as the bot's ack time.)
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import sys
import time
import urllib.parse


def sign(secret: str, body: bytes) -> dict[str, str]:
    ts = str(int(time.time()))
    digest = hmac.new(secret.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
    return {
        "X-Slack-Signature": f"v0={digest}",
        "X-Slack-Request-Timestamp": ts,
        "Content-Type": "application/x-www-form-urlencoded",
    }


def http_request(url: str, secret: str, payload: dict) -> bytes:
    parts = urllib.parse.urlsplit(url)
    body = urllib.parse.urlencode(payload).encode()
    headers = {"Host": parts.netloc, "Content-Length": str(len(body)), **sign(secret, body)}
    head = f"POST {parts.path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return head.encode() + body


class Connection(asyncio.Protocol):
    """One keep-alive connection; `exchange` writes a request and times its response."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.waiter: asyncio.Future[tuple[int, float]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, data: bytes) -> asyncio.Future[tuple[int, float]]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        head, sep, rest = self.buffer.partition(b"\r\n\r\n")
        if not sep:
            return
        lines = head.decode("latin-1").split("\r\n")
        length = next(
            (
                int(v)
                for k, _, v in (line.partition(":") for line in lines[1:])
                if k.strip().lower() == "content-length"
            ),
            0,
        )
        if len(rest) < length:
            return
        self.buffer = rest[length:]
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((int(lines[0].split()[1]), time.monotonic()))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed before the response"))


async def main(job: dict) -> dict:
    url, secret, payloads, warm = job["url"], job["secret"], job["payloads"], job["warm"]
    parts = urllib.parse.urlsplit(url)
    loop = asyncio.get_running_loop()
    connections = [
        (await loop.create_connection(Connection, parts.hostname, parts.port))[1] for _ in payloads
    ]
    # Warm each keep-alive connection with an invalid command (refused privately, no cost).
    for status, _ in await asyncio.gather(*(c.send(http_request(url, secret, warm)) for c in connections)):
        if status != 200:
            raise RuntimeError(f"HTTP {status}")
    await asyncio.sleep(1)
    requests = [http_request(url, secret, p) for p in payloads]
    sent: list[float] = []
    waiters = []
    for connection, request in zip(connections, requests, strict=True):
        sent.append(time.monotonic())
        waiters.append(connection.send(request))
    answers = await asyncio.gather(*waiters)
    for connection in connections:
        assert connection.transport is not None
        connection.transport.close()
    for status, _ in answers:
        if status != 200:
            raise RuntimeError(f"HTTP {status}")
    return {"sent": sent, "acks": [at - start for (_, at), start in zip(answers, sent, strict=True)]}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.load(sys.stdin)))))
