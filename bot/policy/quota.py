"""Limits and the spend counters they are checked against (SPEC §5), each scoped to its tenant (§2).

Counters hold reserved-plus-settled spend per period, kept in step with the ledger inside the same
transaction, so a check is a handful of primary-key reads however long the ledger grows.

Tenancy. A tenant is one Slack workspace (team id) or one Discord guild (guild id), together with the
platform: `Requester.platform` + `Requester.workspace`. Console and CLI jobs are tenants of their own
(`console:local`, `cli:local`, `cli:<--workspace>`). Every limit override and every counter is keyed
inside its tenant, so nothing set or spent in one tenant is seen in another:

    what                 limits (scope, key)          counters (scope, key)
    the tenant itself    workspace, slack:T1          workspace_month, slack:T1
    a user               user,      slack:T1:U1       user_day / user_month, slack:T1:U1
    a channel            channel,   slack:T1:C1       channel_month, slack:T1:C1

(`discord:123:456` for Discord.) Each part is escaped (`%` -> `%25`, then `:` -> `%3A`) so a free-text
console/CLI id holding a colon cannot pose as another tenant's key; Slack and Discord ids never need it.
Schema 5 (`bot/store/schema.py`, `_v5`) moved older files from bare ids to these keys. The scoping happens
inside `effective_limits`, `checks`, `counter_keys` and `bump`, from `who.platform` and `who.workspace`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from zoneinfo import ZoneInfo

# usd_micros is the one USD parser (limits and config defaults alike); it lives in config, which cannot import
# this module (this module imports QuotaDefaults from there).
from bot.config import (
    IMAGES_RANGE,
    MAX_LIMIT_IMAGES,
    MAX_LIMIT_USD,
    PLATFORMS,
    QuotaDefaults,
    usd_micros,
)
from bot.errors import QuotaExceeded, UserError
from bot.model.pricing import MICRO, format_usd
from bot.model.request import Requester
from bot.store.db import Database

UNLIMITED = -1  # an override that lifts a default limit


def _part(text: str) -> str:
    """One part of a key, escaped so that ':' only ever separates parts."""
    return text.replace("%", "%25").replace(":", "%3A")


@dataclass(frozen=True, slots=True)
class Tenant:
    """One Slack workspace or Discord guild (or console/CLI workspace): the scope of limits and counters."""

    platform: str
    workspace: str

    @classmethod
    def of(cls, who: Requester) -> Tenant:
        return cls(who.platform, who.workspace)

    @classmethod
    def parse(cls, text: str) -> Tenant:
        """`slack:T123`, `discord:456`, `cli:local` -> a Tenant; UserError naming the form otherwise."""
        platform, sep, workspace = text.strip().partition(":")
        if not sep or platform.lower() not in PLATFORMS or not workspace:
            raise UserError(
                f"{text!r} is not a tenant; use PLATFORM:WORKSPACE, e.g. slack:T123 or discord:456 "
                f"(platforms: {', '.join(PLATFORMS)})"
            )
        return cls(platform.lower(), workspace)

    @property
    def key(self) -> str:
        """The tenant's own key in `limits` and `counters`; also how it is shown."""
        return f"{_part(self.platform)}:{_part(self.workspace)}"

    def __str__(self) -> str:
        return self.key


def limit_key(scope: str, tenant: Tenant, ident: str) -> str:
    """The `limits.key` of a user, a channel, or (scope 'workspace') the tenant itself."""
    if scope == "workspace":
        return tenant.key
    if scope in ("user", "channel"):
        return f"{tenant.key}:{_part(ident)}"
    raise ValueError(scope)


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


LIMIT_FIELDS = {
    "daily_usd": "daily_micros",
    "daily_images": "daily_images",
    "monthly_usd": "monthly_micros",
    "monthly_images": "monthly_images",
}


def _pick(override: int | None, default: int | None) -> int | None:
    if override is None:
        return default
    return None if override == UNLIMITED else override


def effective_limits(db: Database, defaults: QuotaDefaults, who: Requester) -> Limits:
    """Defaults from config, overridden by the rows in `limits` of `who`'s user, channel and tenant
    (all three in `who`'s own tenant)."""
    tenant = Tenant.of(who)
    user_key, channel_key = limit_key("user", tenant, who.user), limit_key("channel", tenant, who.channel)
    rows = {
        (r[0], r[1]): r
        for r in db.conn.execute(
            "SELECT scope, key, daily_micros, daily_images, monthly_micros, monthly_images FROM limits "
            "WHERE (scope='user' AND key=?) OR (scope='channel' AND key=?) OR (scope='workspace' AND key=?)",
            [user_key, channel_key, tenant.key],
        ).fetchall()
    }
    none = (None,) * 6
    user = rows.get(("user", user_key), none)
    channel = rows.get(("channel", channel_key), none)
    workspace = rows.get(("workspace", tenant.key), none)
    return Limits(
        user_daily_micros=_pick(user[2], defaults.user_daily_micros),
        user_daily_images=_pick(user[3], defaults.user_daily_images),
        user_monthly_micros=_pick(user[4], defaults.user_monthly_micros),
        user_monthly_images=_pick(user[5], defaults.user_monthly_images),
        channel_monthly_micros=_pick(channel[4], defaults.channel_monthly_micros),
        workspace_monthly_micros=_pick(workspace[4], defaults.workspace_monthly_micros),
    )


def counter_keys(who: Requester, day: str, month: str) -> list[tuple[str, str, str]]:
    """(scope, key, period) of every counter a ledger row feeds, keyed inside `who`'s tenant."""
    tenant = Tenant.of(who)
    user = limit_key("user", tenant, who.user)
    return [
        ("user_day", user, day),
        ("user_month", user, month),
        ("channel_month", limit_key("channel", tenant, who.channel), month),
        ("workspace_month", tenant.key, month),
    ]


def _used(db: Database, scope: str, key: str, period: str) -> tuple[int, int]:
    row = db.execute(
        "SELECT micros, images FROM counters WHERE scope=? AND key=? AND period=?", [scope, key, period]
    ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


_COUNTERS_SQL = "SELECT scope, key, period, micros, images FROM counters WHERE " + " OR ".join(
    ["(scope=? AND key=? AND period=?)"] * 4
)


def _used_all(db: Database, keys: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], tuple[int, int]]:
    """(micros, images) of the four counters a requester's limits read, in one primary-key query."""
    found = db.conn.execute(_COUNTERS_SQL, [part for key in keys for part in key]).fetchall()
    return {(s, k, p): (int(m), int(n)) for s, k, p, m, n in found}


# The label of each check -> the scope of the counter it reads (the CLI shows a tenant's or a channel's lines).
LABELS = {
    "your daily spend": "user_day",
    "your daily images": "user_day",
    "your monthly spend": "user_month",
    "your monthly images": "user_month",
    "this channel's monthly spend": "channel_month",
    "this workspace's monthly spend": "workspace_month",
}


def checks(db: Database, limits: Limits, who: Requester, periods: Periods) -> list[Check]:
    """Every limit that applies to `who`, with its current use in `who`'s tenant. Unlimited ones are left out."""
    keys = counter_keys(who, periods.day, periods.month)
    user, channel, workspace = keys[0][1], keys[2][1], keys[3][1]
    spec = [
        (
            "your daily spend",
            "user_day",
            user,
            periods.day,
            limits.user_daily_micros,
            False,
            periods.day_resets,
        ),
        (
            "your daily images",
            "user_day",
            user,
            periods.day,
            limits.user_daily_images,
            True,
            periods.day_resets,
        ),
        (
            "your monthly spend",
            "user_month",
            user,
            periods.month,
            limits.user_monthly_micros,
            False,
            periods.month_resets,
        ),
        (
            "your monthly images",
            "user_month",
            user,
            periods.month,
            limits.user_monthly_images,
            True,
            periods.month_resets,
        ),
        (
            "this channel's monthly spend",
            "channel_month",
            channel,
            periods.month,
            limits.channel_monthly_micros,
            False,
            periods.month_resets,
        ),
        (
            "this workspace's monthly spend",
            "workspace_month",
            workspace,
            periods.month,
            limits.workspace_monthly_micros,
            False,
            periods.month_resets,
        ),
    ]
    if all(entry[4] is None for entry in spec):
        return []
    used = _used_all(db, keys)
    out = []
    for label, scope, key, period, limit, is_images, resets in spec:
        if limit is None:
            continue
        micros, images = used.get((scope, key, period), (0, 0))
        out.append(
            Check(label, scope, key, period, limit, images if is_images else micros, is_images, resets)
        )
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


def refuse(
    label: str, used: int, limit: int, periods: Periods, *, micros: int, images: int, now: datetime, what: str
) -> None:
    """Raise QuotaExceeded for the limit `label` (a key of LABELS), as `enforce` words it: a refusal that
    PostgreSQL's `imagebot_admit` returned as data (bot/store/pg.py)."""
    scope = LABELS[label]
    resets = periods.day_resets if scope == "user_day" else periods.month_resets
    check = Check(label, scope, "", "", int(limit), int(used), label.endswith("images"), resets)
    enforce([check], micros=micros, images=images, now=now, what=what)
    raise AssertionError(f"{label}: {used} + {micros}/{images} fits {limit}")  # the database said it did not


def bump(db: Database, who: Requester, day: str, month: str, *, micros: int, images: int) -> None:
    """Add to every counter a ledger row feeds (negative amounts release), in one statement."""
    params: list[object] = []
    for scope, key, period in sorted(counter_keys(who, day, month)):  # one order for every writer
        params += (scope, key, period, micros, images)
    db.execute(_BUMP_SQL, params)


_BUMP_SQL = (
    "INSERT INTO counters (scope, key, period, micros, images) VALUES "
    + ", ".join(["(?, ?, ?, ?, ?)"] * 4)
    + " ON CONFLICT(scope, key, period) DO UPDATE SET micros = counters.micros + excluded.micros, "
    "images = counters.images + excluded.images"
)


def check_limit_values(values: dict[str, int | None]) -> None:
    """ValueError unless every column is a `limits` column and every value None, UNLIMITED or within the bounds
    (the library's guard for callers that skip `parse_limits`: SQLite cannot store an unbounded int)."""
    for column, value in values.items():
        if column not in LIMIT_FIELDS.values():
            raise ValueError(column)
        top = MAX_LIMIT_IMAGES if column.endswith("images") else MAX_LIMIT_USD * MICRO
        if value is not None and value != UNLIMITED and not 0 <= value <= top:
            raise ValueError(f"{column}={value} is out of range (0-{top})")


def parse_limits(args: list[str]) -> dict[str, int | None]:
    """`daily_usd=5 monthly_images=100 monthly_usd=none` -> column values for `limits`.

    `none`/`unlimited` lifts a default; `default` goes back to it. USD 0 to 1,000,000 (rounded down to a
    micro-dollar, by `usd_micros`), images 0 to 1,000,000: the same bounds as the defaults in config.
    """
    out: dict[str, int | None] = {}
    for arg in args:
        name, sep, value = arg.partition("=")
        name = name.strip().lower().replace("-", "_")
        if not sep or name not in LIMIT_FIELDS:
            raise UserError(
                f"{arg!r} is not a limit; use {', '.join(n + '=N' for n in LIMIT_FIELDS)} "
                "(N a number, 'unlimited' or 'default')"
            )
        value = value.strip().lower().lstrip("$")
        column = LIMIT_FIELDS[name]
        if value in ("none", "unlimited"):
            out[column] = UNLIMITED
        elif value == "default":
            out[column] = None
        elif name.endswith("images"):
            try:
                number = Decimal(value)
            except InvalidOperation:
                raise UserError(f"{name}={value!r} is not a number; use e.g. {name}=5") from None
            if not number.is_finite() or not 0 <= number <= MAX_LIMIT_IMAGES:
                raise UserError(
                    f"{name}={value} is out of range: use {IMAGES_RANGE}, 'unlimited' or 'default'"
                )
            if number != number.to_integral_value():
                raise UserError(f"{name}={value} must be a whole number of images")
            out[column] = int(number)
        else:
            try:
                out[column] = usd_micros(value)
            except ValueError as exc:
                raise UserError(f"{name}={value} {exc}, 'unlimited' or 'default'") from None
    if not out:
        raise UserError("give at least one limit, e.g. daily_usd=5 monthly_images=200")
    return out
