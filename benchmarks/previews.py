"""What streamed previews cost, as a share of each image's estimate (IMAGEBOT_PREVIEW_MAX_SHARE).

Over a grid of sizes x qualities (gpt-image-2, a short prompt, no references): how many partial images
`bot.model.pricing.preview_count` lets a job stream (at most 3, the API's limit) and what they add to the image's
estimate without previews. Last line: JSON with `preview_cost_share_max` (target <= the share, 0.05) and
the grid. `python -m benchmarks.previews`; benchmarks/core.py prints the same figure in its last line.
"""

from __future__ import annotations

import json
from decimal import Decimal

from bot.model.pricing import load_prices, preview_count, request_estimate_micros
from bot.model.request import ImageRequest
from bot.model.sizes import Size

SIZES = ((1024, 1024), (1536, 1024), (2048, 1152), (2048, 2048), (3840, 2160))
QUALITIES = ("low", "medium", "high", "auto")
MAX_PARTIALS = 3  # IMAGEBOT_PARTIAL_IMAGES at its highest
PROMPT = "a poster for our launch"


def preview_shares(max_share: float = 0.05, model: str = "gpt-image-2") -> dict[str, object]:
    """The previews each grid cell gets and their cost as a share of the estimate without them."""
    prices = load_prices().model(model)
    grid: dict[str, dict[str, float | int]] = {}
    for width, height in SIZES:
        for quality in QUALITIES:
            request = ImageRequest(prompt=PROMPT, size=Size(width, height), quality=quality, model=model)
            partials = preview_count(prices, request, MAX_PARTIALS, max_share)
            base = request_estimate_micros(prices, request)
            extra = request_estimate_micros(prices, request, partials) - base
            grid[f"{width}x{height} {quality}"] = {
                "partials": partials,
                "share": float(Decimal(extra) / base),
            }
    worst = max(cell["share"] for cell in grid.values())
    return {"preview_cost_share_max": round(worst, 5), "max_share": max_share, "grid": grid}


def main() -> None:
    figures = preview_shares()
    for cell, value in figures["grid"].items():  # type: ignore[attr-defined]
        print(f"{cell:>16}: {value['partials']} previews, {value['share']:.2%} of the estimate")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
