"""`/imagine` text, or typed options -> a validated ImageRequest (docs/rules.md §2-3), by the chosen model's rules.

`parse_request` splits the flags off the text and hands them to `build_request`, which an adapter with typed
options (Discord) calls directly: one set of rules. Nothing here spends money or calls an API.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from bot.errors import UserError
from bot.i18n import Msg, msg
from bot.model.images import ImageInput, check_mask
from bot.model.pricing import ModelCapabilities, PriceTable, load_prices
from bot.model.sizes import PRESETS, Size, parse_size

MAX_PROMPT = 32_000
QUALITIES = ("low", "medium", "high", "auto")
FORMATS = ("png", "jpeg", "webp")
MAX_COUNT = 4
DEFAULT_COMPRESSION = 85
FLAGS = ("size", "ar", "quality", "format", "compression", "count", "model", "background")

# A flag is `--name value` or `--name=value`, standing alone (not inside a word). Slack and phones
# like to turn `--` into an em or en dash, so those count too.
_FLAG = re.compile(
    r"(?:(?<=\s)|^)(?:--|\u2014|\u2013)(?P<name>"
    + "|".join(FLAGS)
    + r")(?![\w-])(?:=|[ \t]+|$)(?P<value>[^\s]*)",
    re.IGNORECASE,
)
# `--relax` and `--fast` take no value (relax mode, docs/rules.md §11).
_SWITCH = re.compile(r"(?:(?<=\s)|^)(?:--|\u2014|\u2013)(?P<name>relax|fast)(?![\w-])", re.IGNORECASE)
_TRANSPARENT = re.compile(r"\btransparent\s+(background|bg)\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asked, and where: the keys for quotas and the ledger."""

    platform: str  # slack | discord | console | cli
    workspace: str
    channel: str
    user: str


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """One validated `/imagine` (or edit): everything the API call needs."""

    prompt: str
    size: Size
    quality: str = "auto"
    format: str = "jpeg"
    compression: int | None = DEFAULT_COMPRESSION
    count: int = 1
    model: str = "gpt-image-2"
    references: tuple[ImageInput, ...] = ()
    mask: ImageInput | None = None
    notes: tuple[Msg, ...] = field(default=())  # said under the summary, in the reader's language
    moderation: str | None = None  # a channel's `moderation=` (generations only; None: the API's default)
    relax: bool | None = (
        None  # relax mode (the Batch API, half price): --relax / --fast; None: the channel's default
    )
    # Which settings came from the requester's own defaults (/imagine-settings) rather than what they typed:
    # a channel's refusal of one says so (bot/policy/access.py).
    defaulted: tuple[str, ...] = ()
    spoiler: bool = False  # the channel's `spoiler=on`: posted hidden until clicked (bot/policy/access.py)

    @property
    def is_edit(self) -> bool:
        return bool(self.references)

    def describe(self) -> str:
        """`1536x1024 high jpeg` style summary of the settings."""
        return f"{self.size} {self.quality} {self.format}"


@dataclass(frozen=True, slots=True)
class Defaults:
    """What a request that leaves a setting unsaid gets: the operators' defaults (IMAGEBOT_DEFAULT_SIZE, ...),
    with a person's own on top (bot/policy/preferences.py); `given` names the settings that are that person's."""

    size: str = "auto"
    quality: str = "auto"
    model: str = "gpt-image-2"
    format: str = "jpeg"
    count: int = 1
    ar: str | None = None  # shapes a 1k/2k/4k size (the given one or the default) when no --ar is typed
    relax: bool | None = None  # None: the channel's default mode
    given: frozenset[str] = frozenset()


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, with an ellipsis when cut (for showing prompts and replies)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def split_flags(text: str) -> tuple[str, dict[str, str]]:
    """Separate recognised flags from the prompt; the prompt keeps everything else verbatim. The switches
    `--relax` and `--fast` come back as flags with the value "on"."""
    flags: dict[str, str] = {}
    for match in _SWITCH.finditer(text):
        flags[match["name"].lower()] = "on"
    if len(flags) == 2:
        raise UserError(msg("request.relax_and_fast"))
    text = _SWITCH.sub("", text)
    pieces: list[str] = []
    last = 0
    for match in _FLAG.finditer(text):
        name = match["name"].lower()
        value = match["value"]
        if not value or value.startswith("--"):
            raise UserError(msg("request.needs_value", name=name, example=_EXAMPLES[name]))
        if name in flags:
            raise UserError(msg("request.given_twice", name=name))
        flags[name] = value
        pieces.append(text[last : match.start()])
        last = match.end()
    pieces.append(text[last:])
    # Tidy only the gap each removed flag left behind; the prompt's own spacing stays verbatim.
    for i in range(len(pieces) - 1):
        following = pieces[i + 1]
        if not following or following[0].isspace():
            pieces[i] = pieces[i].rstrip(" \t")
    prompt = "".join(pieces)
    return prompt.strip(), flags


_EXAMPLES = {
    "size": msg("request.example_size"),
    "ar": "--ar 16:9",
    "quality": "--quality high (low, medium, high, auto)",
    "format": "--format png (png, jpeg, webp)",
    "compression": "--compression 85 (0-100)",
    "count": "--count 2 (1-4)",
    "model": "--model gpt-image-2",
    "background": "--background opaque",
}


def _whole(name: str, value: str, low: int, high: int) -> int:
    """A flag's text as a whole number (its range is build_request's to check)."""
    if not (value.isascii() and value.isdigit()):
        raise UserError(msg("request.not_whole", name=name, value=repr(value), low=low, high=high))
    return int(value)


def _in_range(name: str, number: int, low: int, high: int) -> int:
    if not low <= number <= high:
        raise UserError(msg("request.out_of_range", name=name, value=number, low=low, high=high))
    return number


def check_image_count(model: str, capabilities: ModelCapabilities, references: int, mask: bool) -> None:
    """How many input images the model takes, and whether a mask: checked again before any file is downloaded
    (bot/app.py `Core.check_attachments`), from the count alone."""
    most = capabilities.max_reference_images
    if references and most == 0:
        raise UserError(msg("request.cannot_edit", model=model))
    if references > most:
        raise UserError(msg("request.too_many_images", given=references, most=most, model=model))
    if mask and not capabilities.mask:
        raise UserError(msg("request.no_mask", model=model))


def _check_images(
    model: str, capabilities: ModelCapabilities, references: Sequence[ImageInput], mask: ImageInput | None
) -> None:
    """The input images against the model's limits: how many, and whether it takes a mask."""
    check_image_count(model, capabilities, len(references), mask is not None)
    if mask is not None:
        if not references:
            raise UserError(msg("request.mask_alone"))
        check_mask(mask, references[0])


def build_request(
    prompt: str,
    *,
    prices: PriceTable,
    defaults: Defaults = Defaults(),
    size: str | None = None,
    ar: str | None = None,
    quality: str | None = None,
    format: str | None = None,
    compression: int | None = None,
    count: int | None = None,
    model: str | None = None,
    background: str | None = None,
    references: Sequence[ImageInput] = (),
    mask: ImageInput | None = None,
    relax: bool | None = None,
) -> ImageRequest:
    """Typed options (a Discord command's, or the flags parse_request split off) -> a validated ImageRequest.

    Every rule of docs/rules.md §3, checked against the chosen model's capabilities and prices from `prices`; None
    means "not given" (the default applies). Raises UserError naming the rule and the valid range.
    """
    model = model or defaults.model
    if model not in prices.models:
        raise UserError(msg("request.unknown_model", model=repr(model), models=", ".join(prices.models)))
    capabilities = prices.model(model).capabilities
    background = (background or "auto").lower()
    if background == "transparent":
        if capabilities.transparent_background:  # the API call does not send `background` (yet)
            raise UserError(msg("request.transparent_not_yet", model=model))
        raise UserError(msg("request.transparent_unsupported", model=model))
    if background not in ("auto", "opaque"):
        raise UserError(msg("request.background_bad", value=repr(background)))
    prompt = prompt.strip()
    if not prompt:
        raise UserError(msg("request.empty_prompt"))
    if len(prompt) > MAX_PROMPT:
        raise UserError(msg("request.prompt_too_long", length=f"{len(prompt):,}", most=f"{MAX_PROMPT:,}"))
    if ar is not None and size is None and defaults.size.strip().lower() not in PRESETS:
        # The size the rule needs was never typed: name what to add, not the default the user never saw.
        raise UserError(msg("request.ar_needs_size", ar=ar))
    typed = (
        {
            name
            for name, value in (("size", size), ("ar", ar), ("quality", quality), ("format", format))
            if value is not None
        }
        | ({"count"} if count is not None else set())
        | ({"mode"} if relax is not None else set())
    )
    chosen_size = size or defaults.size
    # A default aspect ratio shapes a preset size (typed or default) unless --ar is typed.
    if ar is None and defaults.ar is not None and chosen_size.strip().lower() in PRESETS:
        ar = defaults.ar
    picked = parse_size(chosen_size, ar, rule=capabilities.sizes, model=model)
    quality = (quality or defaults.quality).lower()
    if quality not in QUALITIES:
        raise UserError(msg("request.quality_bad", value=repr(quality)))
    fmt = (format or defaults.format).lower()
    if fmt == "jpg":
        fmt = "jpeg"
    if fmt not in FORMATS:
        raise UserError(msg("request.format_bad", value=repr(fmt)))
    if compression is not None:
        if fmt == "png":
            raise UserError(msg("request.compression_png"))
        compression = _in_range("compression", compression, 0, 100)
    elif fmt != "png":
        compression = DEFAULT_COMPRESSION
    count = defaults.count if count is None else _in_range("count", count, 1, MAX_COUNT)
    if relax is None:
        relax = defaults.relax
    _check_images(model, capabilities, references, mask)
    return ImageRequest(
        prompt=prompt,
        size=picked,
        quality=quality,
        format=fmt,
        compression=compression,
        count=count,
        model=model,
        references=tuple(references),
        mask=mask,
        notes=notes_for(prompt=prompt, size=picked, format=fmt, model=model, capabilities=capabilities),
        relax=relax,
        defaulted=tuple(sorted(defaults.given - typed)),
    )


def notes_for(
    *, prompt: str, size: Size, format: str, model: str, capabilities: ModelCapabilities
) -> tuple[Msg, ...]:
    """What a request's summary tells about it beyond its settings: a size the API marks as experimental, a
    transparency the model or the format cannot give. One function, so that a request made by a click
    (bot/jobs/actions.py `derive`: Vary, Upscale) tells the same as one typed."""
    notes: list[Msg] = []
    experimental = capabilities.sizes.experimental_note(size)
    if experimental:
        notes.append(experimental)
    if _TRANSPARENT.search(prompt):
        if not capabilities.transparent_background:
            notes.append(msg("request.no_transparency_model", model=model))
        elif format == "jpeg":
            notes.append(msg("request.no_transparency_jpeg"))
    return tuple(notes)


def parse_request(
    text: str,
    *,
    prices: PriceTable,
    defaults: Defaults = Defaults(),
    references: Sequence[ImageInput] = (),
    mask: ImageInput | None = None,
    options: Mapping[str, str | int | None] | None = None,
) -> ImageRequest:
    """Parse `/imagine` text: split off the flags, then build_request (one set of rules for both).

    `options`: typed values a platform already has (Discord's command options, by flag name); flags typed
    into the text still count, and giving one both ways is an error.
    """
    prompt, flags = split_flags(text)
    typed = {name: value for name, value in (options or {}).items() if value is not None}
    relax: bool | None = True if "relax" in flags else False if "fast" in flags else None
    if "relax" in typed:  # Discord's relax: option (true or false)
        if relax is not None:
            raise UserError(msg("request.relax_twice"))
        relax = bool(typed.pop("relax"))
    for name in sorted(typed.keys() & flags.keys()):
        raise UserError(msg("request.option_twice", name=name))

    def number(name: str, low: int, high: int) -> int | None:
        if name in typed:
            return _in_range(name, int(typed[name]), low, high)
        return _whole(name, flags[name], low, high) if name in flags else None

    def word(name: str) -> str | None:
        value = typed.get(name, flags.get(name))
        return None if value is None else str(value)

    return build_request(
        prompt,
        prices=prices,
        defaults=defaults,
        size=word("size"),
        ar=word("ar"),
        quality=word("quality"),
        format=word("format"),
        compression=number("compression", 0, 100),
        count=number("count", 1, MAX_COUNT),
        model=word("model"),
        background=word("background"),
        references=references,
        mask=mask,
        relax=relax,
    )


def with_images(
    request: ImageRequest,
    references: Sequence[ImageInput],
    mask: ImageInput | None = None,
    *,
    prices: PriceTable | None = None,
) -> ImageRequest:
    """The same request with (re)validated input images, against its model's limits in `prices` (default:
    the shipped table; a model it lacks gets gpt-image-2's rules)."""
    table = prices if prices is not None else load_prices()
    model = table.models.get(request.model)
    _check_images(request.model, model.capabilities if model else ModelCapabilities(), references, mask)
    return replace(request, references=tuple(references), mask=mask)
