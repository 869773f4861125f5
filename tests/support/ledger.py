"""The ledger's central invariant, read straight from a store (a SQLite file or a PostgreSQL URL): every quota
counter equals a direct SQL sum over the ledger rows it is fed by (an open row counts its reserved amount, a
closed row its actual amount; an image counts while its row is open or succeeded)."""

from __future__ import annotations

from pathlib import Path

from bot.config import QuotaDefaults
from tests import dbs

OPEN_SQL = "status IN ('reserved', 'running')"


SPEND_SQL = f"CASE WHEN {OPEN_SQL} THEN reserved_micros ELSE actual_micros END"


IMAGES_SQL = (
    "CASE WHEN status IN ('reserved', 'running', 'rendered', 'delivered', 'undelivered') THEN 1 ELSE 0 END"
)


TENANT_SQL = "platform || ':' || workspace"


def sql_counters(path: Path | str) -> dict[tuple[str, str, str], tuple[int, int]]:
    """What every counter must hold, summed straight from the ledger rows (test ids have no ':' to escape)."""
    parts = [
        f"SELECT '{scope}' AS scope, {key} AS key, {period} AS period, {SPEND_SQL} AS micros, "
        f"{IMAGES_SQL} AS images FROM ledger"
        for scope, key, period in (
            ("user_day", f"{TENANT_SQL} || ':' || \"user\"", "day"),
            ("user_month", f"{TENANT_SQL} || ':' || \"user\"", "month"),
            ("channel_month", f"{TENANT_SQL} || ':' || channel", "month"),
            ("workspace_month", TENANT_SQL, "month"),
        )
    ]
    sql = (
        f"SELECT scope, key, period, sum(micros), sum(images) FROM ({' UNION ALL '.join(parts)}) AS every_row "
        "GROUP BY scope, key, period"
    )
    rows = dbs.tuples(path, sql)
    return {(s, k, p): (int(m), int(n)) for s, k, p, m, n in rows if (m, n) != (0, 0)}


def stored_counters(path: Path | str) -> dict[tuple[str, str, str], tuple[int, int]]:
    rows = dbs.tuples(path, "SELECT scope, key, period, micros, images FROM counters")
    return {(s, k, p): (int(m), int(n)) for s, k, p, m, n in rows if (m, n) != (0, 0)}


def assert_counters_match(path: Path | str) -> None:
    assert stored_counters(path) == sql_counters(path)


def every_limit(
    *, day: tuple[int, int], month: tuple[int, int], channel: int, workspace: int
) -> QuotaDefaults:
    """Default limits with every one set: a user's `day` and `month` as (micro-dollars, images), a channel's
    and a workspace's month in micro-dollars."""
    return QuotaDefaults(
        user_daily_micros=day[0],
        user_daily_images=day[1],
        user_monthly_micros=month[0],
        user_monthly_images=month[1],
        channel_monthly_micros=channel,
        workspace_monthly_micros=workspace,
    )
