"""Issue [1/6], the core's promises on the unlucky paths: every HTTP attempt within one budget, charged <=
reserved <= limit through retries, finished images delivered through a cancel or a shutdown, and a dead
process's reservations freed by whoever runs next, whatever its host name.

Everything is real: the SQLite file, the OpenAI SDK, HTTP on loopback, the offline image server.
"""

from __future__ import annotations

import asyncio
import io

from PIL import Image

from bot.config import QuotaDefaults
from bot.jobs import JobFailure, JobResult
from bot.pricing import cost_micros, format_usd
from tests.core.test_jobs_money import (
    ALICE,
    MakeCore,
    RecordingView,
    assert_counters_match_ledger,
    expected_usage,
    make_core,  # noqa: F401  (the fixture)
    rows,
    user_day,
    wait_for,
)

CHEAP = "a red fox --quality low --size 1024x1024"


# --- item 4: charged <= reserved <= limit, through retries ---------------------------------------


async def test_a_retry_after_a_possibly_billed_attempt_first_extends_the_reservation(make_core: MakeCore) -> None:
    core = await make_core(IMAGEBOT_API_TIMEOUT="0.3", IMAGEBOT_USER_DAILY_USD="0.02")
    server = core.offline_server
    assert server is not None
    server.push_faults("hang,hang")
    request = core.parse(CHEAP)
    each = core.runner.estimate(request)
    assert 3 * each <= 20_000  # the limit fits the first attempt and two retries

    outcome = await core.runner.execute(await core.runner.prepare(request, ALICE), RecordingView())

    assert isinstance(outcome, JobResult) and len(server.calls) == 3
    [row] = rows(core)
    usage = cost_micros(core.prices.model("gpt-image-2"), expected_usage(core, 2))
    assert (row["status"], row["attempts"]) == ("succeeded", 3)
    assert row["actual_micros"] == usage + 2 * each  # the image, and both attempts that may have been billed
    assert row["actual_micros"] <= row["reserved_micros"] == 3 * each
    assert user_day(core)[0] == row["actual_micros"] <= 20_000
    assert_counters_match_ledger(core)


async def test_a_retry_the_limits_cannot_take_is_not_made(make_core: MakeCore) -> None:
    core = await make_core(IMAGEBOT_API_TIMEOUT="0.3")
    server = core.offline_server
    assert server is not None
    request = core.parse(CHEAP)
    each = core.runner.estimate(request)
    core.ledger.defaults = QuotaDefaults(user_daily_micros=each + each // 2)  # one attempt fits, two do not
    server.push_faults("hang*")
    view = RecordingView()

    outcome = await core.runner.execute(await core.runner.prepare(request, ALICE), view)

    assert isinstance(outcome, JobFailure) and view.failures == [outcome]
    assert len(server.calls) == 1, "no retry past the limit"
    [row] = rows(core)
    assert (row["status"], row["actual_micros"], row["reserved_micros"]) == ("possibly_billed", each, each)
    assert "not retried" in outcome.summary() and "daily spend limit" in outcome.summary()
    assert f"Charged {format_usd(each)}" in outcome.summary()
    assert user_day(core)[0] == each <= each + each // 2
    assert_counters_match_ledger(core)


async def test_every_possibly_billed_attempt_of_a_failed_image_is_charged(make_core: MakeCore) -> None:
    core = await make_core(IMAGEBOT_API_TIMEOUT="0.3")
    server = core.offline_server
    assert server is not None
    server.push_faults("hang*")
    request = core.parse(CHEAP)
    each = core.runner.estimate(request)

    outcome = await core.runner.execute(await core.runner.prepare(request, ALICE), RecordingView())

    assert isinstance(outcome, JobFailure) and len(server.calls) == 3
    [row] = rows(core)
    assert (row["status"], row["actual_micros"], row["reserved_micros"]) == ("possibly_billed", 3 * each, 3 * each)
    assert outcome.charged_micros == 3 * each
    assert_counters_match_ledger(core)


async def test_auto_size_reserves_the_dearest_size_auto_may_render(make_core: MakeCore) -> None:
    core = await make_core()
    auto = core.runner.estimate(core.parse("a fox --size auto --quality high"))
    for size in ("1024x1024", "1536x1024", "1024x1536"):
        assert auto >= core.runner.estimate(core.parse(f"a fox --size {size} --quality high"))


# --- item 5: a cancel or a shutdown never throws a paid image away --------------------------------


async def four_with_one_stuck(core_maker: MakeCore) -> tuple:  # type: ignore[type-arg]
    """`--count 4` where three images finish and the fourth hangs in its API call."""
    core = await core_maker(IMAGEBOT_API_TIMEOUT="30", IMAGEBOT_OFFLINE_LATENCY="0.05")
    server = core.offline_server
    assert server is not None
    server.push_faults("ok,ok,ok,hang")
    view = RecordingView()
    request = core.parse(CHEAP + " --count 4")
    job = await core.runner.prepare(request, ALICE)
    task = asyncio.create_task(core.runner.execute(job, view))
    await wait_for(lambda: len([r for r in rows(core) if r["status"] == "succeeded"]) == 3 and len(server.calls) == 4)
    return core, job, task, view, core.runner.estimate(request)


async def test_cancel_delivers_the_finished_images_and_charges_only_what_may_be_billed(make_core: MakeCore) -> None:
    core, job, task, view, each = await four_with_one_stuck(make_core)

    assert core.runner.cancel(job.id, "U1")
    outcome = await asyncio.wait_for(task, 5)

    assert isinstance(outcome, JobResult) and view.delivered == [outcome] and view.failures == []
    assert len(outcome.images) == 3
    assert all(Image.open(io.BytesIO(i.data)).size == (1024, 1024) for i in outcome.images)
    settled = rows(core)
    assert sorted(r["status"] for r in settled) == ["cancelled", "succeeded", "succeeded", "succeeded"]
    [stopped] = [r for r in settled if r["status"] == "cancelled"]
    assert stopped["actual_micros"] == each  # its call had gone out: charged at the estimate
    assert outcome.total_micros == sum(r["actual_micros"] for r in settled)
    summary = outcome.summary()
    assert "3 images" in summary and format_usd(outcome.total_micros) in summary
    assert "cancelled by the requester during its API call" in summary and format_usd(each) in summary
    assert "gave no image" not in summary
    assert_counters_match_ledger(core)


async def test_shutdown_past_the_grace_still_delivers_the_finished_images(make_core: MakeCore) -> None:
    core, job, task, view, each = await four_with_one_stuck(make_core)

    await core.runner.shutdown(grace=0.1)
    outcome = await asyncio.wait_for(task, 5)

    assert isinstance(outcome, JobResult) and view.delivered == [outcome] and len(outcome.images) == 3
    statuses = sorted(r["status"] for r in rows(core))
    assert statuses == ["interrupted", "succeeded", "succeeded", "succeeded"]
    assert "interrupted by a shutdown" in outcome.summary()
    assert rows(core, "status IN ('reserved', 'running')") == []
    assert_counters_match_ledger(core)
