"""Every fault the offline server offers, through the Slack adapter: the user is told (with a request
id), the ledger ends correct, nothing stays running, and the progress message never stays stuck."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.pricing import cost_micros, load_prices
from tests.e2e.harness import RunningBot, running_bot
from tests.fakes.slack import FakeSlack


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def bot(slack: FakeSlack, tmp_path: Path) -> AsyncIterator[RunningBot]:
    env = {"SLACK_BOT_TOKEN": slack.bot_token, "SLACK_SIGNING_SECRET": slack.signing_secret,
           "SLACK_API_URL": slack.api_url, "IMAGEBOT_API_TIMEOUT": "0.6"}
    async with running_bot(tmp_path, env, latency=0.05) as running:
        yield running


# fault -> (final status, charge: "usage" | "estimate" | "usage+estimate" | "zero", attempts, words the user sees)
MATRIX = {
    "500": ("succeeded", "usage", 2, "request id req_"),
    "500*": ("failed", "zero", 3, "HTTP 500"),
    "503*": ("failed", "zero", 3, "HTTP 503"),
    "429:1": ("succeeded", "usage", 2, "request id req_"),
    "429:1*": ("failed", "zero", 3, "rate limiting"),
    "hang": ("succeeded", "usage+estimate", 2, "request id req_"),
    "hang*": ("possibly_billed", "estimate", 3, "did not answer"),
    "drop": ("succeeded", "usage+estimate", 2, "request id req_"),
    "drop*": ("possibly_billed", "estimate", 3, "connection"),
    "moderation": ("failed", "zero", 1, "safety system"),
    "garbage": ("possibly_billed", "estimate", 1, "not an image"),
}


@pytest.mark.parametrize("fault", list(MATRIX))
async def test_fault(fault: str, slack: FakeSlack, bot: RunningBot) -> None:
    status, charge, attempts, words = MATRIX[fault]
    bot.server.push_faults(fault)
    await slack.send_slash_command(bot.events_url, text=f"fault {fault} --size 1024x1024 --quality low")
    [row] = await bot.settled(1, timeout=30)
    assert row["status"] == status
    assert row["attempts"] == attempts
    usage_cost = 0
    if row["output_tokens"]:
        from bot.pricing import Usage
        usage_cost = cost_micros(load_prices().model("gpt-image-2"), Usage(
            text_tokens=row["text_tokens"], image_tokens=row["image_tokens"], output_tokens=row["output_tokens"]))
    expected = {"usage": usage_cost, "estimate": row["reserved_micros"],
                "usage+estimate": usage_cost + row["reserved_micros"], "zero": 0}[charge]
    assert row["actual_micros"] == expected
    assert row["request_ids"] not in (None, "[]")
    # What the user sees: the image with its summary, or a failure in the thread; both name a request id.
    if status == "succeeded":
        [upload] = await slack.wait_for("files.completeUploadExternal")
        assert words in upload.args["initial_comment"]
    else:
        posts = await slack.wait_for("chat.postMessage", 2)
        failure = posts[-1].args["text"]
        assert words in failure and "request id" in failure
        assert ("Nothing was charged" in failure) == (charge == "zero")
    # The progress message ends as a done/failed line, not a stuck progress bar.
    for _ in range(100):
        updates = slack.calls_to("chat.update")
        if updates and "Cancel" not in str(updates[-1].args.get("blocks")):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("progress message left stuck")
    assert not [r for r in await bot.ledger() if r["status"] in ("reserved", "running")]
