"""Size rules (a model's flexible bounds, or its fixed list of sizes), presets and aspect-ratio picking.

gpt-image-2's rule is the default everywhere: both edges multiples of 16, longest edge at most 3840,
long:short at most 3:1, 655,360 to 8,294,400 pixels, or `auto`. Other models bring their own rule from
the price table (bot/model/data/prices.json), e.g. gpt-image-1.5's fixed list `auto, 1024x1024, 1536x1024,
1024x1536`.

On a model with a fixed list, `--size 1k/2k/4k` (with or without `--ar`) picks the listed size nearest
in shape, and refuses a tier the model cannot reach with at least half its pixels (2k and 4k on a model
whose largest size is 1536x1024), naming the list.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

from bot.errors import UserError
from bot.i18n import Msg, msg

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
# Every size OpenAI lists as a gpt-image-2 preset; all are valid.
KNOWN_SIZES: tuple[tuple[int, int], ...] = (
    (1024, 1024),
    (1536, 1024),
    (1024, 1536),
    (2048, 1152),
    (1152, 2048),
    (2048, 2048),
    (3840, 2160),
    (2160, 3840),
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
        """Above gpt-image-2's experimental threshold (see SizeRule.is_experimental for other models)."""
        return self.pixels > EXPERIMENTAL_PIXELS

    def __str__(self) -> str:
        return "auto" if self.is_auto else f"{self.width}x{self.height}"


AUTO = Size(0, 0)


def _mp(pixels: int) -> str:
    return f"{pixels / 1_000_000:.3g} MP"


@dataclass(frozen=True, slots=True)
class SizeRule:
    """Which sizes one model takes: the sizes in `fixed` if there are any, otherwise every WxH within the
    flexible bounds below; `auto` too if `auto`. The defaults are gpt-image-2's rule."""

    fixed: tuple[tuple[int, int], ...] = ()
    auto: bool = True
    multiple: int = MULTIPLE
    max_edge: int = MAX_EDGE
    max_ratio: float = MAX_RATIO
    min_pixels: int = MIN_PIXELS
    max_pixels: int = MAX_PIXELS
    # Above this many pixels the API marks output as experimental (None: never).
    experimental_above: tuple[int, int] | None = (2560, 1440)

    @property
    def is_fixed(self) -> bool:
        return bool(self.fixed)

    def problem(self, width: int, height: int) -> Msg | None:
        """Why `width`x`height` is not a size of this rule, or None if it is."""
        size = f"{width}x{height}"
        if self.is_fixed:
            return None if (width, height) in self.fixed else msg("sizes.not_listed", size=size)
        for name, edge in ((msg("sizes.width"), width), (msg("sizes.height"), height)):
            if edge <= 0:
                return msg("sizes.edge_not_positive", name=name, edge=edge)
            if edge % self.multiple:
                return msg("sizes.edge_not_multiple", name=name, edge=edge, multiple=self.multiple)
            if edge > self.max_edge:
                return msg("sizes.edge_too_long", name=name, edge=edge, most=self.max_edge)
        long, short = max(width, height), min(width, height)
        if long > self.max_ratio * short:
            return msg("sizes.too_elongated", w=width, h=height, ratio=f"{self.max_ratio:g}")
        pixels = width * height
        if pixels < self.min_pixels:
            return msg(
                "sizes.too_few_pixels",
                size=size,
                pixels=f"{pixels:,}",
                least=f"{self.min_pixels:,}",
                mp=_mp(self.min_pixels),
            )
        if pixels > self.max_pixels:
            return msg(
                "sizes.too_many_pixels",
                size=size,
                pixels=f"{pixels:,}",
                most=f"{self.max_pixels:,}",
                mp=_mp(self.max_pixels),
            )
        return None

    def describe(self, model: str) -> Msg:
        """The valid range, for messages: `gpt-image-1.5 takes only these sizes: auto, 1024x1024, ...`."""
        if self.is_fixed:
            listed = (["auto"] if self.auto else []) + [f"{w}x{h}" for w, h in self.fixed]
            return msg("sizes.only_these", model=model, sizes=", ".join(listed))
        return msg(
            "sizes.valid_range",
            model=model,
            multiple=self.multiple,
            max_edge=self.max_edge,
            ratio=f"{self.max_ratio:g}",
            least=f"{self.min_pixels:,}",
            most=f"{self.max_pixels:,}",
        )

    def is_experimental(self, size: Size) -> bool:
        return self.experimental_above is not None and size.pixels > math.prod(self.experimental_above)

    def experimental_note(self, size: Size) -> Msg | None:
        """The reply's note for a size the API marks as experimental, or None."""
        if not self.is_experimental(size) or self.experimental_above is None:
            return None
        w, h = self.experimental_above
        return msg("sizes.experimental", size=str(size), over=f"{w}x{h}", mp=f"{w * h / 1e6:.2f}")


GPT_IMAGE_2 = SizeRule()


def size_problem(width: int, height: int, rule: SizeRule = GPT_IMAGE_2) -> Msg | None:
    """Return why `width`x`height` is not a valid size (gpt-image-2's rule by default), or None if it is."""
    return rule.problem(width, height)


def is_valid(width: int, height: int, rule: SizeRule = GPT_IMAGE_2) -> bool:
    return rule.problem(width, height) is None


def parse_ratio(text: str, max_ratio: float = MAX_RATIO) -> tuple[int, int]:
    """Parse `W:H` into two positive integers."""
    parts = text.strip().split(":")
    if len(parts) != 2 or not all(p.isascii() and p.isdigit() for p in parts):
        raise UserError(msg("sizes.ar_not_ratio", text=repr(text)))
    w, h = int(parts[0]), int(parts[1])
    if w == 0 or h == 0:
        raise UserError(msg("sizes.ar_zero", text=repr(text)))
    if max(w, h) > max_ratio * min(w, h):
        raise UserError(msg("sizes.ar_too_elongated", text=text, limit=f"{max_ratio:g}"))
    return w, h


@cache
def _valid_sizes(rule: SizeRule) -> tuple[tuple[int, int], ...]:
    if rule.is_fixed:
        return rule.fixed
    edges = range(rule.multiple, rule.max_edge + 1, rule.multiple)
    return tuple((w, h) for w in edges for h in edges if rule.problem(w, h) is None)


def nearest_size(ratio: tuple[int, int], tier: str, rule: SizeRule = GPT_IMAGE_2) -> Size:
    """The valid size closest to `ratio` whose pixel count is closest to the tier's budget (flexible rules)."""
    target_ratio = math.log(ratio[0] / ratio[1])
    # The budget, or less where the shape cannot have that many pixels (3:1 tops out at 3840x1280).
    budget = min(
        TIER_PIXELS[tier], rule.max_pixels, rule.max_edge * rule.max_edge / math.exp(abs(target_ratio))
    )

    def score(wh: tuple[int, int]) -> tuple[float, float]:
        w, h = wh
        return (round(abs(math.log(w / h) - target_ratio), 3), abs(math.log(w * h / budget)))

    # Stay within 20% of the budget: a ratio closer by a fraction of a percent is not worth
    # twice the pixels (and the price) of the tier the user asked for.
    valid = _valid_sizes(rule)
    near = [wh for wh in valid if abs(math.log(wh[0] * wh[1] / budget)) <= math.log(1.2)]
    w, h = min(near or valid, key=score)
    return Size(w, h)


def nearest_listed(ratio: tuple[int, int], tier: str, rule: SizeRule, model: str) -> Size:
    """On a fixed list: the listed size nearest in shape (then in pixels) to `ratio` at the tier; refused
    if it has under half the tier's pixels (the model cannot render that tier)."""
    target_ratio = math.log(ratio[0] / ratio[1])
    budget = TIER_PIXELS[tier]

    def score(wh: tuple[int, int]) -> tuple[float, float]:
        w, h = wh
        return (round(abs(math.log(w / h) - target_ratio), 3), abs(math.log(w * h / budget)))

    w, h = min(rule.fixed, key=score)
    if w * h < budget / 2:
        largest = max(rule.fixed, key=lambda wh: wh[0] * wh[1])
        raise UserError(
            msg(
                "sizes.tier_too_large",
                tier=tier,
                model=model,
                largest=f"{largest[0]}x{largest[1]}",
                rule=rule.describe(model),
            )
        )
    return Size(w, h)


def _pick(ratio: tuple[int, int], tier: str, rule: SizeRule, model: str) -> Size:
    return nearest_listed(ratio, tier, rule, model) if rule.is_fixed else nearest_size(ratio, tier, rule)


def parse_size(
    text: str, ratio: str | None = None, *, rule: SizeRule = GPT_IMAGE_2, model: str = "gpt-image-2"
) -> Size:
    """Turn a `--size` value (and optional `--ar`) into a Size valid under `model`'s `rule`, or raise
    UserError naming the rule and the valid range."""
    value = text.strip().lower()
    if ratio is not None:
        if value not in PRESETS:
            raise UserError(msg("sizes.ar_needs_tier", text=text))
        return _pick(parse_ratio(ratio, rule.max_ratio), value, rule, model)
    if value == "auto":
        if not rule.auto:
            raise UserError(msg("sizes.auto_not_taken", rule=rule.describe(model)))
        return AUTO
    if value in PRESETS:
        preset = PRESETS[value]
        return Size(*preset) if rule.problem(*preset) is None else _pick(preset, value, rule, model)
    w_text, sep, h_text = value.partition("x")
    if not sep or not (w_text + h_text).isascii() or not w_text.isdigit() or not h_text.isdigit():
        listed = msg("sizes.listed_suffix", rule=rule.describe(model)) if rule.is_fixed else ""
        raise UserError(msg("sizes.not_a_size", text=repr(text), listed=listed))
    width, height = int(w_text), int(h_text)
    problem = rule.problem(width, height)
    if problem:
        reason = "" if rule.is_fixed else msg("sizes.reason", problem=problem)
        raise UserError(
            msg("sizes.invalid", size=f"{width}x{height}", reason=reason, rule=rule.describe(model))
        )
    return Size(width, height)
