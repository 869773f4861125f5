"""The offline image server, driven through the real OpenAI SDK on loopback."""

from __future__ import annotations

import asyncio
import base64
import io
import re
import time
from typing import Any

import openai
import pytest
from openai.types import ImagesResponse
from PIL import Image

from bot.errors import ConfigError
from bot.model.pricing import Usage, cost_micros, estimate_micros, load_prices
from bot.model.sizes import parse_size
from bot.offline import OfflineImageServer, parse_faults
from tests.support.offline import ClientFactory

REQUEST_ID = re.compile(r"^req_[0-9a-f]{32}$")
MODEL = "gpt-image-2"


def decode(b64: str | None) -> Image.Image:
    assert b64 is not None and not b64.startswith("data:")
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def png_bytes(size: tuple[int, int], mode: str = "RGB", colour: Any = "red", fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, fmt)
    return buffer.getvalue()


# --- happy paths ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "fmt", "pil_format"),
    [("1024x1024", "jpeg", "JPEG"), ("1536x1024", "png", "PNG"), ("1024x1536", "webp", "WEBP")],
)
async def test_generate_decodes_at_requested_size_and_format(
    client: openai.AsyncOpenAI, server: OfflineImageServer, size: str, fmt: str, pil_format: str
) -> None:
    args: dict[str, Any] = {"size": size, "quality": "low", "output_format": fmt}
    result = await client.images.generate(model=MODEL, prompt="a lighthouse at dusk", **args)
    assert result.data is not None
    image = decode(result.data[0].b64_json)
    assert f"{image.width}x{image.height}" == size
    assert image.format == pil_format
    assert result.size == size and result.output_format == fmt and result.quality == "low"
    assert result.background == "opaque"
    assert result.usage is not None and result.usage.output_tokens > 0
    call = server.calls[-1]
    assert (call.endpoint, call.status, call.size, call.output_format, call.stream) == (
        "generations",
        200,
        size,
        fmt,
        False,
    )


async def test_4k_png_renders_without_blocking_the_loop(client: openai.AsyncOpenAI) -> None:
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.monotonic()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    try:
        # The raw response reads the body without parsing it, so only the server's work is timed.
        raw = await client.images.with_raw_response.generate(
            model=MODEL, prompt="skyline " * 50, size="3840x2160", output_format="png"
        )
    finally:
        done.set()
        await tick
    result = raw.parse()
    assert result.data is not None
    image = decode(result.data[0].b64_json)
    assert (image.size, image.format) == ((3840, 2160), "PNG")
    assert max(gaps) < 0.2


async def test_auto_size_and_quality(client: openai.AsyncOpenAI) -> None:
    result = await client.images.generate(model=MODEL, prompt="cat", size="auto", quality="auto")
    assert result.data is not None
    assert decode(result.data[0].b64_json).size == (1024, 1024)
    assert result.size == "1024x1024" and result.quality == "medium"
    bare = await client.images.generate(prompt="cat")
    assert bare.data is not None and decode(bare.data[0].b64_json).size == (1024, 1024)
    assert bare.output_format == "png"


async def test_cjk_and_emoji_prompt_renders(client: openai.AsyncOpenAI) -> None:
    result = await client.images.generate(model=MODEL, prompt="海报：我们的发布会 🚀", output_format="jpeg")
    assert result.data is not None
    assert decode(result.data[0].b64_json).size == (1024, 1024)


async def test_long_prompt_renders(client: openai.AsyncOpenAI) -> None:
    prompt = ("word " * 6000 + "超长的无空格中文文本" * 300)[:32_000]
    result = await client.images.generate(model=MODEL, prompt=prompt, quality="low", output_format="jpeg")
    assert result.data is not None and result.usage is not None
    assert result.usage.input_tokens_details.text_tokens == 8000


async def test_usage_matches_price_table(client: openai.AsyncOpenAI) -> None:
    prices = load_prices().model(MODEL)
    result = await client.images.generate(model=MODEL, prompt="x" * 10, size="1024x1024", quality="high")
    assert result.usage is not None
    assert result.usage.output_tokens == prices.image_output_tokens(1024, 1024, "high")
    assert result.usage.input_tokens_details.text_tokens == 3
    assert result.usage.input_tokens == 3
    assert result.usage.total_tokens == 3 + result.usage.output_tokens


async def test_streaming_gives_partials_then_completed(
    client: openai.AsyncOpenAI, server: OfflineImageServer
) -> None:
    stream = await client.images.generate(
        model=MODEL, prompt="a red fox", size="1536x1024", output_format="jpeg", stream=True, partial_images=2
    )
    events = [event async for event in stream]
    assert [event.type for event in events] == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    assert [getattr(event, "partial_image_index", None) for event in events[:2]] == [0, 1]
    for event in events:
        image = decode(event.b64_json)
        assert (image.size, image.format) == ((1536, 1024), "JPEG")
    completed = events[-1]
    assert completed.type == "image_generation.completed"
    prices = load_prices().model(MODEL)
    assert completed.usage.output_tokens == (
        prices.image_output_tokens(1536, 1024, "medium") + 2 * prices.partial_image_output_tokens
    )
    call = server.calls[-1]
    assert (call.stream, call.partial_images, call.status) == (True, 2, 200)


async def test_stream_partials_are_spread_over_latency(
    client: openai.AsyncOpenAI, server: OfflineImageServer
) -> None:
    server.latency = 0.4
    started = time.monotonic()
    stream = await client.images.generate(
        model=MODEL, prompt="slow", stream=True, partial_images=1, quality="low"
    )
    arrivals: list[float] = []
    async for _ in stream:
        arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 2
    assert arrivals[0] >= 0.15 and arrivals[1] >= 0.38


async def test_edit_with_two_references_and_mask(
    client: openai.AsyncOpenAI, server: OfflineImageServer
) -> None:
    first = png_bytes((800, 600), colour="blue")
    second = png_bytes((512, 512), colour="green", fmt="JPEG")
    mask = png_bytes((800, 600), mode="RGBA", colour=(0, 0, 0, 0))
    result = await client.images.edit(
        model=MODEL,
        image=[("first.png", first, "image/png"), ("second.jpg", second, "image/jpeg")],
        mask=("mask.png", mask, "image/png"),
        prompt="make it look like a poster",
        size="1024x1536",
        output_format="png",
    )
    assert result.data is not None and result.usage is not None
    image = decode(result.data[0].b64_json).convert("RGB")
    assert image.size == (1024, 1536)
    # The thumbnail of the first (blue) reference is pasted near the top-left corner.
    r, g, b = image.getpixel((120, 120))  # type: ignore[misc]
    assert b > 200 and r < 50 and g < 50
    assert result.usage.input_tokens_details.image_tokens > 0
    call = server.calls[-1]
    assert (call.endpoint, call.images, call.mask, call.status) == ("edits", 2, True, 200)


async def test_streamed_edit_with_single_image(client: openai.AsyncOpenAI) -> None:
    stream = await client.images.edit(
        model=MODEL,
        image=("only.png", png_bytes((640, 640)), "image/png"),
        prompt="sketch",
        stream=True,
        partial_images=1,
        output_format="webp",
        output_compression=50,
    )
    events = [event async for event in stream]
    assert [event.type for event in events] == ["image_edit.partial_image", "image_edit.completed"]
    assert decode(events[-1].b64_json).format == "WEBP"


# --- validation -------------------------------------------------------------------------


GENERATE_CASES: list[tuple[str, dict[str, Any]]] = [
    ("input_fidelity", {"extra_body": {"input_fidelity": "high"}}),
    ("background", {"background": "transparent"}),
    ("size", {"size": "1000x1000"}),
    ("size", {"size": "4096x2304"}),
    ("size", {"size": "3840x1024"}),
    ("size", {"size": "big"}),
    ("quality", {"quality": "ultra"}),
    ("output_format", {"output_format": "gif"}),
    ("output_compression", {"output_format": "jpeg", "output_compression": 101}),
    ("output_compression", {"output_format": "png", "output_compression": 50}),
    ("n", {"n": 2}),
    ("prompt", {"prompt": ""}),
    ("prompt", {"prompt": "x" * 32_001}),
    ("partial_images", {"stream": True, "partial_images": 4}),
    ("model", {"model": "dall-e-9"}),
]


@pytest.mark.parametrize(
    ("param", "kwargs"), GENERATE_CASES, ids=[f"{p}-{i}" for i, (p, _) in enumerate(GENERATE_CASES)]
)
async def test_generate_validation(
    client: openai.AsyncOpenAI, server: OfflineImageServer, param: str, kwargs: dict[str, Any]
) -> None:
    args: dict[str, Any] = {"model": MODEL, "prompt": "ok", **kwargs}
    with pytest.raises(openai.BadRequestError) as caught:
        await client.images.generate(**args)
    assert caught.value.param == param
    assert caught.value.status_code == 400
    assert isinstance(caught.value.body, dict) and caught.value.body["type"] == "invalid_request_error"
    assert param.split("_")[0] in caught.value.message.lower()
    assert server.calls[-1].status == 400


async def test_missing_prompt(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.post("/images/generations", body={"model": MODEL}, cast_to=ImagesResponse)
    assert caught.value.param == "prompt"


async def test_unparseable_json_body(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        await client.post("/images/generations", content=b"{nope", cast_to=ImagesResponse)


EDIT_CASES: list[tuple[str, dict[str, Any]]] = [
    ("image", {"image": []}),
    ("image", {"image": [png_bytes((700, 700))] * 6}),
    ("image", {"image": [("x.png", b"definitely not an image", "image/png")]}),
    ("mask", {"mask": ("m.jpg", png_bytes((700, 700), fmt="JPEG"), "image/jpeg")}),
    ("mask", {"mask": ("m.png", png_bytes((700, 700), mode="RGB"), "image/png")}),
    ("mask", {"mask": ("m.png", png_bytes((640, 640), mode="RGBA"), "image/png")}),
    ("input_fidelity", {"input_fidelity": "high"}),
    ("partial_images", {"stream": True, "partial_images": -1}),
]


@pytest.mark.parametrize(
    ("param", "kwargs"), EDIT_CASES, ids=[f"{p}-{i}" for i, (p, _) in enumerate(EDIT_CASES)]
)
async def test_edit_validation(client: openai.AsyncOpenAI, param: str, kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"model": MODEL, "prompt": "ok", "image": [png_bytes((700, 700))], **kwargs}
    with pytest.raises(openai.BadRequestError) as caught:
        await client.images.edit(**args)
    assert caught.value.param == param


# --- faults -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "status"),
    [
        pytest.param("500", 500, id="500_then_success_is_retried"),
        pytest.param("429:1", 429, id="429_retry_after_is_honoured"),
    ],
)
async def test_a_retryable_fault_then_success_is_retried(
    make_client: ClientFactory, server: OfflineImageServer, fault: str, status: int
) -> None:
    server.push_faults(fault)
    client = make_client(max_retries=2)
    result = await client.images.generate(model=MODEL, prompt="retry me", quality="low")
    assert result.data is not None
    assert [(c.fault, c.status) for c in server.calls] == [(fault, status), (None, 200)]


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_have_openai_bodies(
    client: openai.AsyncOpenAI, server: OfflineImageServer, status: int
) -> None:
    server.push_faults(str(status))
    with pytest.raises(openai.InternalServerError) as caught:
        await client.images.generate(model=MODEL, prompt="x")
    assert caught.value.status_code == status
    assert isinstance(caught.value.body, dict) and caught.value.body["type"] == "server_error"
    assert caught.value.request_id == server.calls[-1].request_id


async def test_429_headers(client: openai.AsyncOpenAI, server: OfflineImageServer) -> None:
    server.push_faults("429:7")
    with pytest.raises(openai.RateLimitError) as caught:
        await client.images.generate(model=MODEL, prompt="busy")
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.code == "rate_limit_exceeded"


async def test_moderation(make_client: ClientFactory, server: OfflineImageServer) -> None:
    server.push_faults("moderation")
    client = make_client(max_retries=2)
    with pytest.raises(openai.BadRequestError) as caught:
        await client.images.generate(model=MODEL, prompt="something")
    assert caught.value.code == "moderation_blocked"
    assert isinstance(caught.value.body, dict) and caught.value.body["type"] == "image_generation_user_error"
    assert "safety system" in caught.value.message
    assert len(server.calls) == 1


async def test_hang_times_out_and_ends_server_side(
    make_client: ClientFactory, server: OfflineImageServer
) -> None:
    server.push_faults("hang")
    client = make_client(max_retries=0, timeout=0.5)
    with pytest.raises(openai.APITimeoutError):
        await client.images.generate(model=MODEL, prompt="wait")
    assert server.calls[-1].fault == "hang" and server.calls[-1].status == 0
    for _ in range(100):
        if not server._tasks:
            break
        await asyncio.sleep(0.01)
    assert not server._tasks


async def test_stop_ends_a_hang_quickly() -> None:
    srv = OfflineImageServer(latency=0.05, faults="hang")
    await srv.start()
    client = openai.AsyncOpenAI(base_url=srv.base_url, api_key="test", max_retries=0, timeout=30)
    pending = asyncio.create_task(client.images.generate(model=MODEL, prompt="wait"))
    for _ in range(200):
        if srv.calls:
            break
        await asyncio.sleep(0.01)
    started = time.monotonic()
    await srv.stop()
    assert time.monotonic() - started < 2
    with pytest.raises(openai.APIConnectionError):
        await pending
    await client.close()


@pytest.mark.parametrize(("partials", "expected"), [(2, ["image_generation.partial_image"]), (0, [])])
async def test_drop_on_stream(
    client: openai.AsyncOpenAI, server: OfflineImageServer, partials: int, expected: list[str]
) -> None:
    server.push_faults("drop")
    stream = await client.images.generate(
        model=MODEL, prompt="fragile", stream=True, partial_images=partials, quality="low"
    )
    types: list[str] = []
    with pytest.raises(Exception):  # noqa: B017 - any failure of the stream is what a dropped stream looks like
        async for event in stream:
            types.append(event.type)
    assert types == expected
    assert (server.calls[-1].fault, server.calls[-1].status) == ("drop", 200)


async def test_drop_non_stream(client: openai.AsyncOpenAI, server: OfflineImageServer) -> None:
    server.push_faults("drop")
    with pytest.raises(openai.APIConnectionError):
        await client.images.generate(model=MODEL, prompt="fragile", quality="low")
    # The next call works again.
    assert (await client.images.generate(model=MODEL, prompt="fine", quality="low")).data


async def test_garbage(client: openai.AsyncOpenAI, server: OfflineImageServer) -> None:
    server.push_faults("garbage,garbage")
    with pytest.raises(Exception):  # noqa: B017 - the SDK surfaces a JSON decode error
        await client.images.generate(model=MODEL, prompt="x")
    stream = await client.images.generate(model=MODEL, prompt="x", stream=True, partial_images=1)
    with pytest.raises(Exception):  # noqa: B017
        async for _ in stream:
            pass


@pytest.mark.parametrize("partials", [0, 1])
async def test_truncated_answers_200_with_an_image_cut_off_half_way(
    client: openai.AsyncOpenAI, server: OfflineImageServer, partials: int
) -> None:
    """Valid JSON and valid base64, but the image stops half way: the bytes decode, the picture does not."""
    server.push_faults("truncated")
    params: dict[str, Any] = {"model": MODEL, "prompt": "cut", "quality": "low", "output_format": "png"}
    if partials:
        stream = await client.images.generate(**params, stream=True, partial_images=partials)
        b64 = [event async for event in stream][-1].b64_json
    else:
        b64 = (await client.images.generate(**params)).data[0].b64_json  # type: ignore[index]
    whole = (await client.images.generate(**params)).data[0].b64_json  # type: ignore[index]
    assert b64 and whole and whole.startswith(b64) and len(b64) < len(whole) * 0.6
    with pytest.raises(OSError):
        decode(b64)
    assert [(c.fault, c.status) for c in server.calls] == [("truncated", 200), (None, 200)]


@pytest.mark.parametrize("code", ["insufficient_quota", "billing_hard_limit_reached"])
async def test_an_account_out_of_credit_is_a_429_with_its_error_code(
    client: openai.AsyncOpenAI, server: OfflineImageServer, code: str
) -> None:
    server.push_faults(code)
    with pytest.raises(openai.RateLimitError) as caught:
        await client.images.generate(model=MODEL, prompt="x")
    assert caught.value.code == code and "retry-after" not in caught.value.response.headers
    assert "exceeded your current quota" in caught.value.message


async def test_sticky_fault_and_queue_order(client: openai.AsyncOpenAI, server: OfflineImageServer) -> None:
    server.push_faults(["503", "500*"])
    for expected in (503, 500, 500):
        with pytest.raises(openai.InternalServerError) as caught:
            await client.images.generate(model=MODEL, prompt="x")
        assert caught.value.status_code == expected
    assert server.pending_faults == ("500*",)


def test_fault_parsing() -> None:
    assert parse_faults(" 500, 429:2 ,hang,drop*,moderation,garbage,truncated,429:insufficient_quota*") == [
        "500",
        "429:2",
        "hang",
        "drop*",
        "moderation",
        "garbage",
        "truncated",
        "insufficient_quota*",
    ]
    with pytest.raises(ConfigError, match="teapot"):
        parse_faults("500,teapot")


def test_from_env() -> None:
    srv = OfflineImageServer.from_env({"IMAGEBOT_OFFLINE_FAULTS": "500,hang"})
    assert srv.latency == 3.0 and srv.pending_faults == ("500", "hang")
    assert OfflineImageServer.from_env({"IMAGEBOT_OFFLINE_LATENCY": "0.25"}).latency == 0.25
    with pytest.raises(ConfigError, match="IMAGEBOT_OFFLINE_LATENCY"):
        OfflineImageServer.from_env({"IMAGEBOT_OFFLINE_LATENCY": "soon"})


# --- request ids ---------------------------------------------------------------------------


async def test_every_response_has_a_request_id(
    client: openai.AsyncOpenAI, server: OfflineImageServer
) -> None:
    raw = await client.images.with_raw_response.generate(model=MODEL, prompt="id please", quality="low")
    assert REQUEST_ID.match(raw.headers["x-request-id"])
    assert raw.headers["x-request-id"] == server.calls[-1].request_id
    assert raw.parse().data

    server.push_faults("moderation")
    with pytest.raises(openai.BadRequestError) as refused:
        await client.images.generate(model=MODEL, prompt="x")
    assert refused.value.request_id == server.calls[-1].request_id
    with pytest.raises(openai.BadRequestError) as invalid:
        await client.images.generate(model=MODEL, prompt="x", size="7x7")
    assert invalid.value.request_id is not None and REQUEST_ID.match(invalid.value.request_id)
    with pytest.raises(openai.NotFoundError) as missing:
        await client.post("/images/nowhere", body={}, cast_to=ImagesResponse)
    assert missing.value.request_id is not None and REQUEST_ID.match(missing.value.request_id)

    stream_raw = await client.images.with_raw_response.generate(model=MODEL, prompt="s", stream=True)
    assert REQUEST_ID.match(stream_raw.headers["x-request-id"])
    assert [event.type async for event in stream_raw.parse()] == ["image_generation.completed"]


# --- the estimate is never below what the server reports -------------------------------------


@pytest.mark.parametrize("quality", ["low", "medium", "high", "auto"])
@pytest.mark.parametrize("size", ["auto", "1536x1024", "2048x1152"])
async def test_estimate_covers_reported_usage(client: openai.AsyncOpenAI, quality: str, size: str) -> None:
    prices = load_prices().model(MODEL)
    prompt = "ünïcødé 海报 🚀 prompt"
    args: dict[str, Any] = {"size": size, "quality": quality, "output_format": "jpeg"}
    stream = await client.images.generate(model=MODEL, prompt=prompt, stream=True, partial_images=1, **args)
    events = [event async for event in stream]
    completed = events[-1]
    assert completed.type == "image_generation.completed"
    u = completed.usage
    usage = Usage(
        text_tokens=u.input_tokens_details.text_tokens,
        image_tokens=u.input_tokens_details.image_tokens,
        output_tokens=u.output_tokens,
    )
    estimate = estimate_micros(prices, size=parse_size(size), quality=quality, prompt=prompt, partials=1)
    assert estimate >= cost_micros(prices, usage)
