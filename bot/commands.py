"""The non-image commands every adapter offers: usage reports, quota, admin (SPEC §2, §6).

Who may do what (SPEC §2), always inside the caller's tenant (its Slack workspace or Discord guild):
- operators (IMAGEBOT_ADMINS, `Core.is_operator`): users, channels and the tenant's own limit;
  `report --all` covers every tenant;
- tenant admins (the adapter passes `platform_admin=True` for Slack workspace admins/owners and Discord
  members with Manage Server): the tenant's users and channels, never the tenant's own limit (so no tenant
  lifts the cap the operators set, or the IMAGEBOT_WORKSPACE_MONTHLY_USD default); `report --all` covers
  their tenant only.
Other tenants are the CLI's business (`imagebot quota set --tenant slack:T123 ...`).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from . import actions, quota, report
from .app import Core
from .config import usd_micros
from .errors import UserError
from .pricing import format_usd
from .request import Requester

MAX_DAYS = 366
# <@U123>, <@U123|name>, <@!123> (Discord nick), <#C123>, <#C123|name>.
_MENTION = re.compile(r"^<(?P<kind>@!?|#)(?P<id>[A-Za-z0-9]+)(?:\|[^>]*)?>$")
_ROLE = re.compile(r"^<@&\d+>$")  # Discord role
_GROUP = re.compile(r"^<!subteam\^[A-Za-z0-9]+(?:\|[^>]*)?>$")  # Slack user group
_EVERYONE = re.compile(
    r"^(?:<!(?:here|channel|everyone)(?:\|[^>]*)?>|@(?:here|channel|everyone))$", re.IGNORECASE
)
_SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")
_SLACK_CHANNEL = re.compile(r"^[CG][A-Z0-9]{2,}$")
_DISCORD_ID = re.compile(r"^[0-9]{1,20}$")
_PER = "limits are per user, channel or workspace"


@dataclass(frozen=True, slots=True)
class Reply:
    """What to show: text, whether only the caller sees it, and an optional PNG chart."""

    text: str
    private: bool = True
    chart: bytes | None = None


def parse_days(args: str) -> int:
    match = re.fullmatch(r"\s*(?:--days[ =]+(\S+))?\s*", args)
    if not match:
        raise UserError(
            f"unknown arguments {args.strip()!r}; use /imagine-usage [--days N] with N 1-{MAX_DAYS}"
        )
    if match[1] is None:
        return 30
    if not match[1].isdigit() or not 1 <= int(match[1]) <= MAX_DAYS:
        raise UserError(f"--days {match[1]!r} is out of range; use a whole number 1-{MAX_DAYS}")
    return int(match[1])


async def usage(core: Core, who: Requester, args: str) -> Reply:
    """`/imagine-usage [--days N]`: the channel's report with its chart, posted to the channel."""
    days = parse_days(args)
    built = await report.build(core.ledger, tenant=quota.Tenant.of(who), channel=who.channel, days=days)
    chart = await asyncio.to_thread(report.chart_png, built)
    return Reply(built.text(), private=False, chart=chart)


async def my_quota(core: Core, who: Requester) -> Reply:
    """`/imagine-quota`: the caller's own limits and what is left, privately."""
    lines = await core.ledger.quota_lines(who)
    if not lines:
        return Reply("You have no quota limits. Every image is still recorded in the cost ledger.")
    return Reply(
        "Your quota:\n"
        + "\n".join(
            f"- {line.label}: {line.used} used of {line.limit}, {line.left} left "
            f"(resets {line.resets.strftime('%Y-%m-%d %H:%M %Z')})"
            for line in lines
        )
    )


def _platform_name(who: Requester) -> str:
    return {"slack": "Slack", "discord": "Discord"}.get(who.platform, "the")


def _place(who: Requester) -> str:
    return "server" if who.platform == "discord" else "workspace"


def parse_target(text: str, who: Requester) -> tuple[str, str]:
    """The target of `/imagine-admin quota`: `<@U1>`, `<@U1|bob>`, `<@!1>` -> ("user", id); `<#C1>`,
    `<#C1|general>` -> ("channel", id); `workspace`/`guild`/`server` -> ("workspace", the caller's).

    A bare id: on Slack `U…`/`W…` is a user, `C…`/`G…` a channel; on Discord a number is a user. Roles, user
    groups, @here and plain `@name` text are refused with what to do instead. The id is one inside the
    caller's tenant: the caller (commands.admin) keys it there.
    """
    text = text.strip()
    if text.lower() in ("workspace", "guild", "server"):
        return "workspace", who.workspace
    match = _MENTION.match(text)
    if match:
        return ("channel" if match["kind"] == "#" else "user"), match["id"]
    if _ROLE.match(text):
        raise UserError(
            f"{text} is a role; {_PER}: name one person (@user) or a channel (#channel), or use 'workspace'"
        )
    if _GROUP.match(text):
        raise UserError(f"{text} is a user group; {_PER}: name one person (@user) or a channel (#channel)")
    if _EVERYONE.match(text):
        raise UserError(
            f"{text} means everyone here; {_PER}: for everyone use 'workspace', for this channel #channel"
        )
    app = _platform_name(who)
    example_user, example_channel = (
        ("123456789012345678", "123456789012345678")
        if who.platform == "discord"
        else ("U012ABCDEF", "C012ABCDEF")
    )
    if text.startswith("@"):
        raise UserError(
            f"{text!r} is plain text, not a mention: pick the person from {app}'s autocomplete so "
            f"a mention is sent (or give their user id, e.g. {example_user})"
        )
    if text.startswith("#"):
        raise UserError(
            f"{text!r} is plain text, not a channel mention: pick the channel from {app}'s "
            f"autocomplete (or give its id, e.g. {example_channel})"
        )
    slack_user, slack_channel, discord_id = (
        bool(_SLACK_USER.match(text)),
        bool(_SLACK_CHANNEL.match(text)),
        bool(_DISCORD_ID.match(text)),
    )
    if who.platform == "slack":
        if slack_user or slack_channel:
            return ("user" if slack_user else "channel"), text
        if discord_id:
            raise UserError(
                f"{text!r} is not a Slack id: Slack user ids start with U or W, channel ids with C "
                f"or G; or pick the person from Slack's autocomplete"
            )
    elif who.platform == "discord":
        if discord_id:
            return "user", text
        if slack_user or slack_channel:
            raise UserError(
                f"{text!r} is not a Discord id: Discord ids are numbers; or pick the person from "
                f"Discord's autocomplete"
            )
    elif slack_user or discord_id or slack_channel:  # console, CLI: either kind of id
        return ("channel" if slack_channel else "user"), text
    raise UserError(f"{text!r} is not a target; use @user, #channel or 'workspace'")


def _shown(values: dict[str, int | None]) -> str:
    names = {column: name for name, column in quota.LIMIT_FIELDS.items()}
    parts = []
    for column, value in values.items():
        name = names.get(column, column)
        if value == quota.UNLIMITED:
            parts.append(f"{name}=unlimited")
        elif value is None:
            parts.append(f"{name}=default")
        else:
            parts.append(f"{name}={value if name.endswith('images') else format_usd(value)}")
    return ", ".join(parts)


async def admin(core: Core, who: Requester, args: str, *, platform_admin: bool) -> Reply:
    """`/imagine-admin quota <@user|#channel|workspace> <limits>` and `/imagine-admin report --all`, in the
    caller's tenant; see the module docstring for who may do which."""
    operator = core.is_operator(who)
    if not operator and not platform_admin:
        return Reply("Only admins can use /imagine-admin (IMAGEBOT_ADMINS, or workspace/server admins).")
    tenant = quota.Tenant.of(who)
    words = args.split()
    if words[:1] == ["quota"] and len(words) >= 3:
        scope, key = parse_target(words[1], who)
        if scope == "workspace" and not operator:
            place = _place(who)
            return Reply(
                f"Only operators (IMAGEBOT_ADMINS) can set this {place}'s own limit; as a {place} admin "
                f"you set limits for its users (@user) and channels (#channel). Its limit stays the "
                f"operators' (IMAGEBOT_WORKSPACE_MONTHLY_USD unless they set one)."
            )
        values = quota.parse_limits(words[2:])
        await core.ledger.set_limits(scope, key, values, tenant=tenant)
        return Reply(f"Limits for {scope} {key} set: {_shown(values)} (in {tenant}).")
    if words[:1] == ["report"]:
        days = parse_days(" ".join(w for w in words[1:] if w != "--all"))
        built = await report.build(core.ledger, tenant=None if operator else tenant, days=days)
        chart = await asyncio.to_thread(report.chart_png, built)
        return Reply(built.text(), private=True, chart=chart)
    if words[:1] == ["channel"] and len(words) >= 3:
        scope, channel = parse_target(words[1], who)
        if scope != "channel":
            raise UserError(f"{words[1]!r} is not a channel; use #channel")
        settings = [parse_channel_setting(setting) for setting in words[2:]]
        await core.ledger.run_db(lambda db: actions.set_channel_settings(db, tenant.key, channel, settings))
        shown = [
            f"{name}={'default' if value is None else text.partition('=')[2]}"
            for (name, value), text in zip(settings, words[2:], strict=True)
        ]
        return Reply(f"Channel {channel} set: {', '.join(shown)} (in {tenant}).")
    raise UserError(
        "usage: /imagine-admin quota <@user|#channel|workspace> daily_usd=N daily_images=N "
        "monthly_usd=N monthly_images=N  |  /imagine-admin channel <#channel> confirm=USD|off|default  |  "
        "/imagine-admin report --all [--days N]"
    )


def parse_channel_setting(text: str) -> tuple[str, str | None]:
    """`confirm=0.10` -> ("confirm", "100000"); `confirm=off`; `confirm=default` -> ("confirm", None)."""
    name, sep, value = text.partition("=")
    name, value = name.strip().lower(), value.strip().lower()
    if not sep or name != "confirm":
        raise UserError(
            f"{text!r} is not a channel setting; use confirm=USD (ask before renders above it), "
            "confirm=off or confirm=default"
        )
    if value == "default":
        return name, None
    if value == "off":
        return name, "off"
    try:
        return name, str(usd_micros(value))
    except ValueError as exc:
        raise UserError(f"confirm={value} {exc}, off or default") from None
