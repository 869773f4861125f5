"""The offline image server and OpenAI SDK clients against it, as fixtures for the core tests.

`server` is an offline image server started for the test and stopped after it; a module whose tests want
other options (latency, batch latency) overrides `server_options`. `make_client` gives SDK clients on that
server (closed after the test), and `client` is one with no retries."""

from __future__ import annotations

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


@pytest.fixture
async def server(server_options: dict[str, Any]) -> AsyncIterator[OfflineImageServer]:
    srv = OfflineImageServer(**server_options)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


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
