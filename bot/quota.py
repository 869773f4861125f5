"""Limits and the spend counters they are checked against (SPEC §5).

Counters hold reserved-plus-settled spend per period, kept in step with the ledger inside the same
transaction, so a check is a handful of primary-key reads however long the ledger grows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from zoneinfo import ZoneInfo

import sqlite_utils

from .config import QuotaDefaults
from .errors import QuotaExceeded, UserError
from .pricing import format_usd
from .request import Requester

UNLIMITED = -1  # an override that lifts a default limit


@dataclass(frozen=True, slots=True)
class Periods:
    """The quota periods that `now` falls in, in the configured time zone."""

    day: str
    month: str
    day_resets: datetime
    month_resets: datetime

    @classmethod
    def at(cls, now: datetime, tz: ZoneInfo) -> Periods:
        return _periods(now.astimezone(tz).date(), tz)


@lru_cache(maxsize=64)
def _periods(local: date, tz: ZoneInfo) -> Periods:
    """The periods of one local date (cached: every reservation asks, and the answer is the same all day)."""
    tomorrow = datetime.combine(local + timedelta(days=1), time(), tz)
    next_month = (local.replace(day=1) + timedelta(days=32)).replace(day=1)
    day = local.isoformat()
    return Periods(day, day[:7], tomorrow, datetime.combine(next_month, time(), tz))


@dataclass(frozen=True, slots=True)
class Limits:
    """Effective limits for one requester; None means unlimited. USD in micro-dollars."""

    user_daily_micros: int | None
    user_daily_images: int | None
    user_monthly_micros: int | None
    user_monthly_images: int | None
    channel_monthly_micros: int | None
    workspace_monthly_micros: int | None


@dataclass(frozen=True, slots=True)
class Check:
    """One limit as it stands: what it is, what is used, and where its counter lives."""

    label: str  # "your daily spend"
    scope: str  # counter scope
    key: str
    period: str
    limit: int
    used: int
    is_images: bool
    resets: datetime

    @property
    def left(self) -> int:
        return max(0, self.limit - self.used)

    def show(self, amount: int) -> str:
        return f"{amount} image{'s' if amount != 1 else ''}" if self.is_images else format_usd(amount)


LIMIT_FIELDS = {"daily_usd": "daily_micros", "daily_images": "daily_images",
                "monthly_usd": "monthly_micros", "monthly_images": "monthly_images"}


def _pick(override: int | None, default: int | None) -> int | None:
    if override is None:
        return default
    return None if override == UNLIMITED else override


def effective_limits(db: sqlite_utils.Database, defaults: QuotaDefaults, who: Requester) -> Limits:
    """Defaults from config, overridden per user, channel and workspace by rows in `limits`."""
    rows = {(r[0], r[1]): r for r in db.conn.execute(
        "SELECT scope, key, daily_micros, daily_images, monthly_micros, monthly_images FROM limits "
        "WHERE (scope='user' AND key=?) OR (scope='channel' AND key=?) OR (scope='workspace' AND key=?)",
        [who.user, who.channel, who.workspace]).fetchall()}
    none = (None,) * 6
    user = rows.get(("user", who.user), none)
    channel = rows.get(("channel", who.channel), none)
    workspace = rows.get(("workspace", who.workspace), none)
    return Limits(
        user_daily_micros=_pick(user[2], defaults.user_daily_micros),
        user_daily_images=_pick(user[3], defaults.user_daily_images),
        user_monthly_micros=_pick(user[4], defaults.user_monthly_micros),
        user_monthly_images=_pick(user[5], defaults.user_monthly_images),
        channel_monthly_micros=_pick(channel[4], defaults.channel_monthly_micros),
        workspace_monthly_micros=_pick(workspace[4], defaults.workspace_monthly_micros),
    )


def counter_keys(who: Requester, day: str, month: str) -> list[tuple[str, str, str]]:
    """(scope, key, period) of every counter a ledger row feeds."""
    return [("user_day", who.user, day), ("user_month", who.user, month),
            ("channel_month", who.channel, month), ("workspace_month", who.workspace, month)]


def _used(db: sqlite_utils.Database, scope: str, key: str, period: str) -> tuple[int, int]:
    row = db.execute("SELECT micros, images FROM counters WHERE scope=? AND key=? AND period=?",
                     [scope, key, period]).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


_COUNTERS_SQL = ("SELECT scope, key, period, micros, images FROM counters WHERE "
                 + " OR ".join(["(scope=? AND key=? AND period=?)"] * 4))


def _used_all(db: sqlite_utils.Database, keys: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], tuple[int, int]]:
    """(micros, images) of the four counters a requester's limits read, in one primary-key query."""
    found = db.conn.execute(_COUNTERS_SQL, [part for key in keys for part in key]).fetchall()
    return {(s, k, p): (int(m), int(n)) for s, k, p, m, n in found}


def checks(db: sqlite_utils.Database, limits: Limits, who: Requester, periods: Periods) -> list[Check]:
    """Every limit that applies to `who`, with its current use. Unlimited ones are left out."""
    spec = [
        ("your daily spend", "user_day", who.user, periods.day, limits.user_daily_micros, False, periods.day_resets),
        ("your daily images", "user_day", who.user, periods.day, limits.user_daily_images, True, periods.day_resets),
        ("your monthly spend", "user_month", who.user, periods.month, limits.user_monthly_micros, False,
         periods.month_resets),
        ("your monthly images", "user_month", who.user, periods.month, limits.user_monthly_images, True,
         periods.month_resets),
        ("this channel's monthly spend", "channel_month", who.channel, periods.month,
         limits.channel_monthly_micros, False, periods.month_resets),
        ("this workspace's monthly spend", "workspace_month", who.workspace, periods.month,
         limits.workspace_monthly_micros, False, periods.month_resets),
    ]
    if all(entry[4] is None for entry in spec):
        return []
    used = _used_all(db, counter_keys(who, periods.day, periods.month))
    out = []
    for label, scope, key, period, limit, is_images, resets in spec:
        if limit is None:
            continue
        micros, images = used.get((scope, key, period), (0, 0))
        out.append(Check(label, scope, key, period, limit, images if is_images else micros, is_images, resets))
    return out


def _until(resets: datetime, now: datetime) -> str:
    minutes = max(1, int((resets - now).total_seconds() // 60))
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    span = f"{days} d {hours} h" if days else (f"{hours} h {mins} min" if hours else f"{mins} min")
    return f"{resets.strftime('%Y-%m-%d %H:%M')} {resets.tzname()} (in {span})"


def enforce(all_checks: list[Check], *, micros: int, images: int, now: datetime, what: str) -> None:
    """Raise QuotaExceeded naming the first limit that `micros` / `images` more would cross."""
    for check in all_checks:
        need = images if check.is_images else micros
        if check.used + need > check.limit:
            raise QuotaExceeded(
                f"Quota: {what} needs up to {check.show(need)}, but {check.label} limit is "
                f"{check.show(check.limit)} and {check.show(check.left)} is left. "
                f"It resets {_until(check.resets, now)}."
            )


def bump(db: sqlite_utils.Database, who: Requester, day: str, month: str, *, micros: int, images: int) -> None:
    """Add to every counter a ledger row feeds (negative amounts release), in one statement."""
    params: list[object] = []
    for scope, key, period in counter_keys(who, day, month):
        params += (scope, key, period, micros, images)
    db.execute(_BUMP_SQL, params)


_BUMP_SQL = ("INSERT INTO counters (scope, key, period, micros, images) VALUES "
             + ", ".join(["(?, ?, ?, ?, ?)"] * 4)
             + " ON CONFLICT(scope, key, period) DO UPDATE SET micros = micros + excluded.micros, "
             "images = images + excluded.images")


def parse_limits(args: list[str]) -> dict[str, int | None]:
    """`daily_usd=5 monthly_images=100 monthly_usd=none` -> column values for `limits`.

    `none`/`unlimited` lifts a default; `default` goes back to it.
    """
    out: dict[str, int | None] = {}
    for arg in args:
        name, sep, value = arg.partition("=")
        name = name.strip().lower().replace("-", "_")
        if not sep or name not in LIMIT_FIELDS:
            raise UserError(f"{arg!r} is not a limit; use {', '.join(n + '=N' for n in LIMIT_FIELDS)} "
                            "(N a number, 'unlimited' or 'default')")
        value = value.strip().lower().lstrip("$")
        column = LIMIT_FIELDS[name]
        if value in ("none", "unlimited"):
            out[column] = UNLIMITED
        elif value == "default":
            out[column] = None
        else:
            try:
                number = Decimal(value)
            except InvalidOperation:
                raise UserError(f"{name}={value!r} is not a number; use e.g. {name}=5") from None
            if number < 0 or not number.is_finite():
                raise UserError(f"{name}={value} must be 0 or more")
            if name.endswith("images"):
                if number != number.to_integral_value():
                    raise UserError(f"{name}={value} must be a whole number of images")
                out[column] = int(number)
            else:
                out[column] = int(number * 1_000_000)
    if not out:
        raise UserError("give at least one limit, e.g. daily_usd=5 monthly_images=200")
    return out
