"""Fixtures shared by the end-to-end tests: a fake Slack and the bot running against it; and `on`, the bot on
each platform in turn behind its driver (tests/support/platforms.py), for a rule written once. A test gives the
bot's environment with `@pytest.mark.env(NAME="value")`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.manifests import slack_manifest
from tests.e2e.harness import RunningBot, running_bot, slack_env
from tests.fakes.slack import FakeSlack
from tests.support.platforms import Driver, driver


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack()
    # As Slack does: only the commands the manifest declares reach the bot.
    fake.slash_commands = {c["command"] for c in slack_manifest()["features"]["slash_commands"]}
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def bot(slack: FakeSlack, tmp_path: Path) -> AsyncIterator[RunningBot]:
    """The bot in Slack HTTP mode against `slack`, with the offline server at 0.05 s a render."""
    async with running_bot(tmp_path, slack_env(slack, IMAGEBOT_API_TIMEOUT="0.6"), latency=0.05) as running:
        yield running


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "env(**names): the environment `on` starts the bot with")


@pytest.fixture(params=["slack", "discord"])
async def on(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Driver]:
    """The bot on Slack, then on Discord, each against its fake, behind its driver."""
    marker = request.node.get_closest_marker("env")
    async with driver(request.param, tmp_path, **(marker.kwargs if marker else {})) as platform:
        yield platform
