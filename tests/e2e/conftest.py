"""Fixtures shared by the end-to-end tests: a fake Slack, and the bot running against it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.manifests import slack_manifest
from tests.e2e.harness import RunningBot, running_bot, slack_env
from tests.fakes.slack import FakeSlack


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
