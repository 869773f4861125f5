"""The bot as a real process: `imagebot` CLI runs (`environment`, `start`) and `imagebot run` (`BotProcess`)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import aiohttp

from tests.fakes.slack import FakeSlack
from tests.support.waits import until

ROOT = Path(__file__).resolve().parents[2]


def run_once(cwd: Path, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """`imagebot run` as its own process in `cwd` with exactly `env`, to its end (a minute at most): what a
    setting it refuses does to it."""
    return subprocess.run(
        [sys.executable, "-m", "adapters.cli", "run"],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def environment(db: Path, **extra: str) -> dict[str, str]:
    """The parent's environment minus anything that would configure the bot, plus the test's settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("IMAGEBOT_", "OPENAI_", "SLACK_", "DISCORD_"))
    }
    env.update(
        {
            "IMAGEBOT_OFFLINE": "1",
            "IMAGEBOT_OFFLINE_LATENCY": "0.2",
            "IMAGEBOT_DB": str(db),
            "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
            **extra,
        }
    )
    return env


def start(
    args: list[str], env: Mapping[str, str], cwd: Path, *, stdin: int | None = None
) -> subprocess.Popen[str]:
    """`imagebot <args>` as its own process (`stdin=subprocess.DEVNULL`: not at a terminal)."""
    return subprocess.Popen(
        [sys.executable, "-m", "adapters.cli", *args],
        env=dict(env),
        cwd=cwd,
        text=True,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


SECRETS = {
    "bot": "xoxb-SECRET-bot-token-4242",
    "signing": "SECRET-signing-secret-4242",
    "openai": "sk-SECRET-openai-key-4242",
}


class BotProcess:
    """`imagebot run` as its own process. It listens on any free port (IMAGEBOT_HTTP_PORT=0), which `start`
    reads from its `http server listening` log line: a port picked free beforehand could be taken by another
    worker's connection, or another bot, in the second before this one binds it."""

    _count = itertools.count(1)

    def __init__(self, tmp: Path, slack: FakeSlack, **env: str) -> None:
        self.port: int | None = None  # known once the process listens
        self.db = tmp / "imagebot.sqlite3"
        self.log = tmp / f"bot-{next(self._count)}.log"
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DISCORD_", "OPENAI_"))
        }
        self.env.update(
            {
                "SLACK_BOT_TOKEN": slack.bot_token,
                "SLACK_SIGNING_SECRET": slack.signing_secret,
                "SLACK_API_URL": slack.api_url,
                "OPENAI_API_KEY": SECRETS["openai"],
                "IMAGEBOT_OFFLINE": "1",
                "IMAGEBOT_DB": str(self.db),
                "IMAGEBOT_HTTP_HOST": "127.0.0.1",
                "IMAGEBOT_HTTP_PORT": "0",
                "IMAGEBOT_PROGRESS_INTERVAL": "0.2",
                "IMAGEBOT_LOG_LEVEL": "INFO",
                **env,
            }
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        assert self.port is not None, f"the bot is not listening; its log: {self.log.read_text()[-600:]}"
        return f"http://127.0.0.1:{self.port}"

    async def start(self, *, ready: bool = True) -> None:
        """Start `imagebot run` and wait until it listens (or ends: a refused setting); with `ready`, wait until
        /readyz answers 200."""
        before = self.log.stat().st_size if self.log.exists() else 0  # a restart appends to the same log
        self.port = None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "adapters.cli", "run"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "ab"),
        )
        proc = self.proc

        def listening() -> bool:
            for line in self.log.read_bytes()[before:].decode(errors="replace").splitlines():
                if '"http server listening"' in line:
                    with contextlib.suppress(ValueError):  # a line still being written: read it next time
                        self.port = int(json.loads(line)["port"])
                        return True
            return proc.poll() is not None

        await until(listening, 30, interval=0.02)
        if ready:
            await self.until(lambda status, _: status == 200, "/readyz")

    async def get(self, path: str) -> tuple[int, dict]:
        """(status, JSON body) of GET `path`; (0, {}) while nothing answers."""
        if self.port is None:  # it ended before it listened
            return 0, {}
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(
                    f"{self.url}{path}", timeout=aiohttp.ClientTimeout(total=5)
                ) as response:
                    body = await response.json(content_type=None) if response.status != 404 else {}
                    return response.status, body
        except (aiohttp.ClientError, TimeoutError):
            return 0, {}

    async def until(self, predicate, path: str = "/readyz", timeout: float = 20) -> tuple[int, dict]:  # type: ignore[no-untyped-def]
        """Poll `path` until predicate(status, body); fail if the process ends first."""
        proc = self.proc
        assert proc is not None
        last: list[tuple[int, dict]] = []

        async def answered() -> tuple[int, dict] | None:
            status, body = await self.get(path)
            last[:] = [(status, body)]
            assert proc.poll() is None, self.log.read_text()
            return (status, body) if predicate(status, body) else None

        try:
            return await until(answered, timeout, interval=0.05)
        except AssertionError:
            raise AssertionError((path, last, self.log.read_text())) from None

    async def exited(self, timeout: float) -> int | None:
        """The exit status within `timeout` seconds, or None if it is still running."""
        assert self.proc is not None
        try:
            return await asyncio.to_thread(self.proc.wait, timeout)
        except subprocess.TimeoutExpired:
            return None

    def log_lines(self) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if line.strip()]

    def rows(self) -> list[dict]:
        conn = sqlite3.connect(self.db)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute("SELECT * FROM ledger ORDER BY id")]
        finally:
            conn.close()

    async def wait_rows(self, predicate, timeout: float = 20) -> list[dict]:  # type: ignore[no-untyped-def]
        for _ in range(int(timeout / 0.05)):
            rows = self.rows()
            if predicate(rows):
                return rows
            await asyncio.sleep(0.05)
        raise AssertionError(f"ledger never matched: {self.rows()}")

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Signal the bot and wait off the loop (the fakes it talks to live on this loop)."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        return await asyncio.to_thread(self.proc.wait, timeout)
