"""`/imagine` text -> ImageRequest (docs/rules.md §2-3): the flag grammar, the prompt kept verbatim, and
every rejection naming its rule and the valid range."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from bot.errors import UserError
from bot.model.images import ImageInput, load_image
from bot.model.pricing import load_prices
from bot.model.request import Defaults, ImageRequest, build_request, parse_request, with_images
from bot.model.sizes import AUTO, Size, parse_size

PRICES = load_prices()


def parse(text: str, **kwargs: object) -> ImageRequest:
    return parse_request(text, prices=PRICES, **kwargs)  # type: ignore[arg-type]


def rejection(text: str, **kwargs: object) -> str:
    with pytest.raises(UserError) as caught:
        parse(text, **kwargs)
    return str(caught.value)


def image(name: str, size: tuple[int, int] = (64, 64), *, fmt: str = "PNG", mode: str = "RGB") -> ImageInput:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, fmt)
    return load_image(name, buffer.getvalue())


# --- flag grammar ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "a lighthouse at dawn --size 2k",
        "a lighthouse at dawn --size=2k",
        "a lighthouse at dawn \u2014size 2k",  # em dash, as Slack and phones "correct" --
        "a lighthouse at dawn \u2013size 2k",  # en dash
        "--size 2k a lighthouse at dawn",
        "a lighthouse --size 2k at dawn",
        "a lighthouse at dawn --SIZE 2K",
    ],
)
def test_a_flag_is_recognised_in_every_spelling_and_position(text: str) -> None:
    request = parse(text)
    assert request.size == Size(2048, 2048)
    assert request.prompt == "a lighthouse at dawn"


def test_every_flag_at_once() -> None:
    request = parse(
        "a red fox --size 1536x1024 --quality high --format webp --compression 60 --count 3 "
        "--model gpt-image-2 --background opaque"
    )
    assert request.prompt == "a red fox"
    assert (request.size, request.quality, request.format) == (Size(1536, 1024), "high", "webp")
    assert (request.compression, request.count, request.model) == (60, 3, "gpt-image-2")
    assert request.describe() == "1536x1024 high webp"


def test_ar_with_a_tier_picks_the_size() -> None:
    assert parse("a beach --size 4k --ar 16:9").size == Size(3840, 2160)
    assert parse("a tower --ar 9:16 --size 4k").size == Size(2160, 3840)


# --- the prompt, verbatim -------------------------------------------------------------------

PROMPTS = [
    'a sign that says "OPEN 24/7"',
    "the cat's hat, and the dog's 'bone'",
    "🐱 astronaut 🚀 on the 🌕",
    "一只猫坐在月球上，背景是地球",
    "line one\nline two\n\nline four",
    "a  cat  with   double spaces",
    "an em\u2014dash and a 50% discount -- today only",
    "a cat --foo bar and --sizes 2k stay in the prompt",
    "ratio 16:9 written in words, size 2k in words",
]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_the_prompt_is_kept_verbatim_with_flags_after_it(prompt: str) -> None:
    assert parse(f"{prompt} --size 2k --quality low").prompt == prompt


@pytest.mark.parametrize("prompt", PROMPTS)
def test_the_prompt_is_kept_verbatim_with_flags_before_it(prompt: str) -> None:
    assert parse(f"--quality low {prompt}").prompt == prompt


def test_a_flag_on_its_own_line_leaves_the_other_lines_alone() -> None:
    assert parse("a poster\nwith big letters\n--size 2k").prompt == "a poster\nwith big letters"


def test_an_unknown_flag_is_part_of_the_prompt() -> None:
    request = parse("a cat --foo bar --size 2k")
    assert request.prompt == "a cat --foo bar"


no_dashes = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="-\u2014\u2013"), max_size=200
).filter(lambda s: s.strip())


@given(prompt=no_dashes)
def test_any_prompt_without_dashes_survives_flags_around_it(prompt: str) -> None:
    assert parse(f"{prompt} --size 1k --count 2").prompt == prompt.strip()
    assert parse(f"--format png {prompt}").prompt == prompt.strip()


# --- defaults --------------------------------------------------------------------------------


def test_defaults_when_no_flags_are_given() -> None:
    request = parse("a cat")
    assert request.size == AUTO
    assert (request.quality, request.format, request.compression) == ("auto", "jpeg", 85)
    assert (request.count, request.model) == (1, "gpt-image-2")
    assert request.notes == ()
    assert not request.is_edit


def test_size_and_quality_defaults_come_from_config() -> None:
    request = parse("a cat", defaults=Defaults(size="1536x1024", quality="medium"))
    assert (request.size, request.quality) == (Size(1536, 1024), "medium")
    assert parse("a cat --size 1k", defaults=Defaults(size="2k")).size == Size(1024, 1024)


def test_png_has_no_compression_and_webp_defaults_to_85() -> None:
    assert parse("a cat --format png").compression is None
    assert parse("a cat --format webp").compression == 85
    assert parse("a cat --format jpg").format == "jpeg"


# --- rejections: each names the rule and the valid range ------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a cat --quality ultra", "--quality 'ultra' is not valid; use low, medium, high or auto"),
        ("a cat --format gif", "--format 'gif' is not valid; use png, jpeg or webp"),
        ("a cat --compression 101", "--compression 101 is out of range; use 0-100"),
        ("a cat --compression -1", "--compression '-1' is not a whole number; use 0-100"),
        ("a cat --compression high", "--compression 'high' is not a whole number; use 0-100"),
        ("a cat --format png --compression 50", "--compression only applies to jpeg and webp (0-100)"),
        ("a cat --count 0", "--count 0 is out of range; use 1-4"),
        ("a cat --count 5", "--count 5 is out of range; use 1-4"),
        ("a cat --count two", "--count 'two' is not a whole number; use 1-4"),
        ("a cat --count ²", "--count '²' is not a whole number; use 1-4"),
        ("a cat --model dall-e-3", "--model 'dall-e-3' is not in the price table; use one of gpt-image-2"),
        ("a cat --size 4000x2000", "width 4000 is over the 3840 limit"),
        ("a cat --size huge", "--size 'huge' is not a size; use WxH (e.g. 1536x1024), auto, 1k, 2k or 4k"),
        ("a cat --ar 16:9", "--ar needs --size 1k, 2k or 4k"),
        ("a cat --size 2k --size=4k", "--size is given twice; give it once"),
        ("a cat --size 2k \u2014size 4k", "--size is given twice; give it once"),
        ("a cat --size", "--size needs a value, e.g. --size 1536x1024 (or auto, 1k, 2k, 4k)"),
        (
            "a cat --quality --size 2k",
            "--quality needs a value, e.g. --quality high (low, medium, high, auto)",
        ),
        ("a cat --background blue", "--background 'blue' is not valid; use opaque or auto"),
    ],
)
def test_a_malformed_flag_is_an_error_naming_the_rule(text: str, message: str) -> None:
    assert message in rejection(text)


@pytest.mark.parametrize("value", ["0", "100"])
def test_compression_bounds_are_accepted(value: str) -> None:
    assert parse(f"a cat --format webp --compression {value}").compression == int(value)


@pytest.mark.parametrize("value", ["1", "4"])
def test_count_bounds_are_accepted(value: str) -> None:
    assert parse(f"a cat --count {value}").count == int(value)


@pytest.mark.parametrize("text", ["", "   ", "--size 2k", "--size 2k\n\t--quality high"])
def test_an_empty_prompt_is_rejected(text: str) -> None:
    assert "the prompt is empty" in rejection(text)


def test_a_prompt_of_32000_characters_is_accepted() -> None:
    assert len(parse("a" * 32_000).prompt) == 32_000
    assert len(parse("猫" * 32_000 + " --size 2k").prompt) == 32_000  # characters, not bytes


def test_a_prompt_of_32001_characters_is_rejected() -> None:
    assert "the prompt is 32,001 characters; the limit is 32,000" in rejection("a" * 32_001)


def test_a_transparent_background_flag_is_rejected_as_not_supported() -> None:
    message = rejection("a logo --background transparent")
    assert "not supported" in message
    assert "opaque or auto" in message


# --- reference images and the mask ------------------------------------------------------------


def test_references_make_an_edit() -> None:
    refs = [image("base.png", (1024, 1024)), image("ref.jpg", (300, 200), fmt="JPEG")]
    request = parse("put the hat on the cat", references=refs)
    assert request.is_edit
    assert request.references == tuple(refs)


def test_five_references_are_accepted_and_six_are_not() -> None:
    refs = [image(f"ref{i}.png") for i in range(6)]
    assert len(parse("merge them", references=refs[:5]).references) == 5
    assert "6 images given; at most 5 in all" in rejection("merge them", references=refs)


def test_a_mask_that_fits_is_accepted() -> None:
    base = image("base.png", (256, 256))
    mask = image("mask.png", (256, 256), mode="RGBA")
    assert parse("add a window", references=[base], mask=mask).mask == mask


def test_a_mask_must_be_a_png() -> None:
    base = image("base.png", (256, 256))
    mask = image("mask.webp", (256, 256), fmt="WEBP", mode="RGBA")
    message = rejection("add a window", references=[base], mask=mask)
    assert "mask mask.webp is WEBP; the mask must be a PNG with an alpha channel" in message


def test_a_mask_must_have_an_alpha_channel() -> None:
    base = image("base.png", (256, 256))
    mask = image("mask.png", (256, 256), mode="RGB")
    assert "mask mask.png has no alpha channel" in rejection("add a window", references=[base], mask=mask)


def test_a_mask_must_be_the_size_of_the_first_image() -> None:
    base = image("base.png", (256, 256))
    mask = image("mask.png", (128, 256), mode="RGBA")
    message = rejection("add a window", references=[base, image("other.png", (128, 256))], mask=mask)
    assert "mask mask.png is 128x256 but the first image is 256x256; they must be the same size" in message


def test_a_mask_needs_an_image_to_edit() -> None:
    mask = image("mask.png", (256, 256), mode="RGBA")
    assert "a mask needs an image to edit" in rejection("add a window", mask=mask)
    with pytest.raises(UserError, match="a mask needs an image to edit"):
        with_images(parse("add a window"), [], mask)


def test_with_images_revalidates_the_images() -> None:
    request = parse("add a window --size 2k")
    base = image("base.png", (256, 256))
    edited = with_images(request, [base])
    assert edited.references == (base,) and edited.size == request.size
    with pytest.raises(UserError, match="6 images given; at most 5"):
        with_images(request, [base] * 6)


# --- notes ------------------------------------------------------------------------------------


def test_sizes_above_2560x1440_get_an_experimental_note() -> None:
    assert parse("a cat --size 2560x1440").notes == ()
    (note,) = parse("a cat --size 4k").notes
    assert "3840x2160" in note and "experimental" in note and "2560x1440" in note


def test_asking_for_a_transparent_background_in_the_prompt_gets_a_note() -> None:
    request = parse("a fox logo on a transparent background")
    assert request.prompt == "a fox logo on a transparent background"
    (note,) = request.notes
    assert "transparent" in note and "opaque" in note


# --- the typed builder: one set of rules for flags and typed options ------------------------------


def test_build_request_with_typed_options_equals_parsing_the_same_flags() -> None:
    refs = [image("base.png", (256, 256))]
    mask = image("mask.png", (256, 256), mode="RGBA")
    typed = build_request(
        "  a red fox  ",
        prices=PRICES,
        size="4k",
        ar="21:9",
        quality="high",
        format="webp",
        compression=60,
        count=3,
        model="gpt-image-2",
        background="opaque",
        references=refs,
        mask=mask,
    )
    parsed = parse(
        "a red fox --size 4k --ar 21:9 --quality high --format webp --compression 60 --count 3 "
        "--model gpt-image-2 --background opaque",
        references=refs,
        mask=mask,
    )
    assert typed == parsed
    assert typed.prompt == "a red fox" and typed.size == parse_size("4k", "21:9") and typed.count == 3


def test_build_request_defaults_equal_parse_request_defaults() -> None:
    defaults = Defaults(size="1536x1024", quality="medium", model="gpt-image-1.5")
    assert build_request("a cat", prices=PRICES, defaults=defaults) == parse("a cat", defaults=defaults)
    assert build_request("a cat", prices=PRICES).model == "gpt-image-2"


def _flags(**options: object) -> str:
    return "".join(f" --{name} {value}" for name, value in options.items() if value is not None)


SIZES = [None, "auto", "1k", "2k", "4k", "1536x1024", "2048x1152", "1000x1000", "huge"]
RATIOS = [None, "16:9", "9:16", "1:1", "5:1"]
QUALITY_VALUES = [None, "low", "HIGH", "auto", "ultra"]
FORMAT_VALUES = [None, "png", "jpg", "webp", "gif"]
MODELS = [None, "gpt-image-2", "gpt-image-1.5", "gpt-image-1-mini", "dall-e-3"]
BACKGROUNDS = [None, "auto", "opaque", "transparent", "blue"]


@given(
    prompt=st.sampled_from(["a cat", "a logo on a transparent background", "   "]),
    size=st.sampled_from(SIZES),
    ar=st.sampled_from(RATIOS),
    quality=st.sampled_from(QUALITY_VALUES),
    fmt=st.sampled_from(FORMAT_VALUES),
    compression=st.one_of(st.none(), st.integers(0, 120)),
    count=st.one_of(st.none(), st.integers(0, 6)),
    model=st.sampled_from(MODELS),
    background=st.sampled_from(BACKGROUNDS),
)
def test_both_paths_give_equal_requests_or_equal_refusals(
    prompt: str,
    size: str | None,
    ar: str | None,
    quality: str | None,
    fmt: str | None,
    compression: int | None,
    count: int | None,
    model: str | None,
    background: str | None,
) -> None:
    options = {
        "size": size,
        "ar": ar,
        "quality": quality,
        "format": fmt,
        "compression": compression,
        "count": count,
        "model": model,
        "background": background,
    }

    def outcome(build: Callable[[], ImageRequest]) -> ImageRequest | str:
        try:
            return build()
        except UserError as exc:
            return f"refused: {exc}"

    typed = outcome(lambda: build_request(prompt, prices=PRICES, **options))  # type: ignore[arg-type]
    parsed = outcome(lambda: parse(prompt + _flags(**options)))
    assert typed == parsed


def test_typed_options_make_the_same_request_as_flags_and_may_not_repeat_one() -> None:
    """Discord's typed options go straight into the request, with no round trip through flag text."""
    prices = load_prices()
    typed = parse_request(
        "a fox --ar 16:9",
        prices=prices,
        options={"size": "2k", "quality": "high", "count": 2, "compression": 70, "format": None},
    )
    flagged = parse_request(
        "a fox --ar 16:9 --size 2k --quality high --count 2 --compression 70", prices=prices
    )
    assert typed == flagged and typed.prompt == "a fox"
    with pytest.raises(UserError, match="--size is given twice"):
        parse_request("a fox --size 1k", prices=prices, options={"size": "2k"})
    with pytest.raises(UserError, match="count"):
        parse_request("a fox", prices=prices, options={"count": 9})
