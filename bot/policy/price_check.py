"""What a job costs before it runs: the worst case it reserves, per image and in all (in relax mode at the batch
price), and how many previews it streams (as many as pay for themselves).
"""

from __future__ import annotations

from bot.model.pricing import PriceTable, batch_price, estimate_micros, preview_count
from bot.model.request import ImageRequest


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
