"""The money and retry promises as properties (issue [1/6]), over random fault queues, counts, cancels and
limits, with several users in two tenants running jobs at once through the real JobRunner, the real SQLite
ledger and the offline image server on loopback.

After every run: HTTP attempts per image <= 1 + retries; charged <= reserved for every row and every counter
<= its limit (also sampled while the jobs run); counters equal the sums over the ledger; no row left open;
every attempt that may have been billed charged at the estimate.

The fault model also has platform deliveries that fail (transient, then fine; or for good) and a database
stall past the lease (another process recovers this one's open rows while its jobs run: bot/store/jobstate.py's
fencing). Then: every image the provider completed is delivered exactly once, or its row says `undelivered`
(its user told, with the cost) or `interrupted` (recovered, charged at the estimate); no API call is ever made
for a row that was recovered before its call.

CI runs a few dozen examples (well under a minute). To run longer:
    IMAGEBOT_PROPERTY_EXAMPLES=500 .venv/bin/python -m pytest tests/core/test_money_properties.py
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.app import Core
from bot.config import QuotaDefaults
from bot.errors import DeliveryFailed, QuotaExceeded
from bot.jobs.outcomes import JobFailure, JobResult
from bot.model.pricing import Usage, cost_micros
from bot.model.request import ImageRequest, Requester
from bot.policy import quota
from bot.store.ledger import Ledger
from tests import dbs
from tests.support.core import RecordingView, offline_settings

EXAMPLES = int(os.environ.get("IMAGEBOT_PROPERTY_EXAMPLES", "25"))
RETRIES = 2
FAULTS = ["500", "429:0", "408", "409", "400", "hang", "drop", "moderation", "garbage", "ok"]
USERS = [
    Requester("slack", "T1", "C1", "U1"),
    Requester("slack", "T1", "C2", "U2"),
    Requester("discord", "G2", "C3", "U1"),
]  # the same user id in another tenant is another user
# Limits in micro-dollars: a low 1024x1024 image is reserved at ~6,000 and a medium one at ~53,000.
USD_LIMITS = st.one_of(st.none(), st.integers(min_value=5_000, max_value=200_000))


@dataclass(frozen=True)
class Plan:
    who: int  # index into USERS
    count: int
    quality: str
    previews: bool
    cancel_after: float | None  # seconds after the job starts, or never
    delivery: str = "ok"  # ok | flaky (fails twice, then takes it) | down (refuses for good)


class FaultyView(RecordingView):
    """A platform whose uploads fail as `delivery` says; it records what it was told."""

    def __init__(self, delivery: str) -> None:
        super().__init__()
        self.delivery, self.tries = delivery, 0
        self.told: list[str] = []

    async def deliver(self, result: JobResult) -> None:
        self.tries += 1
        if self.delivery == "down" or (self.delivery == "flaky" and self.tries <= 2):
            raise DeliveryFailed("HTTP 503 from the platform", retry=self.delivery == "flaky")
        await super().deliver(result)

    async def undelivered(self, text: str) -> None:
        self.told.append(text)


plans = st.builds(
    Plan,
    who=st.integers(0, len(USERS) - 1),
    count=st.integers(1, 4),
    quality=st.sampled_from(["low", "medium"]),
    previews=st.booleans(),
    cancel_after=st.one_of(st.none(), st.floats(0.0, 0.6)),
    delivery=st.sampled_from(["ok", "ok", "flaky", "down"]),
)
limits = st.builds(
    QuotaDefaults,
    user_daily_micros=USD_LIMITS,
    user_daily_images=st.one_of(st.none(), st.integers(1, 6)),
    channel_monthly_micros=USD_LIMITS,
    workspace_monthly_micros=USD_LIMITS,
)


def _rows(path: Path | str) -> list[dict[str, Any]]:
    return dbs.read(path, "SELECT * FROM ledger ORDER BY id")


def _counters(path: Path | str) -> dict[tuple[str, str, str], tuple[int, int]]:
    found = dbs.tuples(path, "SELECT scope, key, period, micros, images FROM counters")
    return {(s, k, p): (int(m), int(n)) for s, k, p, m, n in found}


def _limit(defaults: QuotaDefaults, scope: str) -> tuple[int | None, int | None]:
    """(micros, images) limits of a counter scope."""
    return {
        "user_day": (defaults.user_daily_micros, defaults.user_daily_images),
        "user_month": (defaults.user_monthly_micros, defaults.user_monthly_images),
        "channel_month": (defaults.channel_monthly_micros, None),
        "workspace_month": (defaults.workspace_monthly_micros, None),
    }[scope]


def check_moment(path: Path | str, defaults: QuotaDefaults) -> None:
    """charged <= reserved for every row, and every counter within its limit, right now."""
    for row in _rows(path):
        assert row["actual_micros"] <= row["reserved_micros"], row
    for (scope, _key, _period), (micros, images) in _counters(path).items():
        max_micros, max_images = _limit(defaults, scope)
        assert max_micros is None or micros <= max_micros, (scope, micros, max_micros)
        assert max_images is None or images <= max_images, (scope, images, max_images)


async def run_example(
    store: str,
    plan_list: list[Plan],
    faults: list[str],
    defaults: QuotaDefaults,
    in_flight: int,
    stall_at: float | None = None,
) -> None:
    settings = offline_settings(
        store,
        IMAGEBOT_OFFLINE_LATENCY="0.02",
        IMAGEBOT_API_TIMEOUT="0.25",
        IMAGEBOT_API_RETRIES=str(RETRIES),
        IMAGEBOT_MAX_IN_FLIGHT=str(in_flight),
        IMAGEBOT_PARTIAL_IMAGES="1",
    )
    core = await Core.start(settings)
    path = core.settings.db_path
    try:
        core.ledger.defaults = defaults
        core.renderer.backoff = 0.005
        core.delivery.backoff, core.delivery.deadline = 0.005, 0.05
        server = core.offline_server
        assert server is not None
        server.push_faults(faults)
        prepared: list[tuple[Plan, ImageRequest, Any, FaultyView]] = []
        for plan in plan_list:
            request = core.parse(f"a fox --size 1024x1024 --quality {plan.quality} --count {plan.count}")
            try:
                job = await core.runner.prepare(request, USERS[plan.who], previews=plan.previews)
            except QuotaExceeded:
                continue
            prepared.append((plan, request, job, FaultyView(plan.delivery)))
            check_moment(path, defaults)

        recovered: set[int] = set()  # rows another process closed while they were still reserved

        async def stall() -> None:
            """This process's database thread stalls past its lease: another process recovers its open rows;
            then its heartbeat finds the lease lapsed and it stops its jobs (as Core._keep_lease does)."""
            assert stall_at is not None
            await asyncio.sleep(stall_at)
            await core.ledger.run_db(
                lambda db: db.conn.execute(
                    "UPDATE instances SET expires_at='2000-01-01T00:00:00.000+00:00' WHERE id=?",
                    [core.ledger.instance_id],
                )
            )
            before = {r["id"] for r in _rows(path) if r["status"] == "reserved"}
            other = await asyncio.to_thread(Ledger, store)
            try:
                await other.recover()
            finally:
                await asyncio.to_thread(other.close)
            recovered.update(
                r["id"] for r in _rows(path) if r["id"] in before and r["status"] == "interrupted"
            )
            if not await core.ledger.heartbeat():
                core.runner.fence()

        async def run(plan: Plan, job: Any, view: FaultyView) -> JobResult | JobFailure:
            task = asyncio.ensure_future(core.runner.execute(job, view))
            if plan.cancel_after is not None:
                await asyncio.sleep(plan.cancel_after)
                core.runner.cancel(job.id, job.requester.user)
            return await task

        async def sample() -> None:
            while True:
                await asyncio.to_thread(check_moment, path, defaults)
                await asyncio.sleep(0.03)

        sampler = asyncio.create_task(sample())
        staller = asyncio.create_task(stall()) if stall_at is not None else None
        try:
            outcomes = await asyncio.wait_for(
                asyncio.gather(*(run(plan, job, view) for plan, _request, job, view in prepared)), 60
            )
            if staller is not None:
                await staller
        finally:
            sampler.cancel()
            if staller is not None:
                staller.cancel()
        check_moment(path, defaults)

        rows = _rows(path)
        calls = Counter(c.client_request_id for c in server.calls)
        assert max(calls.values(), default=0) <= 1 + RETRIES, calls
        assert [r for r in rows if r["status"] in ("reserved", "running")] == []
        # Counters are the ledger's sums (closed rows count what they were charged).
        expected: Counter[tuple[str, str, str]] = Counter()
        expected_images: Counter[tuple[str, str, str]] = Counter()
        for row in rows:
            who = Requester(row["platform"], row["workspace"], row["channel"], row["user"])
            for key in quota.counter_keys(who, row["day"], row["month"]):
                expected[key] += row["actual_micros"]
                expected_images[key] += row["status"] in ("rendered", "delivered", "undelivered")
        assert {k: v for k, v in _counters(path).items() if v != (0, 0)} == {
            k: (expected[k], expected_images[k])
            for k in expected
            if (expected[k], expected_images[k]) != (0, 0)
        }
        # Fencing: a row recovered while still reserved never had an API call (from anyone).
        called = {c.client_request_id for c in server.calls}
        for row in rows:
            if row["id"] in recovered:
                assert f"imagebot-{row['job_id']}-{row['seq']}" not in called, row
        prices = core.prices.model("gpt-image-2")
        for (_plan, request, job, view), outcome in zip(prepared, outcomes, strict=True):
            each = core.runner.estimate(request, job.partials)
            job_rows = [r for r in rows if r["job_id"] == job.id]
            made = [r for r in job_rows if r["status"] in ("rendered", "delivered", "undelivered")]
            assert [r for r in made if r["status"] == "rendered"] == []  # none left waiting
            delivered = [len(r.images) for r in view.delivered]
            if made and all(r["status"] == "delivered" for r in made):
                # Every finished image is delivered, once, with the job's outcome.
                assert delivered == [len(made)], (delivered, job_rows)
            elif made:
                # Kept, not posted: the user is told once, with what it cost.
                assert delivered == [] and len(view.told) == 1 and "$" in view.told[0], (view.told, job_rows)
                assert all(r["status"] == "undelivered" for r in made)
            else:
                assert delivered == [], (delivered, job_rows)
            assert len(view.delivered) + len(view.failures) + len(view.told) == 1
            if not recovered:
                told = outcome.total_micros if isinstance(outcome, JobResult) else outcome.charged_micros
                assert told == sum(r["actual_micros"] for r in job_rows)
            for row in job_rows:
                mine = [c for c in server.calls if c.client_request_id == f"imagebot-{job.id}-{row['seq']}"]
                # An attempt may have been billed unless the server answered it with an error status.
                billed = sum(1 for c in mine if c.status in (0, 200))
                if row["status"] in ("delivered", "undelivered"):
                    usage = Usage(
                        text_tokens=row["text_tokens"],
                        image_tokens=row["image_tokens"],
                        output_tokens=row["output_tokens"],
                    )
                    assert row["actual_micros"] == cost_micros(prices, usage) + (billed - 1) * each, (
                        row,
                        mine,
                    )
                    assert row["actual_micros"] <= row["reserved_micros"]
                elif row["status"] in ("cancelled", "interrupted"):
                    # The attempt in flight is charged even if it had not reached the server yet; a row
                    # recovered by another process is charged its reservation if its call had started.
                    assert billed * each <= row["actual_micros"] <= row["reserved_micros"], (row, mine)
                else:
                    assert row["actual_micros"] == billed * each <= row["reserved_micros"], (row, mine)
    finally:
        await core.close()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=EXAMPLES <= 25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    plan_list=st.lists(plans, min_size=1, max_size=5),
    faults=st.lists(st.sampled_from(FAULTS), max_size=14),
    defaults=limits,
    in_flight=st.integers(1, 4),
    stall_at=st.one_of(st.none(), st.none(), st.floats(0.0, 0.3)),
)
def test_money_and_retry_invariants_hold_under_random_faults_cancels_and_limits(
    fresh_store: Callable[[], str],
    plan_list: list[Plan],
    faults: list[str],
    defaults: QuotaDefaults,
    in_flight: int,
    stall_at: float | None,
) -> None:
    """On SQLite and on PostgreSQL (tests/core/conftest.py): a fresh store for every example."""
    random.seed(0)  # the backoff's jitter
    asyncio.run(run_example(fresh_store(), plan_list, faults, defaults, in_flight, stall_at))
