"""The ledger and its quota counters, on real SQLite files (docs/rules.md §5).

The central invariant: every quota counter equals a direct SQL sum over the ledger rows it
is fed by (an open row counts its reserved amount, a closed row its actual amount; an image
counts while its row is open or succeeded). Counters and limits are keyed per tenant
(`platform:workspace`, users and channels `platform:workspace:id`; see bot/policy/quota.py).
"""

from __future__ import annotations

import io
import random
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlite_utils
from PIL import Image

from bot.config import QuotaDefaults, Settings
from bot.errors import QuotaExceeded, UserError
from bot.model.pricing import format_usd
from bot.model.request import ImageRequest, Requester
from bot.model.sizes import parse_size
from bot.policy import quota
from bot.policy.pace import Pace
from bot.store import pg
from bot.store import schema as store
from bot.store.ledger import Ledger, Settlement, Status
from tests import dbs
from tests.support.clock import Clock
from tests.support.ledger import (
    IMAGES_SQL,
    OPEN_SQL,
    SPEND_SQL,
    assert_counters_match,
    every_limit,
    sql_counters,
    stored_counters,
)

BERLIN = ZoneInfo("Europe/Berlin")
# 23:30 in Berlin (CEST, UTC+2) on 15 April 2026: the quota day ends in 30 minutes.
LATE_EVENING = datetime(2026, 4, 15, 21, 30, tzinfo=UTC)
ALICE = Requester("slack", "W1", "C1", "U1")
BOB = Requester("slack", "W1", "C1", "U2")
CAROL = Requester("slack", "W1", "C2", "U3")  # same workspace, other channel
DAVE = Requester("discord", "W2", "C3", "U4")  # another workspace
W1 = quota.Tenant("slack", "W1")
W2 = quota.Tenant("discord", "W2")


def request(count: int = 1, prompt: str = "a red fox") -> ImageRequest:
    return ImageRequest(prompt=prompt, size=parse_size("1024x1024"), quality="low", count=count)


@pytest.fixture
def store_named(db_target: str, request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], str]:
    """The store a name stands for: tmp_path/<name> on SQLite; on PostgreSQL one fresh database per name."""
    made: dict[str, str] = {}

    def named(name: str) -> str:
        if not pg.is_url(db_target):
            return str(tmp_path / name)
        if name not in made:
            made[name] = request.getfixturevalue("pg_server").create_database()
        return made[name]

    return named


@pytest.fixture
def open_ledger(store_named: Callable[[str], str]) -> Iterator[Callable[..., Ledger]]:
    """Open ledgers on the store named ledger.sqlite3 (or another name); all are closed afterwards."""
    opened: list[Ledger] = []

    def make(name: str = "ledger.sqlite3", **kwargs: Any) -> Ledger:
        ledger = Ledger(store_named(name), **kwargs)
        opened.append(ledger)
        return ledger

    yield make
    for ledger in opened:
        ledger.close()


# --- the invariant ----------------------------------------------------------------------------


def ledger_rows(path: Path | str, where: str = "1=1", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    return dbs.read(path, f"SELECT * FROM ledger WHERE {where} ORDER BY id", params)


# --- reserve, settle, release -----------------------------------------------------------------


async def test_reserve_settle_release_move_the_counters(
    tmp_path: Path, open_ledger: Callable[..., Ledger]
) -> None:
    clock = Clock(LATE_EVENING)
    ledger = open_ledger(clock=clock, timezone=BERLIN)
    path = ledger.path

    reservation = await ledger.reserve(ALICE, request(count=3), 50_000)
    assert reservation.total_micros == 150_000 and len(reservation.row_ids) == 3
    rows = ledger_rows(path)
    assert [r["status"] for r in rows] == ["reserved"] * 3
    assert {r["day"] for r in rows} == {"2026-04-15"} and {r["month"] for r in rows} == {"2026-04"}
    assert stored_counters(path)[("user_day", "slack:W1:U1", "2026-04-15")] == (150_000, 3)
    assert stored_counters(path)[("channel_month", "slack:W1:C1", "2026-04")] == (150_000, 3)
    assert stored_counters(path)[("workspace_month", "slack:W1", "2026-04")] == (150_000, 3)
    assert_counters_match(path)

    first, second, third = reservation.row_ids
    await ledger.start(first)
    assert ledger_rows(path, "id=?", (first,))[0]["status"] == "running"
    # Settle to the real cost: the counter drops by the unused part of the estimate.
    assert await ledger.close_row(
        first, Settlement(status=Status.RENDERED, actual_micros=41_000, request_ids=("req_1",), attempts=1)
    )
    assert stored_counters(path)[("user_day", "slack:W1:U1", "2026-04-15")] == (141_000, 3)
    # Release on failure: the whole estimate and the image come back.
    assert await ledger.close_row(second, Settlement(status=Status.FAILED, actual_micros=0, attempts=3))
    assert stored_counters(path)[("user_day", "slack:W1:U1", "2026-04-15")] == (91_000, 2)
    # A timed-out attempt is kept at its estimate, never free; it made no image.
    assert await ledger.start(third)
    assert await ledger.close_row(third, Settlement(status=Status.POSSIBLY_BILLED, actual_micros=50_000))
    assert stored_counters(path)[("user_day", "slack:W1:U1", "2026-04-15")] == (91_000, 1)
    assert_counters_match(path)

    # Closing twice changes nothing.
    assert not await ledger.close_row(first, Settlement(status=Status.FAILED, actual_micros=0))
    assert stored_counters(path)[("user_day", "slack:W1:U1", "2026-04-15")] == (91_000, 1)
    row = ledger_rows(path, "id=?", (first,))[0]
    assert (row["status"], row["actual_micros"], row["request_ids"], row["attempts"]) == (
        "rendered",
        41_000,
        '["req_1"]',
        1,
    )
    assert row["finished_at"] is not None

    assert_counters_match(path)


async def test_a_row_moves_only_along_the_state_machine(open_ledger: Callable[..., Ledger]) -> None:
    """bot/store/jobstate.py: an image is made only by a running row, a closed row never opens again, and a row
    rendered is delivered (or undelivered) without moving money again."""
    ledger = open_ledger(clock=Clock(LATE_EVENING))
    path = ledger.path
    first, second = (await ledger.reserve(ALICE, request(count=2), 50_000)).row_ids
    with pytest.raises(ValueError, match="no arrow into rendered from \\['reserved'\\]"):
        await ledger.close_row(
            first, Settlement(status=Status.RENDERED, actual_micros=41_000)
        )  # never called the API
    assert await ledger.start(first) and not await ledger.start(first)  # reserved -> running, once
    assert await ledger.close_row(first, Settlement(status=Status.RENDERED, actual_micros=41_000))
    assert await ledger.close_row(second, Settlement(status=Status.CANCELLED, actual_micros=0))
    assert not await ledger.start(second)  # a cancelled row makes no API call
    counters = stored_counters(path)
    await ledger.delivered([first])
    assert [r["status"] for r in ledger_rows(path)] == ["delivered", "cancelled"]
    assert stored_counters(path) == counters  # delivery moves no money
    assert not await ledger.close_row(first, Settlement(status=Status.FAILED, actual_micros=0))
    assert_counters_match(path)


async def test_counters_equal_sql_sums_after_random_operations(
    tmp_path: Path, open_ledger: Callable[..., Ledger]
) -> None:
    """A seeded random walk over reserve / start / settle / release / limit changes / time,
    checking after every step that the counters equal the SQL sums and that each reservation
    was granted exactly when the SQL sums (not the counters) say it fits."""
    for seed in (1, 2, 3):
        await _random_walk(open_ledger, seed)


async def _random_walk(open_ledger: Callable[..., Ledger], seed: int) -> None:
    rng = random.Random(seed)
    name = f"walk-{seed}.sqlite3"
    clock = Clock(datetime(2026, 3, 27, 20, 0, tzinfo=UTC))  # crosses DST (29 March) and a month end
    defaults = every_limit(day=(150_000, 6), month=(900_000, 30), channel=1_500_000, workspace=2_500_000)
    # The walk moves the clock by days; a lease that outlives it keeps its rows ours (fencing is tested apart).
    ledger = open_ledger(name, clock=clock, timezone=BERLIN, defaults=defaults, lease=timedelta(days=3650))
    path = ledger.path
    people = [ALICE, BOB, CAROL, DAVE]
    overrides: dict[tuple[quota.Tenant, str, str], dict[str, int | None]] = {}
    granted = refused = closed = 0

    def effective(who: Requester, scope: str, key: str, column: str, default: int | None) -> int | None:
        value = overrides.get((quota.Tenant.of(who), scope, key), {}).get(column)
        if value is None:
            return default
        return None if value == quota.UNLIMITED else value

    def fits(who: Requester, micros: int, images: int) -> bool:
        local = clock.now.astimezone(BERLIN)
        day, month = local.strftime("%Y-%m-%d"), local.strftime("%Y-%m")

        def used(where: str, *params: str) -> tuple[int, int]:
            [row] = dbs.tuples(
                path,
                f"SELECT coalesce(sum({SPEND_SQL}), 0) AS micros, coalesce(sum({IMAGES_SQL}), 0) AS images "
                f"FROM ledger WHERE platform=? AND workspace=? AND {where}",
                (who.platform, who.workspace, *params),
            )
            return int(row[0]), int(row[1])

        user_day = used('"user"=? AND day=?', who.user, day)
        user_month = used('"user"=? AND month=?', who.user, month)
        channel = used("channel=? AND month=?", who.channel, month)
        workspace = used("workspace=? AND month=?", who.workspace, month)
        checks = [
            (
                user_day[0],
                micros,
                effective(who, "user", who.user, "daily_micros", defaults.user_daily_micros),
            ),
            (
                user_day[1],
                images,
                effective(who, "user", who.user, "daily_images", defaults.user_daily_images),
            ),
            (
                user_month[0],
                micros,
                effective(who, "user", who.user, "monthly_micros", defaults.user_monthly_micros),
            ),
            (
                user_month[1],
                images,
                effective(who, "user", who.user, "monthly_images", defaults.user_monthly_images),
            ),
            (
                channel[0],
                micros,
                effective(who, "channel", who.channel, "monthly_micros", defaults.channel_monthly_micros),
            ),
            (
                workspace[0],
                micros,
                effective(
                    who, "workspace", who.workspace, "monthly_micros", defaults.workspace_monthly_micros
                ),
            ),
        ]
        return all(limit is None or used_ + need <= limit for used_, need, limit in checks)

    for _ in range(200):
        op = rng.choices(["reserve", "start", "close", "reclose", "time", "limits"], [40, 10, 30, 4, 10, 6])[
            0
        ]
        open_rows = [r["id"] for r in ledger_rows(path, OPEN_SQL)]
        if op == "reserve":
            who = rng.choice(people)
            count = rng.randint(1, 4)
            each = rng.randint(1_000, 60_000)
            expected = fits(who, each * count, count)
            before = len(ledger_rows(path))
            try:
                reservation = await ledger.reserve(who, request(count), each)
            except QuotaExceeded as exc:
                assert not expected, f"refused although the SQL sums say it fits: {exc}"
                assert len(ledger_rows(path)) == before
                assert "resets" in str(exc) and "left" in str(exc)
                refused += 1
            else:
                assert expected, "granted although the SQL sums say it does not fit"
                assert len(reservation.row_ids) == count
                granted += 1
        elif op == "start" and open_rows:
            await ledger.start(rng.choice(open_rows))
        elif op == "close" and open_rows:
            row = ledger_rows(path, "id=?", (rng.choice(open_rows),))[0]
            reserved = row["reserved_micros"]
            status, actual = rng.choice(
                [
                    ("rendered", rng.randint(0, reserved)),
                    ("failed", 0),
                    ("cancelled", reserved),
                    ("cancelled", 0),
                    ("possibly_billed", reserved),
                ]
            )
            if status in ("rendered", "possibly_billed"):  # only a running row called the API
                await ledger.start(row["id"])
            assert await ledger.close_row(row["id"], Settlement(status=Status(status), actual_micros=actual))
            closed += 1
        elif op == "reclose":
            done = ledger_rows(path, f"NOT ({OPEN_SQL})")
            if done:
                before_counters = stored_counters(path)
                assert not await ledger.close_row(
                    rng.choice(done)["id"], Settlement(status=Status.FAILED, actual_micros=0)
                )
                assert stored_counters(path) == before_counters
        elif op == "time":
            clock.advance(hours=rng.uniform(0, 30))
        elif op == "limits":
            tenant, scope, key = rng.choice(
                [
                    (W1, "user", "U1"),
                    (W1, "user", "U2"),
                    (W1, "channel", "C1"),
                    (W1, "workspace", "W1"),
                    (W2, "user", "U1"),
                    (W2, "workspace", "W2"),
                ]
            )
            column = rng.choice(["daily_micros", "monthly_micros"] if scope == "user" else ["monthly_micros"])
            value = rng.choice([None, quota.UNLIMITED, rng.randint(0, 400_000)])
            await ledger.set_limits(scope, key, {column: value}, tenant=tenant)
            overrides.setdefault((tenant, scope, key), {})[column] = value
        assert_counters_match(path)
    # The walk must have exercised both outcomes and several periods.
    assert granted > 10 and refused > 5 and closed > 10, (granted, refused, closed)
    days = {r["day"] for r in ledger_rows(path)}
    months = {r["month"] for r in ledger_rows(path)}
    assert len(days) > 3 and len(months) == 2


# --- refusals ---------------------------------------------------------------------------------

DAY_RESETS = "resets 2026-04-16 00:00 CEST (in 30 min)"
MONTH_RESETS = "resets 2026-05-01 00:00 CEST (in 15 d 0 h)"


@pytest.mark.parametrize(
    ("default", "first", "second", "label", "left", "resets"),
    [
        (
            {"user_daily_micros": 100_000},
            (ALICE, 1, 60_000),
            (ALICE, 1, 60_000),
            "your daily spend",
            "$0.0400 is left",
            DAY_RESETS,
        ),
        (
            {"user_daily_images": 3},
            (ALICE, 2, 1_000),
            (ALICE, 2, 1_000),
            "your daily images",
            "1 image is left",
            DAY_RESETS,
        ),
        (
            {"user_monthly_micros": 200_000},
            (ALICE, 3, 50_000),
            (ALICE, 2, 50_000),
            "your monthly spend",
            "$0.0500 is left",
            MONTH_RESETS,
        ),
        (
            {"user_monthly_images": 4},
            (ALICE, 4, 1_000),
            (ALICE, 1, 1_000),
            "your monthly images",
            "0 images is left",
            MONTH_RESETS,
        ),
        (
            {"channel_monthly_micros": 100_000},
            (ALICE, 1, 70_000),
            (BOB, 1, 40_000),
            "this channel's monthly spend",
            "$0.0300 is left",
            MONTH_RESETS,
        ),
        (
            {"workspace_monthly_micros": 100_000},
            (ALICE, 1, 70_000),
            (CAROL, 1, 40_000),
            "this workspace's monthly spend",
            "$0.0300 is left",
            MONTH_RESETS,
        ),
    ],
)
async def test_each_limit_refuses_naming_itself_what_is_left_and_when_it_resets(
    tmp_path: Path,
    open_ledger: Callable[..., Ledger],
    default: dict[str, int],
    first: tuple[Requester, int, int],
    second: tuple[Requester, int, int],
    label: str,
    left: str,
    resets: str,
) -> None:
    settings = Settings.load(environ={"IMAGEBOT_TIMEZONE": "Europe/Berlin"}, env_file=None)
    ledger = open_ledger(
        clock=Clock(LATE_EVENING), timezone=settings.timezone, defaults=QuotaDefaults(**default)
    )
    path = ledger.path
    who, count, each = first
    await ledger.reserve(who, request(count), each)
    rows_before, counters_before = ledger_rows(path), stored_counters(path)

    who, count, each = second
    with pytest.raises(QuotaExceeded) as refusal:
        await ledger.reserve(who, request(count), each)
    message = str(refusal.value)
    assert f"{label} limit is" in message, message
    assert left in message, message
    assert resets in message, message
    assert isinstance(refusal.value, UserError)
    # A refusal reserves nothing.
    assert ledger_rows(path) == rows_before
    assert stored_counters(path) == counters_before
    # DAVE is in another workspace and channel: only his own user limits apply to him.
    if label.startswith("this"):
        await ledger.reserve(DAVE, request(1), each)


async def test_the_day_boundary_follows_the_configured_time_zone(open_ledger: Callable[..., Ledger]) -> None:
    defaults = QuotaDefaults(user_daily_images=1)
    berlin_clock, utc_clock = Clock(LATE_EVENING), Clock(LATE_EVENING)
    berlin = open_ledger("berlin.sqlite3", clock=berlin_clock, timezone=BERLIN, defaults=defaults)
    utc = open_ledger("utc.sqlite3", clock=utc_clock, defaults=defaults)  # the default zone is UTC
    await berlin.reserve(ALICE, request(), 1_000)
    await utc.reserve(ALICE, request(), 1_000)

    berlin_clock.advance(minutes=29)  # 23:59 in Berlin
    with pytest.raises(QuotaExceeded, match=r"resets 2026-04-16 00:00 CEST \(in 1 min\)"):
        await berlin.reserve(ALICE, request(), 1_000)
    berlin_clock.advance(minutes=1)  # midnight in Berlin, 22:00 UTC: a new quota day there
    await berlin.reserve(ALICE, request(), 1_000)

    utc_clock.advance(minutes=30)  # 22:00 UTC: still 15 April in UTC
    with pytest.raises(QuotaExceeded, match=r"resets 2026-04-16 00:00 UTC \(in 2 h 0 min\)"):
        await utc.reserve(ALICE, request(), 1_000)
    utc_clock.advance(hours=2)
    await utc.reserve(ALICE, request(), 1_000)

    lines = await berlin.quota_lines(ALICE)
    assert [(line.label, line.used, line.limit, line.left) for line in lines] == [
        ("your daily images", "1 image", "1 image", "0 images")
    ]
    assert lines[0].resets == datetime(2026, 4, 17, tzinfo=BERLIN)


# --- overrides --------------------------------------------------------------------------------


async def test_overrides_in_the_database_beat_the_defaults(
    tmp_path: Path, open_ledger: Callable[..., Ledger]
) -> None:
    defaults = QuotaDefaults(user_daily_micros=500_000, user_monthly_images=2)
    ledger = open_ledger(clock=Clock(LATE_EVENING), defaults=defaults)
    values = quota.parse_limits(["daily_usd=1", "monthly_images=unlimited"])
    assert values == {"daily_micros": 1_000_000, "monthly_images": quota.UNLIMITED}
    await ledger.set_limits("user", "U1", values, tenant=W1)

    # U1: four images at $0.20 = $0.80, over the $0.50 default and the 2-image default, under the override.
    await ledger.reserve(ALICE, request(4), 200_000)
    lines = {line.label: line for line in await ledger.quota_lines(ALICE)}
    assert set(lines) == {"your daily spend"}  # monthly images lifted
    assert (lines["your daily spend"].limit, lines["your daily spend"].left) == ("$1.0000", "$0.2000")
    with pytest.raises(QuotaExceeded, match=r"your daily spend limit is \$1\.0000 and \$0\.2000 is left"):
        await ledger.reserve(ALICE, request(2), 200_000)

    # U2 still has the defaults.
    with pytest.raises(QuotaExceeded, match="your monthly images limit is 2 images"):
        await ledger.reserve(BOB, request(3), 1_000)
    with pytest.raises(QuotaExceeded, match=r"your daily spend limit is \$0\.5000"):
        await ledger.reserve(BOB, request(1), 600_000)

    # `default` goes back to the configured default.
    await ledger.set_limits(
        "user", "U1", quota.parse_limits(["daily_usd=default", "monthly_images=default"]), tenant=W1
    )
    with pytest.raises(QuotaExceeded, match=r"your daily spend limit is \$0\.5000 and \$0\.0000 is left"):
        await ledger.reserve(ALICE, request(1), 1_000)

    # A channel override applies to everyone in the channel, and nowhere else.
    await ledger.set_limits("channel", "C2", quota.parse_limits(["monthly_usd=0.01"]), tenant=W1)
    with pytest.raises(QuotaExceeded, match=r"this channel's monthly spend limit is \$0\.0100"):
        await ledger.reserve(CAROL, request(1), 20_000)
    await ledger.reserve(DAVE, request(1), 20_000)
    # A workspace override, set to unlimited, lifts nothing that is not limited; set to 0, refuses all.
    await ledger.set_limits("workspace", "W2", quota.parse_limits(["monthly_usd=0"]), tenant=W2)
    with pytest.raises(QuotaExceeded, match="this workspace's monthly spend limit is"):
        await ledger.reserve(DAVE, request(1), 1)
    assert_counters_match(ledger.path)

    # Overrides live in the file: a second process (here: a second Ledger) sees them.
    other = open_ledger(clock=Clock(LATE_EVENING), defaults=defaults)
    assert {line.label for line in await other.quota_lines(ALICE)} == {
        "your daily spend",
        "your monthly images",
    }
    with pytest.raises(ValueError):
        await ledger.set_limits("planet", "earth", {"daily_micros": 1}, tenant=W1)
    with pytest.raises(ValueError):  # a workspace limit is its tenant's own
        await ledger.set_limits("workspace", "W2", {"monthly_micros": 1}, tenant=W1)
    with pytest.raises(TypeError):  # no tenant, no limit: a bare id would apply nowhere (or everywhere)
        await ledger.set_limits("user", "U1", {"daily_micros": 1})  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "bad",
    [
        ["daily_usd"],
        ["weekly_usd=5"],
        ["daily_usd=-1"],
        ["daily_images=1.5"],
        ["monthly_usd=lots"],
        [],
        ["daily_usd=1e20"],
        ["monthly_images=1000001"],
        ["daily_usd=nan"],
        ["daily_usd=sNaN"],
        ["monthly_usd=-inf"],
    ],
)
def test_parse_limits_rejects_nonsense_naming_the_rule(bad: list[str]) -> None:
    with pytest.raises(UserError):
        quota.parse_limits(bad)


# --- seen events ------------------------------------------------------------------------------


async def test_seen_dedupes_event_ids_and_survives_reopening(store_named: Callable[[str], str]) -> None:
    clock = Clock(LATE_EVENING)
    ledger = Ledger(store_named("ledger.sqlite3"), clock=clock)
    try:
        assert await ledger.seen("slack:Ev1") is False
        assert await ledger.seen("slack:Ev1") is True
        assert await ledger.seen("slack:Ev2") is False
    finally:
        ledger.close()

    reopened = Ledger(store_named("ledger.sqlite3"), clock=clock)
    try:
        assert await reopened.seen("slack:Ev1") is True
        assert await reopened.seen("slack:Ev2") is True
        assert await reopened.seen("discord:Ev1") is False
        # Remembered for a day, then pruned.
        clock.advance(days=2)
        assert await reopened.seen("slack:Ev3") is False
        assert await reopened.seen("slack:Ev1") is False
    finally:
        reopened.close()


# --- the file: WAL, busy timeout, schema versions, migration ------------------------------------


def test_connect_sets_wal_and_busy_timeout_and_records_the_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "bot.sqlite3"
    db = store.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA busy_timeout").fetchone()[0] == store.BUSY_TIMEOUT_MS >= 5_000
        assert store.schema_version(db) == store.SCHEMA_VERSION
        assert [r[0] for r in db.execute("SELECT version FROM schema_version ORDER BY version")] == list(
            range(1, store.SCHEMA_VERSION + 1)
        )
    finally:
        db.conn.close()
    again = store.connect(path)  # idempotent: no second migration
    try:
        assert [r[0] for r in again.execute("SELECT version FROM schema_version ORDER BY version")] == list(
            range(1, store.SCHEMA_VERSION + 1)
        )
    finally:
        again.conn.close()


async def test_migrating_a_v1_file_keeps_its_rows_and_reaches_the_current_schema(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    old = sqlite_utils.Database(conn)
    store.migrate(old, target=1)
    assert store.schema_version(old) == 1
    assert "seen_events" not in old.table_names() and "context" not in old["ledger"].columns_dict
    old.execute(
        'INSERT INTO ledger (job_id, seq, platform, workspace, channel, "user", model, size, quality, format, '
        "status, reserved_micros, actual_micros, attempts, day, month, created_at) VALUES "
        "('job1', 0, 'slack', 'W1', 'C1', 'U1', 'gpt-image-2', '1024x1024', 'low', 'png', 'succeeded', "
        "6000, 5000, 1, '2026-04-15', '2026-04', '2026-04-15T10:00:00.000+00:00')"
    )
    old.execute("INSERT INTO counters VALUES ('user_day', 'U1', '2026-04-15', 5000, 1)")
    old.execute("INSERT INTO limits (scope, key, daily_images) VALUES ('user', 'U1', 7)")
    conn.close()

    db = store.connect(path)
    try:
        assert store.schema_version(db) == store.SCHEMA_VERSION
        assert "context" in db.utils["ledger"].columns_dict and "seen_events" in db.utils.table_names()
        # Counters are rebuilt from the ledger under tenant-scoped keys (schema 5).
        assert set(db.execute("SELECT * FROM counters").fetchall()) == {
            ("user_day", "slack:W1:U1", "2026-04-15", 5000, 1),
            ("user_month", "slack:W1:U1", "2026-04", 5000, 1),
            ("channel_month", "slack:W1:C1", "2026-04", 5000, 1),
            ("workspace_month", "slack:W1", "2026-04", 5000, 1),
        }
        rows = db.execute("SELECT job_id, status, reserved_micros, actual_micros FROM ledger").fetchall()
        assert rows == [("job1", "delivered", 6000, 5000)]
        assert db.execute("SELECT scope, key, daily_images FROM limits").fetchall() == [
            ("user", "slack:W1:U1", 7)
        ]
    finally:
        db.conn.close()

    # And the migrated file works as a ledger: old counters and limits count.
    ledger = Ledger(path, clock=Clock(datetime(2026, 4, 15, 12, tzinfo=UTC)))
    try:
        lines = {line.label: line for line in await ledger.quota_lines(ALICE)}
        assert (lines["your daily images"].used, lines["your daily images"].limit) == ("1 image", "7 images")
        assert await ledger.seen("e1") is False
        reservation = await ledger.reserve(ALICE, request(), 6_000)
        await ledger.set_context(reservation.job_id, {"thread": "T1"})
        assert ledger_rows(path, "job_id=?", (reservation.job_id,))[0]["context"] == '{"thread": "T1"}'
    finally:
        ledger.close()


def test_a_failed_transaction_keeps_its_error_and_never_keeps_the_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "tx.sqlite3"
    db = store.connect(path)
    other = sqlite3.connect(path, timeout=0.2, isolation_level=None)
    try:
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        db.execute("CREATE TABLE child (parent INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)")
        db.execute("CREATE TABLE guarded (x INTEGER)")
        db.execute(
            "CREATE TRIGGER no_guarded BEFORE INSERT ON guarded BEGIN SELECT RAISE(ROLLBACK, 'nope'); END"
        )

        # The statement's error already rolled the transaction back: that error is what the caller sees.
        with pytest.raises(sqlite3.IntegrityError, match="nope"), store.immediate(db):
            db.execute("INSERT INTO guarded VALUES (1)")
        assert not db.conn.in_transaction

        # COMMIT itself fails (a deferred constraint): the transaction is rolled back, not left open.
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"), store.immediate(db):
            db.execute("INSERT INTO child VALUES (42)")
        assert not db.conn.in_transaction
        assert db.execute("SELECT count(*) FROM child").fetchone() == (0,)
        other.execute("BEGIN IMMEDIATE")  # another process can write at once
        other.execute("ROLLBACK")
    finally:
        other.close()
        db.conn.close()


async def test_channel_and_workspace_overrides_only_take_a_monthly_spend_limit(
    open_ledger: Callable[..., Ledger],
) -> None:
    ledger = open_ledger(clock=Clock(LATE_EVENING))
    for scope, key in (("channel", "C1"), ("workspace", "W1")):
        for limits in (["daily_usd=5"], ["monthly_images=10"], ["monthly_usd=5", "daily_images=3"]):
            with pytest.raises(UserError, match="only a monthly spend limit; use monthly_usd"):
                await ledger.set_limits(scope, key, quota.parse_limits(limits), tenant=W1)
        await ledger.set_limits(scope, key, quota.parse_limits(["monthly_usd=5"]), tenant=W1)
    assert {line.label for line in await ledger.quota_lines(ALICE)} == {
        "this channel's monthly spend",
        "this workspace's monthly spend",
    }


# --- reports ----------------------------------------------------------------------------------

REPORT_NOW = datetime(2026, 4, 30, 12, 0, tzinfo=UTC)  # the last 30 days: 1-30 April, whole UTC days


async def _report_ledger(target: str) -> Ledger:
    clock = Clock(REPORT_NOW)
    ledger = Ledger(target, clock=clock)
    plan = [  # when, who, size, quality, status, actual, latency
        (
            datetime(2026, 3, 31, 6, 0, tzinfo=UTC),
            ALICE,
            "1024x1024",
            "low",
            "delivered",
            90_000,
            1000,
        ),  # too old
        (
            datetime(2026, 3, 31, 23, 59, tzinfo=UTC),
            ALICE,
            "1024x1024",
            "low",
            "delivered",
            40_000,
            2000,
        ),  # too
        (
            datetime(2026, 4, 1, 0, 0, tzinfo=UTC),
            ALICE,
            "1024x1024",
            "low",
            "failed",
            0,
            2000,
        ),  # the first day
        (datetime(2026, 4, 10, 9, 0, tzinfo=UTC), BOB, "1536x1024", "high", "delivered", 50_000, 8000),
        (datetime(2026, 4, 10, 9, 5, tzinfo=UTC), BOB, "1536x1024", "high", "possibly_billed", 60_000, None),
        (datetime(2026, 4, 10, 9, 9, tzinfo=UTC), CAROL, "1024x1024", "medium", "failed", 0, 500),
        (datetime(2026, 4, 30, 9, 0, tzinfo=UTC), CAROL, "1024x1024", "medium", "delivered", 45_000, 4000),
        (datetime(2026, 4, 30, 11, 0, tzinfo=UTC), DAVE, "1024x1024", "low", "interrupted", 0, None),
        (datetime(2026, 4, 30, 11, 30, tzinfo=UTC), ALICE, "1024x1024", "low", "reserved", 0, None),  # open
    ]
    for when, who, size, quality, status, actual, latency in plan:
        clock.now = when
        req = ImageRequest(prompt="p", size=parse_size(size), quality=quality)
        reservation = await ledger.reserve(who, req, 100_000)
        row = reservation.row_ids[0]
        if status in ("delivered", "possibly_billed"):  # the API was called
            await ledger.start(row)
        if status != "reserved":
            made = "rendered" if status == "delivered" else status
            await ledger.close_row(
                row, Settlement(status=Status(made), actual_micros=actual, latency_ms=latency)
            )
        if status == "delivered":
            await ledger.delivered([row])
    clock.now = REPORT_NOW
    return ledger


def _direct(path: Path | str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    return dbs.tuples(path, sql, params)


@pytest.mark.parametrize(
    ("tenant", "channel"), [(None, None), (None, "C1"), (W1, None), (W1, "C1"), (W2, None)]
)
async def test_every_report_figure_is_a_direct_sql_sum_over_the_ledger(
    store_named: Callable[[str], str],
    tenant: quota.Tenant | None,
    channel: str | None,
) -> None:
    from bot import report

    ledger = await _report_ledger(store_named("report.sqlite3"))
    try:
        built = await report.build(ledger, tenant=tenant, channel=channel, days=30, now=REPORT_NOW)
    finally:
        ledger.close()
    path = ledger.path
    where, params = "created_at >= ?", ["2026-04-01T00:00:00.000+00:00"]
    if tenant:
        where, params = (
            where + " AND platform = ? AND workspace = ?",
            [*params, tenant.platform, tenant.workspace],
        )
    if channel:
        where, params = where + " AND channel = ?", [*params, channel]
    [(images, spend, failures)] = _direct(
        path,
        (
            "SELECT count(*) FILTER (WHERE status='delivered'), coalesce(sum(actual_micros), 0), "
            "count(*) FILTER (WHERE status IN ('failed','possibly_billed','interrupted','cancelled')) "
            f"FROM ledger WHERE {where}"
        ),
        *params,
    )
    assert (built.images, built.spend_micros, built.failures) == (images, int(spend), failures)
    expected = 0 if tenant == W2 else 50_000 + 60_000 + (0 if channel else 45_000)
    assert built.spend_micros == expected
    # Across tenants a user is named with its tenant (U1 of one workspace is not U1 of another).
    label = '"user"' if tenant else "platform || ':' || workspace || ':' || \"user\""
    users = _direct(
        path,
        f"SELECT {label}, count(*) FILTER (WHERE status='delivered'), coalesce(sum(actual_micros), 0) "
        f"FROM ledger WHERE {where} GROUP BY 1",
        *params,
    )
    assert sorted(built.top_users) == sorted((u, n, int(m)) for u, n, m in users)
    by = _direct(
        path,
        f"SELECT size, quality, count(*) FILTER (WHERE status='delivered'), coalesce(sum(actual_micros), 0) "
        f"FROM ledger WHERE {where} GROUP BY size, quality",
        *params,
    )
    assert sorted(built.by_size_quality) == sorted((s, q, n, int(m)) for s, q, n, m in by)
    latencies = sorted(
        r[0]
        for r in _direct(path, f"SELECT latency_ms FROM ledger WHERE {where} AND status='delivered'", *params)
    )
    middle = len(latencies) // 2
    if latencies:
        median = latencies[middle] if len(latencies) % 2 else (latencies[middle - 1] + latencies[middle]) / 2
        assert built.median_render_s == median / 1000
    else:
        assert built.median_render_s is None
    daily = _direct(
        path,
        f"SELECT substr(created_at, 1, 10), coalesce(sum(actual_micros), 0) FROM ledger WHERE {where} GROUP BY 1",
        *params,
    )
    assert {d: m for d, m, _ in built.daily} == {d: int(m) for d, m in daily}
    assert sum(m for _, m, _ in built.daily) == built.spend_micros
    assert format_usd(built.spend_micros) in built.text()


async def test_the_chart_has_a_bar_for_every_day_the_total_counts(store_named: Callable[[str], str]) -> None:
    from bot import report

    ledger = await _report_ledger(store_named("report.sqlite3"))
    try:
        built = await report.build(ledger, days=30, now=REPORT_NOW)
    finally:
        ledger.close()
    days_with_spend = [d for d, m, _ in built.daily if m]
    assert days_with_spend == ["2026-04-10", "2026-04-30"]  # 31 March is before the period's first day
    assert report.chart_days(built) == [f"2026-04-{d:02d}" for d in range(1, 31)]  # 30 days, 30 bars
    chart = Image.open(io.BytesIO(report.chart_png(built)))
    assert chart.format == "PNG"
    row = [chart.getpixel((x, chart.height - 42)) for x in range(chart.width)]
    bars = sum(1 for x in range(1, len(row)) if row[x] == BAR_BLUE and row[x - 1] != BAR_BLUE)
    assert bars == len(days_with_spend)


BAR_BLUE = (0x4A, 0x7B, 0xD0)


# --- PostgreSQL's one-statement reservation words its refusals as SQLite does -------------------------


async def _refusals(target: str) -> list[str]:
    """Every kind of refusal a reservation or an extension gives, in order, on one store."""
    clock = Clock(LATE_EVENING)
    defaults = every_limit(day=(100_000, 6), month=(1_000_000, 40), channel=400_000, workspace=600_000)
    ledger = Ledger(target, clock=clock, timezone=BERLIN, defaults=defaults)
    seen: list[str] = []

    async def refused(call: Any) -> None:
        with pytest.raises(UserError) as refusal:
            await call
        seen.append(f"{type(refusal.value).__name__}: {refusal.value}")

    try:
        pace = Pace(cooldown=0, max_jobs=1)
        first = await ledger.reserve(ALICE, request(2), 20_000, pace=pace)
        await refused(ledger.reserve(ALICE, request(1), 1_000, pace=pace))  # max_jobs
        await ledger.reserve(BOB, request(1), 1_000, pace=Pace(cooldown=30, max_jobs=5))
        clock.advance(seconds=12.5)
        await refused(ledger.reserve(BOB, request(1), 1_000, pace=Pace(cooldown=30, max_jobs=5)))  # cooldown
        await refused(ledger.reserve(ALICE, request(2), 40_000))  # daily spend: 40,000 left
        await refused(ledger.reserve(ALICE, request(5), 1))  # daily images: 4 left (2 of Alice, ...)
        await ledger.set_limits("user", "U1", {"daily_micros": quota.UNLIMITED}, tenant=W1)
        await refused(ledger.reserve(ALICE, request(5), 1))  # daily images still
        await ledger.set_limits("user", "U1", {"daily_images": 100}, tenant=W1)
        await refused(ledger.reserve(ALICE, request(1), 990_000))  # monthly spend, daily lifted
        await ledger.set_limits("user", "U3", {"daily_micros": quota.UNLIMITED}, tenant=W1)
        await ledger.set_limits("channel", "C2", {"monthly_micros": quota.UNLIMITED}, tenant=W1)
        await refused(ledger.reserve(CAROL, request(1), 560_000))  # the workspace: 41,000 + 560,000
        await ledger.set_limits("channel", "C1", {"monthly_micros": 50_000}, tenant=W1)
        await refused(ledger.reserve(BOB, request(1), 10_000))  # the channel's own override
        await refused(ledger.extend(first.row_ids[0], 20_000))  # another attempt, past the channel
        await ledger.set_limits("channel", "C1", {"monthly_micros": quota.UNLIMITED}, tenant=W1)
        await ledger.extend(first.row_ids[0], 20_000)  # fits now
        await ledger.close_row(first.row_ids[1], Settlement(status=Status.CANCELLED, actual_micros=0))
        await refused(ledger.extend(first.row_ids[1], 1_000))  # the row is closed
        assert stored_counters(target) == sql_counters(target)
    finally:
        ledger.close()
    return seen


async def test_postgres_reservations_refuse_in_the_same_words_as_sqlite(tmp_path: Path, pg_url: str) -> None:
    """PostgreSQL checks and bumps in one statement (bot/store/pg.py `imagebot_reserve`); SQLite in Python. Every
    refusal (max_jobs, cooldown, each limit, overrides, a lifted limit, an extension, a closed row) reads the
    same, and the counters equal the ledger's sums on both."""
    on_sqlite = await _refusals(str(tmp_path / "ledger.sqlite3"))
    on_postgres = await _refusals(pg_url)
    assert len(on_sqlite) == 10, on_sqlite
    assert on_postgres == on_sqlite
    assert on_sqlite[0].startswith("PaceExceeded: You have 1 job running or queued"), on_sqlite[0]
    assert on_sqlite[1].startswith("PaceExceeded: You can start your next job in 18 s"), on_sqlite[1]
    assert [text.split(" limit is")[0].split("but ")[-1] for text in on_sqlite[2:9]] == [
        "your daily spend",
        "your daily images",
        "your daily images",
        "your monthly spend",
        "this workspace's monthly spend",
        "this channel's monthly spend",
        "this channel's monthly spend",
    ]
    assert on_sqlite[-1] == "UserError: this image is no longer running"


async def test_a_settlement_answers_as_before_when_it_skips_the_read(
    open_ledger: Callable[..., Ledger],
) -> None:
    """On PostgreSQL a settlement within the reservation is one UPDATE (no read first); every answer is the
    same as the read-then-move path's: settled, already closed, overage flagged, closed by another process
    (recovery), no arrow from `reserved` to `rendered`; the counters equal the ledger's sums."""
    ledger, other = open_ledger(), open_ledger()
    path = ledger.path
    sent = getattr(ledger.db.conn, "round_trips", 0)
    job = await ledger.reserve(ALICE, request(3), 10_000, pace=Pace(cooldown=5, max_jobs=3))
    assert await ledger.start(job.row_ids[0])
    if ledger.postgres:  # pace, six limits, three rows and their counters: one statement; the start another
        assert ledger.db.conn.round_trips - sent == 2  # type: ignore[attr-defined]
    for row_id in job.row_ids[1:]:
        assert await ledger.start(row_id)
    first, second, third = job.row_ids
    sent = getattr(ledger.db.conn, "round_trips", 0)
    assert await ledger.close_row(first, Settlement(status=Status.RENDERED, actual_micros=9_000))
    if ledger.postgres:
        assert ledger.db.conn.round_trips - sent == 1  # type: ignore[attr-defined]
    assert not await ledger.close_row(
        first, Settlement(status=Status.RENDERED, actual_micros=9_000)
    )  # already closed
    assert await ledger.close_row(
        second, Settlement(status=Status.RENDERED, actual_micros=12_000)
    )  # above its reservation
    assert await other.close_row(
        third, Settlement(status=Status.INTERRUPTED, actual_micros=10_000), fenced=False
    )
    assert not await ledger.close_row(
        third, Settlement(status=Status.RENDERED, actual_micros=9_000)
    )  # recovered meanwhile
    waiting = await ledger.reserve(BOB, request(1), 10_000)
    with pytest.raises(ValueError, match="no arrow into rendered"):
        await ledger.close_row(
            waiting.row_ids[0], Settlement(status=Status.RENDERED, actual_micros=9_000)
        )  # never started
    rows = {r["id"]: r for r in ledger_rows(path)}
    assert [(rows[i]["status"], rows[i]["actual_micros"], rows[i]["overage"]) for i in job.row_ids] == [
        ("rendered", 9_000, 0),
        ("rendered", 12_000, 1),
        ("interrupted", 10_000, 0),
    ]
    assert rows[waiting.row_ids[0]]["status"] == "reserved"
    assert_counters_match(path)
