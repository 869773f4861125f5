"""Tenancy (docs/rules.md §2 admins, §5 quotas): every limit, override, counter and report belongs to one tenant,
a Slack workspace or a Discord guild (plus the platform); operators (IMAGEBOT_ADMINS) act on every tenant,
tenant admins only on their own tenant's users and channels.

Everything goes through the real entry points (`bot.commands`, the Ledger) on real SQLite files.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.mentions import PlatformMentions
from bot import commands, config
from bot.app import Core
from bot.config import QuotaDefaults, Settings
from bot.errors import QuotaExceeded, UserError
from bot.model.request import ImageRequest, Requester
from bot.model.sizes import parse_size
from bot.policy import quota
from bot.store import schema as store
from bot.store.ledger import Ledger, Settlement, Status
from tests.support.core import MakeCore, admin_chat
from tests.support.ledger import every_limit

NOW = datetime(2026, 4, 15, 12, 0, tzinfo=UTC)
# The same member (Discord user 42) in two guilds: A, where they are a plain member, and B, which they own.
IN_A = Requester("discord", "111", "1001", "42")
IN_B = Requester("discord", "222", "2001", "42")


def request(count: int = 1) -> ImageRequest:
    return ImageRequest(prompt="a red fox", size=parse_size("1024x1024"), quality="low", count=count)


# `make_core` (a Core against the offline server on a real SQLite file) is tests/core/conftest.py's.


async def spend(core: Core, who: Requester, micros: int, count: int = 1) -> None:
    """One settled job of `count` images costing `micros` each."""
    reservation = await core.ledger.reserve(who, request(count), micros)
    for row in reservation.row_ids:
        await core.ledger.start(row)
        await core.ledger.close_row(row, Settlement(status=Status.RENDERED, actual_micros=micros))


# --- limits: a tenant admin's overrides stay in their tenant -----------------------------------------


async def test_a_tenant_admin_of_guild_b_cannot_lift_the_limits_that_bind_them_in_guild_a(
    make_core: MakeCore,
) -> None:
    core = await make_core(IMAGEBOT_USER_DAILY_IMAGES="1", IMAGEBOT_USER_DAILY_USD="1")
    # In B (their own server) they lift their own limits; that is B's business ...
    reply = await admin_chat(
        core, IN_B, "quota <@42> daily_images=unlimited daily_usd=500", platform_admin=True
    )
    assert "Limits for user 42 set" in reply.text and "discord:222" in reply.text
    await core.ledger.reserve(IN_B, request(3), 1_000)
    # ... but in A the defaults still hold: one image a day.
    await core.ledger.reserve(IN_A, request(1), 1_000)
    with pytest.raises(QuotaExceeded, match="your daily images limit is 1 image"):
        await core.ledger.reserve(IN_A, request(1), 1_000)
    with pytest.raises(QuotaExceeded, match=r"your daily spend limit is \$1\.0000"):
        await core.ledger.reserve(Requester("discord", "111", "1002", "42"), request(1), 2_000_000)
    # And a channel override in B does nothing to a channel of the same id in A.
    await admin_chat(core, IN_B, "quota <#1001> monthly_usd=0", platform_admin=True)
    assert {line.label for line in await core.ledger.quota_lines(IN_A)} == {
        "your daily spend",
        "your daily images",
    }


async def test_a_tenant_admin_cannot_set_their_tenants_own_limit_and_an_operator_can(
    make_core: MakeCore,
) -> None:
    core = await make_core(IMAGEBOT_ADMINS="discord:7", IMAGEBOT_WORKSPACE_MONTHLY_USD="10")
    for target in ("workspace", "guild", "server"):
        refused = await admin_chat(core, IN_B, f"quota {target} monthly_usd=unlimited", platform_admin=True)
        assert "only operators" in refused.text.lower() and "IMAGEBOT_ADMINS" in refused.text
    with sqlite3.connect(core.settings.db_path) as conn:
        assert conn.execute("SELECT count(*) FROM limits").fetchone() == (0,)
    with pytest.raises(QuotaExceeded, match=r"this workspace's monthly spend limit is \$10\.0000"):
        await core.ledger.reserve(IN_B, request(1), 11_000_000)

    operator_in_b = Requester("discord", "222", "2001", "7")
    done = await admin_chat(core, operator_in_b, "quota workspace monthly_usd=20", platform_admin=False)
    assert "Limits for workspace 222 set" in done.text
    await core.ledger.reserve(IN_B, request(1), 11_000_000)  # B's limit is now $20 ...
    with pytest.raises(QuotaExceeded, match=r"this workspace's monthly spend limit is \$10\.0000"):
        await core.ledger.reserve(IN_A, request(1), 11_000_000)  # ... A's still the $10 default


async def test_members_are_not_admins(make_core: MakeCore) -> None:
    core = await make_core(IMAGEBOT_ADMINS="99")
    reply = await admin_chat(core, IN_A, "quota <@42> daily_images=5", platform_admin=False)
    assert "Only admins" in reply.text
    with sqlite3.connect(core.settings.db_path) as conn:
        assert conn.execute("SELECT count(*) FROM limits").fetchone() == (0,)


# --- reports ---------------------------------------------------------------------------------------


async def test_report_all_covers_the_tenant_for_a_tenant_admin_and_everything_for_an_operator(
    make_core: MakeCore,
) -> None:
    core = await make_core(IMAGEBOT_ADMINS="slack:UOP")
    slack_t1 = Requester("slack", "T1", "C1", "U1")
    slack_t2 = Requester("slack", "T2", "C1", "U1")  # same channel and user ids, another workspace
    await spend(core, slack_t1, 500_000)
    await spend(core, slack_t2, 200_000, count=2)
    await spend(core, IN_A, 30_000)

    tenant_admin = await admin_chat(
        core, Requester("slack", "T2", "C9", "UADM"), "report --all", platform_admin=True
    )
    assert re.search(r"2 images, \$0\.4000 spent", tenant_admin.text), tenant_admin.text
    assert "$0.5000" not in tenant_admin.text and "$0.0300" not in tenant_admin.text
    assert "slack:T2" in tenant_admin.text

    operator = await admin_chat(
        core, Requester("slack", "T2", "C9", "UOP"), "report --all --days 7", platform_admin=False
    )
    assert re.search(r"4 images, \$0\.9300 spent", operator.text), operator.text
    assert "all tenants" in operator.text
    # The operator's top users name their tenant: U1 of T1 and U1 of T2 are two people.
    assert "slack:T1:U1" in operator.text and "slack:T2:U1" in operator.text

    # /imagine-usage is the channel's report, in its own tenant only.
    usage = await commands.usage(core, slack_t2, "")
    assert re.search(r"2 images, \$0\.4000 spent", usage.text), usage.text
    assert usage.private is False and usage.chart


# --- counters ----------------------------------------------------------------------------------------


async def test_the_same_user_id_in_two_tenants_has_separate_counters(make_core: MakeCore) -> None:
    core = await make_core(
        IMAGEBOT_USER_DAILY_IMAGES="1", IMAGEBOT_CHANNEL_MONTHLY_USD="1", IMAGEBOT_WORKSPACE_MONTHLY_USD="1"
    )
    await core.ledger.reserve(Requester("slack", "T1", "C1", "U1"), request(1), 900_000)
    # Another workspace: same user id, same channel id, fresh counters.
    await core.ledger.reserve(Requester("slack", "T2", "C1", "U1"), request(1), 900_000)
    # And a Discord guild whose id happens to equal the Slack team's.
    await core.ledger.reserve(Requester("discord", "T1", "C1", "U1"), request(1), 900_000)
    with pytest.raises(QuotaExceeded, match="your daily images"):
        await core.ledger.reserve(Requester("slack", "T1", "C1", "U1"), request(1), 1)
    with sqlite3.connect(core.settings.db_path) as conn:
        keys = {(s, k) for s, k in conn.execute("SELECT scope, key FROM counters")}
    assert keys == {
        (s, f"{t}:{i}") if i else (s, t)
        for t in ("slack:T1", "slack:T2", "discord:T1")
        for s, i in (
            ("user_day", "U1"),
            ("user_month", "U1"),
            ("channel_month", "C1"),
            ("workspace_month", ""),
        )
    }


# --- operators ---------------------------------------------------------------------------------------


async def test_a_platform_qualified_operator_is_an_operator_on_that_platform_only(
    make_core: MakeCore,
) -> None:
    core = await make_core(IMAGEBOT_ADMINS="slack:U1, 555")
    on_slack = Requester("slack", "T1", "C1", "U1")
    on_discord = Requester("discord", "999", "1", "U1")
    reply = await admin_chat(core, on_slack, "quota workspace monthly_usd=3", platform_admin=False)
    assert "Limits for workspace T1 set" in reply.text
    refused = await admin_chat(core, on_discord, "quota workspace monthly_usd=3", platform_admin=False)
    assert "Only admins" in refused.text
    # With Manage Server they are that guild's tenant admin, still not an operator.
    tenant_only = await admin_chat(core, on_discord, "quota workspace monthly_usd=3", platform_admin=True)
    assert "only operators" in tenant_only.text.lower()
    assert core.is_operator(on_slack) and not core.is_operator(on_discord)
    # A bare id is an operator on every platform.
    for who in (Requester("slack", "T1", "C1", "555"), Requester("discord", "999", "1", "555")):
        assert core.is_operator(who)


# --- /imagine-admin quota targets ----------------------------------------------------------------------

SLACK = Requester("slack", "T1", "C1", "U1")
DISCORD = Requester("discord", "111", "1001", "42")


@pytest.mark.parametrize(
    ("who", "text", "target"),
    [
        (SLACK, "<@U123>", ("user", "U123")),
        (SLACK, "<@U123|bob>", ("user", "U123")),
        (SLACK, "<@W123ABC>", ("user", "W123ABC")),
        (SLACK, "<#C123>", ("channel", "C123")),
        (SLACK, "<#C123|general>", ("channel", "C123")),
        (SLACK, "U123ABC", ("user", "U123ABC")),
        (SLACK, "W123ABC", ("user", "W123ABC")),
        (SLACK, "C123ABC", ("channel", "C123ABC")),
        (SLACK, "G123ABC", ("channel", "G123ABC")),
        (SLACK, "workspace", ("workspace", "T1")),
        (DISCORD, "<@123>", ("user", "123")),
        (DISCORD, "<@!123>", ("user", "123")),
        (DISCORD, "<#456>", ("channel", "456")),
        (DISCORD, "123456789012345678", ("user", "123456789012345678")),
        (DISCORD, "server", ("workspace", "111")),
    ],
)
def test_parse_target_reads_mentions_and_bare_ids(who: Requester, text: str, target: tuple[str, str]) -> None:
    read = PlatformMentions(who.platform).target(text)
    assert (read.kind, read.id or who.workspace) == target


@pytest.mark.parametrize(
    ("who", "text", "message"),
    [
        (SLACK, "@bob", r"plain text.*pick the person from Slack's autocomplete so a mention is sent"),
        (SLACK, "#general", r"plain text.*pick the channel from Slack's autocomplete"),
        (DISCORD, "@bob", r"plain text.*pick the person from Discord's autocomplete so a mention is sent"),
        (DISCORD, "<@&123>", r"role.*limits are per user, channel or workspace"),
        (SLACK, "<!subteam^S123|@designers>", r"group.*limits are per user, channel or workspace"),
        (SLACK, "<!here>", r"limits are per user, channel or workspace"),
        (SLACK, "bob", r"'bob' is not a target"),
        (SLACK, "123456", r"'123456' is not a Slack id"),
        (DISCORD, "U123ABC", r"'U123ABC' is not a Discord id"),
    ],
)
def test_parse_target_refuses_what_is_not_one_user_or_channel(
    who: Requester, text: str, message: str
) -> None:
    with pytest.raises(UserError, match=message):
        PlatformMentions(who.platform).target(text)


# --- limit values: bounded, one USD parser -----------------------------------------------------------


@pytest.mark.parametrize(
    "limits",
    [
        "daily_usd=1e20",
        "monthly_usd=1000001",
        "daily_usd=99999999999999999999999",
        "monthly_images=1000001",
        "daily_images=1e20",
    ],
)
async def test_a_huge_limit_is_refused_naming_the_range(make_core: MakeCore, limits: str) -> None:
    core = await make_core()
    with pytest.raises(UserError, match="0 to 1,000,000"):
        await admin_chat(core, SLACK, f"quota <@U2> {limits}", platform_admin=True)


def test_the_biggest_limits_are_accepted() -> None:
    assert quota.parse_limits(["daily_usd=1000000", "monthly_images=1000000"]) == {
        "daily_micros": 1_000_000_000_000,
        "monthly_images": 1_000_000,
    }


def test_one_usd_parser_rounds_limits_down_to_whole_micro_dollars() -> None:
    assert quota.usd_micros is config.usd_micros
    assert config.usd_micros("$1.5") == 1_500_000
    assert config.usd_micros("0.0000019") == 1  # rounds down: a limit never allows more than it says
    for bad in ("nan", "inf", "-1", "lots", "sNaN", "1e20"):
        with pytest.raises(ValueError, match="USD 0 to 1,000,000"):
            config.usd_micros(bad)
    assert quota.parse_limits(["daily_usd=0.0000019"]) == {"daily_micros": 1}
    assert (
        Settings.load(
            environ={"IMAGEBOT_USER_DAILY_USD": "0.0000019"}, env_file=None
        ).quotas.user_daily_micros
        == 1
    )


# --- the CLI mirrors the library: --tenant --------------------------------------------------------


def test_tenant_keys_are_the_documented_ones() -> None:
    tenant = quota.Tenant.of(SLACK)
    assert tenant == quota.Tenant.parse("slack:T1") and tenant.key == "slack:T1"
    assert quota.limit_key("user", tenant, "U1") == "slack:T1:U1"
    assert quota.limit_key("channel", tenant, "C1") == "slack:T1:C1"
    assert quota.limit_key("workspace", tenant, "T1") == "slack:T1"
    assert quota.counter_keys(SLACK, "2026-04-15", "2026-04") == [
        ("user_day", "slack:T1:U1", "2026-04-15"),
        ("user_month", "slack:T1:U1", "2026-04"),
        ("channel_month", "slack:T1:C1", "2026-04"),
        ("workspace_month", "slack:T1", "2026-04"),
    ]
    # An id with a colon in it (console/CLI ids are free text) cannot pose as another tenant's key.
    odd = Requester("cli", "a:b", "c", "d")
    other = Requester("cli", "a", "b:c", "d")
    assert quota.counter_keys(odd, "d", "m")[2] != quota.counter_keys(other, "d", "m")[2]
    for bad in ("slack", "slack:", ":T1", "teams:T1"):
        with pytest.raises(UserError, match="PLATFORM:WORKSPACE"):
            quota.Tenant.parse(bad)


# --- migration of a schema-4 file ------------------------------------------------------------------------

OLD_ROWS = [  # platform, workspace, channel, user, status, reserved, actual, day
    ("slack", "T1", "C1", "U1", "succeeded", 6_000, 5_000, "2026-04-15"),
    ("slack", "T1", "C1", "U1", "possibly_billed", 6_000, 6_000, "2026-04-14"),
    ("slack", "T2", "C1", "U1", "running", 7_000, 0, "2026-04-15"),
    ("slack", "T2", "C2", "U2", "reserved", 2_000, 0, "2026-04-15"),
    ("discord", "G1", "99", "42", "failed", 3_000, 0, "2026-04-15"),
    ("discord", "G1", "99", "42", "succeeded", 4_000, 4_000, "2026-03-31"),
]


def _old_file(path: Path, rows: list[tuple[Any, ...]], limits: list[tuple[str, str, str, int]]) -> None:
    """A file as today's code (schema 4, bare keys) leaves it: ledger rows, their counters, overrides."""
    conn = sqlite3.connect(path, isolation_level=None)
    db = sqlite_utils.Database(conn)
    store.migrate(db, target=4)
    for n, (platform, workspace, channel, user, status, reserved, actual, day) in enumerate(rows):
        db.execute(
            'INSERT INTO ledger (job_id, seq, platform, workspace, channel, "user", model, size, quality, format, '
            "status, reserved_micros, actual_micros, attempts, owner, day, month, created_at, updated_at) VALUES "
            "(?, 0, ?, ?, ?, ?, 'gpt-image-2', '1024x1024', 'low', 'jpeg', ?, ?, ?, 1, 'gone', ?, ?, ?, ?)",
            [
                f"job{n}",
                platform,
                workspace,
                channel,
                user,
                status,
                reserved,
                actual,
                day,
                day[:7],
                f"{day}T10:00:00.000+00:00",
                f"{day}T10:00:00.000+00:00",
            ],
        )
        is_open = status in ("reserved", "running")
        micros, images = (
            (reserved, 1)
            if is_open
            else (actual, int(status in ("succeeded", "rendered", "delivered", "undelivered")))
        )
        for scope, key, period in (
            ("user_day", user, day),
            ("user_month", user, day[:7]),
            ("channel_month", channel, day[:7]),
            ("workspace_month", workspace, day[:7]),
        ):
            db.execute(
                "INSERT INTO counters VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
                "micros = micros + excluded.micros, images = images + excluded.images",
                [scope, key, period, micros, images],
            )
    for scope, key, column, value in limits:
        db.execute(
            f"INSERT INTO limits (scope, key, {column}, updated_at) VALUES (?, ?, ?, '2026-04-01') "
            f"ON CONFLICT DO UPDATE SET {column} = excluded.{column}",
            [scope, key, value],
        )
    assert store.schema_version(db) == 4
    conn.close()


def _expected_counters(rows: list[tuple[Any, ...]]) -> dict[tuple[str, str, str], tuple[int, int]]:
    out: dict[tuple[str, str, str], tuple[int, int]] = {}
    for platform, workspace, channel, user, status, reserved, actual, day in rows:
        is_open = status in ("reserved", "running")
        micros, images = (
            (reserved, 1)
            if is_open
            else (actual, int(status in ("succeeded", "rendered", "delivered", "undelivered")))
        )
        tenant = f"{platform}:{workspace}"
        for key in (
            ("user_day", f"{tenant}:{user}", day),
            ("user_month", f"{tenant}:{user}", day[:7]),
            ("channel_month", f"{tenant}:{channel}", day[:7]),
            ("workspace_month", tenant, day[:7]),
        ):
            old = out.get(key, (0, 0))
            out[key] = (old[0] + micros, old[1] + images)
    return {k: v for k, v in out.items() if v != (0, 0)}


def _counters(path: Path) -> dict[tuple[str, str, str], tuple[int, int]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT scope, key, period, micros, images FROM counters").fetchall()
    return {(s, k, p): (m, n) for s, k, p, m, n in rows if (m, n) != (0, 0)}


def _limits(path: Path) -> set[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return set(
            conn.execute(
                "SELECT scope, key, daily_micros, daily_images, monthly_micros, monthly_images FROM limits"
            )
        )


async def test_a_schema_4_file_migrates_limits_per_tenant_and_rebuilds_the_counters(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "old.sqlite3"
    _old_file(
        path,
        OLD_ROWS,
        [
            ("user", "U1", "daily_images", 7),  # U1 is in T1 and T2: a row in each
            ("user", "U1", "daily_micros", 9_000),
            ("channel", "C2", "monthly_micros", 8_000),  # only in T2
            ("workspace", "G1", "monthly_micros", 50_000),
            ("user", "U404", "daily_images", 1),  # never in the ledger, three tenants: dropped
            ("channel", "C404", "monthly_micros", 1),  # likewise
            (
                "workspace",
                "T9",
                "monthly_micros",
                1,
            ),  # a workspace the ledger never saw, two platforms: dropped
        ],
    )
    with caplog.at_level(logging.WARNING, logger="imagebot.store"):
        ledger = Ledger(
            path,
            clock=lambda: datetime(2026, 4, 15, 12, tzinfo=UTC),
            defaults=QuotaDefaults(user_daily_images=3),
        )
    try:
        assert _limits(path) == {
            ("user", "slack:T1:U1", 9_000, 7, None, None),
            ("user", "slack:T2:U1", 9_000, 7, None, None),
            ("channel", "slack:T2:C2", None, None, 8_000, None),
            ("workspace", "discord:G1", None, None, 50_000, None),
        }
        dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
        assert len(dropped) == 3 and any("U404" in m for m in dropped) and any("T9" in m for m in dropped)
        assert _counters(path) == _expected_counters(OLD_ROWS)

        # The migrated file works: T1's U1 has used 1 image of 7 today and $0.005 of $0.009.
        t1 = Requester("slack", "T1", "C1", "U1")
        lines = {line.label: line for line in await ledger.quota_lines(t1)}
        assert (lines["your daily images"].used, lines["your daily images"].limit) == ("1 image", "7 images")
        with pytest.raises(QuotaExceeded, match=r"your daily spend limit is \$0\.0090 and \$0\.0040 is left"):
            await ledger.reserve(t1, request(1), 4_001)
        reservation = await ledger.reserve(t1, request(1), 4_000)
        # G1's migrated workspace limit binds there, and only there.
        with pytest.raises(QuotaExceeded, match="this workspace's monthly spend"):
            await ledger.reserve(Requester("discord", "G1", "99", "42"), request(1), 50_001)
        await ledger.start(reservation.row_ids[0])
        await ledger.close_row(
            reservation.row_ids[0], Settlement(status=Status.RENDERED, actual_micros=3_000)
        )
        expected = _expected_counters(
            [*OLD_ROWS, ("slack", "T1", "C1", "U1", "succeeded", 4_000, 3_000, "2026-04-15")]
        )
        assert _counters(path) == expected
    finally:
        ledger.close()


async def test_a_single_tenant_file_keeps_overrides_the_ledger_never_saw(tmp_path: Path) -> None:
    path = tmp_path / "one.sqlite3"
    rows = [r for r in OLD_ROWS if r[1] == "T1"]
    _old_file(
        path,
        rows,
        [
            ("user", "U404", "daily_images", 2),
            ("channel", "C404", "monthly_micros", 5),
            ("workspace", "T9", "monthly_micros", 6),
        ],
    )
    store.connect(path).conn.close()
    # One tenant: the unseen user and channel are that tenant's; the unseen workspace keeps its id on the
    # only platform the ledger has.
    assert _limits(path) == {
        ("user", "slack:T1:U404", None, 2, None, None),
        ("channel", "slack:T1:C404", None, None, 5, None),
        ("workspace", "slack:T9", None, None, 6, None),
    }


# --- property: random jobs across random tenants -------------------------------------------------------

TENANTS = [("slack", "T1"), ("slack", "T2"), ("discord", "T1")]
IDS = ["U1", "U2"]  # the same ids in every tenant, on purpose
CHANNELS = ["C1", "C2"]
DEFAULTS = every_limit(day=(100_000, 4), month=(300_000, 10), channel=250_000, workspace=400_000)
_reserve = st.tuples(
    st.just("reserve"),
    st.sampled_from(TENANTS),
    st.sampled_from(IDS),
    st.sampled_from(CHANNELS),
    st.integers(1, 3),
    st.integers(1_000, 60_000),
)
_close = st.tuples(
    st.just("close"),
    st.integers(0, 50),
    st.sampled_from(["rendered", "failed", "cancelled", "possibly_billed"]),
    st.floats(0, 1),
)
_limit = st.tuples(
    st.just("limit"),
    st.sampled_from(TENANTS),
    st.sampled_from([("user", "U1"), ("user", "U2"), ("channel", "C1"), ("workspace", None)]),
    st.sampled_from(["daily_micros", "monthly_micros", "daily_images"]),
    st.one_of(st.none(), st.just(quota.UNLIMITED), st.integers(0, 400_000)),
)
_time = st.tuples(st.just("time"), st.integers(1, 30))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(_reserve, _reserve, _close, _limit, _time), min_size=5, max_size=40))
def test_random_jobs_across_tenants_never_pass_a_tenant_scoped_limit(ops: list[tuple[Any, ...]]) -> None:
    clock = {"now": NOW}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "prop.sqlite3"
        ledger = Ledger(path, defaults=DEFAULTS, clock=lambda: clock["now"], lease=timedelta(days=3650))
        overrides: dict[tuple[str, str], dict[str, int | None]] = {}  # (scope, tenant-scoped key) -> columns
        try:
            for op in ops:
                if op[0] == "reserve":
                    _, (platform, workspace), user, channel, count, each = op
                    who = Requester(platform, workspace, channel, user)
                    fits = _fits(path, who, overrides, clock["now"], each * count, count)
                    try:
                        ledger.reserve_sync(who, request(count), each)
                    except QuotaExceeded:
                        assert not fits, "refused although the tenant's own sums say it fits"
                    else:
                        assert fits, "granted past a limit of this tenant"
                elif op[0] == "close":
                    _, pick, status, share = op
                    open_rows = [r for r in _rows(path) if r["status"] in ("reserved", "running")]
                    if open_rows:
                        row = open_rows[pick % len(open_rows)]
                        actual = {
                            "rendered": int(row["reserved_micros"] * share),
                            "failed": 0,
                            "cancelled": 0,
                            "possibly_billed": row["reserved_micros"],
                        }[status]
                        if status in ("rendered", "possibly_billed"):  # only a running row called the API
                            ledger.start_sync(row["id"])
                        assert ledger.close_row_sync(
                            row["id"], Settlement(status=Status(status), actual_micros=actual)
                        )
                elif op[0] == "limit":
                    _, (platform, workspace), (scope, ident), column, value = op
                    tenant = quota.Tenant(platform, workspace)
                    if scope != "user":
                        column = "monthly_micros"
                    ledger.set_limits_sync(scope, ident or workspace, {column: value}, tenant=tenant)
                    overrides.setdefault((scope, quota.limit_key(scope, tenant, ident or workspace)), {})[
                        column
                    ] = value
                else:
                    clock["now"] += timedelta(hours=op[1])
                assert _counters(path) == _expected_counters(
                    [
                        (
                            r["platform"],
                            r["workspace"],
                            r["channel"],
                            r["user"],
                            r["status"],
                            r["reserved_micros"],
                            r["actual_micros"],
                            r["day"],
                        )
                        for r in _rows(path)
                    ]
                )
        finally:
            ledger.close()


def _rows(path: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM ledger ORDER BY id")]


def _fits(
    path: Path,
    who: Requester,
    overrides: dict[tuple[str, str], dict[str, int | None]],
    now: datetime,
    micros: int,
    images: int,
) -> bool:
    """Whether a reservation fits, from the ledger rows of `who`'s own tenant and the test's own overrides."""
    day, month = now.date().isoformat(), now.date().isoformat()[:7]
    tenant = (who.platform, who.workspace)
    used = {"user_day": [0, 0], "user_month": [0, 0], "channel_month": [0, 0], "workspace_month": [0, 0]}
    for r in _rows(path):
        if (r["platform"], r["workspace"]) != tenant:
            continue
        is_open = r["status"] in ("reserved", "running")
        m, n = (r["reserved_micros"], 1) if is_open else (r["actual_micros"], int(r["status"] == "rendered"))
        for scope, hit in (
            ("user_day", r["user"] == who.user and r["day"] == day),
            ("user_month", r["user"] == who.user and r["month"] == month),
            ("channel_month", r["channel"] == who.channel and r["month"] == month),
            ("workspace_month", r["month"] == month),
        ):
            if hit:
                used[scope][0] += m
                used[scope][1] += n
    prefix = f"{who.platform}:{who.workspace}"

    def limit(scope: str, key: str, column: str, default: int | None) -> int | None:
        value = overrides.get((scope, key), {}).get(column)
        return default if value is None else (None if value == quota.UNLIMITED else value)

    user, channel = f"{prefix}:{who.user}", f"{prefix}:{who.channel}"
    checks = [
        (used["user_day"][0] + micros, limit("user", user, "daily_micros", DEFAULTS.user_daily_micros)),
        (used["user_day"][1] + images, limit("user", user, "daily_images", DEFAULTS.user_daily_images)),
        (used["user_month"][0] + micros, limit("user", user, "monthly_micros", DEFAULTS.user_monthly_micros)),
        (used["user_month"][1] + images, limit("user", user, "monthly_images", DEFAULTS.user_monthly_images)),
        (
            used["channel_month"][0] + micros,
            limit("channel", channel, "monthly_micros", DEFAULTS.channel_monthly_micros),
        ),
        (
            used["workspace_month"][0] + micros,
            limit("workspace", prefix, "monthly_micros", DEFAULTS.workspace_monthly_micros),
        ),
    ]
    return all(lim is None or total <= lim for total, lim in checks)


async def test_the_console_user_runs_the_local_bot_and_may_set_its_own_limit(
    make_core: Any, tmp_path: Path
) -> None:
    """Whoever runs `imagebot console` already holds the database file: an operator of the local tenant."""
    from adapters.console import handle_line

    core = await make_core()
    who = Requester("console", "local", "console", "console")
    reply = await handle_line(core, "/imagine-admin quota workspace monthly_usd=3", who, tmp_path)
    assert reply is not None and "Limits for workspace local set" in reply, reply
