"""The price table (a data file) and what a request costs: worst case before, real after.

The same file holds each model's capabilities (sizes, references, mask, input_fidelity, transparency,
streaming): one place an admin edits to add a gateway's model. Money is integer micro-dollars
(1 USD = 1_000_000) everywhere; never float.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sized
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from bot.errors import ConfigError
from bot.model.sizes import GPT_IMAGE_2, Size, SizeRule

MICRO = 1_000_000


class Priced(Protocol):
    """What an estimate reads of a request (bot.model.request.ImageRequest is one)."""

    @property
    def size(self) -> Size: ...

    @property
    def quality(self) -> str: ...

    @property
    def prompt(self) -> str: ...

    @property
    def references(self) -> Sized: ...

    @property
    def mask(self) -> object | None: ...


QUALITIES = ("low", "medium", "high")
TABLE_SIZES = ((1024, 1024), (1024, 1536), (1536, 1024))
INPUT_FIDELITIES = ("low", "high")
MAX_PARTIAL_IMAGES = 3  # the API streams 0-3 partial images per call


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage as the API reports it."""

    text_tokens: int = 0
    image_tokens: int = 0
    output_tokens: int = 0
    cached_text_tokens: int = 0
    cached_image_tokens: int = 0

    @property
    def input_tokens(self) -> int:
        return self.text_tokens + self.image_tokens

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class ModelCapabilities:
    """What one model accepts, from the price table; validation (bot/model/request.py, the offline server) reads it.

    The defaults are gpt-image-2's: a model entry without `capabilities` takes gpt-image-2's rules.
    """

    sizes: SizeRule = GPT_IMAGE_2
    max_reference_images: int = 5  # the base image plus references, in all; 0: no edits
    mask: bool = True
    input_fidelity: tuple[str, ...] = ()  # the values it accepts; empty: never send `input_fidelity`
    transparent_background: bool = False
    max_partial_images: int = MAX_PARTIAL_IMAGES  # streamed previews per call; 0: the model does not stream

    @property
    def streams(self) -> bool:
        return self.max_partial_images > 0


@dataclass(frozen=True, slots=True)
class ModelPrices:
    """One model's rates, in USD per token (Decimal) and reference per-image prices."""

    name: str
    text_input: Decimal
    text_input_cached: Decimal
    image_input: Decimal
    image_input_cached: Decimal
    image_output: Decimal
    per_image: dict[str, dict[str, Decimal]]
    partial_image_output_tokens: int
    reference_image_max_tokens: int
    flat_per_image: Decimal | None = None
    auto_sizes: tuple[tuple[int, int], ...] = TABLE_SIZES  # what `size=auto` may render (the data file says)
    batch_discount: Decimal = Decimal("0.5")  # relax mode (the Batch API) pays this share of every price
    capabilities: ModelCapabilities = ModelCapabilities()

    def output_tokens_per_pixel(self, quality: str) -> Decimal:
        """The highest output-token rate per pixel among the table's sizes for `quality`."""
        return max(self.per_image[quality][f"{w}x{h}"] / self.image_output / (w * h) for w, h in TABLE_SIZES)

    def image_output_tokens(self, width: int, height: int, quality: str) -> int:
        """Output tokens for one image: exact for table sizes, scaled by pixels otherwise."""
        key = f"{width}x{height}"
        if key in self.per_image[quality]:
            return math.ceil(self.per_image[quality][key] / self.image_output)
        return math.ceil(self.output_tokens_per_pixel(quality) * width * height)


def to_micros(usd: Decimal) -> int:
    """Round a USD amount up to whole micro-dollars (never undercharge)."""
    return int((usd * MICRO).to_integral_value(rounding=ROUND_CEILING))


def format_usd(micros: int) -> str:
    """`$0.2110` style: dollars to four decimals, enough for the cheapest image; a half is rounded to even
    (7,050 micro-dollars: `$0.0070`), as `bot.i18n.money` says it (docs/rules.md §5)."""
    return f"${Decimal(micros) / MICRO:.4f}"


def _model(name: str, raw: dict) -> ModelPrices:
    rates = {k: Decimal(v) / MICRO for k, v in raw.get("per_million_tokens", {}).items()}
    per_image = {
        q: {s: Decimal(p) for s, p in sizes.items()} for q, sizes in raw.get("per_image", {}).items()
    }
    flat = raw.get("flat_usd_per_image")
    if flat is None and (
        set(per_image) != set(QUALITIES)
        or "image_output" not in rates
        or any(f"{w}x{h}" not in per_image[q] for q in QUALITIES for w, h in TABLE_SIZES)
    ):
        raise ConfigError(
            f"model {name} needs per_image for low/medium/high at 1024x1024, 1024x1536 and 1536x1024, "
            "and per_million_tokens.image_output"
        )
    zero = Decimal(0)
    capabilities = _capabilities(name, raw.get("capabilities", {}))
    # A fixed list of sizes is all `auto` can render; a flexible rule says in `auto_sizes` (or the table's three).
    default_auto = capabilities.sizes.fixed or TABLE_SIZES
    return ModelPrices(
        name=name,
        text_input=rates.get("text_input", zero),
        text_input_cached=rates.get("text_input_cached", rates.get("text_input", zero)),
        image_input=rates.get("image_input", zero),
        image_input_cached=rates.get("image_input_cached", rates.get("image_input", zero)),
        image_output=rates.get("image_output", Decimal(1)),
        per_image=per_image,
        partial_image_output_tokens=int(raw.get("partial_image_output_tokens", 100)),
        reference_image_max_tokens=int(raw.get("reference_image_max_tokens", 6240)),
        flat_per_image=Decimal(flat) if flat is not None else None,
        auto_sizes=tuple(_size(s) for s in raw.get("auto_sizes", ())) or default_auto,
        capabilities=capabilities,
        batch_discount=_share(name, raw.get("batch_discount", Decimal("0.5"))),
    )


def _share(name: str, value: Any) -> Decimal:
    share = Decimal(value)
    if not 0 < share <= 1:
        raise ConfigError(f"model {name}: batch_discount must be a share above 0 and at most 1, got {value}")
    return share


def batch_price(micros: int, prices: ModelPrices) -> int:
    """A price in relax mode (the Batch API's discount), rounded up to whole micro-dollars."""
    return to_micros(Decimal(micros) * prices.batch_discount / MICRO)


def _named(name: str, raw: dict) -> ModelPrices:
    """`_model`, with any error naming the model."""
    try:
        return _model(name, raw)
    except (ValueError, KeyError, TypeError, AttributeError, ArithmeticError) as exc:
        raise ConfigError(f"model {name}: {exc}") from exc


def _size(text: str) -> tuple[int, int]:
    width, sep, height = str(text).partition("x")
    if not sep or not width.isdigit() or not height.isdigit() or not int(width) or not int(height):
        raise ValueError(f"{text!r} is not a size (WxH)")
    return int(width), int(height)


_FLEXIBLE_KEYS = {
    "multiple_of": "multiple",
    "max_edge": "max_edge",
    "max_ratio": "max_ratio",
    "min_pixels": "min_pixels",
    "max_pixels": "max_pixels",
}
_CAPABILITY_KEYS = {
    "sizes",
    "max_reference_images",
    "mask",
    "input_fidelity",
    "transparent_background",
    "max_partial_images",
}


def _size_rule(name: str, raw: Any) -> SizeRule:
    """`["auto", "1024x1024", ...]` (a fixed list) or `{"multiple_of": 16, "max_edge": 3840, ...}` (flexible)."""
    if isinstance(raw, list):
        listed = [str(s).strip().lower() for s in raw]
        fixed = tuple(_size(s) for s in listed if s != "auto")
        if not fixed:
            raise ConfigError(f"model {name}: capabilities.sizes lists no WxH size")
        return SizeRule(fixed=fixed, auto="auto" in listed, experimental_above=None)
    if not isinstance(raw, dict):
        raise ConfigError(f"model {name}: capabilities.sizes must be a list of sizes or an object of bounds")
    known = {*_FLEXIBLE_KEYS, "auto", "experimental_above"}
    unknown = sorted(k for k in raw if not k.startswith("_") and k not in known)
    if unknown:
        raise ConfigError(
            f"model {name}: capabilities.sizes has unknown keys {', '.join(unknown)}; use "
            f"{', '.join(_FLEXIBLE_KEYS)}, auto, experimental_above"
        )
    bounds: dict[str, Any] = {attr: getattr(GPT_IMAGE_2, attr) for attr in _FLEXIBLE_KEYS.values()}
    for key, attr in _FLEXIBLE_KEYS.items():
        if key in raw:
            value = raw[key]
            bounds[attr] = float(value) if attr == "max_ratio" else int(value)
            if bounds[attr] <= 0:
                raise ConfigError(f"model {name}: capabilities.sizes.{key} must be positive")
    auto = raw.get("auto", True)
    if not isinstance(auto, bool):
        raise ConfigError(f"model {name}: capabilities.sizes.auto must be true or false")
    experimental = raw.get("experimental_above", "2560x1440")
    return SizeRule(auto=auto, experimental_above=_size(experimental) if experimental else None, **bounds)


def _capabilities(name: str, raw: Any) -> ModelCapabilities:
    if not isinstance(raw, dict):
        raise ConfigError(f"model {name}: capabilities must be an object")
    unknown = sorted(k for k in raw if not k.startswith("_") and k not in _CAPABILITY_KEYS)
    if unknown:
        raise ConfigError(
            f"model {name}: capabilities has unknown keys {', '.join(unknown)}; use "
            f"{', '.join(sorted(_CAPABILITY_KEYS))}"
        )
    default = ModelCapabilities()
    fidelity = tuple(str(v) for v in raw.get("input_fidelity", default.input_fidelity))
    if any(v not in INPUT_FIDELITIES for v in fidelity):
        raise ConfigError(f"model {name}: capabilities.input_fidelity may list only low and high")
    references = int(raw.get("max_reference_images", default.max_reference_images))
    partials = int(raw.get("max_partial_images", default.max_partial_images))
    if references < 0 or not 0 <= partials <= MAX_PARTIAL_IMAGES:
        raise ConfigError(
            f"model {name}: capabilities.max_reference_images must be >= 0 and "
            f"max_partial_images 0-{MAX_PARTIAL_IMAGES}"
        )
    for flag in ("mask", "transparent_background"):
        if not isinstance(raw.get(flag, False), bool):
            raise ConfigError(f"model {name}: capabilities.{flag} must be true or false")
    return ModelCapabilities(
        sizes=_size_rule(name, raw["sizes"]) if "sizes" in raw else default.sizes,
        max_reference_images=references,
        mask=raw.get("mask", default.mask),
        input_fidelity=fidelity,
        transparent_background=raw.get("transparent_background", default.transparent_background),
        max_partial_images=partials,
    )


@dataclass(frozen=True, slots=True)
class PriceTable:
    models: dict[str, ModelPrices]

    def model(self, name: str) -> ModelPrices:
        return self.models[name]


@cache
def load_prices(path: str | None = None) -> PriceTable:
    """Load the price table from `path`, or the one shipped in the package."""
    try:
        if path:
            text = Path(path).read_text(encoding="utf-8")
        else:
            text = resources.files("bot.model").joinpath("data/prices.json").read_text(encoding="utf-8")
        # Decimal, not float: a price of 0.04 must cost 40,000 micro-dollars, not 40,001.
        raw = json.loads(text, parse_float=Decimal)
        return PriceTable({name: _named(name, m) for name, m in raw["models"].items()})
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ArithmeticError, ConfigError) as exc:
        raise ConfigError(
            f"price table {path or 'bot/model/data/prices.json'} cannot be read: {exc}"
        ) from exc


def rendered_sizes(prices: ModelPrices, size: Size) -> tuple[tuple[int, int], ...]:
    """The pixel sizes the API may render: the size itself, or for `auto` every size the table lists for it."""
    return prices.auto_sizes if size.is_auto else ((size.width, size.height),)


def priced_quality(quality: str) -> str:
    """`auto` may pick any quality: price it as the dearest."""
    return "high" if quality == "auto" else quality


def prompt_token_bound(prompt: str) -> int:
    """An upper bound on a prompt's tokens: a byte-level tokenizer never makes more tokens than bytes."""
    return len(prompt.encode("utf-8"))


def reference_image_tokens(prices: ModelPrices, width: int, height: int) -> int:
    """Input tokens for one reference image (high fidelity is automatic on edits), capped by the table."""
    return min(prices.reference_image_max_tokens, math.ceil(width * height / 168))


def estimate_micros(
    prices: ModelPrices,
    *,
    size: Size,
    quality: str,
    prompt: str,
    references: int = 0,
    partials: int = 0,
    mask: bool = False,
) -> int:
    """Worst-case cost of ONE image call, in micro-dollars; used for the reservation, so never below what the
    call can be billed (docs/rules.md §5): the prompt at one token per UTF-8 byte, every input image (each reference,
    and the mask) at the most image-input tokens one can cost, the dearest size `auto` may render at the
    dearest quality `auto` may pick, and every partial image's output tokens."""
    if prices.flat_per_image is not None:
        return to_micros(prices.flat_per_image)
    quality = priced_quality(quality)
    out = max(prices.image_output_tokens(w, h, quality) for w, h in rendered_sizes(prices, size))
    out += partials * prices.partial_image_output_tokens
    input_images = references + (1 if mask else 0)
    usd = (
        prompt_token_bound(prompt) * prices.text_input
        + input_images * prices.reference_image_max_tokens * prices.image_input
        + out * prices.image_output
    )
    return to_micros(usd)


def request_estimate_micros(prices: ModelPrices, request: Priced, partials: int = 0) -> int:
    """`estimate_micros` for one image of `request`."""
    return estimate_micros(
        prices,
        size=request.size,
        quality=request.quality,
        prompt=request.prompt,
        references=len(request.references),
        partials=partials,
        mask=request.mask is not None,
    )


def preview_count(prices: ModelPrices, request: Priced, max_partials: int, max_share: float | Decimal) -> int:
    """How many streamed previews one image of `request` may have (IMAGEBOT_PREVIEW_MAX_SHARE).

    The largest n <= `max_partials` (and <= what the model streams; 0 if it does not stream) whose extra
    cost is at most `max_share` of the image's estimate without previews:
    `estimate(n partials) - estimate(0) <= max_share * estimate(0)`. So a cheap 1K low render streams none
    and a 2K/4K high render keeps its previews.
    """
    limit = min(max_partials, prices.capabilities.max_partial_images)
    if limit <= 0:
        return 0
    share = Decimal(str(max_share))  # via str: 0.05 is 0.05, not 0.05000000000000000277
    base = request_estimate_micros(prices, request)
    for n in range(limit, 0, -1):
        if request_estimate_micros(prices, request, n) - base <= share * base:
            return n
    return 0


def cost_micros(prices: ModelPrices, usage: Usage) -> int:
    """Real cost of one call from the response's usage, in micro-dollars."""
    if prices.flat_per_image is not None:
        return to_micros(prices.flat_per_image)
    usd = (
        (usage.text_tokens - usage.cached_text_tokens) * prices.text_input
        + usage.cached_text_tokens * prices.text_input_cached
        + (usage.image_tokens - usage.cached_image_tokens) * prices.image_input
        + usage.cached_image_tokens * prices.image_input_cached
        + usage.output_tokens * prices.image_output
    )
    return to_micros(usd)
