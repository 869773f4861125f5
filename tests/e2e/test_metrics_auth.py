"""/metrics shows spend: with IMAGEBOT_METRICS_TOKEN set it needs `Authorization: Bearer <token>`; /healthz
stays open, so a load balancer needs no secret; and the token shows up nowhere, in answers or in logs."""

from __future__ import annotations

import logging
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.harness import running_bot

TOKEN = "metrics-SECRET-token-4242"


async def test_metrics_need_the_bearer_token_and_health_does_not(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    refused = [
        None,
        "Bearer wrong",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        TOKEN,
        f"Basic {TOKEN}",
        "Bearer",
        "Bearer é",
    ]
    env = {"IMAGEBOT_METRICS_TOKEN": TOKEN}
    async with running_bot(tmp_path, env) as bot, aiohttp.ClientSession() as http:
        for authorization in refused:
            headers = {"Authorization": authorization} if authorization is not None else {}
            async with http.get(f"{bot.url}/metrics", headers=headers) as response:
                body = await response.text()
                assert response.status == 401, headers
                assert response.headers["WWW-Authenticate"].startswith("Bearer"), headers
                assert "imagebot_" not in body and TOKEN not in body + str(response.headers)
        async with http.get(f"{bot.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}) as response:
            assert response.status == 200 and "text/plain" in response.headers["Content-Type"]
            assert "# TYPE imagebot_images_total counter" in await response.text()
        async with http.get(f"{bot.url}/healthz") as response:
            assert response.status == 200 and (await response.json())["ok"]
    assert caplog.records  # the bot did log: and none of it carries the token
    assert TOKEN not in caplog.text
    assert not [r for r in caplog.records if TOKEN in repr(vars(r)) or TOKEN in r.getMessage()]


async def test_without_a_token_metrics_stay_open(tmp_path: Path) -> None:
    async with running_bot(tmp_path, {}) as bot, aiohttp.ClientSession() as http:
        async with http.get(f"{bot.url}/metrics") as response:
            assert response.status == 200 and "imagebot_images_total" in await response.text()
