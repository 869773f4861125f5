"""The price check, and what a job costs before it runs.

What a job reserves: its worst case per image, times its images (in relax mode at the batch price), with as
many streamed previews as pay for themselves (`JobPrices`). The price check: a render whose reservation is
above the threshold (the channel's own `confirm=`, else IMAGEBOT_CONFIRM_USD; `off` never asks) first asks its
requester, on platforms that can show Render and Cancel buttons, and reserves nothing until they press Render.
It admits the job's pace and quota first, holds at most MAX_PENDING checks per user, lets a Render through for
CONFIRM_TTL, and keeps the check (answered or not) for CONFIRM_KEPT to answer a late click. The stored checks
live in the database (bot/jobs/actions.py), their words in bot/jobs/texts.py.
"""

from __future__ import annotations

from datetime import timedelta

from bot.model.pricing import PriceTable, batch_price, estimate_micros, preview_count
from bot.model.request import ImageRequest
from bot.policy.access import Rules

CONFIRM_TTL = timedelta(minutes=10)  # a price check's Render works this long
CONFIRM_KEPT = timedelta(hours=1)  # a price check, answered or not, is deleted after this
MAX_PENDING = 3  # price checks one user may have waiting for Render or Cancel


def confirm_threshold(rules: Rules, default: int | None) -> int | None:
    """The price above which a render asks first: the channel's own (`confirm=`), else the default."""
    value = rules.channel.get("confirm")
    if value is None:
        return default
    return None if value == "off" else int(value)


def crossed(estimate: int, threshold: int | None) -> int | None:
    """The threshold a render of `estimate` micro-dollars is above, so it asks its requester first; None if it
    goes straight on (below it, or `threshold` None: this channel never asks)."""
    return threshold if threshold is not None and estimate > threshold else None


class JobPrices:
    """The reservation of a job of a request, from the price table and the preview settings."""

    def __init__(
        self, prices: PriceTable, *, partial_images: int = 0, preview_max_share: float = 0.05
    ) -> None:
        self.prices = prices
        self.partial_images = partial_images
        self.preview_max_share = preview_max_share

    def estimate(self, request: ImageRequest, partials: int = 0) -> int:
        """Worst-case micro-dollars for ONE image of `request` (the reservation per image); in relax mode at the
        batch price."""
        prices = self.prices.model(request.model)
        worst = estimate_micros(
            prices,
            size=request.size,
            quality=request.quality,
            prompt=request.prompt,
            references=len(request.references),
            partials=partials,
            mask=request.mask is not None,
        )
        return batch_price(worst, prices) if request.relax else worst

    def partials(self, request: ImageRequest, previews: bool) -> int:
        """How many previews one image streams: as many as pay for themselves, where they can be shown (none in
        relax mode: a batch does not stream)."""
        if not previews or request.relax:
            return 0
        return preview_count(
            self.prices.model(request.model), request, self.partial_images, self.preview_max_share
        )

    def reservation(self, request: ImageRequest, previews: bool) -> int:
        """Exactly what a job of `request` reserves: its worst case per image, times its images."""
        return self.estimate(request, self.partials(request, previews)) * request.count
