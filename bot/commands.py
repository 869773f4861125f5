"""The non-image commands every adapter offers: usage reports, quota, admin (docs/rules.md §2, §6).

Who may do what (docs/rules.md §2), always inside the caller's tenant (its Slack workspace or Discord guild):
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
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast

from bot import platforms, report
from bot.app import Core
from bot.errors import UserError
from bot.i18n import ENGLISH, Msg, lazy, msg, say, usd
from bot.jobs import card, texts
from bot.model.pricing import format_usd
from bot.model.request import Requester
from bot.policy import access, quota, signin
from bot.store.ledger import QuotaLine

log = logging.getLogger("imagebot.commands")
MAX_DAYS = 366


@dataclass(frozen=True, slots=True)
class Reply:
    """What to show: text, whether only the caller sees it, and an optional PNG chart."""

    text: str  # a Text (bot/i18n.py): the adapter says it in the reader's language
    private: bool = True
    chart: bytes | None = None


def parse_days(args: str) -> int:
    match = re.fullmatch(r"\s*(?:--days[ =]+(\S+))?\s*", args)
    if not match:
        raise UserError(msg("commands.usage_args", args=repr(args.strip()), most=MAX_DAYS))
    if match[1] is None:
        return 30
    if not match[1].isdigit():
        raise UserError(msg("commands.days_not_whole", value=repr(match[1]), most=MAX_DAYS))
    if not 1 <= int(match[1]) <= MAX_DAYS:
        raise UserError(msg("commands.days_range", value=match[1], most=MAX_DAYS))
    return int(match[1])


async def usage(core: Core, who: Requester, args: str) -> Reply:
    """`/imagine-usage [--days N]`: the channel's report with its chart, posted to the channel."""
    days = parse_days(args)
    await core.may_render(who, None, person=False)  # a channel that is off (or a blocked user) gets no report
    built = await report.build(core.ledger, tenant=quota.Tenant.of(who), channel=who.channel, days=days)
    chart = await asyncio.to_thread(report.chart_png, built)
    return Reply(lazy(built.text), private=False, chart=chart)


async def my_quota(core: Core, who: Requester) -> Reply:
    """`/imagine-quota`: the caller's own limits and what is left, privately (no channel's lines when asked
    from no channel, as on the Slack Home tab)."""
    lines = [
        line
        for line in await core.ledger.quota_lines(who)
        if who.channel or quota.LABELS.get(line.label) != "channel_month"
    ]
    if not lines:
        return Reply(msg("commands.no_limits"))
    return Reply(lazy(_quota_text, tuple(lines)))


def _quota_text(lines: tuple[QuotaLine, ...], locale: str = ENGLISH) -> str:
    """`/imagine-quota`'s answer: each limit, what is used and left, when it resets."""
    return say(locale, "commands.your_quota") + "".join(
        "\n"
        + say(
            locale,
            "commands.quota_line",
            label=quota.label_text(line.label),
            used=line.used,
            limit=line.limit,
            left=line.left,
            resets=line.resets.strftime("%Y-%m-%d %H:%M %Z"),
        )
        for line in lines
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
    """The Home tab's content for `who` (docs/rules.md §10)."""
    tenant = quota.Tenant.of(who)
    month = quota.Periods.at(core.ledger.clock(), core.ledger.timezone).month

    jobs, spent = await core.ledger.usage.home(
        platform=who.platform, workspace=who.workspace, user=who.user, month=month, limit=RECENT_IMAGES
    )
    recent = tuple(
        Recent(
            job.prompt or msg("commands.prompt_not_stored"),
            job.size,
            usd(job.micros),
            json.loads(job.context or "{}"),
        )
        for job in jobs
    )
    admin = core.is_admin(who, platform_admin)
    return Home(
        quota=(await my_quota(core, who)).text,
        recent=recent,
        settings=await _settings_text(core, tenant) if admin else None,
        spend=msg("commands.home_spend", spent=usd(spent), tenant=str(tenant), month=month)
        if admin
        else None,
    )


TargetKind = Literal["user", "channel", "workspace", "role", "group", "everyone"]
EVERYONE: Literal["everyone"] = "everyone"
Verb = Literal[
    "quota", "report", "channel", "allow", "deny", "block", "unblock", "settings", "dashboard", "help"
]
CHANGES = frozenset({"quota", "channel", "allow", "deny", "block", "unblock", "settings"})


# -- your settings, a job's card, your history ---------------------------------------------------------------


def _here(who: Requester) -> Msg:
    place = platforms.of(who.platform)
    return msg("people.here.local" if place.local else f"people.here.{place.tenant}")


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
    return platforms.of(who.platform).name


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """Whom or what an admin command names, as the adapter read it from its platform's mention or typed option:
    a user, a channel, the caller's own tenant (`workspace`), a role, a user group, or everyone. `shown`: as the
    admin wrote it (for the replies that quote it)."""

    kind: TargetKind
    id: str = ""  # empty for `workspace` (the caller's) and `everyone`
    shown: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminRequest:
    """One `/imagine-admin` command, typed. `words`: its settings or limits as typed (`name=value`).
    `refusal`: why the adapter could not read it (said once the caller is known to be an admin)."""

    verb: Verb
    target: Target | None = None
    words: tuple[str, ...] = ()
    days: int = 30
    refusal: str | None = None

    @property
    def text(self) -> str:
        shown = self.target.shown if self.target is not None else ""
        return " ".join(part for part in (self.verb, shown, *self.words) if part)


class Mentions(Protocol):
    """An adapter's reader of its platform's mentions (adapters/mentions.py). Raises UserError."""

    def target(self, text: str) -> Target:
        """A user, a channel, or the caller's tenant (`workspace`)."""
        ...

    def group(self, text: str) -> Target:
        """A role, a user group, or everyone (for allow/deny)."""
        ...


def parse_admin(args: str, mentions: Mentions) -> AdminRequest:
    """`/imagine-admin` text (HELP's grammar) -> its typed request, the targets read by the platform's
    `mentions`. What cannot be read comes back as a `refusal`, said only to an admin (`admin`)."""
    words = args.split()
    verb = cast(Verb, words[0] if words else "help")
    try:
        if verb in ("quota", "channel") and len(words) >= 3:
            return AdminRequest(verb=verb, target=mentions.target(words[1]), words=tuple(words[2:]))
        if verb == "report":
            return AdminRequest(
                verb="report", days=parse_days(" ".join(w for w in words[1:] if w != "--all"))
            )
        if verb in ("allow", "deny") and len(words) == 2:
            return AdminRequest(verb=verb, target=mentions.group(words[1]))
        if verb in ("block", "unblock") and len(words) == 2:
            return AdminRequest(verb=verb, target=mentions.target(words[1]))
        if verb == "settings":
            return AdminRequest(verb="settings", words=tuple(words[1:]))
        if verb == "dashboard" and len(words) == 1:
            return AdminRequest(verb="dashboard")
        if verb == "help":
            return AdminRequest(verb="help")
        raise UserError(_unknown(args))
    except UserError as exc:
        return AdminRequest(verb="help", refusal=str(exc))


def _unknown(args: str) -> str:
    return f"unknown or incomplete /imagine-admin command {args.strip()!r}.\n{HELP}"


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
    core: Core, who: Requester, request: AdminRequest, *, platform_admin: bool, operator: bool | None = None
) -> Reply:
    """`/imagine-admin <verb> ...` (HELP), typed by the adapter (`parse_admin`, or its typed options), in the
    caller's tenant; see the module docstring for who may do which. `operator`: the CLI acts as an operator of
    the tenant it names."""
    operator = core.is_operator(who) if operator is None else operator
    if not operator and not platform_admin:
        return Reply(msg("commands.admins_only"))
    if request.refusal is not None:
        raise UserError(request.refusal)
    tenant = quota.Tenant.of(who)
    verb, target, words = request.verb, request.target, request.words
    if verb == "dashboard":
        return await dashboard_link(core, who, operator=operator)
    if verb in ("quota", "channel") and not words:
        raise UserError(_unknown(request.text))
    if verb == "quota" and target is not None:
        scope, key = target.kind, target.id if target.kind != "workspace" else who.workspace
        if scope == "workspace" and not operator:
            place = platforms.of(who.platform).tenant
            return Reply(msg("commands.operators_only", place=msg(f"commands.place.{place}")))
        values = quota.parse_limits(list(words))
        await core.ledger.set_limits(scope, key, values, tenant=tenant)
        _changed(who, request, operator)
        return Reply(
            msg(
                "commands.limits_set",
                scope=msg(f"ledger.scope.{scope}"),
                key=key,
                shown=_shown(values),
                tenant=str(tenant),
            )
        )
    if verb == "report":
        built = await report.build(core.ledger, tenant=None if operator else tenant, days=request.days)
        chart = await asyncio.to_thread(report.chart_png, built)
        return Reply(lazy(built.text), private=True, chart=chart)
    if verb == "channel" and target is not None:
        if target.kind != "channel":
            raise UserError(msg("commands.not_a_channel", text=repr(target.shown)))
        channel = target.id
        changes = [access.parse_channel_setting(word, core.prices.models) for word in words]
        await core.ledger.settings.set_channel(tenant=tenant.key, channel=channel, changes=changes)
        _changed(who, request, operator)
        return Reply(
            msg(
                "commands.channel_set",
                channel=f"<#{channel}>",
                shown=", ".join(access.shown_setting(*c) for c in changes),
                tenant=str(tenant),
            )
        )
    if verb in ("allow", "deny") and target is not None:
        entry = access.entry(target.kind, target.id)
        await core.ledger.settings.set_tenant(tenant=tenant.key, changes=[(f"who:{entry}", verb)])
        _changed(who, request, operator)
        return Reply(
            msg(
                "commands.allowed" if verb == "allow" else "commands.denied",
                group=access.shown_group(entry),
                tenant=str(tenant),
                settings=await _settings_text(core, tenant),
            )
        )
    if verb in ("block", "unblock") and target is not None:
        if target.kind != "user":
            raise UserError(msg("commands.not_a_person", text=repr(target.shown), verb=verb))
        user = target.id
        value = "1" if verb == "block" else None
        await core.ledger.settings.set_tenant(tenant=tenant.key, changes=[(f"block:{user}", value)])
        _changed(who, request, operator)
        return Reply(
            msg("commands.blocked" if value else "commands.unblocked", user=f"<@{user}>", tenant=str(tenant))
        )
    if verb == "settings":
        changes = [access.parse_tenant_setting(word) for word in words]
        if changes:
            await core.ledger.settings.set_tenant(tenant=tenant.key, changes=changes)
            _changed(who, request, operator)
        return Reply(await _settings_text(core, tenant))
    return Reply(HELP)


def _changed(who: Requester, request: AdminRequest, operator: bool) -> None:
    """The one log line of a change an admin made, in chat or on the dashboard (both come through `admin`)."""
    log.info(
        "admin command",
        extra={
            "tenant": str(quota.Tenant.of(who)),
            "user": who.user,
            "verb": request.verb,
            "words": request.text,
            "operator": operator,
        },
    )


async def dashboard_link(core: Core, who: Requester, *, operator: bool) -> Reply:
    """`/imagine-admin dashboard`: a one-time sign-in link to the tenant's web dashboard, only for the asker
    (bot/policy/signin.py: 15 minutes, once). The link is never logged."""
    now = core.ledger.clock()
    secret = await core.ledger.run_db(lambda db: signin.issue_link(db, who, operator=operator, now=now))
    log.info("dashboard link issued", extra={"tenant": str(quota.Tenant.of(who)), "user": who.user})
    minutes = int(signin.LINK_TTL.total_seconds() // 60)
    return Reply(
        msg(
            "commands.dashboard_link",
            tenant=str(quota.Tenant.of(who)),
            minutes=minutes,
            link=f"{core.settings.public_url}/dashboard/signin/{secret}",
        ),
        private=True,
    )


HELP = msg("commands.help")


async def settings_text(core: Core, tenant: quota.Tenant) -> str:
    """`/imagine-admin settings`' text: the tenant's access rules, its channels' settings, the defaults."""
    return await _settings_text(core, tenant)


async def _settings_text(core: Core, tenant: quota.Tenant) -> str:
    found = await core.ledger.settings.of_tenant(tenant=tenant.key)
    return access.describe(core.access, tenant, found.channels, found.own)
