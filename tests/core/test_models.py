"""Models as data (bot/model/data/prices.json): each model's capabilities sit beside its prices, and validation
(bot/model/request.py, bot/model/sizes.py), the reservation and the offline server all follow the chosen model's rules.
"""

from __future__ import annotations

import base64
import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
from PIL import Image

from bot.errors import ConfigError, UserError
from bot.jobs.render import Renderer
from bot.model.images import ImageInput, load_image
from bot.model.pricing import (
    ModelCapabilities,
    PriceTable,
    Usage,
    cost_micros,
    estimate_micros,
    load_prices,
    to_micros,
)
from bot.model.request import ImageRequest, parse_request, with_images
from bot.model.sizes import AUTO, GPT_IMAGE_2, PRESETS, Size, SizeRule
from bot.offline import OfflineImageServer

PRICES = load_prices()
SHIPPED = json.loads(
    (Path(__file__).parents[2] / "bot" / "model" / "data" / "prices.json").read_text(encoding="utf-8")
)
FIXED_MODELS = ("gpt-image-1.5", "gpt-image-1-mini")
LISTED = "takes only these sizes: auto, 1024x1024, 1536x1024, 1024x1536"


def parse(text: str, prices: PriceTable = PRICES, **kwargs: Any) -> ImageRequest:
    return parse_request(text, prices=prices, **kwargs)


def rejection(text: str, prices: PriceTable = PRICES, **kwargs: Any) -> str:
    with pytest.raises(UserError) as caught:
        parse(text, prices, **kwargs)
    return str(caught.value)


def table(tmp_path: Path, **models: dict[str, Any]) -> PriceTable:
    """A price file with gpt-image-2 as shipped plus `models`, loaded the way IMAGEBOT_PRICES is."""
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"models": {"gpt-image-2": SHIPPED["models"]["gpt-image-2"], **models}}))
    return load_prices(str(path))


def image(name: str, size: tuple[int, int] = (64, 64), mode: str = "RGB") -> ImageInput:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, "PNG")
    return load_image(name, buffer.getvalue())


# --- the data -------------------------------------------------------------------------------


def test_the_shipped_table_has_three_models_with_their_capabilities() -> None:
    assert list(PRICES.models) == ["gpt-image-2", "gpt-image-1.5", "gpt-image-1-mini"]
    gpt2 = PRICES.model("gpt-image-2").capabilities
    assert gpt2 == ModelCapabilities()  # gpt-image-2's rules are the defaults, written out in the file too
    assert (
        gpt2.sizes
        == GPT_IMAGE_2
        == SizeRule(max_edge=3840, max_ratio=3, min_pixels=655_360, max_pixels=8_294_400)
    )
    assert (gpt2.input_fidelity, gpt2.transparent_background, gpt2.max_reference_images) == ((), False, 5)
    for name in FIXED_MODELS:
        caps = PRICES.model(name).capabilities
        assert caps.sizes.fixed == ((1024, 1024), (1536, 1024), (1024, 1536)) and caps.sizes.auto
        assert caps.transparent_background and caps.mask and caps.streams
    assert PRICES.model("gpt-image-1.5").capabilities.input_fidelity == ("low", "high")
    assert PRICES.model("gpt-image-1-mini").capabilities.input_fidelity == ("low",)


def test_every_model_entry_names_its_source() -> None:
    for name, entry in SHIPPED["models"].items():
        assert "_source" in entry and "20" in entry["_source"], name


@pytest.mark.parametrize(
    ("model", "quality", "size", "usd"),
    [
        ("gpt-image-1.5", "low", "1024x1024", "0.009"),
        ("gpt-image-1.5", "medium", "1536x1024", "0.05"),
        ("gpt-image-1.5", "high", "1024x1024", "0.133"),
        ("gpt-image-1.5", "high", "1024x1536", "0.2"),
        ("gpt-image-1-mini", "low", "1024x1024", "0.005"),
        ("gpt-image-1-mini", "medium", "1536x1024", "0.015"),
        ("gpt-image-1-mini", "high", "1024x1024", "0.036"),
        ("gpt-image-1-mini", "high", "1024x1536", "0.052"),
    ],
)
def test_each_model_costs_its_own_table_price(model: str, quality: str, size: str, usd: str) -> None:
    prices = PRICES.model(model)
    micros = estimate_micros(prices, size=Size(*map(int, size.split("x"))), quality=quality, prompt="")
    one_token = to_micros(prices.image_output)
    assert to_micros(Decimal(usd)) <= micros < to_micros(Decimal(usd)) + one_token


@pytest.mark.parametrize("model", list(PRICES.models))
@pytest.mark.parametrize("quality", ["low", "medium", "high", "auto"])
def test_auto_size_is_reserved_as_the_dearest_size_the_model_may_render(model: str, quality: str) -> None:
    prices = PRICES.model(model)
    sizes = prices.capabilities.sizes.fixed or prices.auto_sizes
    auto = estimate_micros(prices, size=AUTO, quality=quality, prompt="p")
    assert auto == max(estimate_micros(prices, size=Size(*wh), quality=quality, prompt="p") for wh in sizes)
    # and `auto` quality as the dearest quality
    assert estimate_micros(prices, size=AUTO, quality="auto", prompt="p") >= auto


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"capabilities": {"max_refs": 3}}, "unknown keys max_refs"),
        ({"capabilities": {"sizes": ["auto"]}}, "lists no WxH size"),
        ({"capabilities": {"sizes": ["1024x1024", "big"]}}, "'big' is not a size"),
        ({"capabilities": {"sizes": {"max_edge": 2048, "max_side": 9}}}, "unknown keys max_side"),
        ({"capabilities": {"input_fidelity": ["ultra"]}}, "input_fidelity may list only low and high"),
        ({"capabilities": {"max_partial_images": 4}}, "max_partial_images 0-3"),
        ({"capabilities": {"mask": "yes"}}, "capabilities.mask must be true or false"),
    ],
)
def test_a_bad_capability_is_a_config_error_naming_the_model(
    tmp_path: Path, entry: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        table(tmp_path, broken={"flat_usd_per_image": "0.04", **entry})
    assert "broken" in str(caught.value) and message in str(caught.value)


def test_a_model_without_capabilities_takes_gpt_image_2s_rules(tmp_path: Path) -> None:
    prices = table(tmp_path, gateway={"flat_usd_per_image": "0.04"})
    assert prices.model("gateway").capabilities == ModelCapabilities()
    assert parse("x --model gateway --size 2048x1152", prices).size == Size(2048, 1152)


# --- sizes by the model's rule --------------------------------------------------------------


@pytest.mark.parametrize("model", FIXED_MODELS)
def test_a_fixed_size_model_takes_only_its_sizes(model: str) -> None:
    for size in ("auto", "1024x1024", "1536x1024", "1024x1536"):
        assert str(parse(f"x --model {model} --size {size}").size) == size
    for size in ("2048x1152", "1040x1024", "1024x1025"):
        message = rejection(f"x --model {model} --size {size}")
        assert f"--size {size}: {model} {LISTED}" == message


def test_gpt_image_2_keeps_its_flexible_sizes_next_to_a_fixed_model() -> None:
    assert parse("x --size 2048x1152").size == Size(2048, 1152)
    assert parse("x --model gpt-image-2 --size 3840x1280").size == Size(3840, 1280)
    assert "Valid gpt-image-2 sizes: edges multiples of 16 up to 3840" in rejection("x --size 4000x2000")


def test_a_size_that_is_not_a_size_names_the_list_on_a_fixed_model() -> None:
    message = rejection("x --model gpt-image-1.5 --size huge")
    assert "is not a size" in message and f"gpt-image-1.5 {LISTED}" in message


@pytest.mark.parametrize(
    ("flags", "size"),
    [
        ("--size 1k", "1024x1024"),
        ("--size 1k --ar 1:1", "1024x1024"),
        ("--size 1k --ar 16:9", "1536x1024"),
        ("--size 1k --ar 3:2", "1536x1024"),
        ("--size 1k --ar 9:16", "1024x1536"),
        ("--size 1k --ar 4:5", "1024x1536"),  # 0.8 is nearer 2:3 than 1:1 (in log ratio)
        ("--size 1k --ar 6:5", "1024x1024"),
        ("--size 1k --ar 3:1", "1536x1024"),
    ],
)
@pytest.mark.parametrize("model", FIXED_MODELS)
def test_a_tier_on_a_fixed_model_picks_the_listed_size_nearest_in_shape(
    model: str, flags: str, size: str
) -> None:
    assert str(parse(f"x --model {model} {flags}").size) == size


@pytest.mark.parametrize("flags", ["--size 2k", "--size 4k", "--size 2k --ar 16:9", "--size 4k --ar 1:3"])
def test_a_tier_a_fixed_model_cannot_reach_is_refused_naming_its_sizes(flags: str) -> None:
    message = rejection(f"x --model gpt-image-1.5 {flags}")
    assert "gpt-image-1.5 cannot render that large (its largest size is 1536x1024)" in message
    assert f"gpt-image-1.5 {LISTED}" in message


@pytest.mark.parametrize("tier", sorted(PRESETS))
@pytest.mark.parametrize("ratio", ["1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "1:3", "3:1", None])
def test_a_tier_on_a_fixed_model_gives_a_listed_size_or_a_refusal(tier: str, ratio: str | None) -> None:
    text = f"x --model gpt-image-1-mini --size {tier}" + (f" --ar {ratio}" if ratio else "")
    try:
        size = parse(text).size
    except UserError as exc:
        assert f"gpt-image-1-mini {LISTED}" in str(exc)
        return
    assert (size.width, size.height) in PRICES.model("gpt-image-1-mini").capabilities.sizes.fixed


def test_a_gateway_model_with_its_own_flexible_bounds(tmp_path: Path) -> None:
    rule = {
        "multiple_of": 64,
        "max_edge": 2048,
        "max_ratio": 2,
        "min_pixels": 262144,
        "max_pixels": 4194304,
        "experimental_above": None,
    }
    prices = table(tmp_path, small={"flat_usd_per_image": "0.02", "capabilities": {"sizes": rule}})
    assert parse("x --model small --size 2048x1024", prices).size == Size(2048, 1024)
    assert parse("x --model small --size 2048x2048", prices).notes == ()  # never experimental
    message = rejection("x --model small --size 2000x1024", prices)
    assert "width 2000 is not a multiple of 64" in message
    assert "Valid small sizes: edges multiples of 64 up to 2048, long:short at most 2:1" in message
    assert "more elongated than the 2:1 limit" in rejection("x --model small --size 2k --ar 16:7", prices)
    four_k = parse("x --model small --size 4k", prices).size  # 3840x2160 is over its bounds: nearest 16:9
    assert four_k.width <= 2048 and abs(four_k.width / four_k.height - 16 / 9) < 0.1


# --- everything else the model decides ------------------------------------------------------


def test_a_transparent_background_is_refused_naming_the_model() -> None:
    assert "transparent backgrounds are not supported by gpt-image-2" in rejection(
        "logo --background transparent"
    )
    for model in FIXED_MODELS:
        message = rejection(f"logo --model {model} --background transparent")
        assert model in message and "not supported" in message and "opaque or auto" in message


def test_the_transparent_prompt_note_names_the_model() -> None:
    (note,) = parse("a fox logo on a transparent background").notes
    assert note.startswith("gpt-image-2 cannot make transparent backgrounds")
    assert parse("a fox logo on a transparent background --model gpt-image-1.5 --format png").notes == ()
    (jpeg,) = parse("a fox logo on a transparent background --model gpt-image-1.5").notes
    assert "jpeg has no transparency" in jpeg and "--format png" in jpeg


def test_references_and_mask_follow_the_model(tmp_path: Path) -> None:
    prices = table(
        tmp_path,
        one={"flat_usd_per_image": "0.02", "capabilities": {"max_reference_images": 1, "mask": False}},
        text_only={"flat_usd_per_image": "0.01", "capabilities": {"max_reference_images": 0}},
    )
    base, other = image("base.png", (256, 256)), image("other.png")
    mask = image("mask.png", (256, 256), mode="RGBA")
    assert parse("edit --model one", prices, references=[base]).references == (base,)
    assert "2 images given; at most 1 in all for one" in rejection(
        "edit --model one", prices, references=[base, other]
    )
    assert "one does not accept a mask" in rejection("edit --model one", prices, references=[base], mask=mask)
    assert "text_only cannot edit images" in rejection("edit --model text_only", prices, references=[base])
    request = parse("edit --model one", prices)
    with pytest.raises(UserError, match="at most 1 in all for one"):
        with_images(request, [base, other], prices=prices)
    assert with_images(parse("edit"), [base, other], mask).mask == mask


def test_model_choice_comes_first_and_lists_the_table() -> None:
    message = rejection("x --model dall-e-3 --size 99x99")
    assert (
        message
        == "--model 'dall-e-3' is not in the price table; use one of gpt-image-2, gpt-image-1.5, gpt-image-1-mini"
    )


# --- the offline server follows the same data -----------------------------------------------


@pytest.fixture
def server_options() -> dict[str, Any]:
    return {"latency": 0}


def png(size: tuple[int, int] = (640, 640), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, "red").save(buffer, "PNG")
    return buffer.getvalue()


async def bad(call: Any, **kwargs: Any) -> openai.BadRequestError:
    with pytest.raises(openai.BadRequestError) as caught:
        await call(**kwargs)
    return caught.value


@pytest.mark.parametrize("model", FIXED_MODELS)
async def test_the_offline_server_takes_only_the_models_sizes(client: openai.AsyncOpenAI, model: str) -> None:
    error = await bad(client.images.generate, model=model, prompt="x", size="2048x1152")
    assert error.param == "size" and f"{model} {LISTED}" in error.message
    result = await client.images.generate(
        model=model, prompt="x", size="1536x1024", quality="low", output_format="jpeg"
    )
    assert result.data is not None and result.size == "1536x1024"
    auto = await client.images.generate(model=model, prompt="x", quality="low", output_format="jpeg")
    width, height = PRICES.model(model).auto_sizes[0]  # the offline server renders auto as the first of them
    assert auto.size == f"{width}x{height}"


async def test_the_offline_server_checks_input_fidelity_by_model(client: openai.AsyncOpenAI) -> None:
    edit = client.images.edit
    image = [("base.png", png(), "image/png")]
    error = await bad(edit, model="gpt-image-2", prompt="x", image=image, input_fidelity="high")
    assert error.param == "input_fidelity" and "gpt-image-2" in error.message
    assert (await edit(model="gpt-image-1.5", prompt="x", image=image, input_fidelity="high")).data
    error = await bad(edit, model="gpt-image-1-mini", prompt="x", image=image, input_fidelity="high")
    assert error.param == "input_fidelity" and "'low'" in error.message
    assert (await edit(model="gpt-image-1-mini", prompt="x", image=image, input_fidelity="low")).data


async def test_the_offline_server_makes_transparent_backgrounds_only_where_the_model_can(
    client: openai.AsyncOpenAI,
) -> None:
    generate = client.images.generate
    error = await bad(
        generate, model="gpt-image-2", prompt="x", background="transparent", output_format="png"
    )
    assert error.param == "background" and "gpt-image-2" in error.message
    error = await bad(
        generate, model="gpt-image-1.5", prompt="x", background="transparent", output_format="jpeg"
    )
    assert error.param == "background" and "png" in error.message
    result = await generate(model="gpt-image-1.5", prompt="x", background="transparent", output_format="png")
    assert result.background == "transparent" and result.data is not None
    picture = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json or "")))
    assert picture.mode == "RGBA" and picture.getpixel((0, 0))[3] == 0  # type: ignore[index]
    assert picture.getpixel((picture.width // 2, picture.height // 2))[3] == 255  # type: ignore[index]


async def test_the_offline_server_follows_a_models_reference_mask_and_streaming_rules(tmp_path: Path) -> None:
    prices = table(
        tmp_path,
        plain={
            "flat_usd_per_image": "0.02",
            "capabilities": {"max_reference_images": 1, "mask": False, "max_partial_images": 0},
        },
    )
    srv = OfflineImageServer(latency=0, prices=prices)
    await srv.start()
    sdk = openai.AsyncOpenAI(base_url=srv.base_url, api_key="test", max_retries=0, timeout=30)
    try:
        two = [("a.png", png(), "image/png"), ("b.png", png(), "image/png")]
        error = await bad(sdk.images.edit, model="plain", prompt="x", image=two)
        assert error.param == "image" and "at most 1 are allowed for plain" in error.message
        error = await bad(
            sdk.images.edit,
            model="plain",
            prompt="x",
            image=two[:1],
            mask=("mask.png", png(mode="RGBA"), "image/png"),
        )
        assert error.param == "mask" and "plain does not accept a mask" in error.message
        with pytest.raises(openai.BadRequestError) as caught:
            await sdk.images.generate(model="plain", prompt="x", stream=True, partial_images=1)
        assert caught.value.param == "stream"
        assert (await sdk.images.generate(model="plain", prompt="x")).data
    finally:
        await sdk.close()
        await srv.stop()


@pytest.mark.parametrize("model", list(PRICES.models))
async def test_the_bot_never_sends_background_or_input_fidelity(
    server: OfflineImageServer, model: str
) -> None:
    renderer = Renderer(base_url=server.base_url, api_key="test", timeout=30, max_retries=0)
    base = image("base.png", (256, 256))
    mask = image("mask.png", (256, 256), mode="RGBA")
    try:
        for text, refs in (
            ("a fox on a transparent background --size 1k --format png", []),
            ("make it blue --format webp", [base]),
        ):
            request = parse(
                f"{text} --model {model} --quality low", references=refs, mask=mask if refs else None
            )
            await renderer.render(request, partials=1)
    finally:
        await renderer.close()
    assert [c.status for c in server.calls] == [200, 200]
    for call in server.calls:
        assert call.model == model
        assert "background" not in call.fields and "input_fidelity" not in call.fields


@pytest.mark.parametrize("model", FIXED_MODELS)
async def test_the_estimate_covers_what_the_offline_server_bills_for_each_model(
    client: openai.AsyncOpenAI, model: str
) -> None:
    prices = PRICES.model(model)
    prompt = "ünïcødé 海报 🚀 " * 20
    for size in ("auto", "1024x1024", "1536x1024", "1024x1536"):
        for quality in ("low", "medium", "high", "auto"):
            stream = await client.images.edit(
                model=model,
                prompt=prompt,
                size=size,
                quality=quality,  # type: ignore[arg-type]
                image=[("a.png", png((1100, 1100)), "image/png")] * 2,
                output_format="jpeg",
                stream=True,
                partial_images=2,
            )
            events = [event async for event in stream]
            usage = events[-1].usage  # type: ignore[union-attr]
            billed = Usage(
                text_tokens=usage.input_tokens_details.text_tokens,
                image_tokens=usage.input_tokens_details.image_tokens,
                output_tokens=usage.output_tokens,
            )
            size_ = AUTO if size == "auto" else Size(*map(int, size.split("x")))
            reserved = estimate_micros(
                prices, size=size_, quality=quality, prompt=prompt, references=2, partials=2
            )
            assert reserved >= cost_micros(prices, billed), (size, quality)


def test_a_model_without_auto_refuses_it_by_default_too(tmp_path: Path) -> None:
    prices = table(tmp_path, square={"flat_usd_per_image": "0.01", "capabilities": {"sizes": ["1024x1024"]}})
    assert parse("x --model square --size 1k", prices).size == Size(1024, 1024)
    for text in ("x --model square --size auto", "x --model square"):
        assert rejection(text, prices) == "--size auto: square takes only these sizes: 1024x1024"
