"""Limit overrides and the spend counters they are checked against, by key (bot/store/admission.py makes the keys
and the arithmetic).

`limits` holds one row per overridden (scope, key): a user, a channel or a tenant, each column a limit or NULL
(the default applies). `counters` holds the reserved-plus-settled spend and images per (scope, key, period);
every write that moves money moves them in the same transaction, so an admission reads a handful of primary
keys however long the ledger grows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bot.store.admission import LIMIT_COLUMNS, LimitRow
from bot.store.repo import Db

CounterKey = tuple[str, str, str]  # scope, key, period


def limit_rows(db: Db, *, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], LimitRow]:
    """The `limits` rows of these (scope, key) pairs that exist, in one query."""
    if not keys:
        return {}
    rows = db.conn.execute(
        "SELECT scope, key, daily_micros, daily_images, monthly_micros, monthly_images FROM limits WHERE "
        + " OR ".join(["(scope=? AND key=?)"] * len(keys)),
        [part for key in keys for part in key],
    ).fetchall()
    return {(r[0], r[1]): LimitRow(*r[2:]) for r in rows}


def set_limits(db: Db, *, scope: str, key: str, values: Mapping[str, int | None], stamp: str) -> None:
    """Write some columns of one `limits` row (creating it): a value, or None to go back to the default."""
    unknown = set(values) - set(LIMIT_COLUMNS)
    if unknown:
        raise ValueError(f"not a limit column: {', '.join(sorted(unknown))}")
    columns = ["scope", "key", *values, "updated_at"]
    db.execute(
        f"INSERT INTO limits ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
        "ON CONFLICT (scope, key) DO UPDATE SET "
        + ", ".join(f"{column}=excluded.{column}" for column in [*values, "updated_at"]),
        [scope, key, *values.values(), stamp],
    )


def used(db: Db, *, keys: Sequence[CounterKey]) -> dict[CounterKey, tuple[int, int]]:
    """(micros, images) of the counters of these keys that exist, in one primary-key query."""
    if not keys:
        return {}
    found = db.conn.execute(
        "SELECT scope, key, period, micros, images FROM counters WHERE "
        + " OR ".join(["(scope=? AND key=? AND period=?)"] * len(keys)),
        [part for key in keys for part in key],
    ).fetchall()
    return {(s, k, p): (int(m), int(n)) for s, k, p, m, n in found}


def bump(db: Db, *, keys: Sequence[CounterKey], micros: int, images: int) -> None:
    """Add `micros` and `images` to each counter (negative amounts release), creating missing ones, in one
    statement. The keys are written in sorted order, the one order of every writer (no deadlock)."""
    params: list[object] = []
    for scope, key, period in sorted(keys):
        params += (scope, key, period, micros, images)
    db.execute(
        "INSERT INTO counters (scope, key, period, micros, images) VALUES "
        + ", ".join(["(?, ?, ?, ?, ?)"] * len(keys))
        + " ON CONFLICT (scope, key, period) DO UPDATE SET micros = counters.micros + excluded.micros, "
        "images = counters.images + excluded.images",
        params,
    )


def _unpart(text: str) -> str:
    return text.replace("%3A", ":").replace("%25", "%")


def known(db: Db, *, tenant: str, month: str) -> tuple[set[str], set[str]]:
    """The users and the channels (their ids) of `tenant` (its key) that spent in `month` (`YYYY-MM`) or have a
    limit of their own (the dashboard's "who is near a limit")."""
    prefix = tenant + ":"
    found: dict[str, set[str]] = {"user": set(), "channel": set()}
    for scope, kind in (("user_month", "user"), ("channel_month", "channel")):
        for (key,) in db.conn.execute(
            "SELECT key FROM counters WHERE scope=? AND period=? AND substr(key, 1, ?)=?",
            [scope, month, len(prefix), prefix],
        ).fetchall():
            found[kind].add(_unpart(str(key)[len(prefix) :]))
    for scope, key in db.conn.execute(
        "SELECT scope, key FROM limits WHERE scope IN ('user', 'channel') AND substr(key, 1, ?)=?",
        [len(prefix), prefix],
    ).fetchall():
        found[str(scope)].add(_unpart(str(key)[len(prefix) :]))
    return found["user"], found["channel"]
