"""Every fault the offline server offers, through the Discord adapter (which streams previews): the user is
told with a request id, the ledger ends correct, nothing stays running, the progress never stays stuck."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import FAULT_MATRIX, expected_charge
from tests.support.discord import cancel_buttons, content, discord_bot, first_call, imagine, original_edits


@pytest.fixture
async def discord(tmp_path: Path) -> AsyncIterator[Any]:
    async with discord_bot(tmp_path, IMAGEBOT_API_TIMEOUT="0.6") as running:
        running[1].server.latency = 0.05
        yield running


# Discord streams previews where they pay for themselves (a high-quality render here), so a dropped
# connection is a stream that broke.
MATRIX = {**FAULT_MATRIX, "drop*": ("possibly_billed", "estimate", 3, "stream broke")}


@pytest.mark.parametrize("fault", list(MATRIX))
async def test_fault(fault: str, discord: Any) -> None:
    fake, bot = discord
    status, charge, attempts, words = MATRIX[fault]
    bot.server.push_faults(fault)
    ix = await imagine(fake, f"fault {fault}", size="1024x1024", quality="high")
    [row] = await bot.settled(1, timeout=30)
    assert bot.server.calls[0].partial_images > 0  # streamed
    assert (row["status"], row["attempts"]) == (status, attempts)
    expected = expected_charge(row, charge)
    assert row["actual_micros"] == expected
    ids = json.loads(row["request_ids"])
    final = await first_call(
        fake, lambda c: c in original_edits(fake, ix) and ids[-1] in content(c), within=15
    )
    assert words in content(final)
    assert not cancel_buttons(final)  # no Cancel button left: the progress is over
    assert ("Nothing was charged" in content(final)) == (status != "delivered" and charge == "zero")
    assert not [r for r in await bot.ledger() if r["status"] in ("reserved", "running")]
