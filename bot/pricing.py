"""The price table (a data file) and what a request costs: worst case before, real after.

Money is integer micro-dollars (1 USD = 1_000_000) everywhere; never float.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from functools import cache
from importlib import resources
from pathlib import Path

from .errors import ConfigError
from .sizes import Size

MICRO = 1_000_000
QUALITIES = ("low", "medium", "high")
TABLE_SIZES = ((1024, 1024), (1024, 1536), (1536, 1024))


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

    def output_tokens_per_pixel(self, quality: str) -> Decimal:
        """The highest output-token rate per pixel among the table's sizes for `quality`."""
        return max(
            self.per_image[quality][f"{w}x{h}"] / self.image_output / (w * h) for w, h in TABLE_SIZES
        )

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
    """`$0.2110` style: four decimals, enough for the cheapest image."""
    return f"${Decimal(micros) / MICRO:.4f}"


def _model(name: str, raw: dict) -> ModelPrices:
    rates = {k: Decimal(v) / MICRO for k, v in raw.get("per_million_tokens", {}).items()}
    per_image = {q: {s: Decimal(p) for s, p in sizes.items()} for q, sizes in raw.get("per_image", {}).items()}
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
        auto_sizes=tuple(_size(s) for s in raw.get("auto_sizes", ())) or TABLE_SIZES,
    )


def _size(text: str) -> tuple[int, int]:
    width, _, height = str(text).partition("x")
    return int(width), int(height)


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
            text = resources.files("bot").joinpath("data/prices.json").read_text(encoding="utf-8")
        # Decimal, not float: a price of 0.04 must cost 40,000 micro-dollars, not 40,001.
        raw = json.loads(text, parse_float=Decimal)
        return PriceTable({name: _model(name, m) for name, m in raw["models"].items()})
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ArithmeticError, ConfigError) as exc:
        raise ConfigError(f"price table {path or 'bot/data/prices.json'} cannot be read: {exc}") from exc


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
) -> int:
    """Worst-case cost of ONE image call, in micro-dollars; used for the reservation."""
    if prices.flat_per_image is not None:
        return to_micros(prices.flat_per_image)
    quality = priced_quality(quality)
    out = max(prices.image_output_tokens(w, h, quality) for w, h in rendered_sizes(prices, size))
    out += partials * prices.partial_image_output_tokens
    usd = (
        prompt_token_bound(prompt) * prices.text_input
        + references * prices.reference_image_max_tokens * prices.image_input
        + out * prices.image_output
    )
    return to_micros(usd)


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
