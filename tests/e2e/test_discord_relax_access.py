"""Relax mode (docs/rules.md §11) and max_jobs while a batch waits (docs/rules.md §10) on Discord, end to end: the
real discord.py client and command tree against the fake Discord, the offline image server's Images, Files and
Batch APIs, and the SQLite ledger. Each test looks at what a member sees (the interaction's response, private
answers, the image's size) and at the ledger's rows (status, mode, reserved and actual micro-dollars). The access
rules the same on Slack (a channel's moderation, a denied group) are in tests/e2e/test_access_rules.py."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

from bot.model.pricing import Usage, batch_price, cost_micros, estimate_micros, format_usd, load_prices
from bot.model.sizes import Size
from tests.e2e.harness import RunningBot
from tests.fakes.discord import FakeDiscord, RestCall
from tests.support.discord import (
    ADMIN,
    EPHEMERAL,
    OTHER,
    admin,
    content,
    decoded,
    final_result,
    finished,
    first_call,
    guild,
    original_edits,
    private_answer,
    refused,
    response_of_gone,
)

RELAX_ENV = {
    "IMAGEBOT_BATCH_WINDOW": "0.3",
    "IMAGEBOT_BATCH_POLL": "0.1",
    "IMAGEBOT_OFFLINE_BATCH_LATENCY": "0.5",
}
SQUARE = {"size": "1024x1024", "quality": "low"}
PRICES = load_prices().model("gpt-image-2")
HALF_PRICE = "relax, half price"


# -- helpers -------------------------------------------------------------------------------------------------


async def imagine(
    fake: FakeDiscord,
    prompt: str,
    *,
    user_id: int | None = None,
    channel_id: int | None = None,
    **options: str | int | bool,
) -> dict[str, Any]:
    """`/imagine prompt:... <options>` by `user_id` (the default member unless told). `relax` is Discord's
    boolean option (type 5), so it travels as `true`/`false`, not as an integer."""

    def typed(name: str, value: str | int | bool) -> dict[str, Any]:
        kind = 5 if isinstance(value, bool) else 4 if isinstance(value, int) else 3
        return {"name": name, "type": kind, "value": value}

    options_sent = [typed("prompt", prompt)] + [typed(n, v) for n, v in options.items()]
    return await fake.send_interaction(
        name="imagine", options=options_sent, user_id=user_id, channel_id=channel_id
    )


async def delivered(fake: FakeDiscord, ix: dict[str, Any]) -> RestCall:
    """The call that put `ix`'s image where its member sees it: its response edited into the image with the
    summary (or, past the token, a channel message replying to that response)."""

    def is_it(call: RestCall) -> bool:
        return call.status == 200 and final_result(call) and call in deliveries(fake, ix)

    return await first_call(fake, is_it, within=20)


def deliveries(fake: FakeDiscord, ix: dict[str, Any]) -> list[RestCall]:
    """Every call that showed `ix`'s finished image: edits of its response, replies to that response."""
    edits = [c for c in original_edits(fake, ix) if final_result(c) and c.status == 200]
    anchors = {
        m["id"]
        for messages in fake.messages.values()
        for m in messages
        if (m.get("interaction_metadata") or {}).get("id") == ix["id"]
    }
    replies = [
        c
        for c in fake.calls_matching("POST", rf"/channels/{fake.channel_id}/messages$")
        if c.status == 200
        and final_result(c)
        and str(((c.json or {}).get("message_reference") or {}).get("message_id")) in anchors
    ]
    return edits + replies


def batches_sent(bot: RunningBot) -> int:
    return sum(1 for call in bot.server.batch_calls if call == ("POST", "/v1/batches"))


def relax_reservation(prompt: str) -> int:
    """What one 1024x1024 low relax image of `prompt` reserves: the worst case at the batch discount."""
    return batch_price(fast_reservation(prompt), PRICES)


def fast_reservation(prompt: str) -> int:
    """What one 1024x1024 low image of `prompt` reserves (no previews: they would cost more than they are
    worth at this price)."""
    return estimate_micros(PRICES, size=Size(1024, 1024), quality="low", prompt=prompt)


def batch_cost(row: dict[str, Any]) -> int:
    """The price of a settled relax row: its usage at the batch discount."""
    usage = Usage(row["text_tokens"] or 0, row["image_tokens"] or 0, row["output_tokens"] or 0)
    return batch_price(cost_micros(PRICES, usage), PRICES)


def public_messages(fake: FakeDiscord) -> list[dict[str, Any]]:
    return [m for m in fake.messages[fake.channel_id] if not m["flags"] & EPHEMERAL]


async def closed(bot: RunningBot, count: int, within: float = 15) -> list[dict[str, Any]]:
    """Every ledger row once `count` of them are closed. `RunningBot.settled` counts a `batched` row (waiting
    on its batch) as closed: a relax row is closed only once its batch has come back."""
    async with asyncio.timeout(within):
        while True:
            rows = await bot.ledger()
            if len(rows) >= count and all(
                r["status"] not in ("reserved", "running", "batched", "rendered") for r in rows
            ):
                return rows
            await asyncio.sleep(0.05)


async def a_later_relax_job_delivered(fake: FakeDiscord, bot: RunningBot, user_id: int = ADMIN) -> None:
    """A positive signal for a negative check: a later relax job (`user_id`'s) is batched, polled and delivered,
    so the bot's poller has gone round several times since every earlier batch ended (a second delivery or a
    gathered job would show by then)."""
    bot.server.batch_latency = 0.1
    ix = await imagine(fake, "a marker", user_id=user_id, relax=True, **SQUARE)
    await delivered(fake, ix)


# -- relax mode ----------------------------------------------------------------------------------------------


async def test_two_members_relax_jobs_share_one_batch_and_each_lands_once_at_half_price(
    tmp_path: Path,
) -> None:
    async with guild(tmp_path, **RELAX_ENV) as (fake, bot):
        prompts = {fake.user_id: "a fox in the snow", OTHER: "a crow on a wire"}
        jobs = {
            user: await imagine(fake, prompt, user_id=user, relax=True, **SQUARE)
            for user, prompt in prompts.items()
        }
        finals = {user: await delivered(fake, ix) for user, ix in jobs.items()}
        rows = await closed(bot, 2)

        # One batch for both, through the Files and Batch APIs; no synchronous image call at all.
        assert batches_sent(bot) == 1
        assert ("POST", "/v1/files") in bot.server.batch_calls
        assert bot.server.calls == []

        by_user = {int(r["user"]): r for r in rows}
        assert set(by_user) == set(prompts)
        for user, ix in jobs.items():
            row, final = by_user[user], finals[user]
            # What they saw: while waiting, that it went to the Batch API; then the image, once, in public.
            shown = [content(c) for c in original_edits(fake, ix)]
            assert any(
                "relax mode, half price" in s.lower() and "sent to the Batch API" in s for s in shown
            ), shown
            assert deliveries(fake, ix) == [final]
            said = content(final)
            assert prompts[user] in said and HALF_PRICE in said and "1024x1024 low jpeg" in said
            assert format_usd(row["actual_micros"]) in said and "offline" in said
            image = decoded(final)
            assert image.size == (1024, 1024) and image.format == "JPEG"
            assert not final.json.get("flags", 0) & EPHEMERAL
            # What it cost: reserved at the batch price, settled from the line's usage at the batch price.
            assert (row["mode"], row["status"]) == ("relax", "delivered")
            assert row["reserved_micros"] == relax_reservation(prompts[user])
            assert 0 < row["actual_micros"] == batch_cost(row) <= row["reserved_micros"]
            assert row["channel"] == str(fake.channel_id)
        # Each image on its own member's message, with the result's buttons under it.
        carrying = [m for m in public_messages(fake) if m["attachments"]]
        assert len(carrying) == 2
        assert {m["interaction_metadata"]["user"]["id"] for m in carrying} == {str(u) for u in prompts}
        assert all(m["components"] for m in carrying)
        await a_later_relax_job_delivered(fake, bot)  # more polls: still once each, and no second batch
        assert all(deliveries(fake, ix) == [finals[user]] for user, ix in jobs.items())
        assert batches_sent(bot) == 2  # theirs and the marker's


async def test_a_channels_relax_default_makes_imagine_relax_and_fast_overrides_it(tmp_path: Path) -> None:
    async with guild(tmp_path, **RELAX_ENV) as (fake, bot):
        said = await admin(fake, "channel", channel=fake.channel_id, settings="relax=on")
        assert "relax=on" in said, said

        plain = await imagine(fake, "a quiet harbour", **SQUARE)  # no relax option: the channel's default
        final = await delivered(fake, plain)
        [row] = await closed(bot, 1)
        assert (row["mode"], row["status"]) == ("relax", "delivered")
        assert row["reserved_micros"] == relax_reservation("a quiet harbour")
        assert row["actual_micros"] == batch_cost(row)
        assert HALF_PRICE in content(final) and decoded(final).size == (1024, 1024)
        assert batches_sent(bot) == 1 and bot.server.calls == []

        fast = await imagine(fake, "a busy harbour --fast", **SQUARE)
        final = await delivered(fake, fast)
        _, row = await closed(bot, 2)
        assert (row["mode"], row["status"]) == ("fast", "delivered")
        assert row["reserved_micros"] == fast_reservation("a busy harbour")
        assert 0 < row["actual_micros"] <= row["reserved_micros"]
        [call] = bot.server.calls  # rendered synchronously, without the flag in its prompt
        assert (call.endpoint, call.prompt, call.size) == ("generations", "a busy harbour", "1024x1024")
        assert HALF_PRICE not in content(final) and decoded(final).size == (1024, 1024)
        assert batches_sent(bot) == 1  # no second batch


async def test_a_relax_line_that_errors_is_released_and_its_member_told(tmp_path: Path) -> None:
    async with guild(tmp_path, **RELAX_ENV) as (fake, bot):
        bot.server.push_faults("line_error")  # the batch's first line comes back as a 500 in the error file
        prompts = {fake.user_id: "a red kite", OTHER: "a blue kite"}
        jobs = {
            user: await imagine(fake, prompt, user_id=user, relax=True, **SQUARE)
            for user, prompt in prompts.items()
        }
        rows = await closed(bot, 2)
        assert batches_sent(bot) == 1 and bot.server.calls == []
        assert bot.server.pending_faults == ()
        [failed] = [r for r in rows if r["status"] == "failed"]
        [made] = [r for r in rows if r["status"] == "delivered"]
        assert failed["mode"] == made["mode"] == "relax"
        assert failed["reserved_micros"] == relax_reservation(prompts[int(failed["user"])])
        assert failed["actual_micros"] == 0  # released, not charged
        assert made["actual_micros"] == batch_cost(made) > 0

        # The member whose line failed is told so, on their job's message, with no image.
        ix = jobs[int(failed["user"])]
        told = await first_call(
            fake, lambda c: c in original_edits(fake, ix) and c.status == 200 and "Failed" in content(c)
        )
        said = content(told)
        assert prompts[int(failed["user"])] in said and "Nothing was charged" in said, said
        assert not told.files
        await a_later_relax_job_delivered(fake, bot)
        assert deliveries(fake, ix) == []
        # The other member's image still came, once.
        other = jobs[int(made["user"])]
        final = await delivered(fake, other)
        assert deliveries(fake, other) == [final] and decoded(final).size == (1024, 1024)
        assert HALF_PRICE in content(final)


async def test_a_relax_job_fits_a_quota_that_refuses_the_same_job_fast(tmp_path: Path) -> None:
    prompt = "a paper boat"
    fast, relax = fast_reservation(prompt), relax_reservation(prompt)
    limit = (fast + relax) // 2  # above one relax job's reservation, below the fast one's
    assert relax < limit < fast
    env = {**RELAX_ENV, "IMAGEBOT_USER_DAILY_USD": f"{limit / 1_000_000:.6f}"}
    async with guild(tmp_path, **env) as (fake, bot):
        ix = await imagine(fake, prompt, **SQUARE)
        said = await refused(fake, bot, ix, "Quota", rows=0)
        assert format_usd(fast) in said and "daily" in said, said
        assert bot.server.batch_calls == []

        ix = await imagine(fake, prompt, relax=True, **SQUARE)
        final = await delivered(fake, ix)
        [row] = await closed(bot, 1)
        assert (row["mode"], row["status"], row["reserved_micros"]) == ("relax", "delivered", relax)
        assert row["actual_micros"] == batch_cost(row) <= relax
        assert HALF_PRICE in content(final) and decoded(final).size == (1024, 1024)
        assert bot.server.calls == [] and batches_sent(bot) == 1


async def test_a_relax_images_summary_does_not_say_it_took_no_time(tmp_path: Path) -> None:
    env = {**RELAX_ENV, "IMAGEBOT_OFFLINE_BATCH_LATENCY": "2"}
    async with guild(tmp_path, **env) as (fake, bot):
        asked = time.monotonic()
        ix = await imagine(fake, "a slow boat", relax=True, **SQUARE)
        final = await delivered(fake, ix)
        waited = time.monotonic() - asked
        assert waited >= 2.3  # the window (0.3 s) and the batch (2 s) at least
        said = content(final)
        assert HALF_PRICE in said
        # The summary's time is about the time the member waited (2.3 s or more), never none at all.
        shown = re.search(r" · (\d+(?:\.\d+)?) s · ", said)
        assert shown is not None and float(shown[1]) >= waited - 1.0, said


# -- access gaps ---------------------------------------------------------------------------------------------


async def test_a_relax_job_waiting_on_its_batch_counts_toward_max_jobs(tmp_path: Path) -> None:
    env = {**RELAX_ENV, "IMAGEBOT_OFFLINE_BATCH_LATENCY": "1.5"}
    async with guild(tmp_path, IMAGEBOT_USER_MAX_JOBS="1", **env) as (fake, bot):
        waiting = await imagine(fake, "a patient heron", relax=True, **SQUARE)
        async with asyncio.timeout(10):
            while not batches_sent(bot):  # sent: its row is `batched`, under no lease, still open
                await asyncio.sleep(0.02)
        ix = await imagine(fake, "an eager heron", **SQUARE)
        said = await private_answer(fake, ix)
        assert "max_jobs=1" in said and "Nothing was charged" in said, said
        assert response_of_gone(fake, ix) and bot.server.calls == []
        [row] = await bot.ledger()
        assert (row["mode"], row["status"]) == ("relax", "batched")

        final = await delivered(fake, waiting)  # the batch comes back; the member may go again
        [row] = await closed(bot, 1)
        assert (row["mode"], row["status"]) == ("relax", "delivered") and HALF_PRICE in content(final)
        await finished(fake, bot, await imagine(fake, "an eager heron", **SQUARE), rows=2)
        assert [(r["mode"], r["status"]) for r in await bot.ledger()] == [
            ("relax", "delivered"),
            ("fast", "delivered"),
        ]
