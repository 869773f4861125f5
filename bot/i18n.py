"""Every sentence the bot says to people, in their language: English or Simplified Chinese.

The words live in gettext catalogs, `bot/locale/<language>/LC_MESSAGES/imagebot.po` (`en`, `zh_CN`), and
nowhere else. How they are written:

- Message ids are symbolic, `area.what` (`sizes.not_a_size`, `access.channel_off`, `summary.done`): an id
  names a sentence, so rewording the English does not orphan its translations. The English catalog holds
  the English words; a sentence missing (or left empty or fuzzy) in another catalog is said in English,
  never as its id.
- Placeholders are Python format fields by name (`{size}`); both catalogs of an id use the same ones
  (tests/core/test_catalogs.py checks). A sentence that counts something is a gettext plural, chosen by `n`.
- Prompts, file names and what another service said are data, never translated: they are placeholders.

The `.po` files are the only source. Each is compiled with Babel (`read_po` + `write_mo`, in memory) the
first time a language is used in a process and loaded as gettext translations: there is no build step to
remember and no compiled file to go stale.

The core rarely knows who will read a sentence, so it builds a `Msg` (`msg("sizes.not_a_size", ...)`): a
`str` whose value is the English text (logs, `str(exc)` and the console read as before) that can say itself
in another language with `.render(locale)`. An adapter, which knows the reader, calls `translate(text,
locale)` on whatever it shows. `lazy(fn, ...)` does the same for a function of bot/jobs/texts.py that takes a
`locale`.
"""

from __future__ import annotations

import functools
import gettext
import io
import logging
import string
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from babel import Locale
from babel.dates import format_datetime, format_time
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal

log = logging.getLogger("imagebot.i18n")

DOMAIN = "imagebot"
LOCALE_DIR = Path(__file__).parent / "locale"
ENGLISH = "en"
CHINESE = "zh-CN"
LANGUAGES = (ENGLISH, CHINESE)  # what a user's `language` setting may be
# Platform locales read as Simplified Chinese (Discord sends `zh-CN`; Slack `zh-CN`; BCP 47 variants).
_SIMPLIFIED = {"zh", "zh-cn", "zh-sg", "zh-hans", "zh-hans-cn", "zh-hans-sg", "zh-my"}
_MICRO = Decimal(1_000_000)


def supported(tag: str | None) -> str | None:
    """The language of ours a locale tag asks for (`en-GB` -> `en`, `zh_CN` -> `zh-CN`), or None."""
    if not tag:
        return None
    text = tag.strip().replace("_", "-").lower()
    if text in _SIMPLIFIED:
        return CHINESE
    if text == "en" or text.startswith("en-"):
        return ENGLISH
    return None


def language_for(setting: str | None, platform_locale: str | None = None) -> str:
    """The language to speak to someone: their own setting, else their platform's locale (Discord's
    `interaction.locale`, Slack's `users.info` locale), else English. Traditional Chinese and the languages
    we have no catalog for get English."""
    return supported(setting) or supported(platform_locale) or ENGLISH


def _babel_locale(language: str) -> Locale:
    return Locale.parse(language.replace("-", "_"))


class Catalogs:
    """The compiled catalogs of one locale directory, one gettext translations object per language, each
    falling back to English."""

    def __init__(self, directory: Path = LOCALE_DIR) -> None:
        self.directory = directory

    def path(self, language: str) -> Path:
        return self.directory / language.replace("-", "_") / "LC_MESSAGES" / f"{DOMAIN}.po"

    def read(self, language: str) -> Any:
        """The Babel catalog of a language, as written (for the tests and tools)."""
        with self.path(language).open("rb") as f:
            return read_po(f, locale=language.replace("-", "_"), domain=DOMAIN)

    @functools.cache  # noqa: B019 - a handful of Catalogs objects live as long as the process
    def translations(self, language: str) -> gettext.NullTranslations:
        if language == ENGLISH:
            return self._compile(ENGLISH)
        own = self._compile(language)
        own.add_fallback(self.translations(ENGLISH))
        return own

    @functools.cache  # noqa: B019
    def _own(self, language: str) -> gettext.GNUTranslations:
        return self._compile(language)

    def own(self, language: str, key: str) -> str | None:
        """`key` in `language`'s own catalog, or None if it has none (no fallback: for callers that have a
        default of their own, such as Discord's command localizations)."""
        found = self._own(language).gettext(key)
        return None if found == key else found

    def _compile(self, language: str) -> gettext.GNUTranslations:
        catalog = self.read(language)
        for message in list(catalog):
            # Untranslated (empty, or a plural with an empty form) falls back to English.
            forms = message.string if isinstance(message.string, tuple) else (message.string,)
            if message.id and not all(forms):
                catalog.delete(message.id)
        data = io.BytesIO()
        write_mo(data, catalog)  # fuzzy entries are left out too
        data.seek(0)
        return gettext.GNUTranslations(data)

    def template(self, language: str, key: str, n: int | None = None) -> str:
        """The words of `key` in `language` (English if that catalog lacks them)."""
        chosen = language if language in LANGUAGES else ENGLISH
        found = self.translations(chosen)
        return found.gettext(key) if n is None else found.ngettext(key, key, n)

    def say(
        self, language: str, key: str, n: int | None = None, params: Mapping[str, Any] | None = None
    ) -> str:
        """`key` in `language` with its placeholders filled (each a `Text` said in the same language)."""
        values = {name: translate(value, language) for name, value in (params or {}).items()}
        if n is not None:
            values.setdefault("n", str(n))
        text = self.template(language, key, n)
        try:
            return text.format_map(values)
        except (KeyError, IndexError, ValueError):
            if language == ENGLISH:
                raise
            log.warning("a translation does not fit its placeholders", extra={"msgid": key})
            return self.template(ENGLISH, key, n).format_map(values)


CATALOGS = Catalogs()


class Text(str):
    """A sentence for people: its value is the English text; `render(locale)` says it in another language."""

    def render(self, locale: str) -> str:
        return str.__str__(self)


class Msg(Text):
    """One catalog sentence, with its placeholders' values (`msg`)."""

    key: str
    n: int | None
    params: dict[str, Any]

    def __new__(cls, key: str, n: int | None = None, params: Mapping[str, Any] | None = None) -> Msg:
        values = dict(params or {})
        self = super().__new__(cls, CATALOGS.say(ENGLISH, key, n, values))
        self.key, self.n, self.params = key, n, values
        return self

    def render(self, locale: str) -> str:
        return CATALOGS.say(locale, self.key, self.n, self.params)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Msg, (self.key, self.n, self.params))


class Lazy(Text):
    """A function's words (one of bot/jobs/texts.py's, which takes `locale=`), said when it is known to whom."""

    fn: Callable[..., str]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def __new__(cls, fn: Callable[..., str], /, *args: Any, **kwargs: Any) -> Lazy:
        self = super().__new__(cls, fn(*args, locale=ENGLISH, **kwargs))
        self.fn, self.args, self.kwargs = fn, args, kwargs
        return self

    def render(self, locale: str) -> str:
        return self.fn(*self.args, locale=locale, **self.kwargs)

    def __reduce__(self) -> tuple[Any, ...]:  # copies and pickles call the function again
        return (functools.partial(Lazy, self.fn, **self.kwargs), self.args)


def msg(key: str, /, n: int | None = None, **params: Any) -> Msg:
    """The catalog sentence `key` with these placeholders (`n` picks a plural form and fills `{n}`)."""
    return Msg(key, n, params)


def lazy(fn: Callable[..., str], /, *args: Any, **kwargs: Any) -> Lazy:
    """`fn(*args, locale=..., **kwargs)`, said in whichever language it is rendered in."""
    return Lazy(fn, *args, **kwargs)


def say(locale: str, key: str, /, n: int | None = None, **params: Any) -> str:
    """The catalog sentence `key` in `locale` now (for code that knows its reader)."""
    return CATALOGS.say(locale, key, n, params)


def translate(text: object, locale: str) -> str:
    """Whatever is shown to people, in their language: a `Text` says itself, an error of ours says its
    message (bot/errors.py `ImagebotError.said`), anything else is data."""
    if isinstance(text, Text):
        return text.render(locale)
    if isinstance(text, BaseException):
        said = getattr(text, "said", None)
        if callable(said):
            return str(said(locale))
        if text.args and isinstance(text.args[0], Text):
            return text.args[0].render(locale)
    return str(text)


# -- numbers, money and times, as each language writes them (Babel's CLDR data) ------------------------


def money(micros: int, locale: str = ENGLISH) -> str:
    """Micro-dollars as US dollars with four decimals, enough for the cheapest image (`$0.2110`; in
    Chinese `US$0.2110`); a half is rounded to even, as `bot.model.pricing.format_usd` does (docs/rules.md §5)."""
    return format_currency(
        Decimal(micros) / _MICRO,
        "USD",
        format="¤#,##0.0000",
        locale=_babel_locale(locale),
        currency_digits=False,
    )


def number(value: float | int | Decimal, locale: str = ENGLISH, decimals: int = 0) -> str:
    """A number with `decimals` fixed decimals, grouped as the language groups digits."""
    pattern = "#,##0" + ("." + "0" * decimals if decimals else "")
    return format_decimal(value, format=pattern, locale=_babel_locale(locale))


def time_of_day(when: datetime, locale: str = ENGLISH) -> str:
    """`14:03:05 UTC`: a time, with its zone's abbreviation."""
    zone = when.strftime("%Z")
    return format_time(when, "HH:mm:ss", locale=_babel_locale(locale)) + (f" {zone}" if zone else "")


def moment(when: datetime, locale: str = ENGLISH) -> str:
    """A date and time, as the language writes a medium one (`Dec 6, 2026, 14:03:05`)."""
    return format_datetime(when, "medium", locale=_babel_locale(locale))


def usd(micros: int) -> Lazy:
    """Money as a placeholder value: said as `money` in the reader's language."""
    return lazy(money, micros)


def _either(items: tuple[str, ...], locale: str = ENGLISH) -> str:
    return say(locale, "list.or").join(items)


def alternatives(items: Sequence[str]) -> Lazy:
    """`low or medium` (a placeholder value: `or` in the reader's language)."""
    return lazy(_either, tuple(items))


def _lines(items: tuple[object, ...], locale: str = ENGLISH) -> str:
    return "\n".join(translate(item, locale) for item in items)


def lines(items: Sequence[object]) -> Lazy:
    """Several sentences (Texts, or data), one per line, each said in the reader's language."""
    return lazy(_lines, tuple(items))


def placeholders(template: str) -> set[str]:
    """The placeholder names of a catalog text (`{size}` -> `size`)."""
    return {
        field.split(".")[0].split("[")[0] for _, field, _, _ in string.Formatter().parse(template) if field
    }
