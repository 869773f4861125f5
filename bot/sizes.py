"""gpt-image-2 size rules, presets and aspect-ratio picking."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

from .errors import UserError

MULTIPLE = 16
MAX_EDGE = 3840
MAX_RATIO = 3.0
MIN_PIXELS = 655_360
MAX_PIXELS = 8_294_400
EXPERIMENTAL_PIXELS = 2560 * 1440

# Named presets; the plain one is what `--size 1k/2k/4k` gives without `--ar`.
PRESETS: dict[str, tuple[int, int]] = {
    "1k": (1024, 1024),
    "2k": (2048, 2048),
    "4k": (3840, 2160),
}
# Every size OpenAI lists as a preset; all are valid.
KNOWN_SIZES: tuple[tuple[int, int], ...] = (
    (1024, 1024), (1536, 1024), (1024, 1536),
    (2048, 1152), (1152, 2048), (2048, 2048),
    (3840, 2160), (2160, 3840),
)
# The pixel budget each tier aims for when `--ar` picks the shape.
TIER_PIXELS = {"1k": 1024 * 1024, "2k": 2048 * 2048, "4k": 3840 * 2160}


@dataclass(frozen=True, slots=True)
class Size:
    """A concrete `WxH` size, or `auto` (width = height = 0)."""

    width: int
    height: int

    @property
    def is_auto(self) -> bool:
        return self.width == 0

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def experimental(self) -> bool:
        return self.pixels > EXPERIMENTAL_PIXELS

    def __str__(self) -> str:
        return "auto" if self.is_auto else f"{self.width}x{self.height}"


AUTO = Size(0, 0)


def size_problem(width: int, height: int) -> str | None:
    """Return why `width`x`height` is not a valid gpt-image-2 size, or None if it is."""
    for name, edge in (("width", width), ("height", height)):
        if edge <= 0:
            return f"{name} {edge} must be positive"
        if edge % MULTIPLE:
            return f"{name} {edge} is not a multiple of {MULTIPLE}"
        if edge > MAX_EDGE:
            return f"{name} {edge} is over the {MAX_EDGE} limit"
    long, short = max(width, height), min(width, height)
    if long > MAX_RATIO * short:
        return f"aspect ratio {width}:{height} is more elongated than 3:1 (long edge at most 3x the short edge)"
    pixels = width * height
    if pixels < MIN_PIXELS:
        return f"{width}x{height} is {pixels:,} pixels, under the minimum of {MIN_PIXELS:,} (0.65 MP)"
    if pixels > MAX_PIXELS:
        return f"{width}x{height} is {pixels:,} pixels, over the maximum of {MAX_PIXELS:,} (8.3 MP)"
    return None


def is_valid(width: int, height: int) -> bool:
    return size_problem(width, height) is None


def parse_ratio(text: str) -> tuple[int, int]:
    """Parse `W:H` into two positive integers."""
    parts = text.strip().split(":")
    if len(parts) != 2 or not all(p.isascii() and p.isdigit() for p in parts):
        raise UserError(f"--ar {text!r} is not an aspect ratio; use W:H with whole numbers, e.g. 16:9")
    w, h = int(parts[0]), int(parts[1])
    if w == 0 or h == 0:
        raise UserError(f"--ar {text!r} has a zero side; use W:H with whole numbers from 1, e.g. 16:9")
    if max(w, h) > MAX_RATIO * min(w, h):
        raise UserError(f"--ar {text} is more elongated than the 3:1 limit; use a ratio between 1:3 and 3:1")
    return w, h


@cache
def _valid_sizes() -> tuple[tuple[int, int], ...]:
    edges = range(MULTIPLE, MAX_EDGE + 1, MULTIPLE)
    return tuple((w, h) for w in edges for h in edges if is_valid(w, h))


def nearest_size(ratio: tuple[int, int], tier: str) -> Size:
    """The valid size closest to `ratio` whose pixel count is closest to the tier's budget."""
    target_ratio = math.log(ratio[0] / ratio[1])
    # The budget, or less where the shape cannot have that many pixels (3:1 tops out at 3840x1280).
    budget = min(TIER_PIXELS[tier], MAX_PIXELS, MAX_EDGE * MAX_EDGE / math.exp(abs(target_ratio)))

    def score(wh: tuple[int, int]) -> tuple[float, float]:
        w, h = wh
        return (round(abs(math.log(w / h) - target_ratio), 3), abs(math.log(w * h / budget)))

    # Stay within 20% of the budget: a ratio closer by a fraction of a percent is not worth
    # twice the pixels (and the price) of the tier the user asked for.
    near = [wh for wh in _valid_sizes() if abs(math.log(wh[0] * wh[1] / budget)) <= math.log(1.2)]
    w, h = min(near or _valid_sizes(), key=score)
    return Size(w, h)


def parse_size(text: str, ratio: str | None = None) -> Size:
    """Turn a `--size` value (and optional `--ar`) into a valid Size, or raise UserError naming the rule."""
    value = text.strip().lower()
    if ratio is not None:
        tier = value if value in PRESETS else None
        if tier is None:
            raise UserError(f"--ar needs --size 1k, 2k or 4k to pick a size from; got --size {text}")
        return nearest_size(parse_ratio(ratio), tier)
    if value == "auto":
        return AUTO
    if value in PRESETS:
        return Size(*PRESETS[value])
    w_text, sep, h_text = value.partition("x")
    if not sep or not (w_text + h_text).isascii() or not w_text.isdigit() or not h_text.isdigit():
        raise UserError(f"--size {text!r} is not a size; use WxH (e.g. 1536x1024), auto, 1k, 2k or 4k")
    width, height = int(w_text), int(h_text)
    problem = size_problem(width, height)
    if problem:
        raise UserError(
            f"--size {width}x{height}: {problem}. Valid sizes: edges multiples of 16 up to 3840, "
            "long:short at most 3:1, 655,360 to 8,294,400 pixels"
        )
    return Size(width, height)
