"""Issue [1/6], the core's promises on the unlucky paths: every HTTP attempt within one budget, charged <=
reserved <= limit through retries, finished images delivered through a cancel or a shutdown, and a dead
process's reservations freed by whoever runs next, whatever its host name.

Everything is real: the SQLite file, the OpenAI SDK, HTTP on loopback, the offline image server.
"""

from __future__ import annotations

import asyncio
import io
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from bot.config import QuotaDefaults
from bot.jobs import texts
from bot.jobs.outcomes import JobFailure, JobResult
from bot.model.pricing import cost_micros, format_usd, load_prices
from bot.model.request import parse_request
from bot.store.ledger import Interrupted, Ledger
from tests.support.core import (
    ALICE,
    MakeCore,
    RecordingView,
    assert_counters_match_ledger,
    expected_usage,
    rows,
    user_day,
)
from tests.support.waits import until

CHEAP = "a red fox --quality low --size 1024x1024"


# --- item 4: charged <= reserved <= limit, through retries ---------------------------------------


async def test_a_retry_after_a_possibly_billed_attempt_first_extends_the_reservation(
    make_core: MakeCore,
) -> None:
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
    assert (row["status"], row["attempts"]) == ("delivered", 3)
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
    assert "not retried" in texts.summary(outcome) and "daily spend limit" in texts.summary(outcome)
    assert f"Charged {format_usd(each)}" in texts.summary(outcome)
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
    assert (row["status"], row["actual_micros"], row["reserved_micros"]) == (
        "possibly_billed",
        3 * each,
        3 * each,
    )
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
    await until(
        lambda: len([r for r in rows(core) if r["status"] == "rendered"]) == 3 and len(server.calls) == 4
    )
    return core, job, task, view, core.runner.estimate(request)


async def test_cancel_delivers_the_finished_images_and_charges_only_what_may_be_billed(
    make_core: MakeCore,
) -> None:
    core, job, task, view, each = await four_with_one_stuck(make_core)

    assert core.runner.cancel(job.id, "U1")
    outcome = await asyncio.wait_for(task, 5)

    assert isinstance(outcome, JobResult) and view.delivered == [outcome] and view.failures == []
    assert len(outcome.images) == 3
    assert all(Image.open(io.BytesIO(i.data)).size == (1024, 1024) for i in outcome.images)
    settled = rows(core)
    assert sorted(r["status"] for r in settled) == ["cancelled", "delivered", "delivered", "delivered"]
    [stopped] = [r for r in settled if r["status"] == "cancelled"]
    assert stopped["actual_micros"] == each  # its call had gone out: charged at the estimate
    assert outcome.total_micros == sum(r["actual_micros"] for r in settled)
    summary = texts.summary(outcome)
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
    assert statuses == ["delivered", "delivered", "delivered", "interrupted"]
    assert "interrupted by a shutdown" in texts.summary(outcome)
    assert rows(core, "status IN ('reserved', 'running')") == []
    assert_counters_match_ledger(core)


# --- item 6: leases, so a dead process's reservations never stay stuck ------------------------------


def crash(ledger: Ledger) -> None:
    """Stop using `ledger` the way a killed process would: no goodbye, no last heartbeat."""
    ledger._pool.submit(ledger.db.conn.close).result()
    ledger._pool.shutdown()


async def test_a_process_that_comes_back_under_a_new_host_name_recovers_the_old_ones_jobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bot.sqlite3"
    now = datetime.now(UTC)
    monkeypatch.setattr(socket, "gethostname", lambda: "imagebot-7f9c")
    old = Ledger(path, clock=lambda: now)
    running = await old.reserve(ALICE, parse_request(CHEAP, prices=load_prices()), 211_000)
    await old.start(running.row_ids[0])
    crash(old)

    monkeypatch.setattr(socket, "gethostname", lambda: "imagebot-0b31")  # the container, recreated
    later = now
    new = Ledger(path, clock=lambda: later)
    try:
        assert new.recover_sync() == [], "the old lease has not expired yet: it may still be running"
        later = now + new.lease + timedelta(seconds=1)
        [job] = new.recover_sync()
        assert (job.job_id, job.charged_micros, job.images) == (running.job_id, 211_000, 1)
        [row] = await new.query("SELECT status, actual_micros, notice FROM ledger")
        assert row == ("interrupted", 211_000, "pending")  # its API call had started: never free
        [notice] = new.claim_notices_sync({"slack"})
        assert notice.job_id == running.job_id and new.claim_notices_sync({"slack"}) == []
        used = await new.query("SELECT sum(micros) FROM counters WHERE scope='user_day'")
        assert used == [(211_000,)]
    finally:
        new.close()


async def test_a_running_bot_recovers_an_expired_lease_without_a_restart(
    make_core: MakeCore, tmp_path: Path
) -> None:
    core = await make_core(IMAGEBOT_LEASE_SECONDS="1")
    told: list[Interrupted] = []

    async def tell(job: Interrupted) -> None:
        told.append(job)

    core.places.serve({"slack": SimpleNamespace(tell_interrupted=tell)})
    other = Ledger(core.settings.db_path, lease=timedelta(seconds=1))
    reservation = await other.reserve(ALICE, core.parse(CHEAP), 6_000)
    await other.set_context(reservation.job_id, {"channel": "C1", "thread_ts": "1.2"})
    await other.start(reservation.row_ids[0])
    crash(other)

    await until(lambda: bool(told), timeout=10)

    [job] = told
    assert (job.job_id, job.charged_micros, job.context) == (
        reservation.job_id,
        6_000,
        {"channel": "C1", "thread_ts": "1.2"},
    )
    assert rows(core, "status IN ('reserved', 'running')") == []
    assert_counters_match_ledger(core)


# --- item 3: the retry settings themselves ------------------------------------------------------------


async def test_a_timeout_below_360_s_is_warned_about_at_start(
    make_core: MakeCore, caplog: pytest.LogCaptureFixture
) -> None:
    await make_core(IMAGEBOT_API_TIMEOUT="120")
    assert any("IMAGEBOT_API_TIMEOUT" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    caplog.clear()
    await make_core(IMAGEBOT_API_TIMEOUT="360")
    assert not any("IMAGEBOT_API_TIMEOUT" in r.getMessage() for r in caplog.records)


async def test_the_sdk_never_retries_on_its_own() -> None:
    """Every retry is ours, so the one budget counts every attempt (the SDK would also retry 409s and
    anything marked x-should-retry)."""
    from bot.jobs.render import Renderer

    renderer = Renderer(base_url="http://127.0.0.1:9/v1", api_key="test", timeout=1, max_retries=2)
    try:
        assert (await renderer.sdk()).max_retries == 0 and renderer.max_retries == 2
    finally:
        await renderer.close()
