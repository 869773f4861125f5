"""Who may render, where, what, and how often (docs/rules.md §10), per tenant (a Slack workspace or Discord guild).

Every path that starts a job (a command, a mention, a reply, a button, a price check's Render) goes
through `Access.admit` from JobRunner.submit, so a rule holds everywhere at once. A refusal is a UserError
that only the requester sees, raised before anything is reserved or called. In order:
1. the place: IMAGEBOT_CHANNELS (the operators' pin), then the channel's own `on`/`off`;
2. the person: a blocked user is refused; then the allow/deny entries (Discord roles, Slack user groups,
   everyone), which admins pass;
3. the request: the channel's ceilings (`max_size`, `max_quality`, `models`); `--size auto` and
   `--quality auto` are clamped to a ceiling rather than refused; the channel's `moderation` is set;
4. the pace: `cooldown` and `max_jobs`, which the ledger checks inside the reservation's transaction
   (bot/policy/pace.py), so two commands at once cannot both slip under them.
The console and the CLI are local (whoever runs them holds the database): no access rule applies there.

Settings live in the database (bot/store/settings.py reads and writes them): a channel's, and the tenant's own
(`who:<entry>`, `block:<user>`, `cooldown`, `max_jobs`). This module only reads them as plain dicts (`Rules`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Protocol

from bot import platforms
from bot.config import MAX_COOLDOWN, MAX_JOBS, usd_micros
from bot.errors import UserError
from bot.i18n import Msg, Text, alternatives, lines, msg
from bot.model.pricing import PriceTable, format_usd
from bot.model.request import ImageRequest, Requester
from bot.model.sizes import PRESETS, Size, parse_size
from bot.policy.pace import Pace
from bot.policy.quota import Tenant
from bot.store import settings

QUALITY_RANK = {"low": 0, "medium": 1, "high": 2}
MODERATION = ("auto", "low")
EVERYONE = "everyone"
CHANNEL_USAGE = (
    "on, off, max_size=1k|2k|4k|WxH, max_quality=low|medium|high, models=NAME[,NAME], "
    "moderation=auto|low, relax=on|off, confirm=USD|off, spoiler=on|off (each =default to clear)"
)
UNCHECKABLE = msg("access.uncheckable")
TENANT_USAGE = f"cooldown=SECONDS (0-{MAX_COOLDOWN:g}), max_jobs=N (1-{MAX_JOBS}) (each =default to clear)"


class MembershipUnknown(Exception):
    """A Standing could not read a membership (a Slack user group, a Discord member's roles): the person rules
    fail closed on it, for allow and deny alike, and nothing about it may be cached."""


class Standing(Protocol):
    """What an adapter knows about the person asking (the core decides what it means)."""

    async def platform_admin(self) -> bool:
        """A Slack workspace admin/owner (of this workspace), a Discord member with Manage Server."""
        ...

    async def member_of(self, groups: Collection[str]) -> bool:
        """In any of these Discord roles / Slack user groups (ids): True if in one of them, False if provably in
        none. Raises MembershipUnknown when that cannot be told (a group that cannot be read, and the person
        is in none of those that can)."""
        ...


@dataclass(frozen=True, slots=True)
class Rules:
    """Everything that applies to one requester's channel and tenant, read in one go."""

    channel: dict[str, str]  # name -> value, as stored (`enabled`, `max_size`, `max_quality`, ...)
    tenant: dict[str, str]  # name -> value (`who:role:1` -> allow|deny, `block:U1`, `cooldown`, ...)

    def entries(self) -> dict[str, str]:
        """Who may render: `role:1`, `group:S1`, `everyone` -> allow | deny."""
        return {name[4:]: value for name, value in self.tenant.items() if name.startswith("who:")}

    def blocked(self, user: str) -> bool:
        return f"block:{user}" in self.tenant

    @classmethod
    def of(cls, place: settings.Place) -> Rules:
        """The rules in the settings of a channel and its tenant (bot/store/settings.py)."""
        return cls(place.channel, place.tenant)


def where(who: Requester) -> dict[str, str]:
    """The settings rows that apply to `who`: its tenant's (`Tenant.key`) and its channel's there, as the
    keyword arguments of `Settings.place` (bot/store/settings.py)."""
    return {"tenant": Tenant.of(who).key, "channel": who.channel}


# -- parsing what admins type (the same words in Slack, Discord's text option, the console and the CLI) --


def parse_channel_setting(text: str, models: Collection[str]) -> tuple[str, str | None]:
    """One word of `/imagine-admin channel <#channel> ...` -> (name, stored value, or None to clear).

    `on` / `off`; `max_size=2k` (a preset or WxH); `max_quality=medium`; `models=gpt-image-2[,...]`;
    `moderation=low`; `relax=on`; `confirm=0.10` / `confirm=off`; any of them `=default` to clear it.
    """
    word = text.strip().lower()
    if word in ("on", "off"):
        return "enabled", None if word == "on" else "off"
    name, sep, value = word.partition("=")
    if not sep or name not in (
        "max_size",
        "max_quality",
        "models",
        "moderation",
        "relax",
        "confirm",
        "spoiler",
    ):
        raise UserError(msg("access.not_a_channel_setting", text=repr(text), usage=CHANNEL_USAGE))
    if value == "default":
        return name, None
    if name == "max_size":
        if value == "auto":
            raise UserError(msg("access.max_size_auto"))
        try:
            size = parse_size(value)
        except UserError as exc:
            raise UserError(msg("access.max_size_bad", value=value, error=exc)) from None
        return name, str(size)
    if name == "max_quality":
        if value not in QUALITY_RANK:
            raise UserError(msg("access.max_quality_bad", value=value))
        return name, value
    if name == "models":
        chosen = [m.strip() for m in value.split(",") if m.strip()]
        unknown = [m for m in chosen if m not in models]
        if not chosen or unknown:
            raise UserError(
                msg(
                    "access.models_unknown",
                    value=value,
                    unknown=", ".join(unknown) or msg("access.no_model"),
                    models=", ".join(sorted(models)),
                )
            )
        return name, ",".join(chosen)
    if name == "spoiler":
        if value not in ("on", "off"):
            raise UserError(bad_spoiler(value))
        return name, value
    if name == "relax":
        if value not in ("on", "off"):
            raise UserError(msg("access.relax_bad", value=value))
        return name, value
    if name == "moderation":
        if value not in MODERATION:
            raise UserError(msg("access.moderation_bad", value=value))
        return name, value
    if value == "off":
        return name, "off"
    try:
        return name, str(usd_micros(value))
    except ValueError as exc:
        raise UserError(msg("access.confirm_bad", value=value, error=exc)) from None


def parse_tenant_setting(text: str) -> tuple[str, str | None]:
    """One word of `/imagine-admin settings ...`: `cooldown=30`, `max_jobs=2`, either `=default`."""
    name, sep, value = text.strip().lower().partition("=")
    if not sep or name not in ("cooldown", "max_jobs"):
        raise UserError(msg("access.not_a_setting", text=repr(text), usage=TENANT_USAGE))
    if value == "default":
        return name, None
    if name == "cooldown":
        try:
            seconds = float(value.removesuffix("s"))
        except ValueError:
            seconds = -1.0
        if not 0 <= seconds <= MAX_COOLDOWN:
            raise UserError(msg("access.cooldown_range", value=value, most=f"{MAX_COOLDOWN:g}"))
        return name, f"{seconds:g}"
    if not value.isdigit() or not 1 <= int(value) <= MAX_JOBS:
        raise UserError(msg("access.max_jobs_range", value=value, most=MAX_JOBS))
    return name, str(int(value))


def entry(kind: str, ident: str) -> str:
    """How an allow/deny target is stored: a role -> `role:1`, a user group -> `group:S1`, everyone -> `everyone`
    (the adapter read it from its platform's mention: adapters/mentions.py)."""
    return EVERYONE if kind == EVERYONE else f"{kind}:{ident}"


def shown_group(entry: str) -> str:
    """How a stored entry reads on its platform (a mention there)."""
    kind, _, ident = entry.partition(":")
    if kind == "role":
        return f"<@&{ident}>"
    if kind == "group":
        return f"<!subteam^{ident}>"
    return "everyone"


# -- deciding ----------------------------------------------------------------------------------------------


@dataclass
class Access:
    """The rules of docs/rules.md §10 for every tenant, with the operators' defaults from the environment."""

    prices: PriceTable
    admins: frozenset[str] = frozenset()
    channels: frozenset[str] | None = None  # IMAGEBOT_CHANNELS
    cooldown: float = 0.0  # IMAGEBOT_USER_COOLDOWN
    max_jobs: int = 4  # IMAGEBOT_USER_MAX_JOBS

    def is_operator(self, who: Requester) -> bool:
        """An operator (IMAGEBOT_ADMINS): every tenant, every limit. A bare id there matches that user id on any
        platform; `slack:U1` / `discord:42` only on that platform. Whoever runs the console or the CLI is one."""
        if platforms.is_local(who.platform):
            return True
        return who.user in self.admins or f"{who.platform}:{who.user}" in self.admins

    def pace(self, rules: Rules) -> Pace:
        return Pace(
            cooldown=float(rules.tenant.get("cooldown", self.cooldown)),
            max_jobs=int(rules.tenant.get("max_jobs", self.max_jobs)),
        )

    def check_place(self, who: Requester, rules: Rules) -> None:
        """IMAGEBOT_CHANNELS, then the channel's `off`."""
        if platforms.is_local(who.platform):
            return
        if self.channels is not None and not (
            who.channel in self.channels or f"{who.platform}:{who.channel}" in self.channels
        ):
            raise UserError(msg("access.channel_not_listed"))
        if rules.channel.get("enabled") == "off":
            raise UserError(msg("access.channel_off"))

    async def check_person(self, who: Requester, rules: Rules, standing: Standing | None) -> None:
        """Blocked users, then the allow/deny entries (which admins pass)."""
        if self.is_operator(who):  # the console and the CLI are local: operators
            return
        if rules.blocked(who.user):
            raise UserError(msg("access.blocked"))
        entries = rules.entries()
        if not entries:
            return
        if standing is not None and await standing.platform_admin():
            return
        groups = {e: v for e, v in entries.items() if e != EVERYONE}
        ids = lambda wanted: [e.partition(":")[2] for e, v in groups.items() if v == wanted]  # noqa: E731
        denied, allowed = ids("deny"), ids("allow")
        member = standing.member_of if standing is not None else None
        everyone = entries.get(EVERYONE)
        # A membership that cannot be read (MembershipUnknown) fails closed, for a deny as for an allow, whenever
        # it could change the answer: the refusal then says access cannot be checked, not a guess.
        unsure = False
        if denied and member is not None:
            try:
                if await member(denied):
                    raise UserError(self._who_text(who, entries, msg("access.in_denied_group")))
            except MembershipUnknown:
                unsure = True
        if not (everyone == "allow" or (everyone is None and not allowed)):  # only members of `allowed` pass
            try:
                inside = bool(allowed) and member is not None and await member(allowed)
            except MembershipUnknown:
                raise UserError(UNCHECKABLE) from None
            if not inside:
                raise UserError(self._who_text(who, entries, msg("access.in_no_allowed_group")))
        if unsure:
            raise UserError(UNCHECKABLE)

    @staticmethod
    def _who_text(who: Requester, entries: dict[str, str], why: str) -> str:
        allowed = [shown_group(e) for e, v in entries.items() if v == "allow" and e != EVERYONE]
        if allowed:
            return (
                f"Only members of {', '.join(allowed)} (and admins) may render here; {why}. "
                "Nothing was charged."
            )
        if entries.get(EVERYONE) == "deny":
            return f"Only admins may render here ({why}). Nothing was charged."
        return f"You may not render here: {why}. Nothing was charged."

    def within(self, request: ImageRequest, rules: Rules) -> ImageRequest:
        """The channel's ceilings: refuse what is above one (naming it), clamp `auto` to it, set moderation."""
        ceilings = rules.channel
        notes: list[Msg] = []
        models = [m for m in ceilings.get("models", "").split(",") if m]
        if models and request.model not in models:
            raise UserError(
                msg("access.model_not_allowed", model=request.model, models=",".join(models), first=models[0])
            )
        if "max_size" in ceilings:
            try:
                request, note = self._size_within(request, ceilings["max_size"])
            except UserError as exc:
                raise _yours(exc, request, "size") from None
            notes += note
        if "max_quality" in ceilings:
            ceiling = ceilings["max_quality"]
            if request.quality == "auto":
                if ceiling != "high":
                    request = replace(request, quality=ceiling)
                    notes.append(msg("access.quality_clamped", ceiling=ceiling))
            elif QUALITY_RANK.get(request.quality, 2) > QUALITY_RANK[ceiling]:
                allowed = [q for q, rank in QUALITY_RANK.items() if rank <= QUALITY_RANK[ceiling]]
                raise _yours(
                    UserError(
                        msg(
                            "access.quality_above",
                            quality=request.quality,
                            ceiling=ceiling,
                            allowed=alternatives(allowed),
                        )
                    ),
                    request,
                    "quality",
                )
        request = replace(request, spoiler=ceilings.get("spoiler") == "on")
        if request.relax is None:  # the channel's default mode; --relax / --fast say otherwise
            request = replace(request, relax=ceilings.get("relax") == "on")
        moderation = ceilings.get("moderation")
        if moderation and not request.is_edit:  # the edits endpoint takes no moderation parameter
            request = replace(request, moderation=moderation)
        if notes:
            request = replace(request, notes=request.notes + tuple(notes))
        return request

    def _size_within(self, request: ImageRequest, ceiling_text: str) -> tuple[ImageRequest, list[Msg]]:
        ceiling = parse_size(ceiling_text)
        named = next((n for n, wh in PRESETS.items() if wh == (ceiling.width, ceiling.height)), str(ceiling))
        shown = f"max_size={named} ({ceiling}, {ceiling.pixels / 1e6:.2f} MP)"
        if not request.size.is_auto:
            if request.size.pixels > ceiling.pixels:
                raise UserError(
                    msg("access.size_above", size=str(request.size), shown=shown, ceiling=str(ceiling))
                )
            return request, []
        model = self.prices.model(request.model)
        if max(w * h for w, h in model.auto_sizes) <= ceiling.pixels:
            return request, []
        rule = model.capabilities.sizes
        fits = [Size(w, h) for w, h in (rule.fixed or ((ceiling.width, ceiling.height),))]
        fits = [s for s in fits if s.pixels <= ceiling.pixels and rule.problem(s.width, s.height) is None]
        if not fits:
            raise UserError(msg("access.size_auto_above", shown=shown))
        clamped = max(fits, key=lambda s: s.pixels)
        return replace(request, size=clamped), [msg("access.size_clamped", size=str(clamped), shown=shown)]

    async def admit(
        self, db_rules: Rules, who: Requester, request: ImageRequest, standing: Standing | None
    ) -> tuple[ImageRequest, Pace | None]:
        """The request as it may run (clamped, with moderation) and the pace the reservation must respect.
        Raises UserError, privately for the requester."""
        self.check_place(who, db_rules)
        await self.check_person(who, db_rules, standing)
        if platforms.is_local(who.platform):
            return request, None
        return self.within(request, db_rules), self.pace(db_rules)


def _yours(refusal: UserError, request: ImageRequest, name: str) -> UserError:
    """A channel's refusal of a value; when that value was the requester's own default (/imagine-settings),
    the refusal says so, since they did not type it."""
    if name not in request.defaulted:
        return refusal
    return UserError(f"{refusal} {from_your_default(name)}")


def describe(
    access: Access, tenant: Tenant, rules_by_channel: dict[str, dict[str, str]], own: dict[str, str]
) -> Text:
    """`/imagine-admin settings`: the tenant's rules, its channels' settings and the operators' defaults."""
    platform = tenant.platform
    said: list[object] = [msg("access.settings_for", tenant=str(tenant))]
    if access.channels is not None:
        said.append(msg("access.settings_channels", channels=", ".join(sorted(access.channels))))
    entries = Rules({}, own).entries()
    allowed = [shown_group(e) for e, v in entries.items() if v == "allow"]
    denied = [shown_group(e) for e, v in entries.items() if v == "deny"]
    if not entries:
        said.append(msg("access.settings_everyone"))
    else:
        if allowed:
            said.append(msg("access.settings_allowed", groups=", ".join(allowed)))
        if denied:
            said.append(msg("access.settings_denied", groups=", ".join(denied)))
    blocked = sorted(n[6:] for n in own if n.startswith("block:"))
    who = ", ".join(_user(u, platform) for u in blocked) if blocked else msg("access.settings_nobody")
    said.append(msg("access.settings_blocked", users=who))
    cooldown = own.get("cooldown")
    max_jobs = own.get("max_jobs")
    said.append(
        msg(
            "access.settings_cooldown",
            seconds=cooldown or f"{access.cooldown:g}",
            default="" if cooldown else " (IMAGEBOT_USER_COOLDOWN)",
        )
    )
    said.append(
        msg(
            "access.settings_max_jobs",
            most=max_jobs or access.max_jobs,
            default="" if max_jobs else " (IMAGEBOT_USER_MAX_JOBS)",
        )
    )
    if rules_by_channel:
        said.append(msg("access.settings_channels_head"))
        for channel, settings in sorted(rules_by_channel.items()):
            said.append(
                f"- <#{channel}>: {', '.join(shown_setting(n, v) for n, v in sorted(settings.items()))}"
            )
    else:
        said.append(msg("access.settings_no_channels"))
    return lines(said)


def _user(user: str, platform: str) -> str:
    return f"<@{user}>" if platforms.of(platform).mentions else user


def shown_setting(name: str, value: str | None) -> str:
    """A stored channel setting as an admin would type it (None: cleared, back to the default)."""
    if name == "enabled":
        return "off" if value == "off" else "on"
    if value is None:
        return f"{name}=default"
    if name == "confirm" and value != "off":
        return f"confirm={format_usd(int(value))}"
    return f"{name}={value}"


def bad_spoiler(value: str) -> Msg:
    """`/imagine-admin channel #c spoiler=...` with a value other than on or off."""
    return msg("people.bad_spoiler", value=value)


def from_your_default(name: str) -> Msg:
    """Added to a channel's refusal when the refused value was the requester's own default."""
    return msg("people.from_your_default", name=name)
