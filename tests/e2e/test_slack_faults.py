"""Every fault the offline server offers, through the Slack adapter: the user is told (with a request
id), the ledger ends correct, nothing stays running, and the progress message never stays stuck."""

from __future__ import annotations

import asyncio

import pytest

from tests.e2e.harness import FAULT_MATRIX, RunningBot, expected_charge
from tests.fakes.slack import FakeSlack

MATRIX = FAULT_MATRIX  # Slack does not stream: a dropped connection is just that


@pytest.mark.parametrize("fault", list(MATRIX))
async def test_fault(fault: str, slack: FakeSlack, bot: RunningBot) -> None:
    status, charge, attempts, words = MATRIX[fault]
    bot.server.push_faults(fault)
    await slack.send_slash_command(bot.events_url, text=f"fault {fault} --size 1024x1024 --quality low")
    [row] = await bot.settled(1, timeout=30)
    assert row["status"] == status
    assert row["attempts"] == attempts
    expected = expected_charge(row, charge)
    assert row["actual_micros"] == expected
    assert row["request_ids"] not in (None, "[]")
    # What the user sees: the image with its summary, or a failure in the thread; both name a request id.
    if status == "delivered":
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
