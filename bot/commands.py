"""The non-image commands every adapter offers: usage reports, quota, admin (SPEC §2, §6)."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from . import quota, report
from .app import Core
from .errors import UserError
from .request import Requester

MAX_DAYS = 366
# <@U123>, <@U123|name>, <@!123> (Discord nick), <#C123|name>, or a bare id.
_TARGET = re.compile(r"^<(?P<kind>[@#])!?(?P<id>[A-Za-z0-9]+)(?:\|[^>]*)?>$")


@dataclass(frozen=True, slots=True)
class Reply:
    """What to show: text, whether only the caller sees it, and an optional PNG chart."""

    text: str
    private: bool = True
    chart: bytes | None = None


def parse_days(args: str) -> int:
    match = re.fullmatch(r"\s*(?:--days[ =]+(\S+))?\s*", args)
    if not match:
        raise UserError(f"unknown arguments {args.strip()!r}; use /imagine-usage [--days N] with N 1-{MAX_DAYS}")
    if match[1] is None:
        return 30
    if not match[1].isdigit() or not 1 <= int(match[1]) <= MAX_DAYS:
        raise UserError(f"--days {match[1]!r} is out of range; use a whole number 1-{MAX_DAYS}")
    return int(match[1])


async def usage(core: Core, who: Requester, args: str) -> Reply:
    """`/imagine-usage [--days N]`: the channel's report with its chart, posted to the channel."""
    days = parse_days(args)
    built = await report.build(core.ledger, channel=who.channel, days=days)
    chart = await asyncio.to_thread(report.chart_png, built)
    return Reply(built.text(), private=False, chart=chart)


async def my_quota(core: Core, who: Requester) -> Reply:
    """`/imagine-quota`: the caller's own limits and what is left, privately."""
    lines = await core.ledger.quota_lines(who)
    if not lines:
        return Reply("You have no quota limits. Every image is still recorded in the cost ledger.")
    return Reply("Your quota:\n" + "\n".join(
        f"- {line.label}: {line.used} used of {line.limit}, {line.left} left "
        f"(resets {line.resets.strftime('%Y-%m-%d %H:%M %Z')})" for line in lines))


def parse_target(text: str, who: Requester) -> tuple[str, str]:
    """`<@U1>` -> ("user", "U1"); `<#C1>` -> ("channel", "C1"); `workspace` -> ("workspace", id)."""
    if text.lower() in ("workspace", "guild", "server"):
        return "workspace", who.workspace
    match = _TARGET.match(text)
    if match:
        return ("user" if match["kind"] == "@" else "channel"), match["id"]
    raise UserError(f"{text!r} is not a target; use @user, #channel or 'workspace'")


async def admin(core: Core, who: Requester, args: str, *, platform_admin: bool) -> Reply:
    """`/imagine-admin quota <@user|#channel|workspace> <limits>` and `/imagine-admin report --all`."""
    if not core.is_admin(who.user, platform_admin):
        return Reply("Only admins can use /imagine-admin (IMAGEBOT_ADMINS, or workspace/server admins).")
    words = args.split()
    if words[:1] == ["quota"] and len(words) >= 3:
        scope, key = parse_target(words[1], who)
        values = quota.parse_limits(words[2:])
        await core.ledger.set_limits(scope, key, values)
        shown = ", ".join(f"{k}={'unlimited' if v == quota.UNLIMITED else ('default' if v is None else v)}"
                          for k, v in values.items())
        return Reply(f"Limits for {scope} {key} set: {shown}.")
    if words[:1] == ["report"]:
        days = parse_days(" ".join(w for w in words[1:] if w != "--all"))
        built = await report.build(core.ledger, days=days)
        chart = await asyncio.to_thread(report.chart_png, built)
        return Reply(built.text(), private=True, chart=chart)
    raise UserError("usage: /imagine-admin quota <@user|#channel|workspace> daily_usd=N daily_images=N "
                    "monthly_usd=N monthly_images=N  |  /imagine-admin report --all [--days N]")
