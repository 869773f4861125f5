"""Prices (docs/rules.md §5, docs/gpt-image-2.md): the April 2026 table, worst-case estimates for the
reservation, real costs from `usage`, and the price file an admin can edit.

Money is integer micro-dollars (1 USD = 1,000,000) everywhere.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import openai
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from bot.errors import ConfigError
from bot.i18n import money
from bot.model.images import ImageInput, load_image
from bot.model.pricing import (
    ModelPrices,
    Usage,
    cost_micros,
    estimate_micros,
    format_usd,
    load_prices,
    request_estimate_micros,
    to_micros,
)
from bot.model.request import parse_request
from bot.model.sizes import AUTO, Size, is_valid
from bot.offline import OfflineImageServer

T = TypeVar("T")
PRICES = load_prices()
GPT_IMAGE_2 = PRICES.model("gpt-image-2")
# One image-output token at $30 per million: the finest step an image's price can take.
ONE_OUTPUT_TOKEN = 30
TABLE = {  # USD per image, April 2026
    ("low", 1024, 1024): "0.006",
    ("low", 1024, 1536): "0.005",
    ("low", 1536, 1024): "0.005",
    ("medium", 1024, 1024): "0.053",
    ("medium", 1024, 1536): "0.041",
    ("medium", 1536, 1024): "0.041",
    ("high", 1024, 1024): "0.211",
    ("high", 1024, 1536): "0.165",
    ("high", 1536, 1024): "0.165",
}


SQUARE = Size(1024, 1024)


def estimate(size: Size = SQUARE, quality: str = "high", prompt: str = "", **kwargs: int) -> int:
    return estimate_micros(GPT_IMAGE_2, size=size, quality=quality, prompt=prompt, **kwargs)


# --- the table ------------------------------------------------------------------------------


@pytest.mark.parametrize(("quality", "width", "height"), sorted(TABLE))
def test_the_table_figures(quality: str, width: int, height: int) -> None:
    """The image alone costs the table's price, rounded up to a whole output token ($0.00003)."""
    table_micros = to_micros(Decimal(TABLE[quality, width, height]))
    micros = estimate(Size(width, height), quality)
    assert table_micros <= micros < table_micros + ONE_OUTPUT_TOKEN
    assert format_usd(micros) == f"${Decimal(TABLE[quality, width, height]):.4f}"


def test_1024x1024_high_is_0_211() -> None:
    assert GPT_IMAGE_2.per_image["high"]["1024x1024"] == Decimal("0.211")
    assert to_micros(GPT_IMAGE_2.per_image["high"]["1024x1024"]) == 211_000
    assert abs(estimate(Size(1024, 1024), "high") - 211_000) <= ONE_OUTPUT_TOKEN
    assert format_usd(estimate(Size(1024, 1024), "high")) == "$0.2110"


def test_1024x1024_low_is_exactly_0_006() -> None:
    assert estimate(Size(1024, 1024), "low") == 6_000


def test_token_rates_from_the_table() -> None:
    # $5 text in, $8 image in, $30 image out per million tokens: 5, 8 and 30 micro-dollars a token.
    assert cost_micros(GPT_IMAGE_2, Usage(text_tokens=1)) == 5
    assert cost_micros(GPT_IMAGE_2, Usage(image_tokens=1)) == 8
    assert cost_micros(GPT_IMAGE_2, Usage(output_tokens=1)) == 30
    assert cost_micros(GPT_IMAGE_2, Usage(text_tokens=1_000_000, cached_text_tokens=1_000_000)) == 1_250_000
    assert cost_micros(GPT_IMAGE_2, Usage(image_tokens=1_000_000, cached_image_tokens=1_000_000)) == 2_000_000


# --- money ----------------------------------------------------------------------------------


def test_money_is_integer_micro_dollars() -> None:
    assert type(estimate()) is int
    assert type(cost_micros(GPT_IMAGE_2, Usage(text_tokens=7, output_tokens=1234))) is int
    assert cost_micros(GPT_IMAGE_2, Usage(text_tokens=7, output_tokens=1234)) == 7 * 5 + 1234 * 30


def test_fractions_of_a_micro_dollar_round_up() -> None:
    assert to_micros(Decimal("0.0000001")) == 1
    assert to_micros(Decimal("0.211")) == 211_000
    assert cost_micros(GPT_IMAGE_2, Usage(text_tokens=1, cached_text_tokens=1)) == 2  # $0.00000125


@pytest.mark.parametrize(
    ("micros", "text"),
    [
        (0, "$0.0000"),
        (5_000, "$0.0050"),
        (211_000, "$0.2110"),
        (1_500_000, "$1.5000"),
        (12_345_600, "$12.3456"),
        (7_050, "$0.0070"),  # a half rounds to even
        (7_150, "$0.0072"),
        (7_051, "$0.0071"),
    ],
)
def test_format_usd(micros: int, text: str) -> None:
    assert format_usd(micros) == text


@given(st.integers(min_value=0, max_value=999_999_949))  # $999.999949 shows as $999.9999; one more is $1,000
def test_every_amount_is_shown_the_same_in_replies_and_in_the_readers_language(micros: int) -> None:
    assert money(micros) == format_usd(micros)  # below $1,000, where the reader's grouping adds no comma


# --- what the estimate counts ---------------------------------------------------------------


def test_auto_quality_is_priced_as_high() -> None:
    for size in (Size(1024, 1024), Size(1536, 1024), Size(2048, 2048), Size(3840, 2160)):
        assert estimate(size, "auto") == estimate(size, "high")


def test_auto_size_is_priced_as_the_1k_square() -> None:
    assert estimate(AUTO, "high") == estimate(Size(1024, 1024), "high")


def test_each_partial_image_adds_100_output_tokens() -> None:
    for partials in (1, 2, 3):
        assert estimate(partials=partials) - estimate() == partials * 100 * ONE_OUTPUT_TOKEN


def test_each_reference_image_adds_its_image_input_tokens() -> None:
    # At most 6,240 image-input tokens per reference (high fidelity is automatic on edits), at $8/M.
    for references in range(1, 6):
        assert estimate(references=references) - estimate() == references * 6_240 * 8


def test_the_mask_is_an_input_image_too() -> None:
    # The mask is sent as one more image (the size of the first): reserved at the same 6,240 tokens at $8/M.
    assert estimate(references=1, mask=True) - estimate(references=1) == 6_240 * 8
    assert estimate(references=5, mask=True) - estimate() == 6 * 6_240 * 8


def test_an_edit_requests_estimate_counts_its_mask() -> None:
    def png_input(name: str, mode: str) -> ImageInput:
        return load_image(name, png(1024, 1024, mode))

    base = png_input("base.png", "RGB")
    plain = parse_request("make it blue --quality low", prices=load_prices(), references=[base])
    masked = parse_request(
        "make it blue --quality low",
        prices=load_prices(),
        references=[base],
        mask=png_input("mask.png", "RGBA"),
    )
    assert (
        request_estimate_micros(GPT_IMAGE_2, masked) - request_estimate_micros(GPT_IMAGE_2, plain)
        == 6_240 * 8
    )


def test_the_prompt_is_counted_at_one_token_per_utf8_byte_at_most() -> None:
    assert estimate(prompt="a" * 1000) - estimate() == 1000 * 5
    assert estimate(prompt="猫" * 1000) - estimate() == 3000 * 5  # three UTF-8 bytes each


valid_sizes = st.builds(
    Size, st.integers(1, 240).map(lambda k: 16 * k), st.integers(1, 240).map(lambda k: 16 * k)
).filter(lambda s: is_valid(s.width, s.height))
off_table_sizes = valid_sizes.filter(
    lambda s: (s.width, s.height) not in {(1024, 1024), (1024, 1536), (1536, 1024)}
)


@given(a=off_table_sizes, b=off_table_sizes, quality=st.sampled_from(["low", "medium", "high"]))
def test_more_pixels_never_cost_less(a: Size, b: Size, quality: str) -> None:
    """Off the table, price scales with pixels. (On it, OpenAI's 1536x1024 is cheaper than 1024x1024.)"""
    small, large = sorted((a, b), key=lambda s: s.pixels)
    assert estimate(small, quality) <= estimate(large, quality)


@given(size=valid_sizes)
def test_better_quality_never_costs_less(size: Size) -> None:
    assert estimate(size, "low") < estimate(size, "medium") < estimate(size, "high") == estimate(size, "auto")


def test_4k_high_costs_more_than_1k_high() -> None:
    assert estimate(Size(3840, 2160), "high") > 7 * estimate(Size(1024, 1024), "high")


# --- the price file -------------------------------------------------------------------------


def test_a_flat_priced_gateway_model_costs_its_flat_price(tmp_path: Path) -> None:
    shipped = json.loads((Path(__file__).parents[2] / "bot" / "model" / "data" / "prices.json").read_text())
    path = tmp_path / "gateway.json"
    # The flat price written as a JSON number, the way an admin would: 0.04 must cost $0.04, not $0.040001.
    models = {"gpt-image-2": shipped["models"]["gpt-image-2"], "apiyi-image": {"flat_usd_per_image": 0.04}}
    path.write_text(json.dumps({"models": models}), encoding="utf-8")
    assert '"flat_usd_per_image": 0.04' in path.read_text()
    table = load_prices(str(path))
    assert sorted(table.models) == ["apiyi-image", "gpt-image-2"]
    flat = table.model("apiyi-image")
    for size, quality in ((Size(1024, 1024), "low"), (Size(3840, 2160), "high")):
        assert (
            estimate_micros(flat, size=size, quality=quality, prompt="猫" * 500, references=5, partials=3)
            == 40_000
        )
    assert cost_micros(flat, Usage(text_tokens=10_000, image_tokens=30_000, output_tokens=50_000)) == 40_000
    assert format_usd(cost_micros(flat, Usage())) == "$0.0400"


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        '{"prices": {}}',
        '{"models": []}',
        '{"models": {"gpt-image-2": {"per_million_tokens": {"image_output": "30"}}}}',
        '{"models": {"gpt-image-2": {"per_million_tokens": {"image_output": "thirty"}, "per_image": {}}}}',
        '{"models": {"cheap": {"per_million_tokens": {"image_output": "30"}, "per_image": '
        '{"low": {"1024x1024": "0.006"}, "medium": {"1024x1024": "0.05"}, "high": {"1024x1024": "0.2"}}}}}',
    ],
    ids=["not-json", "no-models", "models-not-a-map", "no-per-image", "price-not-a-number", "sizes-missing"],
)
def test_a_broken_price_file_is_a_config_error_naming_the_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "broken-prices.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_prices(str(path))
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_missing_price_file_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.json"
    with pytest.raises(ConfigError, match="nowhere.json"):
        load_prices(str(path))


# --- the estimate is never below what the (offline) API bills -------------------------------


@pytest.fixture(scope="module")
def offline() -> Iterator[tuple[Callable[[Awaitable[T]], T], openai.AsyncOpenAI]]:
    """The offline image server and a real AsyncOpenAI client, on a loop in a thread of their own."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="offline-server", daemon=True)
    thread.start()

    def run(coro: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=120)  # type: ignore[arg-type]

    server = OfflineImageServer(latency=0)
    base_url = run(server.start())

    async def make_client() -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=base_url, api_key="offline", max_retries=0, timeout=120)

    client = run(make_client())
    try:
        yield run, client
    finally:
        run(client.close())
        run(server.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def png(width: int, height: int, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), (width % 256, height % 256, 128, 0)[: len(mode)]).save(buffer, "PNG")
    return buffer.getvalue()


async def billed_usage(
    client: openai.AsyncOpenAI,
    *,
    prompt: str,
    size: Size,
    quality: str,
    partials: int,
    references: list[bytes],
    mask: bytes | None = None,
) -> Usage:
    """One call the way the bot makes it; the usage the API reports for it."""
    params: dict[str, Any] = {
        "model": "gpt-image-2",
        "prompt": prompt,
        "size": str(size),
        "quality": quality,
        "output_format": "jpeg",
    }
    if references:
        params["image"] = [(f"ref{i}.png", data, "image/png") for i, data in enumerate(references)]
    if mask is not None:
        params["mask"] = ("mask.png", mask, "image/png")
    call = client.images.edit if references else client.images.generate
    raw: Any = None
    if partials:
        stream = await call(**params, stream=True, partial_images=partials)
        async for event in stream:
            if event.type.endswith("completed"):
                raw = event.usage
    else:
        raw = (await call(**params)).usage
    assert raw is not None and raw.output_tokens > 0
    details = raw.input_tokens_details
    return Usage(
        text_tokens=details.text_tokens, image_tokens=details.image_tokens, output_tokens=raw.output_tokens
    )


prompts = st.text(
    alphabet=st.one_of(
        st.characters(min_codepoint=0x20, max_codepoint=0x7E),
        st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),  # CJK: three UTF-8 bytes each
        st.sampled_from("🐱🚀é\n"),
    ),
    min_size=1,
    max_size=300,
).filter(lambda s: s.strip())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.one_of(st.just(AUTO), valid_sizes),
    quality=st.sampled_from(["low", "medium", "high", "auto"]),
    prompt=prompts,
    partials=st.integers(0, 3),
    reference_sizes=st.lists(st.tuples(st.integers(16, 1600), st.integers(16, 1600)), max_size=5),
    masked=st.booleans(),
)
@example(
    size=Size(3840, 2160),
    quality="high",
    prompt="猫" * 32_000,
    partials=3,
    reference_sizes=[(1600, 1600)] * 5,
    masked=True,
)
@example(size=Size(1024, 1024), quality="high", prompt="a", partials=0, reference_sizes=[], masked=False)
@example(size=AUTO, quality="auto", prompt="a", partials=0, reference_sizes=[(1536, 1024)], masked=True)
def test_the_estimate_covers_what_the_offline_api_bills(
    offline: tuple[Callable[[Awaitable[Any]], Any], openai.AsyncOpenAI],
    size: Size,
    quality: str,
    prompt: str,
    partials: int,
    reference_sizes: list[tuple[int, int]],
    masked: bool,
) -> None:
    """charged <= reserved (docs/rules.md §5): for any request, references 0-5 and a mask or not, the usage the API
    reports never costs more than the estimate reserved for it."""
    run, client = offline
    references = [png(w, h) for w, h in reference_sizes]
    mask = png(*reference_sizes[0], mode="RGBA") if masked and reference_sizes else None
    usage: Usage = run(
        billed_usage(
            client,
            prompt=prompt,
            size=size,
            quality=quality,
            partials=partials,
            references=references,
            mask=mask,
        )
    )
    reserved = estimate_micros(
        GPT_IMAGE_2,
        size=size,
        quality=quality,
        prompt=prompt,
        references=len(references),
        partials=partials,
        mask=mask is not None,
    )
    assert reserved >= cost_micros(GPT_IMAGE_2, usage)


def test_model_prices_are_per_token_decimals() -> None:
    assert isinstance(GPT_IMAGE_2, ModelPrices)
    assert GPT_IMAGE_2.image_output == Decimal("0.00003")
    assert GPT_IMAGE_2.partial_image_output_tokens == 100
