"""The Images API's rules as the offline server applies them: a request body validated against the
model's capabilities in the price table (bot/model/data/prices.json), and `usage` computed by its price model.

Errors are OpenAI-style JSON (`ApiError`); every rejection names the parameter and, for a model's rule,
the model and the valid range.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from bot.model.pricing import ModelCapabilities, ModelPrices, PriceTable, reference_image_tokens
from bot.model.sizes import AUTO

DEFAULT_MODEL = "gpt-image-2"
MAX_PROMPT_CHARS = 32_000
MAX_IMAGE_BYTES = 50 * 1024 * 1024
QUALITIES = ("low", "medium", "high", "auto")
FORMATS = ("png", "jpeg", "webp")
BACKGROUNDS = ("opaque", "auto", "transparent")
DEFAULT_COMPRESSION = 85
_SIZE_RE = re.compile(r"^([0-9]{1,5})x([0-9]{1,5})$")


def client_max_size(prices: PriceTable) -> int:
    """The largest multipart body any model of the table takes: its references, a mask and the form fields."""
    most = max((m.capabilities.max_reference_images for m in prices.models.values()), default=0)
    return (max(most, 1) + 1) * MAX_IMAGE_BYTES + 1024 * 1024


class ApiError(Exception):
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


def invalid(param: str, message: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


@dataclass(frozen=True)
class Params:
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
    background: str = "auto"  # auto | opaque | transparent (only where the model accepts it)

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
class Body:
    """A request body before validation: form or JSON fields, and uploaded files (edits)."""

    fields: dict[str, Any]
    form: bool
    images: list[bytes] = field(default_factory=list)
    mask: bytes | None = None


# --- input images ---------------------------------------------------------------------------


def _open_image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data), formats=("PNG", "JPEG", "WEBP"))  # what the Images API accepts
    image.load()
    return image


def open_images(images: list[bytes], mask: bytes | None) -> tuple[list[Image.Image], Image.Image | None]:
    """Decode the uploaded images and mask (CPU work: run in a thread); a 400 for any that will not decode."""
    opened: list[Image.Image] = []
    for index, data in enumerate(images):
        try:
            opened.append(_open_image(data))
        except Exception as exc:  # Pillow raises many types for undecodable input
            raise invalid(
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
            raise invalid(
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


def _get_str(body: Body, name: str) -> str | None:
    value = body.fields.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(
            name,
            f"Invalid type for '{name}': expected a string, but got {_type_name(value)} instead.",
            "invalid_type",
        )
    return value


def _get_int(body: Body, name: str) -> int | None:
    value = body.fields.get(name)
    if value is None:
        return None
    if body.form and isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise invalid(
                name, f"Invalid value for '{name}': expected an integer, but got {value!r}.", "invalid_type"
            ) from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(
            name,
            f"Invalid type for '{name}': expected an integer, but got {_type_name(value)} instead.",
            "invalid_type",
        )
    return value


def _get_bool(body: Body, name: str) -> bool | None:
    value = body.fields.get(name)
    if value is None:
        return None
    if body.form and isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "1"):
            return True
        if text in ("false", "0"):
            return False
        raise invalid(
            name, f"Invalid value for '{name}': expected a boolean, but got {value!r}.", "invalid_type"
        )
    if not isinstance(value, bool):
        raise invalid(
            name,
            f"Invalid type for '{name}': expected a boolean, but got {_type_name(value)} instead.",
            "invalid_type",
        )
    return value


def _parse_size(text: str | None, model: str, prices: ModelPrices) -> tuple[int, int]:
    """`size` by the model's rule; `auto` renders the first of the sizes the price table says auto may be."""
    rule = prices.capabilities.sizes
    if text is None or text == str(AUTO):
        if not rule.auto:
            raise invalid("size", f"Invalid size 'auto': {rule.describe(model)}.")
        return prices.auto_sizes[0]
    match = _SIZE_RE.match(text)
    if not match:
        raise invalid("size", f"Invalid size {text!r}: use 'auto' or WIDTHxHEIGHT, for example '1536x1024'.")
    width, height = int(match[1]), int(match[2])
    problem = rule.problem(width, height)
    if problem and rule.is_fixed:
        raise invalid("size", f"Invalid size '{text}': {rule.describe(model)}.")
    if problem:
        raise invalid(
            "size",
            f"Invalid size '{text}': {problem}. {model} sizes must have both edges multiples of {rule.multiple} "
            f"and at most {rule.max_edge}, a long:short ratio of at most {rule.max_ratio:g}:1, and "
            f"{rule.min_pixels:,} to {rule.max_pixels:,} pixels.",
        )
    return width, height


def _check_input_fidelity(body: Body, endpoint: str, model: str, capabilities: ModelCapabilities) -> None:
    if "input_fidelity" not in body.fields:
        return
    if not capabilities.input_fidelity:
        raise invalid(
            "input_fidelity",
            f"The 'input_fidelity' parameter is not supported with {model}: high fidelity is automatic for edits.",
            "unsupported_parameter",
        )
    if endpoint != "edits":
        raise invalid(
            "input_fidelity",
            "The 'input_fidelity' parameter applies only to image edits.",
            "unsupported_parameter",
        )
    fidelity = _get_str(body, "input_fidelity")
    if fidelity not in capabilities.input_fidelity:
        raise invalid(
            "input_fidelity",
            f"Invalid value for 'input_fidelity': {fidelity!r}; {model} accepts "
            f"{', '.join(repr(v) for v in capabilities.input_fidelity)}.",
        )


def _background(body: Body, model: str, capabilities: ModelCapabilities) -> str:
    background = _get_str(body, "background") or "auto"
    if background == "transparent" and not capabilities.transparent_background:
        raise invalid(
            "background",
            f"Transparent backgrounds are not supported with {model}; use 'opaque' or 'auto'.",
            "unsupported_value",
        )
    if background not in BACKGROUNDS:
        valid = (
            "'opaque', 'auto' or 'transparent'"
            if capabilities.transparent_background
            else "'opaque' or 'auto'"
        )
        raise invalid("background", f"Invalid value for 'background': {background!r}; use {valid}.")
    return background


def _check_images(body: Body, model: str, capabilities: ModelCapabilities) -> None:
    most = capabilities.max_reference_images
    if most == 0:
        raise invalid("image", f"{model} does not edit images.", "unsupported_parameter")
    if not body.images:
        raise invalid("image", "Missing required parameter: 'image'.", "missing_required_parameter")
    if len(body.images) > most:
        raise invalid(
            "image", f"Too many images: {len(body.images)} given, at most {most} are allowed for {model}."
        )
    for index, data in enumerate(body.images):
        if len(data) > MAX_IMAGE_BYTES:
            raise invalid("image", f"Image {index + 1} is {len(data):,} bytes, over the 50 MB limit.")
    if body.mask is not None and not capabilities.mask:
        raise invalid("mask", f"{model} does not accept a mask.", "unsupported_parameter")


def validate(body: Body, endpoint: str, prices: PriceTable) -> Params:
    """Check a request like the real API would for its model (the model's capabilities in the price table);
    raise a 400 `ApiError` naming the first bad parameter."""
    model = _get_str(body, "model") or DEFAULT_MODEL
    if model not in prices.models:
        raise invalid(
            "model",
            f"Invalid model '{model}': this offline server knows {', '.join(sorted(prices.models))}.",
            "model_not_found",
        )
    model_prices = prices.model(model)
    capabilities = model_prices.capabilities
    if "prompt" not in body.fields:
        raise invalid("prompt", "Missing required parameter: 'prompt'.", "missing_required_parameter")
    prompt = _get_str(body, "prompt")
    if prompt is None or not prompt.strip():
        raise invalid("prompt", "Invalid value for 'prompt': the prompt must not be empty.", "empty_string")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise invalid(
            "prompt",
            f"Invalid 'prompt': string too long. Expected a string with maximum length {MAX_PROMPT_CHARS}, "
            f"but got a string with length {len(prompt)} instead.",
            "string_above_max_length",
        )
    _check_input_fidelity(body, endpoint, model, capabilities)
    background = _background(body, model, capabilities)
    n = _get_int(body, "n")
    if n is not None and n != 1:
        raise invalid("n", f"Invalid value for 'n': {n}. {model} makes one image per request (n=1).")
    width, height = _parse_size(_get_str(body, "size"), model, model_prices)
    quality = _get_str(body, "quality") or "auto"
    if quality not in QUALITIES:
        raise invalid(
            "quality", f"Invalid value for 'quality': {quality!r}; use one of {', '.join(QUALITIES)}."
        )
    output_format = _get_str(body, "output_format") or "png"
    if output_format not in FORMATS:
        raise invalid(
            "output_format",
            f"Invalid value for 'output_format': {output_format!r}; use one of {', '.join(FORMATS)}.",
        )
    compression = _get_int(body, "output_compression")
    if compression is not None:
        if output_format == "png":
            raise invalid(
                "output_compression",
                "'output_compression' is only supported with output_format 'jpeg' or 'webp', not 'png'.",
                "unsupported_parameter",
            )
        if not 0 <= compression <= 100:
            raise invalid(
                "output_compression", f"Invalid value for 'output_compression': {compression}; use 0 to 100."
            )
    if background == "transparent" and output_format not in ("png", "webp"):
        raise invalid("background", "Transparent backgrounds need output_format 'png' or 'webp'.")
    stream = bool(_get_bool(body, "stream"))
    if stream and not capabilities.streams:
        raise invalid("stream", f"{model} does not stream; leave 'stream' off.", "unsupported_parameter")
    partial_images = _get_int(body, "partial_images") or 0
    most = capabilities.max_partial_images
    if not 0 <= partial_images <= most:
        raise invalid(
            "partial_images",
            f"Invalid value for 'partial_images': {partial_images}; use 0 to {most}.",
        )
    if endpoint == "edits":
        _check_images(body, model, capabilities)
    return Params(
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
        background=background,
    )


def check_mask(mask: Image.Image, first: Image.Image) -> None:
    """A mask is a PNG with an alpha channel, the size of the first image."""
    has_alpha = mask.mode in ("RGBA", "LA", "PA") or "transparency" in mask.info
    if mask.format != "PNG" or not has_alpha:
        raise invalid(
            "mask",
            f"Invalid mask: it must be a PNG with an alpha channel (got {mask.format or 'unknown'} "
            f"in mode {mask.mode}).",
            "invalid_image_format",
        )
    if mask.size != first.size:
        raise invalid(
            "mask",
            f"Invalid mask size {mask.width}x{mask.height}: it must match the first image, "
            f"{first.width}x{first.height}.",
        )


def usage(params: Params, prices: ModelPrices, partials_sent: int) -> dict[str, Any]:
    """Usage consistent with the price table, so estimates made from it are never below it."""
    quality = params.rendered_quality
    output = 0
    if quality in prices.per_image:
        output = prices.image_output_tokens(params.width, params.height, quality)
    output += partials_sent * prices.partial_image_output_tokens
    text = math.ceil(len(params.prompt) / 4)
    image = sum(reference_image_tokens(prices, im.width, im.height) for im in params.images)
    if params.mask and params.images:  # the mask is an input image too, the size of the first
        image += reference_image_tokens(prices, params.images[0].width, params.images[0].height)
    return {
        "input_tokens": text + image,
        "input_tokens_details": {"text_tokens": text, "image_tokens": image},
        "output_tokens": output,
        "total_tokens": text + image + output,
    }
