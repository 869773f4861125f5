"""What a broken connection to the platform leaves behind, the same on Slack and Discord, written once and run on
each (tests/support/platforms.py drives the platform and knows its faults): a paid image always arrives, once, and
a lost progress edit holds nothing up; no job stays open and the books balance. Who may send what (Slack's
signatures and retries, Discord's acknowledgements), and a progress message that cannot be posted, stay in
test_slack_trust.py and test_discord_trust.py."""

from __future__ import annotations

import json

from tests.support.ledger import assert_counters_match
from tests.support.platforms import Driver


async def books_balance(on: Driver) -> None:
    """No ledger row is left open, and the quota counters hold exactly what the rows say."""
    assert not [r for r in await on.bot.ledger() if r["status"] in ("reserved", "running")]
    assert_counters_match(on.tmp_path / "imagebot.sqlite3")


async def test_one_lost_upload_is_retried_and_the_paid_image_arrives_once(on: Driver) -> None:
    """[1/6] item 5: one dropped or unanswered connection at any step of an upload once lost a paid image; the
    platform client's retries and the outbox's now deliver it, once."""
    for n, fault in enumerate(on.upload_faults, start=1):
        on.fail_next_upload(fault)
        shown = await on.result(f"paid for {n}")
        assert on.failed_calls() == n, fault  # the fault was met
        assert shown.row["status"] == "delivered" and shown.row["actual_micros"] > 0, fault
        assert len(on.images_posted()) == n, fault  # once: no second copy
        assert "Cancel" not in on.labels(shown)  # the job's message ends as a result, not a stuck bar
        assert "could not be posted" not in await on.summary(shown)
        assert await on.bot.core.ledger.outbox(shown.row["job_id"]) == []  # delivered: its bytes are gone
        await books_balance(on)


async def test_a_lost_progress_edit_does_not_hold_up_the_image(on: Driver) -> None:
    on.bot.server.latency = 0.5  # long enough for progress edits
    for n, fault in enumerate(on.progress_faults, start=1):
        on.fail_next_progress(fault)
        shown = await on.result(f"still fine {n}")
        assert on.failed_calls() == n, fault
        assert shown.row["status"] == "delivered" and json.loads(shown.row["request_ids"])[
            0
        ] in await on.summary(shown)
        await books_balance(on)
