"""[1/6] Paid work is never lost and never free (docs/rules.md §4-5): fencing, the outbox, charged failures.

Real parts throughout: SQLite files in WAL, the OpenAI SDK against the offline image server on loopback,
the JobRunner and the ledger. The views are small recording adapters.
"""

from __future__ import annotations

import asyncio
import io
import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from PIL import Image

from bot.errors import DeliveryFailed
from bot.jobs.outcomes import JobFailure, JobResult, Progress
from tests.support.core import ALICE, MakeCore, assert_counters_match_ledger, rows, user_day
from tests.support.waits import until

ROOT = Path(__file__).resolve().parents[2]
CHEAP = "a lighthouse --size 1024x1024 --quality low"


class View:
    """A recording view whose deliveries fail `fails` times first (`retry`: as a platform's 5xx would)."""

    previews = False
    confirms = False

    def __init__(self, fails: int = 0, *, retry: bool = True) -> None:
        self.fails, self.retry = fails, retry
        self.tries = 0
        self.delivered: list[JobResult] = []
        self.failures: list[JobFailure] = []
        self.told: list[str] = []

    async def open(self, first: Progress) -> dict[str, Any]:
        return {"channel": "C1", "ts": "1.0"}

    async def progress(self, progress: Progress) -> None:
        pass

    async def refused(self, text: str) -> None:
        self.told.append(text)

    async def platform_admin(self) -> bool:
        return False

    async def member_of(self, groups: object) -> bool:
        return False

    async def deliver(self, result: JobResult) -> list[dict[str, Any]] | None:
        self.tries += 1
        if self.tries <= self.fails:
            raise DeliveryFailed("the platform answered 503", retry=self.retry)
        self.delivered.append(result)
        return None

    async def undelivered(self, text: str) -> None:
        self.told.append(text)

    async def failed(self, failure: JobFailure) -> None:
        self.failures.append(failure)


# --- item 1: a process whose lease lapsed makes no API call and delivers nothing ------------------------


async def test_a_process_whose_lease_lapsed_calls_nothing_for_rows_another_process_recovered(
    make_core: MakeCore,
) -> None:
    """Seen on main 2f2d54c: 2 API calls and 2 images delivered against rows another process had already
    closed as `interrupted ... nothing charged`, the user's counter at (6045 µ$, 0 images)."""
    stalled = await make_core(IMAGEBOT_MAX_IN_FLIGHT="1", IMAGEBOT_OFFLINE_LATENCY="0.6")
    other = await make_core()
    server = stalled.offline_server
    assert server is not None
    view = View()
    job = await stalled.runner.prepare(stalled.parse(CHEAP + " --count 2"), ALICE)
    task = asyncio.create_task(stalled.runner.execute(job, view))
    await until(lambda: len(server.calls) == 1)  # the first image is in its API call, the second queued

    # `stalled`'s database thread stalls past its lease: to the other process, its lease has run out.
    later = other.ledger.clock() + timedelta(minutes=5)
    other.ledger.clock = lambda: later
    recovered = await other.ledger.recover()
    assert [j.job_id for j in recovered] == [job.id]
    first, second = rows(stalled)
    assert (first["status"], second["status"]) == ("interrupted", "interrupted")
    assert first["actual_micros"] == first["reserved_micros"] and second["actual_micros"] == 0

    outcome = await asyncio.wait_for(task, 10)

    # The queued image never called the API; the one in flight was not delivered by the stalled process.
    assert len(server.calls) == 1 and view.delivered == []
    assert isinstance(outcome, JobFailure)
    assert [r["status"] for r in rows(stalled)] == ["interrupted", "interrupted"]
    assert user_day(stalled) == (first["reserved_micros"], 0)  # the call that went out, at its estimate
    # Its heartbeat now finds the lease lapsed: it takes a new one and says so (the caller stops its jobs).
    assert await stalled.ledger.heartbeat() is False
    assert await stalled.ledger.heartbeat() is True
    assert_counters_match_ledger(stalled)


# --- item 5: a transient delivery failure is retried; a lasting one keeps the image ---------------------


async def test_a_delivery_that_fails_twice_is_retried_and_delivered_once(make_core: MakeCore) -> None:
    core = await make_core()
    core.delivery.backoff = 0.01
    view = View(fails=2)
    outcome = await core.runner.submit(core.parse(CHEAP), ALICE, view)  # type: ignore[arg-type]
    assert isinstance(outcome, JobResult) and view.tries == 3 and view.delivered == [outcome]
    [row] = rows(core)
    assert row["status"] == "delivered" and row["actual_micros"] == outcome.total_micros > 0
    assert await core.ledger.outbox(outcome.job_id) == []  # the bytes went with the confirmation
    assert view.told == []
    assert_counters_match_ledger(core)


async def test_a_delivery_that_keeps_failing_is_kept_told_with_its_cost_and_redelivered(
    make_core: MakeCore,
) -> None:
    core = await make_core()
    core.delivery.backoff, core.delivery.deadline = 0.01, 0.2
    view = View(fails=10**6)
    outcome = await core.runner.submit(core.parse(CHEAP), ALICE, view)  # type: ignore[arg-type]
    assert isinstance(outcome, JobResult) and view.delivered == [] and view.tries >= 2
    [row] = rows(core)
    assert row["status"] == "undelivered" and row["actual_micros"] == outcome.total_micros > 0
    [told] = view.told
    request_id = outcome.images[0].request_ids[0]
    assert "made and charged, but it could not be posted: the platform answered 503" in told
    assert request_id in told and f"imagebot redeliver {outcome.job_id}" in told and "$" in told
    [kept] = await core.ledger.outbox(outcome.job_id)
    assert Image.open(io.BytesIO(kept[2])).size == (1024, 1024)

    # Later (the platform is back): redelivered from the outbox, charged once.
    again = View()
    assert await core.redeliver(outcome.job_id, again)  # type: ignore[arg-type]
    [result] = again.delivered
    assert result.images[0].data == outcome.images[0].data and result.total_micros == outcome.total_micros
    [row] = rows(core)
    assert row["status"] == "delivered" and await core.ledger.outbox(outcome.job_id) == []
    assert_counters_match_ledger(core)


async def test_a_permanent_refusal_is_not_retried(make_core: MakeCore) -> None:
    core = await make_core()
    core.delivery.backoff = 0.01
    view = View(fails=1, retry=False)
    await core.runner.submit(core.parse(CHEAP), ALICE, view)  # type: ignore[arg-type]
    assert view.tries == 1 and len(view.told) == 1
    assert [r["status"] for r in rows(core)] == ["undelivered"]


async def test_images_a_dead_process_left_in_the_outbox_are_delivered_by_another(
    make_core: MakeCore,
) -> None:
    """A restart between the render and the upload: the next process serving the platform delivers it."""
    first = await make_core()
    first.delivery.backoff, first.delivery.deadline = 0.01, 0.05
    outcome = await first.runner.submit(first.parse(CHEAP), ALICE, View(fails=10**6))  # type: ignore[arg-type]
    assert isinstance(outcome, JobResult)
    await first.ledger.requeue(outcome.job_id)  # as `imagebot redeliver` does for a chat job

    second = await make_core()
    arrived = View()
    second.places.serve({"slack": SimpleNamespace(view_for=lambda who, context: arrived)})
    await second.sweep()
    await until(lambda: bool(arrived.delivered))
    # The view hears of the images before the row records their delivery (a moment later).
    await until(lambda: [r["status"] for r in rows(second)] == ["delivered"])
    await second.sweep()  # claimed once: a second sweep finds nothing to deliver
    await asyncio.sleep(0.05)
    assert len(arrived.delivered) == 1


# --- item 6: a database error before a retry still charges the attempt that may have been billed -----------


async def test_a_database_error_while_extending_before_a_retry_charges_the_billed_attempt(
    make_core: MakeCore,
) -> None:
    """Seen on main 2f2d54c: the row closed `failed` at 0 after an attempt that may have been billed."""
    core = await make_core(IMAGEBOT_API_TIMEOUT="0.3")
    assert core.offline_server is not None
    core.offline_server.push_faults("hang,ok")

    def broken(row_id: int, micros: int) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    core.ledger.extend_sync = broken  # type: ignore[method-assign]
    view = View()
    outcome = await core.runner.submit(core.parse(CHEAP), ALICE, view)  # type: ignore[arg-type]
    assert isinstance(outcome, JobFailure)
    [row] = rows(core)
    assert row["status"] == "possibly_billed" and row["actual_micros"] == row["reserved_micros"] > 0
    assert outcome.charged_micros == row["actual_micros"]
    assert_counters_match_ledger(core)


# --- item 8: a settlement above the estimate is recorded, flagged and counted ------------------------------


async def test_a_settlement_above_its_reservation_is_charged_in_full_and_flagged(make_core: MakeCore) -> None:
    from bot.store.ledger import Settlement, Status

    core = await make_core()
    [row_id] = (await core.ledger.reserve(ALICE, core.parse(CHEAP), 5_000)).row_ids
    assert await core.ledger.start(row_id)
    assert await core.ledger.close_row(row_id, Settlement(status=Status.RENDERED, actual_micros=7_500))
    [row] = rows(core)
    assert (row["actual_micros"], row["overage"]) == (7_500, 1)
    assert user_day(core) == (7_500, 1)
    assert_counters_match_ledger(core)


# --- item 10: the CLI never loses a charged image, and never overwrites one --------------------------------


def _imagebot(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "IMAGEBOT_DB": str(tmp_path / "cli.sqlite3"),
        "IMAGEBOT_OFFLINE": "1",
        "IMAGEBOT_OFFLINE_LATENCY": "0.05",
    }
    return subprocess.run(
        [sys.executable, "-c", "import sys; from adapters.cli import main; sys.exit(main())", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _ledger(tmp_path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(tmp_path / "cli.sqlite3") as conn:
        return conn.execute("SELECT job_id, status, actual_micros FROM ledger ORDER BY id").fetchall()


def test_an_out_path_that_cannot_be_written_keeps_the_image_exits_1_and_redeliver_writes_it(
    tmp_path: Path,
) -> None:
    """Seen on main 2f2d54c: "made and charged, but it could not be posted: IsADirectoryError", exit 0, and
    the image gone."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be")
    failed = _imagebot(tmp_path, "imagine", "a fox", "--quality", "low", "--out", str(blocker / "fox.jpg"))
    assert failed.returncode == 1, failed.stderr
    [(job_id, status, charged)] = _ledger(tmp_path)
    assert status == "undelivered" and charged > 0
    assert "could not be posted" in failed.stderr and f"imagebot redeliver {job_id}" in failed.stderr

    again = _imagebot(tmp_path, "redeliver", job_id, "--out", str(tmp_path / "fox.jpg"))
    assert again.returncode == 0, again.stderr
    assert Image.open(tmp_path / "fox.jpg").size == (1024, 1024)
    assert _ledger(tmp_path) == [(job_id, "delivered", charged)]
    assert _imagebot(tmp_path, "redeliver", job_id).returncode == 2  # nothing waits any more


def test_an_out_folder_gets_files_named_by_job_so_none_overwrites_another(tmp_path: Path) -> None:
    out = tmp_path / "images"
    out.mkdir()
    for _ in range(2):
        done = _imagebot(tmp_path, "imagine", "a fox", "--quality", "low", "--out", f"{out}/")
        assert done.returncode == 0, done.stderr
    files = sorted(out.iterdir())
    assert len(files) == 2 and all(Image.open(f).size == (1024, 1024) for f in files)
    jobs = {job_id for job_id, _status, _charged in _ledger(tmp_path)}
    assert {f.name.split("-")[1] for f in files} == jobs


async def test_an_undelivered_image_is_kept_for_the_buttons_life_then_purged(make_core: MakeCore) -> None:
    core = await make_core(IMAGEBOT_ACTIONS_DAYS="2")
    core.delivery.backoff, core.delivery.deadline = 0.01, 0.05
    outcome = await core.runner.submit(core.parse(CHEAP), ALICE, View(fails=10**6))  # type: ignore[arg-type]
    assert isinstance(outcome, JobResult)
    start = core.ledger.clock()
    core.ledger.clock = lambda: start + timedelta(days=1)
    await core.purge(force=True)
    assert len(await core.ledger.outbox(outcome.job_id)) == 1  # a day old: `imagebot redeliver` still works
    core.ledger.clock = lambda: start + timedelta(days=2, minutes=1)
    await core.purge(force=True)
    assert await core.ledger.outbox(outcome.job_id) == []
    assert [r["status"] for r in rows(core)] == ["undelivered"]  # the ledger row stays: it was charged


async def test_redeliver_leaves_an_image_its_live_process_is_delivering_alone(make_core: MakeCore) -> None:
    """`imagebot redeliver` on a job whose image is still on its way must not hand it to a second process."""
    from bot.store.ledger import Settlement, Status

    core = await make_core()
    reservation = await core.ledger.reserve(ALICE, core.parse(CHEAP), 6_000)
    [row_id] = reservation.row_ids
    assert await core.ledger.start(row_id)
    image = {"width": 1024, "height": 1024, "format": "jpeg", "elapsed_ms": 10}
    assert await core.ledger.close_row(
        row_id, Settlement(status=Status.RENDERED, actual_micros=5_000), keep=(image, b"jpeg")
    )
    assert await core.ledger.requeue(reservation.job_id) == []
    [row] = rows(core)
    assert (row["status"], row["owner"]) == ("rendered", core.ledger.instance_id)
    assert await core.ledger.claim_orphans({"slack"}) == []  # its owner is live: nobody else takes it
