"""Quota: the rules that decide which limits apply to whom (docs/rules.md §5), each scoped to its tenant (§2).

Tenancy. A tenant is one Slack workspace (team id) or one Discord guild (guild id), together with the
platform: `Requester.platform` + `Requester.workspace`. Console and CLI jobs are tenants of their own
(`console:local`, `cli:local`, `cli:<--workspace>`). Every limit override and every counter is keyed inside
its tenant (`Tenant.key`, `limit_key`; the table of keys is in bot/store/admission.py), so nothing set or
spent in one tenant is seen in another.

The limits are the operators' defaults (IMAGEBOT_*_USD, IMAGEBOT_*_IMAGES: `QuotaDefaults` in the
configuration), overridden per user, channel or tenant by an admin (`parse_limits` reads what they type; who
may set which is bot/commands.py's rule). The store checks them as numbers, atomically, inside each
reservation (bot/store/admission.py, and `imagebot_admit` on PostgreSQL), against counters of reserved plus
settled spend per period that move in the same transaction as the ledger rows (bot/store/counters.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

# usd_micros is the one USD parser (limits and config defaults alike).
from bot.config import IMAGES_RANGE, PLATFORMS, usd_micros
from bot.errors import UserError
from bot.i18n import msg
from bot.model.request import Requester
from bot.store import counters

# What the store checks, as plain data, re-exported here where the rest of the core looks for quota things.
from bot.store.admission import LABELS as LABELS
from bot.store.admission import (
    MAX_LIMIT_IMAGES,
    QuotaDefaults,
    checks,
    effective_limits,
    scoped_key,
    tenant_key,
)
from bot.store.admission import UNLIMITED as UNLIMITED
from bot.store.admission import Check as Check
from bot.store.admission import Limits as Limits
from bot.store.admission import Periods as Periods
from bot.store.admission import check_limit_values as check_limit_values
from bot.store.admission import counter_keys as counter_keys
from bot.store.admission import label_text as label_text
from bot.store.admission import limit_keys as limit_keys
from bot.store.repo import Db


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
            raise UserError(msg("quota.not_a_tenant", text=repr(text), platforms=", ".join(PLATFORMS)))
        return cls(platform.lower(), workspace)

    @property
    def key(self) -> str:
        """The tenant's own key in `limits` and `counters`; also how it is shown."""
        return tenant_key(self.platform, self.workspace)

    def __str__(self) -> str:
        return self.key


def limit_key(scope: str, tenant: Tenant, ident: str) -> str:
    """The `limits.key` of a user, a channel, or (scope 'workspace') the tenant itself."""
    return scoped_key(scope, tenant.key, ident)


LIMIT_FIELDS = {
    "daily_usd": "daily_micros",
    "daily_images": "daily_images",
    "monthly_usd": "monthly_micros",
    "monthly_images": "monthly_images",
}


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
                msg("quota.not_a_limit", arg=repr(arg), fields=", ".join(n + "=N" for n in LIMIT_FIELDS))
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
                raise UserError(msg("quota.not_a_number", name=name, value=repr(value))) from None
            if not number.is_finite() or not 0 <= number <= MAX_LIMIT_IMAGES:
                raise UserError(msg("quota.images_range", name=name, value=value, range=IMAGES_RANGE))
            if number != number.to_integral_value():
                raise UserError(msg("quota.images_whole", name=name, value=value))
            out[column] = int(number)
        else:
            try:
                out[column] = usd_micros(value)
            except ValueError as exc:
                raise UserError(msg("quota.usd_bad", name=name, value=value, error=exc)) from None
    if not out:
        raise UserError(msg("quota.no_limit"))
    return out


_SHORT = re.compile(r"^(your|this channel's|this workspace's) ")


@dataclass(frozen=True, slots=True)
class Standing:
    """One limit of one user, channel or the tenant itself, and how much of it is used (the dashboard's "who is
    near a limit"). `used`, `limit`, `left` as `/imagine-quota` shows them."""

    kind: str  # user | channel | workspace
    ident: str  # the user's or channel's id; the tenant's key for the workspace
    label: str  # "daily spend", as in /imagine-quota without "your"
    used: str
    limit: str
    left: str
    share: float  # used / limit, 0..1 (1 for a limit of 0)
    resets: str


def standings(db: Db, defaults: QuotaDefaults, tenant: Tenant, now: datetime, tz: ZoneInfo) -> list[Standing]:
    """Every limit that applies in `tenant` to a user or channel that has used something this month or has a
    limit of its own, and the tenant's own, with its use: the same `effective_limits` and `checks` that a
    reservation reads, most used first. On the database thread (`Ledger.run_db`)."""
    periods = Periods.at(now, tz)
    users, channels = counters.known(db, tenant=tenant.key, month=periods.month)
    people = [("user", i, Requester(tenant.platform, tenant.workspace, "", i)) for i in sorted(users)]
    places = [("channel", i, Requester(tenant.platform, tenant.workspace, i, "")) for i in sorted(channels)]
    own = [("workspace", tenant.key, Requester(tenant.platform, tenant.workspace, "", ""))]
    wanted = {
        "user": ("user_day", "user_month"),
        "channel": ("channel_month",),
        "workspace": ("workspace_month",),
    }
    out: list[Standing] = []
    for kind, ident, who in people + places + own:
        limits = effective_limits(defaults, who, counters.limit_rows(db, keys=limit_keys(who)))
        used = counters.used(db, keys=counter_keys(who, periods.day, periods.month))
        for check in checks(limits, who, periods, used):
            if check.scope not in wanted[kind]:
                continue
            share = 1.0 if check.limit <= 0 else min(1.0, check.used / check.limit)
            resets = f"{check.resets.strftime('%Y-%m-%d %H:%M')} {check.resets.tzname()}"
            out.append(
                Standing(
                    kind,
                    ident,
                    _SHORT.sub("", check.label),
                    check.show(check.used),
                    check.show(check.limit),
                    check.show(check.left),
                    share,
                    resets,
                )
            )
    out.sort(key=lambda s: (-s.share, s.kind, s.ident, s.label))
    return out
