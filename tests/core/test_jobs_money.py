"""Money through the real JobRunner: reserve, render against the offline server, settle (docs/rules.md §4-5).

Everything is real: the SQLite file, the OpenAI SDK, HTTP on loopback, the offline image
server. Only the adapter is a small recording view.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json

import pytest
from PIL import Image

from bot.errors import QuotaExceeded
from bot.jobs import texts
from bot.jobs.outcomes import JobFailure, JobResult
from bot.model.pricing import cost_micros, format_usd, preview_count
from tests.support.core import (
    ALICE,
    BOB,
    MakeCore,
    RecordingView,
    assert_counters_match_ledger,
    expected_usage,
    rows,
    run_job,
    user_day,
)
from tests.support.waits import until

# --- success: settle to the real usage --------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "size", "previews"),
    [
        (
            "--size 2048x2048 --quality high --format png",
            (2048, 2048),
            True,
        ),  # dear enough to stream previews
        (
            "--size 1536x1024 --quality low --format png",
            (1536, 1024),
            False,
        ),  # too cheap: previews would not pay
        ("--quality auto", (1024, 1024), True),
        ("--size 1024x1536 --quality medium --format webp", (1024, 1536), False),
    ],
)
async def test_settles_to_the_usage_the_server_reported(
    make_core: MakeCore, flags: str, size: tuple[int, int], previews: bool
) -> None:
    # One call is asserted: the test cores' 1 s API timeout (tests/support/core.py) is for the hang tests, and a
    # 2048x2048 PNG drawn and encoded on a busy machine took longer (the SDK tried again: two calls).
    core = await make_core(IMAGEBOT_OFFLINE_LATENCY="0.3", IMAGEBOT_API_TIMEOUT="30")
    view = RecordingView()
    request = core.parse(f"a red fox in the snow {flags}")
    job = await core.runner.prepare(request, ALICE, previews=previews)
    partials = (
        preview_count(
            core.prices.model("gpt-image-2"),
            request,
            core.settings.partial_images,
            core.settings.preview_max_share,
        )
        if previews
        else 0
    )
    reserved = core.runner.estimate(request, partials)
    [row] = rows(core)
    assert (row["status"], row["reserved_micros"], row["actual_micros"]) == ("reserved", reserved, 0)
    assert_counters_match_ledger(core)

    outcome = await core.runner.execute(job, view)

    assert isinstance(outcome, JobResult) and view.delivered == [outcome] and view.failures == []
    [call] = core.offline_server.calls  # type: ignore[union-attr]
    assert call.status == 200 and call.stream == previews and call.partial_images == partials
    assert core.settings.partial_images == 2
    usage = expected_usage(core, 0)
    actual = cost_micros(core.prices.model("gpt-image-2"), usage)
    [row] = rows(core)
    assert row["status"] == "delivered"
    assert (row["text_tokens"], row["image_tokens"], row["output_tokens"]) == (
        usage.text_tokens,
        usage.image_tokens,
        usage.output_tokens,
    )
    assert row["actual_micros"] == actual <= reserved == row["reserved_micros"]
    assert json.loads(row["request_ids"]) == [call.request_id] and row["attempts"] == 1
    assert row["latency_ms"] >= 300 and row["finished_at"]
    # What the user is told matches the ledger.
    image = outcome.images[0]
    assert (image.width, image.height) == size and Image.open(io.BytesIO(image.data)).size == size
    assert image.cost_micros == outcome.total_micros == actual
    summary = texts.summary(outcome)
    assert format_usd(actual) in summary and call.request_id in summary and "offline" in summary
    assert view.ticks and all(p.job_id == job.id for p in view.ticks)
    assert any(p.preview for p in view.ticks) == previews, "streamed partial images reach the view"
    assert_counters_match_ledger(core)
    assert core.runner.jobs == {}


async def test_count_3_reserves_three_rows_and_settles_three(make_core: MakeCore) -> None:
    core = await make_core()
    view = RecordingView()
    request = core.parse("three foxes --count 3 --quality low --size 1024x1024")
    job = await core.runner.prepare(request, ALICE)
    reserved = rows(core)
    assert len(reserved) == 3 and {r["job_id"] for r in reserved} == {job.id}
    assert [r["seq"] for r in reserved] == [0, 1, 2] and {r["status"] for r in reserved} == {"reserved"}
    assert job.reservation.total_micros == 3 * core.runner.estimate(request)

    outcome = await core.runner.execute(job, view)

    assert isinstance(outcome, JobResult) and len(outcome.images) == 3
    settled = rows(core)
    assert [r["status"] for r in settled] == ["delivered"] * 3
    calls = core.offline_server.calls  # type: ignore[union-attr]
    assert len(calls) == 3 and len({c.request_id for c in calls}) == 3
    assert sorted(json.loads(r["request_ids"])[0] for r in settled) == sorted(c.request_id for c in calls)
    each = cost_micros(core.prices.model("gpt-image-2"), expected_usage(core, 0))
    assert [r["actual_micros"] for r in settled] == [each] * 3
    assert outcome.total_micros == 3 * each
    assert all(r["actual_micros"] <= r["reserved_micros"] for r in settled)
    assert user_day(core) == (3 * each, 3)
    assert_counters_match_ledger(core)


# --- failures: release, or charge the estimate when it may have been billed ---------------------


async def test_500_always_releases_the_reservation_and_keeps_every_request_id(make_core: MakeCore) -> None:
    core = await make_core()

    outcome, view = await run_job(core, "a red fox --quality low", fault="500*")

    assert isinstance(outcome, JobFailure) and view.failures == [outcome] and view.delivered == []
    calls = core.offline_server.calls  # type: ignore[union-attr]
    ids = [c.request_id for c in calls]
    assert len(calls) == 3 and {c.status for c in calls} == {500}  # the first try and 2 retries
    [row] = rows(core)
    assert (row["status"], row["actual_micros"], row["attempts"]) == ("failed", 0, 3)
    assert json.loads(row["request_ids"]) == ids
    assert "HTTP 500" in row["error"]
    assert outcome.charged_micros == 0 and not outcome.cancelled
    assert list(outcome.request_ids) == ids
    assert "Nothing was charged" in texts.summary(outcome) and ids[-1] in texts.summary(outcome)
    assert user_day(core) == (0, 0)
    assert_counters_match_ledger(core)


async def test_a_timeout_is_settled_at_the_estimate_as_possibly_billed(make_core: MakeCore) -> None:
    core = await make_core(IMAGEBOT_API_TIMEOUT="0.3", IMAGEBOT_API_RETRIES="0")
    core.offline_server.push_faults("hang")  # type: ignore[union-attr]
    view = RecordingView()
    request = core.parse("a red fox --quality high --size 1024x1024")
    job = await core.runner.prepare(request, ALICE)
    estimate = core.runner.estimate(request)

    outcome = await core.runner.execute(job, view)

    assert isinstance(outcome, JobFailure) and view.failures == [outcome]
    assert len(core.offline_server.calls) == 1  # type: ignore[union-attr]
    [row] = rows(core)
    assert (row["status"], row["actual_micros"], row["reserved_micros"]) == (
        "possibly_billed",
        estimate,
        estimate,
    )
    assert "did not answer within 0.3 s" in row["error"]
    assert outcome.charged_micros == estimate
    assert f"Charged {format_usd(estimate)}" in texts.summary(outcome)
    assert user_day(core) == (estimate, 0)  # money kept, no image counted
    assert_counters_match_ledger(core)


@pytest.mark.parametrize("hangs_up", [True, False])
async def test_a_broken_connection_is_charged_only_if_the_request_went_out(
    make_core: MakeCore, hangs_up: bool
) -> None:
    """The server reads the request and hangs up (it may have billed it), or nothing listens (it cannot have)."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    listener = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    if not hangs_up:
        listener.close()
        await listener.wait_closed()
    try:
        core = await make_core(
            IMAGEBOT_OFFLINE="0",
            OPENAI_API_KEY="sk-test",
            IMAGEBOT_API_RETRIES="0",
            OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1",
        )
        request = core.parse("a red fox --quality low --size 1024x1024")
        job = await core.runner.prepare(request, ALICE)
        outcome = await core.runner.execute(job, RecordingView())
    finally:
        listener.close()
    estimate = core.runner.estimate(request)
    charged = estimate if hangs_up else 0
    assert isinstance(outcome, JobFailure) and outcome.charged_micros == charged
    [row] = rows(core)
    assert (row["status"], row["actual_micros"]) == ("possibly_billed" if hangs_up else "failed", charged)
    assert user_day(core) == (charged, 0)
    assert_counters_match_ledger(core)


async def test_a_moderation_refusal_costs_nothing_and_says_why(make_core: MakeCore) -> None:
    core = await make_core()

    outcome, view = await run_job(
        core, "something the safety system refuses --quality low", fault="moderation"
    )

    assert isinstance(outcome, JobFailure) and view.failures == [outcome]
    [call] = core.offline_server.calls  # type: ignore[union-attr]  # a 400 is never retried
    assert call.status == 400
    [row] = rows(core)
    assert (row["status"], row["actual_micros"]) == ("failed", 0)
    assert json.loads(row["request_ids"]) == [call.request_id]
    assert "safety system" in outcome.message and "safety system" in texts.summary(outcome)
    assert call.request_id in texts.summary(outcome) and "Nothing was charged" in texts.summary(outcome)
    assert outcome.charged_micros == 0
    assert user_day(core) == (0, 0)
    assert_counters_match_ledger(core)


# --- quota refusals spend nothing ---------------------------------------------------------------


async def test_a_quota_refusal_in_prepare_makes_no_api_call(make_core: MakeCore) -> None:
    core = await make_core(IMAGEBOT_USER_DAILY_IMAGES="1", IMAGEBOT_USER_DAILY_USD="0.10")
    server = core.offline_server
    assert server is not None
    first = await core.runner.execute(
        await core.runner.prepare(core.parse("one fox --quality low"), ALICE), RecordingView()
    )
    assert isinstance(first, JobResult)
    calls, ledger = len(server.calls), rows(core)
    assert calls == 1

    with pytest.raises(QuotaExceeded, match=r"your daily images limit is 1 image and 0 images is left"):
        await core.runner.prepare(core.parse("another fox --quality low"), ALICE)
    with pytest.raises(QuotaExceeded, match=r"your daily spend limit is \$0\.1000"):
        await core.runner.prepare(core.parse("an expensive fox --quality high"), BOB)

    assert len(server.calls) == calls and rows(core) == ledger
    assert core.runner.jobs == {}


# --- cancel and the in-flight limit -------------------------------------------------------------


async def test_cancelling_a_running_job_leaves_nothing_open(make_core: MakeCore) -> None:
    core = await make_core(IMAGEBOT_OFFLINE_LATENCY="10")
    server = core.offline_server
    assert server is not None
    view = RecordingView()
    job = await core.runner.prepare(core.parse("a slow fox --quality low"), ALICE)
    task = asyncio.create_task(core.runner.execute(job, view))
    await until(lambda: len(server.calls) == 1 and rows(core)[0]["status"] == "running")
    assert core.runner.cancel(job.id, "someone-else") is False  # only the requester may cancel

    task.cancel()
    # Whether execute() re-raises or returns its JobFailure, the view must have been told.
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)

    [failure] = view.failures
    assert failure.cancelled and view.delivered == []
    [row] = rows(core)
    assert row["status"] not in ("reserved", "running")
    # The request had reached the provider: it is kept at its estimate, never recorded as free.
    assert (row["status"], row["actual_micros"]) == ("cancelled", row["reserved_micros"])
    assert failure.charged_micros == row["reserved_micros"]
    assert job.id not in core.runner.jobs
    assert_counters_match_ledger(core)


async def test_the_in_flight_limit_queues_the_second_job(make_core: MakeCore) -> None:
    core = await make_core(IMAGEBOT_MAX_IN_FLIGHT="1", IMAGEBOT_OFFLINE_LATENCY="0.4")
    first_view, second_view = RecordingView(), RecordingView()
    first = await core.runner.prepare(core.parse("first fox --quality low"), ALICE)
    second = await core.runner.prepare(core.parse("second fox --quality low"), BOB)

    outcomes = await asyncio.gather(
        core.runner.execute(first, first_view), core.runner.execute(second, second_view)
    )

    assert all(isinstance(o, JobResult) for o in outcomes)
    queued = [p for p in second_view.ticks if p.state == "queued"]
    assert queued, [(p.state, p.queue_position) for p in second_view.ticks]
    assert {p.queue_position for p in queued} == {1}
    assert all(p.fraction == 0.0 for p in queued)
    assert [p.state for p in first_view.ticks if p.state == "queued"] == []
    assert second_view.ticks[-1].state == "rendering"
    assert {r["status"] for r in rows(core)} == {"delivered"}
    assert_counters_match_ledger(core)


async def test_cancelling_a_queued_job_releases_it_in_full(make_core: MakeCore) -> None:
    core = await make_core(IMAGEBOT_MAX_IN_FLIGHT="1", IMAGEBOT_OFFLINE_LATENCY="10")
    server = core.offline_server
    assert server is not None
    running_view, queued_view = RecordingView(), RecordingView()
    running = await core.runner.prepare(core.parse("first fox --quality low"), ALICE)
    queued = await core.runner.prepare(core.parse("second fox --quality low"), BOB)
    running_task = asyncio.create_task(core.runner.execute(running, running_view))
    queued_task = asyncio.create_task(core.runner.execute(queued, queued_view))
    await until(lambda: any(p.state == "queued" for p in queued_view.ticks) and len(server.calls) == 1)

    assert core.runner.cancel(queued.id, "U2")
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(queued_task, 5)
    [failure] = queued_view.failures
    assert failure.cancelled and failure.charged_micros == 0
    [row] = rows(core, "job_id=?", (queued.id,))
    assert (row["status"], row["actual_micros"]) == ("cancelled", 0)  # it never reached the API
    assert len(server.calls) == 1

    running_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(running_task, 5)
    assert rows(core, "status IN ('reserved', 'running')") == []
    assert_counters_match_ledger(core)
