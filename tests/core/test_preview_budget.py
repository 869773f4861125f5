"""Previews that pay for themselves (IMAGEBOT_PREVIEW_MAX_SHARE): `preview_count` streams the most partial
images whose extra cost is at most a share of the image's estimate without them, so cheap jobs stream none
and 2K/4K high renders keep theirs."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.config import Settings
from bot.errors import ConfigError
from bot.model.pricing import ModelPrices, load_prices, preview_count, request_estimate_micros
from bot.model.request import ImageRequest
from bot.model.sizes import AUTO, Size

PRICES = load_prices()
GPT_IMAGE_2 = PRICES.model("gpt-image-2")
SIZES = [Size(1024, 1024), Size(1536, 1024), Size(2048, 1152), Size(2048, 2048), Size(3840, 2160), AUTO]
QUALITIES = ["low", "medium", "high", "auto"]


def request(
    size: Size,
    quality: str,
    prompt: str = "a poster for our launch",
    model: str = "gpt-image-2",
    references: int = 0,
) -> ImageRequest:
    return ImageRequest(
        prompt=prompt, size=size, quality=quality, model=model, references=(None,) * references
    )  # type: ignore[arg-type]


def share(prices: ModelPrices, req: ImageRequest, partials: int) -> Decimal:
    base = request_estimate_micros(prices, req)
    return Decimal(request_estimate_micros(prices, req, partials) - base) / base


@pytest.mark.parametrize("model", list(PRICES.models))
def test_the_chosen_count_is_the_largest_within_the_share(model: str) -> None:
    prices = PRICES.model(model)
    sizes = [s for s in SIZES if s.is_auto or prices.capabilities.sizes.problem(s.width, s.height) is None]
    for size, quality, max_share, max_partials in itertools.product(
        sizes, QUALITIES, [0, 0.01, 0.05, 0.2, 1], [0, 1, 2, 3]
    ):
        req = request(size, quality, model=model)
        n = preview_count(prices, req, max_partials, max_share)
        assert 0 <= n <= max_partials
        assert share(prices, req, n) <= Decimal(str(max_share))
        if n < max_partials:  # one more would cross the share
            assert share(prices, req, n + 1) > Decimal(str(max_share)), (
                size,
                quality,
                max_share,
                max_partials,
            )


@pytest.mark.parametrize(
    ("size", "quality", "expected"),
    [
        (Size(1024, 1024), "low", 0),  # $0.006 image, $0.003 a preview
        (Size(1024, 1024), "medium", 0),  # one preview is 5.7% of $0.053
        (Size(1024, 1024), "high", 2),
        (Size(1536, 1024), "high", 2),
        (Size(2048, 1152), "medium", 1),
        (Size(2048, 2048), "high", 2),
        (Size(3840, 2160), "low", 0),
        (Size(3840, 2160), "high", 2),
        (Size(3840, 2160), "auto", 2),
        (AUTO, "auto", 2),
    ],
    ids=str,
)
def test_cheap_jobs_stream_none_and_big_renders_keep_theirs(size: Size, quality: str, expected: int) -> None:
    assert preview_count(GPT_IMAGE_2, request(size, quality), 2, 0.05) == expected


def test_a_share_of_zero_or_no_partials_asked_means_no_previews() -> None:
    big = request(Size(3840, 2160), "high")
    assert preview_count(GPT_IMAGE_2, big, 3, 0) == 0
    assert preview_count(GPT_IMAGE_2, big, 0, 1) == 0
    assert preview_count(GPT_IMAGE_2, big, 3, 1) == 3


def test_a_model_that_does_not_stream_gets_none(tmp_path: Path) -> None:
    shipped = json.loads(
        (Path(__file__).parents[2] / "bot" / "model" / "data" / "prices.json").read_text(encoding="utf-8")
    )
    entry = {**shipped["models"]["gpt-image-2"], "capabilities": {"max_partial_images": 0}}
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps({"models": {"still": entry, "one": {**entry, "capabilities": {"max_partial_images": 1}}}})
    )
    table = load_prices(str(path))
    big = request(Size(3840, 2160), "high", model="still")
    assert preview_count(table.model("still"), big, 3, 1) == 0
    assert preview_count(table.model("one"), big, 3, 1) == 1  # never more than the model streams


def test_a_flat_priced_model_streams_what_is_asked(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"models": {"flat": {"flat_usd_per_image": "0.04"}}}))
    flat = load_prices(str(path)).model("flat")
    assert (
        preview_count(flat, request(Size(1024, 1024), "low", model="flat"), 2, 0.05) == 2
    )  # previews cost nothing


@given(
    prompt=st.text(min_size=1, max_size=2000),
    references=st.integers(0, 5),
    size=st.sampled_from(SIZES),
    quality=st.sampled_from(QUALITIES),
    max_share=st.floats(0, 1),
    max_partials=st.integers(0, 3),
)
def test_the_previews_never_cost_more_than_the_share(
    prompt: str, references: int, size: Size, quality: str, max_share: float, max_partials: int
) -> None:
    req = request(size, quality, prompt=prompt, references=references)
    n = preview_count(GPT_IMAGE_2, req, max_partials, max_share)
    assert share(GPT_IMAGE_2, req, n) <= Decimal(str(max_share))


# --- the setting ------------------------------------------------------------------------------


def test_the_setting_defaults_to_5_percent() -> None:
    assert Settings.load(environ={}, env_file=None).preview_max_share == 0.05
    for text, value in (("0", 0.0), ("0.2", 0.2), ("1", 1.0)):
        assert (
            Settings.load(environ={"IMAGEBOT_PREVIEW_MAX_SHARE": text}, env_file=None).preview_max_share
            == value
        )


@pytest.mark.parametrize("text", ["-0.01", "1.5", "5%", "nan", "inf", "lots"])
def test_a_bad_share_is_a_config_error_naming_it(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.load(environ={"IMAGEBOT_PREVIEW_MAX_SHARE": text}, env_file=None)
    assert "IMAGEBOT_PREVIEW_MAX_SHARE" in str(caught.value) and "0 to 1" in str(caught.value)


# --- the benchmark's figure -------------------------------------------------------------------


def test_the_benchmark_prints_the_worst_share_of_its_grid() -> None:
    root = Path(__file__).parents[2]
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.previews"], capture_output=True, text=True, check=True, cwd=root
    )
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert 0 < figures["preview_cost_share_max"] <= 0.05
    assert len(figures["grid"]) == 5 * 4
    assert (
        figures["grid"]["1024x1024 low"]["partials"] == 0
        and figures["grid"]["3840x2160 high"]["partials"] == 3
    )
