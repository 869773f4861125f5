"""What a reservation checks, as plain numbers, and the check itself (the twin of PostgreSQL's `imagebot_admit`,
bot/store/pg.py): the store runs it inside the reservation's transaction, so that two reservations at once
cannot both slip under a limit or a pace.

The policy (bot/policy/quota.py, bot/policy/access.py, the configuration) decides what to check: the
configured limits (`QuotaDefaults`), the time zone the quota days follow
(`Periods`). The store keeps the rows and the arithmetic: the keys its `limits` and `counters` rows are
stored under (`tenant_key`, `scoped_key`, `counter_keys`, `limit_keys`), a stored override over a default
(`effective_limits`: None keeps the default, `UNLIMITED` lifts it), and whether `micros`/`images` more fit
(`enforce`), answered in words the requester can act on.

Keys. Every limit override and every counter is keyed inside its tenant (a Slack workspace or Discord guild,
with its platform), so nothing set or spent in one tenant is seen in another:

    what                 limits (scope, key)          counters (scope, key)
    the tenant itself    workspace, slack:T1          workspace_month, slack:T1
    a user               user,      slack:T1:U1       user_day / user_month, slack:T1:U1
    a channel            channel,   slack:T1:C1       channel_month, slack:T1:C1

Each part is escaped (`%` -> `%25`, then `:` -> `%3A`) so a free-text console/CLI id holding a colon cannot
pose as another tenant's key; Slack and Discord ids never need it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import Protocol
from zoneinfo import ZoneInfo

from bot.errors import QuotaExceeded
from bot.i18n import ENGLISH, Msg, Text, lazy, msg, say, usd
from bot.model.pricing import MICRO
from bot.model.request import Requester

UNLIMITED = -1  # a stored override that lifts a default limit
# Bounds of every limit, from the environment or an admin command: far above any real budget, far below
# what SQLite's 64-bit integers hold (a $1e20 limit used to crash the first reservation).
MAX_LIMIT_USD = 1_000_000
MAX_LIMIT_IMAGES = 1_000_000
LIMIT_COLUMNS = ("daily_micros", "daily_images", "monthly_micros", "monthly_images")


@dataclass(frozen=True)
class QuotaDefaults:
    """Default limits (IMAGEBOT_*_USD, IMAGEBOT_*_IMAGES); None means unlimited. USD limits are micro-dollars."""

    user_daily_micros: int | None = None
    user_daily_images: int | None = None
    user_monthly_micros: int | None = None
    user_monthly_images: int | None = None
    channel_monthly_micros: int | None = None
    workspace_monthly_micros: int | None = None

    def as_list(self) -> list[int | None]:
        """In `imagebot_admit`'s order (bot/store/pg.py)."""
        return [
            self.user_daily_micros,
            self.user_daily_images,
            self.user_monthly_micros,
            self.user_monthly_images,
            self.channel_monthly_micros,
            self.workspace_monthly_micros,
        ]


def _part(text: str) -> str:
    """One part of a key, escaped so that ':' only ever separates parts."""
    return text.replace("%", "%25").replace(":", "%3A")


class TenantLike(Protocol):
    """A tenant as the store needs it (bot/policy/quota.py `Tenant`)."""

    @property
    def workspace(self) -> str: ...

    @property
    def key(self) -> str: ...


def tenant_key(platform: str, workspace: str) -> str:
    """A tenant's own key in `limits` and `counters`."""
    return f"{_part(platform)}:{_part(workspace)}"


def scoped_key(scope: str, tenant: str, ident: str) -> str:
    """The `limits.key` of a user, a channel, or (scope 'workspace') the tenant itself, in tenant `tenant`."""
    if scope == "workspace":
        return tenant
    if scope in ("user", "channel"):
        return f"{tenant}:{_part(ident)}"
    raise ValueError(scope)


@dataclass(frozen=True, slots=True)
class LimitRow:
    """One `limits` row: None where the default applies."""

    daily_micros: int | None = None
    daily_images: int | None = None
    monthly_micros: int | None = None
    monthly_images: int | None = None


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

    def any(self) -> bool:
        """Some limit applies (else there is nothing to check, nor any counter to read)."""
        return any(
            value is not None
            for value in (
                self.user_daily_micros,
                self.user_daily_images,
                self.user_monthly_micros,
                self.user_monthly_images,
                self.channel_monthly_micros,
                self.workspace_monthly_micros,
            )
        )


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

    def show(self, amount: int) -> Text:
        """An amount of this limit: `3 images` or `$0.2110`, in the reader's language."""
        return msg("texts.images", n=amount) if self.is_images else usd(amount)


def _pick(override: int | None, default: int | None) -> int | None:
    if override is None:
        return default
    return None if override == UNLIMITED else override


def limit_keys(who: Requester) -> list[tuple[str, str]]:
    """(scope, key) of the `limits` rows that may override `who`'s limits: its user, channel and tenant."""
    tenant = tenant_key(who.platform, who.workspace)
    return [
        ("user", scoped_key("user", tenant, who.user)),
        ("channel", scoped_key("channel", tenant, who.channel)),
        ("workspace", tenant),
    ]


def effective_limits(
    defaults: QuotaDefaults, who: Requester, overrides: Mapping[tuple[str, str], LimitRow]
) -> Limits:
    """Defaults from config, overridden by the `limits` rows (bot/store/counters.py `limit_rows`) of `who`'s
    user, channel and tenant (`limit_keys`: all three in `who`'s own tenant)."""
    user_key, channel_key, workspace_key = limit_keys(who)
    none = LimitRow()
    user = overrides.get(user_key, none)
    channel = overrides.get(channel_key, none)
    workspace = overrides.get(workspace_key, none)
    return Limits(
        user_daily_micros=_pick(user.daily_micros, defaults.user_daily_micros),
        user_daily_images=_pick(user.daily_images, defaults.user_daily_images),
        user_monthly_micros=_pick(user.monthly_micros, defaults.user_monthly_micros),
        user_monthly_images=_pick(user.monthly_images, defaults.user_monthly_images),
        channel_monthly_micros=_pick(channel.monthly_micros, defaults.channel_monthly_micros),
        workspace_monthly_micros=_pick(workspace.monthly_micros, defaults.workspace_monthly_micros),
    )


def counter_keys(who: Requester, day: str, month: str) -> list[tuple[str, str, str]]:
    """(scope, key, period) of every counter a ledger row feeds, keyed inside `who`'s tenant."""
    tenant = tenant_key(who.platform, who.workspace)
    user = scoped_key("user", tenant, who.user)
    return [
        ("user_day", user, day),
        ("user_month", user, month),
        ("channel_month", scoped_key("channel", tenant, who.channel), month),
        ("workspace_month", tenant, month),
    ]


# The label of each check -> the scope of the counter it reads (the CLI shows a tenant's or a channel's lines).
LABELS = {
    "your daily spend": "user_day",
    "your daily images": "user_day",
    "your monthly spend": "user_month",
    "your monthly images": "user_month",
    "this channel's monthly spend": "channel_month",
    "this workspace's monthly spend": "workspace_month",
}


def checks(
    limits: Limits,
    who: Requester,
    periods: Periods,
    used: Mapping[tuple[str, str, str], tuple[int, int]],
) -> list[Check]:
    """Every limit that applies to `who`, with its current use in `who`'s tenant (`used`: (micros, images) by
    counter key, bot/store/counters.py `used`, of `counter_keys`). Unlimited ones are left out."""
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
    out = []
    for label, scope, key, period, limit, is_images, resets in spec:
        if limit is None:
            continue
        micros, images = used.get((scope, key, period), (0, 0))
        out.append(
            Check(label, scope, key, period, limit, images if is_images else micros, is_images, resets)
        )
    return out


def label_text(label: str) -> Msg:
    """A limit's label (a key of LABELS, stored and compared in English) as the reader says it."""
    return msg(_LABEL_IDS[label])


_LABEL_IDS = {
    "your daily spend": "quota.label.your_daily_spend",
    "your daily images": "quota.label.your_daily_images",
    "your monthly spend": "quota.label.your_monthly_spend",
    "your monthly images": "quota.label.your_monthly_images",
    "this channel's monthly spend": "quota.label.channel_monthly_spend",
    "this workspace's monthly spend": "quota.label.workspace_monthly_spend",
}


def short_label_text(label: str) -> Msg:
    """A limit's label without `your` (`daily spend`), for the one-line quota of a summary."""
    return msg(_LABEL_IDS[label] + ".short")


def _until(resets: datetime, now: datetime, locale: str = ENGLISH) -> str:
    minutes = max(1, int((resets - now).total_seconds() // 60))
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    if days:
        span = say(locale, "quota.span_days", days=days, hours=hours)
    else:
        span = (
            say(locale, "quota.span_hours", hours=hours, mins=mins)
            if hours
            else say(locale, "quota.span_minutes", mins=mins)
        )
    return say(
        locale, "quota.resets_at", when=f"{resets.strftime('%Y-%m-%d %H:%M')} {resets.tzname()}", span=span
    )


def enforce(all_checks: list[Check], *, micros: int, images: int, now: datetime, what: str) -> None:
    """Raise QuotaExceeded naming the first limit that `micros` / `images` more would cross."""
    for check in all_checks:
        need = images if check.is_images else micros
        if check.used + need > check.limit:
            raise QuotaExceeded(
                msg(
                    "quota.exceeded",
                    what=what,
                    need=check.show(need),
                    label=label_text(check.label),
                    limit=check.show(check.limit),
                    left=check.show(check.left),
                    resets=lazy(_until, check.resets, now),
                )
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


def check_limit_values(values: dict[str, int | None]) -> None:
    """ValueError unless every column is a `limits` column and every value None, UNLIMITED or within the bounds
    (the guard for callers that skip bot/policy/quota.py `parse_limits`: SQLite cannot store an unbounded int)."""
    for column, value in values.items():
        if column not in LIMIT_COLUMNS:
            raise ValueError(column)
        top = MAX_LIMIT_IMAGES if column.endswith("images") else MAX_LIMIT_USD * MICRO
        if value is not None and value != UNLIMITED and not 0 <= value <= top:
            raise ValueError(f"{column}={value} is out of range (0-{top})")
