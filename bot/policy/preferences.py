"""Each person's own defaults, per tenant (`/imagine-settings`): size (a preset with an aspect ratio, or
WxH), quality, format, count, relax or fast, and language.

They fill in only what a request leaves unsaid: a flag (or a Discord option) always wins. The result then
meets the channel's ceilings and rules exactly as the same value typed by hand would (bot/policy/access.py):
a default above `max_quality` is refused as `--quality high` would be, and so on, and the refusal says that
the value came from the person's defaults. The language is kept for the words the bot says to that person
(`Preferences.language`); prompts are never touched.

Stored as name/value rows of one person in one tenant (bot/store/people.py); a change is checked whole
before anything is written, so a bad word changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace

from bot.errors import UserError
from bot.i18n import Msg, msg
from bot.model.pricing import PriceTable
from bot.model.request import FORMATS, MAX_COUNT, QUALITIES, Defaults, build_request, split_flags
from bot.model.sizes import parse_ratio, parse_size

LANGUAGES = ("en", "zh-CN")
MODES = ("fast", "relax")
# The words of this rule's refusals (the sentences are the catalogs', bot/locale/).
SETTINGS_USAGE = msg("people.settings_usage")
SIZE_VALUES = msg("people.size_values")
AR_VALUES = msg("people.ar_values")


def unknown_setting(word: str) -> Msg:
    """A word of /imagine-settings that names no setting."""
    return msg("people.unknown_setting", word=repr(word), usage=SETTINGS_USAGE)


def bad_setting(name: str, value: str, valid: str, why: str = "") -> Msg:
    """A setting given a value it cannot take."""
    return msg("people.bad_setting", name=name, value=value, valid=valid, because=f" ({why})" if why else "")


def settings_conflict(why: str) -> Msg:
    """Settings that are each fine but together would not make a request."""
    return msg("people.settings_conflict", why=why)


# The flags a request takes that are also settings; any other flag in /imagine-settings is refused.
_FLAG_SETTINGS = ("size", "ar", "quality", "format", "count")


@dataclass(frozen=True, slots=True)
class Preferences:
    """One person's defaults in one tenant; None: not set (the operators' default applies)."""

    size: str | None = None  # auto, 1k, 2k, 4k or WxH
    ar: str | None = None  # W:H, with a 1k/2k/4k size
    quality: str | None = None
    format: str | None = None
    count: int | None = None
    mode: str | None = None  # fast | relax
    language: str | None = None  # en | zh-CN

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_stored(cls, rows: Mapping[str, str]) -> Preferences:
        """From the stored rows; a name this version does not know is ignored."""
        known = {name: value for name, value in rows.items() if name in cls.names()}
        if "count" in known:
            known["count"] = int(known["count"])  # type: ignore[assignment]
        return cls(**known)  # type: ignore[arg-type]

    def stored(self) -> dict[str, str | None]:
        """Every setting as its stored text (None: not set, its row deleted)."""
        return {
            name: None if getattr(self, name) is None else str(getattr(self, name)) for name in self.names()
        }

    @property
    def relax(self) -> bool | None:
        return None if self.mode is None else self.mode == "relax"

    def over(self, base: Defaults) -> Defaults:
        """The operators' defaults with this person's on top; `given` names those that came from here."""
        given = frozenset(
            name for name in ("size", "ar", "quality", "format", "count", "mode") if getattr(self, name)
        )
        return replace(
            base,
            size=self.size or base.size,
            ar=self.ar or base.ar,
            quality=self.quality or base.quality,
            format=self.format or base.format,
            count=self.count or base.count,
            relax=self.relax if self.relax is not None else base.relax,
            given=given,
        )


def parse_changes(text: str, prices: PriceTable, model: str) -> list[tuple[str, str | None]]:
    """What `/imagine-settings ...` asks to change: `size=2k quality=high`, the same as flags (`--size 2k
    --quality high --relax`), `mode=fast`, `language=zh-CN`, `NAME=default` (back to the operators'
    default) or `reset` (all of them). Each value is checked (sizes by `model`'s rule). UserError naming
    the valid settings and values; nothing is returned (so nothing is written) unless every word is good."""
    rest, flags = split_flags(text)
    changes: list[tuple[str, str]] = []
    for name, value in flags.items():
        if name in ("relax", "fast"):
            changes.append(("mode", name))
        elif name in _FLAG_SETTINGS:
            changes.append((name, value))
        else:
            raise UserError(unknown_setting(f"--{name}"))
    for word in rest.split():
        if word.lower() == "reset":
            changes += [(name, "default") for name in Preferences.names()]
            continue
        if word.lower() in MODES:
            changes.append(("mode", word.lower()))
            continue
        name, sep, value = word.partition("=")
        name = name.strip().lower()
        if not sep or name not in Preferences.names():
            raise UserError(unknown_setting(word))
        changes.append((name, value))
    return [(name, _value(name, value, prices, model)) for name, value in changes]


def _value(name: str, value: str, prices: PriceTable, model: str) -> str | None:
    """One setting's value as stored (None: back to the default); UserError naming the valid ones."""
    text = value.strip()
    word = text.lower()
    if word == "default":
        return None
    if name == "size":
        try:
            size = parse_size(word, rule=prices.model(model).capabilities.sizes, model=model)
        except UserError as exc:
            raise UserError(bad_setting(name, text, SIZE_VALUES, str(exc))) from None
        return word if word == "auto" or word in ("1k", "2k", "4k") else str(size)
    if name == "ar":
        try:
            parse_ratio(word)
        except UserError as exc:
            raise UserError(bad_setting(name, text, AR_VALUES, str(exc))) from None
        return word
    if name == "quality" and word in QUALITIES:
        return word
    if name == "format" and word.replace("jpg", "jpeg") in FORMATS:
        return word.replace("jpg", "jpeg")
    if name == "count" and word.isascii() and word.isdigit() and 1 <= int(word) <= MAX_COUNT:
        return str(int(word))
    if name == "mode" and word in MODES:
        return word
    if name == "language":
        wanted = word.replace("_", "-")
        for language in LANGUAGES:
            if wanted in (language.lower(), language.lower().split("-")[0]):
                return language
    valid = {
        "quality": ", ".join(QUALITIES),
        "format": ", ".join(FORMATS),
        "count": f"1-{MAX_COUNT}",
        "mode": ", ".join(MODES),
        "language": ", ".join(LANGUAGES),
    }[name]
    raise UserError(bad_setting(name, text, valid))


def changed(
    current: Preferences, changes: Sequence[tuple[str, str | None]], base: Defaults, prices: PriceTable
) -> Preferences:
    """`current` with `changes`, checked whole: the defaults together must make a valid request (an `ar`
    needs a 1k/2k/4k size, say). UserError otherwise."""
    values = current.stored()
    for name, value in changes:
        values[name] = value
    chosen = Preferences.from_stored({n: v for n, v in values.items() if v is not None})
    try:
        build_request("x", prices=prices, defaults=chosen.over(base))
    except UserError as exc:
        raise UserError(settings_conflict(str(exc))) from None
    return chosen
