"""gpt-image-2 sizes (docs/rules.md §3): what `--size` and `--ar` accept, and what a user is told when not.

The rules: both edges multiples of 16, no edge over 3840, long:short at most 3:1,
655,360 to 8,294,400 pixels, or `auto`.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.errors import UserError
from bot.model.sizes import (
    AUTO,
    KNOWN_SIZES,
    PRESETS,
    TIER_PIXELS,
    Size,
    nearest_size,
    parse_size,
    size_problem,
)

VALID_RANGE = "edges multiples of 16 up to 3840, long:short at most 3:1, 655,360 to 8,294,400 pixels"


def meets_every_rule(width: int, height: int) -> bool:
    """docs/rules.md §3, written out again here so the tests do not trust bot.model.sizes to check itself."""
    long, short = max(width, height), min(width, height)
    return (
        short > 0
        and width % 16 == 0
        and height % 16 == 0
        and long <= 3840
        and long <= 3 * short
        and 655_360 <= width * height <= 8_294_400
    )


def rejection(text: str, ratio: str | None = None) -> str:
    with pytest.raises(UserError) as caught:
        parse_size(text, ratio)
    return str(caught.value)


def assert_rejected(size: str, *words: str) -> None:
    """`size` is refused, and the refusal says each of `words` (the rule broken, the valid range)."""
    text = rejection(size)
    for word in words:
        assert word in text, text


# --- each bound: at it (accepted) and just past it (rejected, with the rule named) ---------


@pytest.mark.parametrize("size", ["1024x1024", "1040x1024", "1024x1040", "3840x1280"])
def test_multiples_of_16_are_accepted(size: str) -> None:
    assert str(parse_size(size)) == size


@pytest.mark.parametrize(
    ("size", "message"),
    [
        ("1025x1024", "width 1025 is not a multiple of 16"),
        ("1024x1030", "height 1030 is not a multiple of 16"),
    ],
)
def test_an_edge_that_is_not_a_multiple_of_16_is_rejected(size: str, message: str) -> None:
    assert_rejected(size, message, VALID_RANGE)


def test_an_edge_of_3840_is_accepted() -> None:
    assert parse_size("3840x2160") == Size(3840, 2160)
    assert parse_size("2160x3840") == Size(2160, 3840)


@pytest.mark.parametrize(
    ("size", "message"),
    [
        ("3856x2144", "width 3856 is over the 3840 limit"),
        ("4000x2000", "width 4000 is over the 3840 limit"),
        ("2000x4000", "height 4000 is over the 3840 limit"),
    ],
)
def test_an_edge_over_3840_is_rejected(size: str, message: str) -> None:
    assert_rejected(size, message, VALID_RANGE)


@pytest.mark.parametrize("size", ["3072x1024", "1024x3072", "3840x1280"])
def test_exactly_3_to_1_is_accepted(size: str) -> None:
    assert str(parse_size(size)) == size


@pytest.mark.parametrize("size", ["3088x1024", "1024x3088"])
def test_more_elongated_than_3_to_1_is_rejected(size: str) -> None:
    assert_rejected(size, "more elongated than 3:1", "long:short at most 3:1")


def test_655360_pixels_is_accepted() -> None:
    assert parse_size("1024x640").pixels == 655_360
    assert parse_size("640x1024").pixels == 655_360


def test_fewer_than_655360_pixels_is_rejected() -> None:
    text = rejection("1024x624")  # 638,976 pixels
    assert "638,976 pixels, under the minimum of 655,360" in text
    assert "655,360 to 8,294,400 pixels" in text


@pytest.mark.parametrize("size", ["3840x2160", "2880x2880"])
def test_8294400_pixels_is_accepted(size: str) -> None:
    assert parse_size(size).pixels == 8_294_400


@pytest.mark.parametrize(("size", "pixels"), [("3840x2176", "8,355,840"), ("2896x2880", "8,340,480")])
def test_more_than_8294400_pixels_is_rejected(size: str, pixels: str) -> None:
    text = rejection(size)
    assert f"{pixels} pixels, over the maximum of 8,294,400" in text


def test_a_zero_edge_is_rejected() -> None:
    assert "width 0 must be positive" in rejection("0x1024")


@pytest.mark.parametrize(
    "text", ["big", "1024", "1024x", "x1024", "1024*1024", "-1024x1024", "1024x1024x16", "1024x²"]
)
def test_text_that_is_not_a_size_says_what_is(text: str) -> None:
    message = rejection(text)
    assert "is not a size" in message
    assert "WxH" in message and "auto, 1k, 2k or 4k" in message


def test_size_text_is_case_and_space_insensitive() -> None:
    assert parse_size(" 1536X1024 ") == Size(1536, 1024)
    assert parse_size("2K") == Size(2048, 2048)


# --- auto and presets -----------------------------------------------------------------------


def test_auto_is_its_own_size() -> None:
    size = parse_size("auto")
    assert size == AUTO
    assert size.is_auto
    assert str(size) == "auto"
    assert not size.experimental


@pytest.mark.parametrize(("preset", "size"), [("1k", "1024x1024"), ("2k", "2048x2048"), ("4k", "3840x2160")])
def test_presets(preset: str, size: str) -> None:
    assert str(parse_size(preset)) == size


def test_every_preset_and_every_size_openai_lists_is_valid() -> None:
    for width, height in [*PRESETS.values(), *KNOWN_SIZES]:
        assert meets_every_rule(width, height), (width, height)
        assert size_problem(width, height) is None


def test_experimental_starts_above_2560x1440() -> None:
    assert not parse_size("2560x1440").experimental
    assert parse_size("2560x1456").experimental
    assert parse_size("4k").experimental


# --- --ar with a tier -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ratio", "tier", "size"),
    [
        ("16:9", "4k", "3840x2160"),
        ("9:16", "4k", "2160x3840"),
        ("1:1", "2k", "2048x2048"),
        ("1:1", "1k", "1024x1024"),
        ("3:1", "4k", "3840x1280"),
        ("1:3", "4k", "1280x3840"),
    ],
)
def test_ar_picks_the_size_for_the_tier(ratio: str, tier: str, size: str) -> None:
    assert str(parse_size(tier, ratio)) == size


@pytest.mark.parametrize("ratio", ["16:9", "9:16", "4:3", "3:2", "21:9", "4:5"])
@pytest.mark.parametrize("tier", ["1k", "2k", "4k"])
def test_ar_keeps_common_ratios_exact(ratio: str, tier: str) -> None:
    w, h = map(int, ratio.split(":"))
    size = parse_size(tier, ratio)
    assert size.width * h == size.height * w, size


def test_ar_needs_a_tier_to_pick_from() -> None:
    for size in ("auto", "1024x1024"):
        assert "--ar needs --size 1k, 2k or 4k" in rejection(size, "16:9")


@pytest.mark.parametrize(
    ("ratio", "message"),
    [
        ("16/9", "is not an aspect ratio; use W:H"),
        ("16:9:1", "is not an aspect ratio; use W:H"),
        ("1.5:1", "is not an aspect ratio; use W:H"),
        ("0:1", "has a zero side"),
        ("4:1", "use a ratio between 1:3 and 3:1"),
        ("1:4", "use a ratio between 1:3 and 3:1"),
    ],
)
def test_a_bad_ratio_names_the_rule(ratio: str, message: str) -> None:
    assert message in rejection("2k", ratio)


# --- properties -----------------------------------------------------------------------------

edges = st.one_of(
    st.integers(min_value=1, max_value=250).map(lambda k: 16 * k),  # multiples of 16, around every bound
    st.integers(min_value=-32, max_value=4200),
)


@given(width=edges, height=edges)
def test_size_problem_accepts_exactly_the_sizes_that_meet_every_rule(width: int, height: int) -> None:
    assert (size_problem(width, height) is None) == meets_every_rule(width, height)


@given(width=edges, height=edges)
def test_an_accepted_size_round_trips_through_its_text(width: int, height: int) -> None:
    text = f"{width}x{height}"
    if size_problem(width, height) is not None:
        with pytest.raises(UserError):
            parse_size(text)
        return
    size = parse_size(text)
    assert (size.width, size.height) == (width, height)
    assert str(size) == text
    assert parse_size(str(size)) == size


ratios = st.tuples(st.integers(1, 200), st.integers(1, 200)).filter(lambda r: max(r) <= 3 * min(r))


@settings(max_examples=60, deadline=None)
@given(ratio=ratios, tier=st.sampled_from(sorted(TIER_PIXELS)))
def test_ar_always_picks_a_valid_size_near_the_ratio_and_the_tier(ratio: tuple[int, int], tier: str) -> None:
    size = nearest_size(ratio, tier)
    assert meets_every_rule(size.width, size.height), size
    # The shape is the one asked for, to within 1%...
    assert abs(math.log(size.width / size.height) - math.log(ratio[0] / ratio[1])) < 0.01, size
    # ...and the pixel count is the tier's (or the most that shape allows), to within 25%.
    shape = max(ratio) / min(ratio)
    budget = min(TIER_PIXELS[tier], 8_294_400, 3840 * 3840 / shape)
    assert budget / 1.25 <= size.pixels <= budget * 1.25, size
