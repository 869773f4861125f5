"""`/imagine` text -> a validated ImageRequest (SPEC §2-3). Nothing here spends money or calls an API."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from .errors import UserError
from .images import MAX_REFERENCES, ImageInput, check_mask
from .pricing import PriceTable
from .sizes import Size, parse_size

MAX_PROMPT = 32_000
QUALITIES = ("low", "medium", "high", "auto")
FORMATS = ("png", "jpeg", "webp")
MAX_COUNT = 4
DEFAULT_COMPRESSION = 85
FLAGS = ("size", "ar", "quality", "format", "compression", "count", "model", "background")

# A flag is `--name value` or `--name=value`, standing alone (not inside a word). Slack and phones
# like to turn `--` into an em or en dash, so those count too.
_FLAG = re.compile(
    r"(?:(?<=\s)|^)(?:--|\u2014|\u2013)(?P<name>" + "|".join(FLAGS) + r")(?![\w-])(?:=|[ \t]+|$)(?P<value>[^\s]*)",
    re.IGNORECASE,
)
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
    notes: tuple[str, ...] = field(default=())

    @property
    def is_edit(self) -> bool:
        return bool(self.references)

    def describe(self) -> str:
        """`1536x1024 high jpeg` style summary of the settings."""
        return f"{self.size} {self.quality} {self.format}"


@dataclass(frozen=True, slots=True)
class Defaults:
    size: str = "auto"
    quality: str = "auto"
    model: str = "gpt-image-2"


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, with an ellipsis when cut (for showing prompts and replies)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def split_flags(text: str) -> tuple[str, dict[str, str]]:
    """Separate recognised flags from the prompt; the prompt keeps everything else verbatim."""
    flags: dict[str, str] = {}
    pieces: list[str] = []
    last = 0
    for match in _FLAG.finditer(text):
        name = match["name"].lower()
        value = match["value"]
        if not value or value.startswith("--"):
            raise UserError(f"--{name} needs a value, e.g. {_EXAMPLES[name]}")
        if name in flags:
            raise UserError(f"--{name} is given twice; give it once")
        flags[name] = value
        pieces.append(text[last:match.start()])
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
    "size": "--size 1536x1024 (or auto, 1k, 2k, 4k)",
    "ar": "--ar 16:9",
    "quality": "--quality high (low, medium, high, auto)",
    "format": "--format png (png, jpeg, webp)",
    "compression": "--compression 85 (0-100)",
    "count": "--count 2 (1-4)",
    "model": "--model gpt-image-2",
    "background": "--background opaque",
}


def _int(name: str, value: str, low: int, high: int) -> int:
    if not (value.isascii() and value.isdigit()):
        raise UserError(f"--{name} {value!r} is not a whole number; use {low}-{high}")
    number = int(value)
    if not low <= number <= high:
        raise UserError(f"--{name} {number} is out of range; use {low}-{high}")
    return number


def parse_request(
    text: str,
    *,
    prices: PriceTable,
    defaults: Defaults = Defaults(),
    references: Sequence[ImageInput] = (),
    mask: ImageInput | None = None,
) -> ImageRequest:
    """Parse `/imagine` text and validate every rule of SPEC §3; raise UserError naming the rule."""
    prompt, flags = split_flags(text)
    background = flags.get("background", "auto").lower()
    if background == "transparent":
        raise UserError("transparent backgrounds are not supported by gpt-image-2; use --background opaque or auto")
    if background not in ("auto", "opaque"):
        raise UserError(f"--background {background!r} is not valid; use opaque or auto")
    if not prompt:
        raise UserError("the prompt is empty; describe the image, e.g. /imagine a lighthouse at dawn --size 2k")
    if len(prompt) > MAX_PROMPT:
        raise UserError(f"the prompt is {len(prompt):,} characters; the limit is {MAX_PROMPT:,}")
    size = parse_size(flags.get("size", defaults.size), flags.get("ar"))
    quality = flags.get("quality", defaults.quality).lower()
    if quality not in QUALITIES:
        raise UserError(f"--quality {quality!r} is not valid; use low, medium, high or auto")
    fmt = flags.get("format", "jpeg").lower()
    if fmt == "jpg":
        fmt = "jpeg"
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r} is not valid; use png, jpeg or webp")
    compression: int | None = None
    if "compression" in flags:
        if fmt == "png":
            raise UserError("--compression only applies to jpeg and webp (0-100); png is lossless")
        compression = _int("compression", flags["compression"], 0, 100)
    elif fmt != "png":
        compression = DEFAULT_COMPRESSION
    count = _int("count", flags["count"], 1, MAX_COUNT) if "count" in flags else 1
    model = flags.get("model", defaults.model)
    if model not in prices.models:
        raise UserError(f"--model {model!r} is not in the price table; use one of {', '.join(sorted(prices.models))}")
    if len(references) > MAX_REFERENCES:
        raise UserError(
            f"{len(references)} images given; at most {MAX_REFERENCES} in all (the base image plus references)"
        )
    if mask is not None:
        if not references:
            raise UserError("a mask needs an image to edit; attach or reply to one")
        check_mask(mask, references[0])
    notes: list[str] = []
    if size.experimental:
        notes.append(f"{size} is over 2560x1440 in pixels (3.69 MP), which the API marks as experimental")
    if _TRANSPARENT.search(prompt):
        notes.append("gpt-image-2 cannot make transparent backgrounds; the background will be opaque")
    return ImageRequest(
        prompt=prompt, size=size, quality=quality, format=fmt, compression=compression, count=count,
        model=model, references=tuple(references), mask=mask, notes=tuple(notes),
    )


def with_images(
    request: ImageRequest, references: Sequence[ImageInput], mask: ImageInput | None = None
) -> ImageRequest:
    """The same request with (re)validated input images."""
    if len(references) > MAX_REFERENCES:
        raise UserError(f"{len(references)} images given; at most {MAX_REFERENCES} in all (the base image plus references)")
    if mask is not None:
        if not references:
            raise UserError("a mask needs an image to edit; attach or reply to one")
        check_mask(mask, references[0])
    return replace(request, references=tuple(references), mask=mask)
