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
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot import report, texts
from bot.app import Core
from bot.errors import UserError
from bot.jobs import card
from bot.model.pricing import format_usd
from bot.model.request import Requester
from bot.policy import access, quota

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
    if not match[1].isdigit():
        raise UserError(f"--days {match[1]!r} is not a whole number; use one from 1-{MAX_DAYS}")
    if not 1 <= int(match[1]) <= MAX_DAYS:
        raise UserError(f"--days {match[1]} is out of range; use a whole number 1-{MAX_DAYS}")
    return int(match[1])


async def usage(core: Core, who: Requester, args: str) -> Reply:
    """`/imagine-usage [--days N]`: the channel's report with its chart, posted to the channel."""
    days = parse_days(args)
    await core.may_render(who, None, person=False)  # a channel that is off (or a blocked user) gets no report
    built = await report.build(core.ledger, tenant=quota.Tenant.of(who), channel=who.channel, days=days)
    chart = await asyncio.to_thread(report.chart_png, built)
    return Reply(built.text(), private=False, chart=chart)


async def my_quota(core: Core, who: Requester) -> Reply:
    """`/imagine-quota`: the caller's own limits and what is left, privately (no channel's lines when asked
    from no channel, as on the Slack Home tab)."""
    lines = [
        line
        for line in await core.ledger.quota_lines(who)
        if who.channel or quota.LABELS.get(line.label) != "channel_month"
    ]
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


@dataclass(frozen=True, slots=True)
class Recent:
    """One of a user's recent images, for the Slack Home tab."""

    prompt: str
    size: str
    cost: str
    where: dict[str, Any]  # the job's context as its adapter gave it (Slack: channel, thread_ts)


@dataclass(frozen=True, slots=True)
class Home:
    """What the Slack Home tab shows a user: their quota and last images; for admins, settings and spend."""

    quota: str
    recent: tuple[Recent, ...]
    settings: str | None = None  # admins only
    spend: str | None = None  # admins only: this month's spend in the tenant


RECENT_IMAGES = 5


async def home(core: Core, who: Requester, *, platform_admin: bool) -> Home:
    """The Home tab's content for `who` (SPEC §10)."""
    tenant = quota.Tenant.of(who)
    month = quota.Periods.at(core.ledger.clock(), core.ledger.timezone).month

    jobs, spent = await core.ledger.usage.home(
        platform=who.platform, workspace=who.workspace, user=who.user, month=month, limit=RECENT_IMAGES
    )
    recent = tuple(
        Recent(
            job.prompt or "(prompt not stored)",
            job.size,
            format_usd(job.micros),
            json.loads(job.context or "{}"),
        )
        for job in jobs
    )
    admin = core.is_admin(who, platform_admin)
    return Home(
        quota=(await my_quota(core, who)).text,
        recent=recent,
        settings=await _settings_text(core, tenant) if admin else None,
        spend=f"{format_usd(spent)} spent in {tenant} this month ({month})" if admin else None,
    )


# -- your settings, a job's card, your history ---------------------------------------------------------------


def _here(who: Requester) -> str:
    return {"slack": "in this workspace", "discord": "on this server"}.get(who.platform, "here")


async def my_settings(core: Core, who: Requester, args: str) -> Reply:
    """`/imagine-settings [NAME=VALUE ...]`: the caller's own defaults in this tenant, privately; with words,
    change them first (all or, on a bad word, none: the refusal names the valid settings and values)."""
    words = args.strip()
    if words and words.lower() not in ("show", "list"):
        mine = await core.set_preferences(who, words)
        return Reply(texts.your_settings(mine, core.defaults, _here(who), saved=True))
    return Reply(texts.your_settings(await core.preferences(who), core.defaults, _here(who)))


Link = Callable[[dict[str, Any]], str | None]


async def info(
    core: Core, who: Requester, args: str, *, platform_admin: bool, link: Link | None = None
) -> Reply:
    """`/imagine-info <job>`: a job's card (bot/jobs/card.py), privately: the caller's own, or any of their
    tenant's for an admin; "no such job" for everything else. `link`: the adapter's link to where it is shown."""
    await core.may_render(who, None, person=False)  # a channel that is off, or a blocked person: no card
    found = await card.card(core.ledger, who, args, admin=core.is_admin(who, platform_admin))
    return Reply(texts.job_card(found, link or _no_link))


async def my_history(core: Core, who: Requester, args: str, *, link: Link | None = None) -> Reply:
    """`/imagine-history [N]`: the caller's own last N jobs in this tenant (default 10), privately, each with
    its cost and (where the adapter can make one) a link to where it was posted."""
    count = card.parse_count(args)
    await core.may_render(who, None, person=False)
    return Reply(texts.history(await card.history(core.ledger, who, count), link or _no_link))


def _no_link(where: dict[str, Any]) -> str | None:
    return None


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


async def admin(
    core: Core, who: Requester, args: str, *, platform_admin: bool, operator: bool | None = None
) -> Reply:
    """`/imagine-admin <verb> ...` (HELP), in the caller's tenant; see the module docstring for who may do
    which. `operator`: the CLI acts as an operator of the tenant it names."""
    operator = core.is_operator(who) if operator is None else operator
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
        changes = [access.parse_channel_setting(word, core.prices.models) for word in words[2:]]
        await core.ledger.settings.set_channel(tenant=tenant.key, channel=channel, changes=changes)
        return Reply(
            f"Channel <#{channel}> set: {', '.join(access.shown_setting(*c) for c in changes)} (in {tenant})."
        )
    if words[:1] in (["allow"], ["deny"]) and len(words) == 2:
        entry = access.parse_group(words[1], who.platform)
        await core.ledger.settings.set_tenant(tenant=tenant.key, changes=[(f"who:{entry}", words[0])])
        return Reply(
            f"{'Allowed' if words[0] == 'allow' else 'Denied'}: {access.shown_group(entry, who.platform)} "
            f"(in {tenant}).\n" + await _settings_text(core, tenant)
        )
    if words[:1] in (["block"], ["unblock"]) and len(words) == 2:
        scope, user = parse_target(words[1], who)
        if scope != "user":
            raise UserError(f"{words[1]!r} is not a person; use /imagine-admin {words[0]} @user")
        value = "1" if words[0] == "block" else None
        await core.ledger.settings.set_tenant(tenant=tenant.key, changes=[(f"block:{user}", value)])
        return Reply(f"<@{user}> {'blocked' if value else 'unblocked'} (in {tenant}).")
    if words[:1] == ["settings"]:
        changes = [access.parse_tenant_setting(word) for word in words[1:]]
        if changes:
            await core.ledger.settings.set_tenant(tenant=tenant.key, changes=changes)
        return Reply(await _settings_text(core, tenant))
    if words[:1] == ["help"] or not words:
        return Reply(HELP)
    raise UserError(f"unknown or incomplete /imagine-admin command {args.strip()!r}.\n{HELP}")


HELP = """/imagine-admin commands (admins only; everything applies to this workspace/server):
- quota <@user|#channel|workspace> daily_usd=N daily_images=N monthly_usd=N monthly_images=N (or =default, =unlimited)
- report --all [--days N]
- channel <#channel> on|off max_size=1k|2k|4k|WxH max_quality=low|medium|high models=NAME[,NAME] moderation=auto|low relax=on|off confirm=USD|off spoiler=on|off (any =default to clear)
- allow <@role|@usergroup|everyone>  (once anything is allowed, only those members and admins may render)
- deny <@role|@usergroup|everyone>
- block <@user>  (refused everywhere, buttons and replies included)
- unblock <@user>
- settings [cooldown=SECONDS] [max_jobs=N]  (shows every setting; sets this workspace's pace)
- help"""


async def _settings_text(core: Core, tenant: quota.Tenant) -> str:
    found = await core.ledger.settings.of_tenant(tenant=tenant.key)
    return access.describe(core.access, tenant, found.channels, found.own)
