"""The offline image server and OpenAI SDK clients against it.

`offline_server` starts an offline image server and stops it after. As fixtures (for the core tests, through
tests/core/conftest.py): `server`, one started for the test (a module that wants other options, such as a
latency or batch latency, overrides `server_options`); `make_client`, SDK clients on it, closed after the
test; and `client`, one with no retries."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import openai
import pytest

from bot.offline import OfflineImageServer

ClientFactory = Callable[..., openai.AsyncOpenAI]


@pytest.fixture
def server_options() -> dict[str, Any]:
    """The OfflineImageServer's keyword arguments for `server`."""
    return {"latency": 0.05}


@contextlib.asynccontextmanager
async def offline_server(**options: Any) -> AsyncIterator[OfflineImageServer]:
    """The offline image server (OfflineImageServer's `options`: latency, batch_latency), started, then stopped."""
    server = OfflineImageServer(**options)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def server(server_options: dict[str, Any]) -> AsyncIterator[OfflineImageServer]:
    async with offline_server(**server_options) as started:
        yield started


@pytest.fixture
async def make_client(server: OfflineImageServer) -> AsyncIterator[ClientFactory]:
    clients: list[openai.AsyncOpenAI] = []

    def make(*, max_retries: int = 0, timeout: float = 30.0) -> openai.AsyncOpenAI:
        client = openai.AsyncOpenAI(
            base_url=server.base_url, api_key="test", max_retries=max_retries, timeout=timeout
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
def client(make_client: ClientFactory) -> openai.AsyncOpenAI:
    return make_client()
