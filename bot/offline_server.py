"""An OpenAI-compatible Images API server for offline use and for tests (SPEC section 8).

It answers `POST /v1/images/generations` (JSON) and `POST /v1/images/edits` (multipart)
the way the real API does, as far as the OpenAI SDK can tell: it validates parameters
like gpt-image-2, renders a real image with Pillow at the requested size and format,
streams partial images as Server-Sent Events, and reports `usage` tokens from the
project's price table. Knobs for latency and a queue of faults let tests and benchmarks
drive every error path.
"""

from __future__ import annotations

import asyncio
import base64
import colorsys
import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import math
import re
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import BodyPartReader, web
from PIL import Image, ImageChops, ImageDraw, ImageFont

from .errors import ConfigError
from .pricing import ModelPrices, PriceTable, load_prices, reference_image_tokens
from .sizes import AUTO, size_problem

DEFAULT_MODEL = "gpt-image-2"
AUTO_SIZE = (1024, 1024)
MAX_PROMPT_CHARS = 32_000
MAX_IMAGES = 5
MAX_IMAGE_BYTES = 50 * 1024 * 1024
MAX_PARTIAL_IMAGES = 3
QUALITIES = ("low", "medium", "high", "auto")
FORMATS = ("png", "jpeg", "webp")
BACKGROUNDS = ("opaque", "auto")
DEFAULT_COMPRESSION = 85
# The whole multipart body: five 50 MB references, a mask and the form fields.
CLIENT_MAX_SIZE = (MAX_IMAGES + 1) * MAX_IMAGE_BYTES + 1024 * 1024
MODERATION_MESSAGE = (
    "Your request was rejected by the safety system. If you believe this is an error, "
    "contact us at help.openai.com and include the request ID {request_id}."
)
GARBAGE_BODY = b"<html><body>502 Bad Gateway</body></html>{not json"
_FAULT_RE = re.compile(r"^(ok|400|408|409|500|502|503|429(?::[0-9.]+)?|hang|drop|moderation|garbage)\*?$")
_SIZE_RE = re.compile(r"^([0-9]{1,5})x([0-9]{1,5})$")
_REQUEST_ID_KEY = web.RequestKey("imagebot_request_id", str)


@dataclass
class CallRecord:
    """One HTTP request the server received, appended when it arrives and updated when answered."""

    endpoint: str
    request_id: str
    model: str | None = None
    prompt: str | None = None
    size: str | None = None
    quality: str | None = None
    output_format: str | None = None
    stream: bool = False
    partial_images: int = 0
    images: int = 0
    mask: bool = False
    fault: str | None = None
    # 0 until a status line is sent; stays 0 for `hang` and for clients that gave up first.
    status: int = 0
    client_request_id: str | None = None  # the caller's X-Client-Request-Id: which image this attempt was for


class _ApiError(Exception):
    """An error answered as OpenAI-style JSON."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        type_: str = "invalid_request_error",
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.type = type_
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _invalid(param: str, message: str, code: str = "invalid_value") -> _ApiError:
    return _ApiError(400, message, param=param, code=code)


@dataclass(frozen=True)
class _Params:
    """A validated request."""

    endpoint: str
    model: str
    prompt: str
    width: int
    height: int
    quality: str  # as requested, `auto` included
    output_format: str
    compression: int | None
    stream: bool
    partial_images: int
    images: tuple[Image.Image, ...] = ()
    mask: bool = False

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def rendered_quality(self) -> str:
        return "medium" if self.quality == "auto" else self.quality

    @property
    def event_prefix(self) -> str:
        return "image_generation" if self.endpoint == "generations" else "image_edit"


@dataclass
class _Body:
    """A request body before validation: form or JSON fields, and uploaded files (edits)."""

    fields: dict[str, Any]
    form: bool
    images: list[bytes] = field(default_factory=list)
    mask: bytes | None = None


def parse_faults(spec: str | Iterable[str]) -> list[str]:
    """Split and check a fault queue such as `"500,500,429:2,hang,drop,moderation"`.

    Tokens are `ok` (a normal answer: a spacer in the queue), `500`, `502`, `503`, `429:N` (Retry-After N seconds; bare `429` sends no
    Retry-After), `408` (request timeout), `400` and `409` (client errors that, like a careless gateway, also say
    `x-should-retry: true`), `hang`, `drop`, `moderation` and `garbage`; a trailing `*` makes a token
    permanent (never consumed). Raises ConfigError naming the bad token.
    """
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    tokens: list[str] = []
    for part in parts:
        token = part.strip().lower()
        if not token:
            continue
        if not _FAULT_RE.match(token):
            raise ConfigError(
                f"IMAGEBOT_OFFLINE_FAULTS: unknown fault {part.strip()!r}; use ok, 400, 408, 409, 500, 502, 503, "
                "429:N, hang, drop, moderation or garbage, optionally ending in * (always)"
            )
        tokens.append(token)
    return tokens


def _new_request_id() -> str:
    return f"req_{uuid.uuid4().hex}"


# --- rendering (runs in worker threads) -------------------------------------------------


def _prompt_colours(prompt: str) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    hue = digest[0] / 255
    shift = 0.25 + digest[1] / 255 * 0.25

    def rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
        r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
        return round(r * 255), round(g * 255), round(b * 255)

    return rgb(hue, 0.65, 0.55), rgb(hue + shift, 0.75, 0.9)


def _gradient(width: int, height: int, prompt: str) -> Image.Image:
    start, end = _prompt_colours(prompt)
    vertical = Image.linear_gradient("L").resize((width, height))
    horizontal = Image.linear_gradient("L").rotate(90).resize((width, height))
    # Average of a top-to-bottom and a left-to-right ramp: a diagonal ramp.
    diagonal = ImageChops.add(vertical, horizontal, scale=2.0)
    return Image.composite(
        Image.new("RGB", (width, height), end), Image.new("RGB", (width, height), start), diagonal
    )


def _wrap(
    draw: ImageDraw.ImageDraw,
    text: str,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    max_width: float,
    max_lines: int,
) -> list[str]:
    """Greedy word wrap that also breaks inside long words (CJK text has no spaces)."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if draw.textlength(candidate, font=font) <= max_width:
            current = candidate
            continue
        if current:
            lines.append(current)
            current = ""
        for char in word:
            if current and draw.textlength(current + char, font=font) > max_width:
                lines.append(current)
                current = ""
                if len(lines) > max_lines:
                    break
            current += char
        if len(lines) > max_lines:
            break
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: max(0, len(lines[-1]) - 1)] + "…"
    return lines


def _thumbnail(source: Image.Image, box: tuple[int, int]) -> Image.Image:
    """An RGBA thumbnail of `source` fitting in `box`; a grey square for modes Pillow cannot convert."""
    try:
        thumb = source.convert("RGBA")
    except (ValueError, OSError):
        thumb = Image.new("RGBA", source.size, (128, 128, 128, 255))
    thumb.thumbnail(box)
    return thumb


def _render(params: _Params) -> Image.Image:
    width, height = params.width, params.height
    image = _gradient(width, height, params.prompt)
    draw = ImageDraw.Draw(image)
    short = min(width, height)
    margin = short // 16
    top = margin
    if params.images:
        thumb = _thumbnail(params.images[0], (max(1, width // 3), max(1, height // 3)))
        frame = max(2, short // 256)
        box = (margin - frame, margin - frame, margin + thumb.width + frame, margin + thumb.height + frame)
        draw.rectangle(box, fill=(255, 255, 255))
        image.paste(thumb, (margin, margin), thumb)
        top = margin + thumb.height + 2 * frame + margin // 2
    font_size = max(12, short // 18)
    font = ImageFont.load_default(size=font_size)
    line_height = round(font_size * 1.25)
    max_lines = max(1, (height - top - 3 * margin) // line_height)
    stroke = max(1, font_size // 14)
    y = top
    for line in _wrap(draw, params.prompt, font, width - 2 * margin, max_lines):
        draw.text(
            (margin, y), line, font=font, fill=(255, 255, 255), stroke_width=stroke, stroke_fill=(0, 0, 0)
        )
        y += line_height
    label_font = ImageFont.load_default(size=max(10, font_size // 2))
    label = f"offline {params.model} · {params.size} · {params.rendered_quality} · {params.output_format}"
    draw.text(
        (margin, height - margin),
        label,
        font=label_font,
        fill=(255, 255, 255),
        anchor="ld",
        stroke_width=max(1, stroke // 2),
        stroke_fill=(0, 0, 0),
    )
    return image


def _encode(image: Image.Image, output_format: str, compression: int | None) -> bytes:
    buffer = io.BytesIO()
    quality = DEFAULT_COMPRESSION if compression is None else compression
    if output_format == "jpeg":
        image.convert("RGB").save(buffer, "JPEG", quality=quality)
    elif output_format == "webp":
        # method 0 is the fastest encoder; the offline server is about speed, not size.
        image.convert("RGB").save(buffer, "WEBP", quality=quality, method=0)
    else:
        image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _render_final(params: _Params) -> tuple[Image.Image, str]:
    if not params.images:  # generations are pure functions of their parameters: load tests repeat them
        return _render_generation(replace(params, stream=False, partial_images=0))
    image = _render(params)
    return image, _b64(_encode(image, params.output_format, params.compression))


@functools.lru_cache(maxsize=4)
def _render_generation(params: _Params) -> tuple[Image.Image, str]:
    image = _render(params)
    return image, _b64(_encode(image, params.output_format, params.compression))


def _partial(final: Image.Image, params: _Params, index: int) -> str:
    if not params.images:  # like the final: the same parameters give the same partials
        return _generation_partial(replace(params, stream=False), index)
    return _render_partial(final, params, index)


@functools.lru_cache(maxsize=16)
def _generation_partial(params: _Params, index: int) -> str:
    final, _ = _render_generation(replace(params, partial_images=0))
    return _render_partial(final, params, index)


def _render_partial(final: Image.Image, params: _Params, index: int) -> str:
    """A blurred stand-in for partial image `index`: sharper the later it comes, always the final size."""
    factor = 2 ** (params.partial_images - index + 2)
    small = final.resize(
        (max(1, final.width // factor), max(1, final.height // factor)), Image.Resampling.BOX
    )
    blurred = small.resize(final.size, Image.Resampling.BILINEAR)
    return _b64(_encode(blurred, params.output_format, params.compression))


def _open_image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _open_images(images: list[bytes], mask: bytes | None) -> tuple[list[Image.Image], Image.Image | None]:
    opened: list[Image.Image] = []
    for index, data in enumerate(images):
        try:
            opened.append(_open_image(data))
        except Exception as exc:  # Pillow raises many types for undecodable input
            raise _invalid(
                "image",
                f"Invalid image file or mode for image {index + 1}: it could not be decoded as PNG, JPEG or "
                f"WebP ({type(exc).__name__}).",
                "invalid_image_format",
            ) from exc
    mask_image: Image.Image | None = None
    if mask is not None:
        try:
            mask_image = _open_image(mask)
        except Exception as exc:  # Pillow raises many types for undecodable input
            raise _invalid(
                "mask", "Invalid mask: it could not be decoded as a PNG image.", "invalid_image_format"
            ) from exc
    return opened, mask_image


# --- parameter parsing and validation ---------------------------------------------------


def _type_name(value: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def _get_str(body: _Body, name: str) -> str | None:
    value = body.fields.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid(
            name,
            f"Invalid type for '{name}': expected a string, but got {_type_name(value)} instead.",
            "invalid_type",
        )
    return value


def _get_int(body: _Body, name: str) -> int | None:
    value = body.fields.get(name)
    if value is None:
        return None
    if body.form and isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise _invalid(
                name, f"Invalid value for '{name}': expected an integer, but got {value!r}.", "invalid_type"
            ) from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(
            name,
            f"Invalid type for '{name}': expected an integer, but got {_type_name(value)} instead.",
            "invalid_type",
        )
    return value


def _get_bool(body: _Body, name: str) -> bool | None:
    value = body.fields.get(name)
    if value is None:
        return None
    if body.form and isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "1"):
            return True
        if text in ("false", "0"):
            return False
        raise _invalid(
            name, f"Invalid value for '{name}': expected a boolean, but got {value!r}.", "invalid_type"
        )
    if not isinstance(value, bool):
        raise _invalid(
            name,
            f"Invalid type for '{name}': expected a boolean, but got {_type_name(value)} instead.",
            "invalid_type",
        )
    return value


def _parse_size(text: str | None) -> tuple[int, int]:
    if text is None or text == str(AUTO):
        return AUTO_SIZE
    match = _SIZE_RE.match(text)
    if not match:
        raise _invalid("size", f"Invalid size {text!r}: use 'auto' or WIDTHxHEIGHT, for example '1536x1024'.")
    width, height = int(match[1]), int(match[2])
    problem = size_problem(width, height)
    if problem:
        raise _invalid(
            "size",
            f"Invalid size '{text}': {problem}. Sizes must have both edges multiples of 16 and at most 3840, "
            "a long:short ratio of at most 3:1, and 655,360 to 8,294,400 pixels.",
        )
    return width, height


def _validate(body: _Body, endpoint: str, prices: PriceTable) -> _Params:
    """Check a request like the real API; raise a 400 `_ApiError` naming the first bad parameter."""
    model = _get_str(body, "model") or DEFAULT_MODEL
    if model not in prices.models:
        raise _invalid(
            "model",
            f"Invalid model '{model}': this offline server knows {', '.join(sorted(prices.models))}.",
            "model_not_found",
        )
    if "prompt" not in body.fields:
        raise _invalid("prompt", "Missing required parameter: 'prompt'.", "missing_required_parameter")
    prompt = _get_str(body, "prompt")
    if prompt is None or not prompt.strip():
        raise _invalid("prompt", "Invalid value for 'prompt': the prompt must not be empty.", "empty_string")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise _invalid(
            "prompt",
            f"Invalid 'prompt': string too long. Expected a string with maximum length {MAX_PROMPT_CHARS}, "
            f"but got a string with length {len(prompt)} instead.",
            "string_above_max_length",
        )
    if "input_fidelity" in body.fields:
        raise _invalid(
            "input_fidelity",
            f"The 'input_fidelity' parameter is not supported with {model}: high fidelity is automatic for edits.",
            "unsupported_parameter",
        )
    background = _get_str(body, "background")
    if background == "transparent":
        raise _invalid(
            "background",
            f"Transparent backgrounds are not supported with {model}; use 'opaque' or 'auto'.",
            "unsupported_value",
        )
    if background is not None and background not in BACKGROUNDS:
        raise _invalid(
            "background", f"Invalid value for 'background': {background!r}; use 'opaque' or 'auto'."
        )
    n = _get_int(body, "n")
    if n is not None and n != 1:
        raise _invalid("n", f"Invalid value for 'n': {n}. {model} makes one image per request (n=1).")
    width, height = _parse_size(_get_str(body, "size"))
    quality = _get_str(body, "quality") or "auto"
    if quality not in QUALITIES:
        raise _invalid(
            "quality", f"Invalid value for 'quality': {quality!r}; use one of {', '.join(QUALITIES)}."
        )
    output_format = _get_str(body, "output_format") or "png"
    if output_format not in FORMATS:
        raise _invalid(
            "output_format",
            f"Invalid value for 'output_format': {output_format!r}; use one of {', '.join(FORMATS)}.",
        )
    compression = _get_int(body, "output_compression")
    if compression is not None:
        if output_format == "png":
            raise _invalid(
                "output_compression",
                "'output_compression' is only supported with output_format 'jpeg' or 'webp', not 'png'.",
                "unsupported_parameter",
            )
        if not 0 <= compression <= 100:
            raise _invalid(
                "output_compression", f"Invalid value for 'output_compression': {compression}; use 0 to 100."
            )
    stream = bool(_get_bool(body, "stream"))
    partial_images = _get_int(body, "partial_images") or 0
    if not 0 <= partial_images <= MAX_PARTIAL_IMAGES:
        raise _invalid(
            "partial_images",
            f"Invalid value for 'partial_images': {partial_images}; use 0 to {MAX_PARTIAL_IMAGES}.",
        )
    if endpoint == "edits":
        if not body.images:
            raise _invalid("image", "Missing required parameter: 'image'.", "missing_required_parameter")
        if len(body.images) > MAX_IMAGES:
            raise _invalid(
                "image", f"Too many images: {len(body.images)} given, at most {MAX_IMAGES} are allowed."
            )
        for index, data in enumerate(body.images):
            if len(data) > MAX_IMAGE_BYTES:
                raise _invalid("image", f"Image {index + 1} is {len(data):,} bytes, over the 50 MB limit.")
    return _Params(
        endpoint=endpoint,
        model=model,
        prompt=prompt,
        width=width,
        height=height,
        quality=quality,
        output_format=output_format,
        compression=compression,
        stream=stream,
        partial_images=partial_images,
    )


def _check_mask(mask: Image.Image, first: Image.Image) -> None:
    has_alpha = mask.mode in ("RGBA", "LA", "PA") or "transparency" in mask.info
    if mask.format != "PNG" or not has_alpha:
        raise _invalid(
            "mask",
            f"Invalid mask: it must be a PNG with an alpha channel (got {mask.format or 'unknown'} "
            f"in mode {mask.mode}).",
            "invalid_image_format",
        )
    if mask.size != first.size:
        raise _invalid(
            "mask",
            f"Invalid mask size {mask.width}x{mask.height}: it must match the first image, "
            f"{first.width}x{first.height}.",
        )


def _usage(params: _Params, prices: ModelPrices, partials_sent: int) -> dict[str, Any]:
    """Usage consistent with the price table, so estimates made from it are never below it."""
    quality = params.rendered_quality
    output = 0
    if quality in prices.per_image:
        output = prices.image_output_tokens(params.width, params.height, quality)
    output += partials_sent * prices.partial_image_output_tokens
    text = math.ceil(len(params.prompt) / 4)
    image = sum(reference_image_tokens(prices, im.width, im.height) for im in params.images)
    return {
        "input_tokens": text + image,
        "input_tokens_details": {"text_tokens": text, "image_tokens": image},
        "output_tokens": output,
        "total_tokens": text + image + output,
    }


# --- the server ---------------------------------------------------------------------------


class OfflineImageServer:
    """An aiohttp server that behaves like the OpenAI Images API for gpt-image-2.

    `latency` (seconds per render) and the fault queue may be changed at any time; `calls`
    records every request in arrival order.
    """

    def __init__(
        self,
        *,
        latency: float = 3.0,
        faults: str | Iterable[str] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        prices: PriceTable | None = None,
    ) -> None:
        self.latency = latency
        self.calls: list[CallRecord] = []
        self.host = host
        self.port = port
        self.prices = prices if prices is not None else load_prices()
        self._faults: deque[str] = deque(parse_faults(faults))
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> OfflineImageServer:
        """Build from `IMAGEBOT_OFFLINE_LATENCY` (default 3), `IMAGEBOT_OFFLINE_FAULTS` and `IMAGEBOT_PRICES`."""
        raw_latency = environ.get("IMAGEBOT_OFFLINE_LATENCY", "").strip()
        latency = 3.0
        if raw_latency:
            try:
                latency = float(raw_latency)
            except ValueError:
                latency = math.nan
            if not math.isfinite(latency) or latency < 0:
                raise ConfigError(
                    f"IMAGEBOT_OFFLINE_LATENCY={raw_latency!r} is not a number of seconds; use e.g. 3 or 0.5"
                )
        prices_path = environ.get("IMAGEBOT_PRICES") or None
        return cls(
            latency=latency,
            faults=environ.get("IMAGEBOT_OFFLINE_FAULTS", ""),
            prices=load_prices(prices_path) if prices_path else None,
        )

    @property
    def base_url(self) -> str:
        """`http://HOST:PORT/v1`, for `AsyncOpenAI(base_url=...)`; only after start()."""
        if self._base_url is None:
            raise RuntimeError("the offline image server is not started")
        return self._base_url

    @property
    def pending_faults(self) -> tuple[str, ...]:
        """The fault tokens still queued, next first."""
        return tuple(self._faults)

    def push_faults(self, spec: str | Iterable[str]) -> None:
        """Append fault tokens (see `parse_faults`) to the queue; one is consumed per call."""
        self._faults.extend(parse_faults(spec))

    async def start(self) -> str:
        """Listen on host:port (port 0 picks a free one) and return the base URL."""
        if self._runner is not None:
            return self.base_url
        app = web.Application(client_max_size=CLIENT_MAX_SIZE, middlewares=[self._error_middleware])
        app.router.add_post("/v1/images/generations", self._generations)
        app.router.add_post("/v1/images/edits", self._edits)
        app.on_response_prepare.append(self._add_request_id)
        # handler_cancellation: a client that gives up (timeout) ends its `hang` or render.
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        port = runner.addresses[0][1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._base_url = f"http://{host}:{port}/v1"
        return self._base_url

    async def stop(self) -> None:
        """Stop listening and end every request in flight (hangs included)."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        tasks = [task for task in self._tasks if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await runner.cleanup()
        self._base_url = None

    # --- plumbing ---

    @web.middleware
    async def _error_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            error = _ApiError(exc.status, f"{exc.reason}: {request.method} {request.path}")
            return web.json_response(error.body(), status=exc.status)

    async def _add_request_id(self, request: web.Request, response: web.StreamResponse) -> None:
        request_id = request.get(_REQUEST_ID_KEY) or _new_request_id()
        response.headers.setdefault("x-request-id", request_id)

    def _next_fault(self) -> str | None:
        if not self._faults:
            return None
        token = self._faults[0]
        if token.endswith("*"):
            return token[:-1]
        return self._faults.popleft()

    async def _generations(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "generations")

    async def _edits(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "edits")

    async def _handle(self, request: web.Request, endpoint: str) -> web.StreamResponse:
        request_id = _new_request_id()
        request[_REQUEST_ID_KEY] = request_id
        record = CallRecord(endpoint=endpoint, request_id=request_id,
                            client_request_id=request.headers.get("X-Client-Request-Id"))
        self.calls.append(record)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            return await self._serve(request, endpoint, record)
        except _ApiError as exc:
            record.status = exc.status
            return web.json_response(exc.body(), status=exc.status, headers=exc.headers)
        except web.HTTPException as exc:
            record.status = exc.status
            raise
        except Exception:
            record.status = 500
            raise
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def _read_body(self, request: web.Request, endpoint: str) -> _Body:
        if endpoint == "generations":
            raw = await request.read()
            try:
                fields = json.loads(raw)
            except ValueError:
                raise _ApiError(
                    400,
                    "We could not parse the JSON body of your request. The OpenAI API expects a JSON payload.",
                ) from None
            if not isinstance(fields, dict):
                raise _ApiError(400, "The request body must be a JSON object.")
            return _Body(fields=fields, form=False)
        if not request.content_type.startswith("multipart/"):
            raise _ApiError(
                400,
                f"Invalid Content-Type header ({request.content_type}), expected multipart/form-data.",
            )
        body = _Body(fields={}, form=True)
        total = 0
        try:
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader) or part.name is None:
                    continue
                data = bytes(await part.read(decode=True))
                total += len(data)
                if total > CLIENT_MAX_SIZE:
                    raise _ApiError(413, f"The request body is over the {CLIENT_MAX_SIZE:,} byte limit.")
                self._add_part(body, part.name, data)
        except ValueError as exc:
            raise _ApiError(400, f"The multipart/form-data body could not be parsed: {exc}") from None
        return body

    @staticmethod
    def _add_part(body: _Body, name: str, data: bytes) -> None:
        if name in ("image", "image[]"):
            body.images.append(data)
        elif name == "mask":
            body.mask = data
        elif name != "markup":
            body.fields[name] = data.decode("utf-8", errors="replace")

    def _fill_record(self, record: CallRecord, body: _Body) -> None:
        def text(name: str) -> str | None:
            value = body.fields.get(name)
            return value if isinstance(value, str) else None

        record.model = text("model")
        record.prompt = text("prompt")
        record.size = text("size")
        record.quality = text("quality")
        record.output_format = text("output_format")
        stream = body.fields.get("stream")
        record.stream = stream is True or (
            isinstance(stream, str) and stream.strip().lower() in ("true", "1")
        )
        partials = body.fields.get("partial_images")
        with contextlib.suppress(TypeError, ValueError):
            record.partial_images = int(partials) if partials is not None else 0
        record.images = len(body.images)
        record.mask = body.mask is not None

    async def _serve(self, request: web.Request, endpoint: str, record: CallRecord) -> web.StreamResponse:
        body = await self._read_body(request, endpoint)
        self._fill_record(record, body)
        fault = self._next_fault()
        if fault == "ok":
            fault = None
        record.fault = fault
        if fault is not None and fault != "drop":
            return await self._fault_response(request, record, fault)
        params = _validate(body, endpoint, self.prices)
        if endpoint == "edits":
            images, mask = await asyncio.to_thread(_open_images, body.images, body.mask)
            if mask is not None:
                _check_mask(mask, images[0])
            params = dataclasses.replace(params, images=tuple(images), mask=mask is not None)
        if params.stream:
            return await self._stream(request, params, record, drop=fault == "drop")
        return await self._respond(request, params, record, drop=fault == "drop")

    async def _fault_response(
        self, request: web.Request, record: CallRecord, fault: str
    ) -> web.StreamResponse:
        request_id = record.request_id
        if fault in ("500", "502", "503"):
            raise _ApiError(
                int(fault),
                f"The server had an error while processing your request. Sorry about that! "
                f"You can retry your request, or contact us through our help center if the error persists. "
                f"(Please include the request ID {request_id} in your message.)",
                type_="server_error",
            )
        if fault == "408":
            raise _ApiError(408, "Request timed out.", type_="timeout")
        if fault in ("400", "409"):
            # A client error is never retried, whatever a gateway's headers say (SPEC §4).
            raise _ApiError(int(fault), "The request could not be processed in its current state.",
                            type_="invalid_request_error", headers={"x-should-retry": "true"})
        if fault.startswith("429"):
            _, _, seconds = fault.partition(":")
            raise _ApiError(
                429,
                "Rate limit reached for images per minute. Please try again later.",
                type_="requests",
                code="rate_limit_exceeded",
                headers={"Retry-After": seconds} if seconds else None,
            )
        if fault == "moderation":
            raise _ApiError(
                400,
                MODERATION_MESSAGE.format(request_id=request_id),
                type_="image_generation_user_error",
                code="moderation_blocked",
            )
        if fault == "garbage":
            record.status = 200
            if record.stream:
                response = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream"})
                await response.prepare(request)
                prefix = "image_generation" if record.endpoint == "generations" else "image_edit"
                await response.write(f'event: {prefix}.completed\ndata: {{"b64_json": <<garbage\n\n'.encode())
                await response.write_eof()
                return response
            return web.Response(status=200, body=GARBAGE_BODY, content_type="application/json")
        # hang: answer nothing; the client's disconnect (or stop()) cancels this task.
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def _sleep_until(self, deadline: float) -> None:
        delay = deadline - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _respond(
        self, request: web.Request, params: _Params, record: CallRecord, *, drop: bool
    ) -> web.StreamResponse:
        started = time.monotonic()
        latency = self.latency
        _, b64 = await asyncio.to_thread(_render_final, params)
        usage = _usage(params, self.prices.model(params.model), 0)
        usage["output_tokens_details"] = {"image_tokens": usage["output_tokens"], "text_tokens": 0}
        payload = {
            "created": int(time.time()),
            "data": [{"b64_json": b64}],
            "background": "opaque",
            "output_format": params.output_format,
            "quality": params.rendered_quality,
            "size": params.size,
            "usage": usage,
        }
        raw = await asyncio.to_thread(lambda: json.dumps(payload).encode("utf-8"))
        await self._sleep_until(started + latency)
        record.status = 200
        if not drop:
            return web.Response(body=raw, status=200, content_type="application/json")
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.content_length = len(raw)
        with contextlib.suppress(ConnectionError):
            await response.prepare(request)
            await response.write(raw[: len(raw) // 2])
            self._cut(request)
        return response

    async def _stream(
        self, request: web.Request, params: _Params, record: CallRecord, *, drop: bool
    ) -> web.StreamResponse:
        started = time.monotonic()
        latency = self.latency
        final, b64 = await asyncio.to_thread(_render_final, params)
        response = web.StreamResponse(
            status=200,
            headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"},
        )
        record.status = 200
        base = {
            "background": "opaque",
            "output_format": params.output_format,
            "quality": params.rendered_quality,
            "size": params.size,
        }
        steps = params.partial_images + 1
        try:
            await response.prepare(request)
            sent = 0
            for index in range(params.partial_images):
                partial = await asyncio.to_thread(_partial, final, params, index)
                await self._sleep_until(started + latency * (index + 1) / steps)
                event = {
                    "type": f"{params.event_prefix}.partial_image",
                    "b64_json": partial,
                    "created_at": int(time.time()),
                    "partial_image_index": index,
                    **base,
                }
                await response.write(await asyncio.to_thread(_sse, event))
                sent += 1
                if drop:
                    break
            if drop:
                self._cut(request)
                return response
            await self._sleep_until(started + latency)
            completed = {
                "type": f"{params.event_prefix}.completed",
                "b64_json": b64,
                "created_at": int(time.time()),
                **base,
                "usage": _usage(params, self.prices.model(params.model), sent),
            }
            await response.write(await asyncio.to_thread(_sse, completed))
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away; aiohttp finishes quietly when handed the response back
        return response

    def _cut(self, request: web.Request) -> None:
        """Close the connection mid-body: the client sees a truncated response."""
        transport = request.transport
        if transport is not None:
            # close(), not abort(): what was written is flushed first, so the client gets a partial body.
            transport.close()


def _sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


async def _serve_forever(server: OfflineImageServer) -> None:
    base_url = await server.start()
    print(f"offline image server at {base_url} (latency {server.latency:g}s)", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


def main_forever(host: str, port: int, latency: float, faults: str) -> None:
    """Run the server in the foreground until interrupted (`imagebot offline-server`)."""
    server = OfflineImageServer(latency=latency, faults=faults, host=host, port=port)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(server))
