"""Shared benchmark helpers: an event-loop lag probe, peak RSS, an offline server in its own process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.config import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def peak_rss_mb() -> float:
    """Peak resident set size of this process, MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


class LoopLag:
    """Samples how late a 5 ms sleep wakes up: the time the loop was blocked."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(self.interval)
            self.samples.append(max(0.0, time.perf_counter() - start - self.interval) * 1000)

    def __enter__(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


@contextlib.contextmanager
def offline_server_process(latency: float) -> Iterator[str]:
    """The offline image server in its own process (it is the 'API', not part of what is measured)."""
    port = free_port()
    env = {**os.environ, "IMAGEBOT_OFFLINE_FAULTS": ""}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "adapters.cli",
            "offline-server",
            "--port",
            str(port),
            "--latency",
            str(latency),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def bench_settings(latency: float, in_flight: int, **env: str) -> Iterator[Settings]:
    """A benchmark core's settings: the offline image server in its own process (`latency` s a render), a new
    SQLite file, `in_flight` renders at once, a long API timeout; `env` (IMAGEBOT_... names) on top."""
    from bot.config import Settings

    with offline_server_process(latency) as base_url, tempfile.TemporaryDirectory() as tmp:
        environ = {
            "OPENAI_API_KEY": "bench-key",
            "OPENAI_BASE_URL": base_url,
            "IMAGEBOT_DB": f"{tmp}/bench.sqlite3",
            "IMAGEBOT_MAX_IN_FLIGHT": str(in_flight),
            "IMAGEBOT_API_TIMEOUT": "120",
            **env,
        }
        yield Settings.load(environ=environ, env_file=None)
