"""The offline server's pictures, drawn with Pillow: a gradient coloured by the prompt with the prompt
written on it (and a thumbnail of the first reference on edits), partial images as blurred stand-ins.

Everything here is CPU work: the server runs it in worker threads.
"""

from __future__ import annotations

import base64
import colorsys
import functools
import hashlib
import io
from dataclasses import replace
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageFont

from bot.offline.rules import DEFAULT_COMPRESSION, Params


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


# Chinese (and kana, full-width punctuation) in the prompt: Pillow's own font has no such glyphs and would
# draw boxes, so those runs use a subset of Droid Sans Fallback (fonts/README.md: its source and licence).
CJK_FONT = Path(__file__).parent / "fonts" / "DroidSansFallback-GB2312.ttf"


def is_cjk(char: str) -> bool:
    """A character the CJK font draws: CJK punctuation, kana, ideographs, full-width forms."""
    code = ord(char)
    return (
        0x3000 <= code <= 0x30FF
        or 0x3400 <= code <= 0x9FFF
        or 0xF900 <= code <= 0xFAFF
        or 0xFF00 <= code <= 0xFFEF
    )


class Fonts:
    """Pillow's font for everything but CJK, the CJK font for CJK: text is drawn and measured run by run."""

    def __init__(self, size: int) -> None:
        self.latin: ImageFont.FreeTypeFont | ImageFont.ImageFont = ImageFont.load_default(size=size)
        self.cjk = _cjk_font(size)

    def runs(self, text: str) -> list[tuple[str, ImageFont.FreeTypeFont | ImageFont.ImageFont]]:
        out: list[tuple[str, ImageFont.FreeTypeFont | ImageFont.ImageFont]] = []
        for char in text:
            font = self.cjk if is_cjk(char) else self.latin
            if out and out[-1][1] is font:
                out[-1] = (out[-1][0] + char, font)
            else:
                out.append((char, font))
        return out

    def length(self, draw: ImageDraw.ImageDraw, text: str) -> float:
        return sum(draw.textlength(run, font=font) for run, font in self.runs(text))

    def draw(self, draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, **style: object) -> None:
        x, y = xy
        for run, font in self.runs(text):
            draw.text((x, y), run, font=font, **style)  # type: ignore[arg-type]
            x += draw.textlength(run, font=font)


@functools.lru_cache(maxsize=32)
def _cjk_font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(CJK_FONT), size)


def _wrap(
    draw: ImageDraw.ImageDraw,
    text: str,
    fonts: Fonts,
    max_width: float,
    max_lines: int,
) -> list[str]:
    """Greedy word wrap that also breaks inside long words (CJK text has no spaces)."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if fonts.length(draw, candidate) <= max_width:
            current = candidate
            continue
        if current:
            lines.append(current)
            current = ""
        for char in word:
            if current and fonts.length(draw, current + char) > max_width:
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


def _render(params: Params) -> Image.Image:
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
    fonts = Fonts(font_size)
    line_height = round(font_size * 1.25)
    max_lines = max(1, (height - top - 3 * margin) // line_height)
    stroke = max(1, font_size // 14)
    y = top
    for line in _wrap(draw, params.prompt, fonts, width - 2 * margin, max_lines):
        fonts.draw(draw, (margin, y), line, fill=(255, 255, 255), stroke_width=stroke, stroke_fill=(0, 0, 0))
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
    if params.background == "transparent":
        # The "subject" is an oval of the picture; the corners around it are see-through.
        alpha = Image.new("L", image.size, 0)
        ImageDraw.Draw(alpha).ellipse((0, 0, width - 1, height - 1), fill=255)
        image.putalpha(alpha)
    return image


def _encode(image: Image.Image, output_format: str, compression: int | None) -> bytes:
    buffer = io.BytesIO()
    quality = DEFAULT_COMPRESSION if compression is None else compression
    if output_format == "jpeg":
        image.convert("RGB").save(buffer, "JPEG", quality=quality)
    elif output_format == "webp":
        # method 0 is the fastest encoder; the offline server is about speed, not size.
        frame = image if image.mode == "RGBA" else image.convert("RGB")
        frame.save(buffer, "WEBP", quality=quality, method=0)
    else:
        image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def render_final(params: Params) -> tuple[Image.Image, str]:
    """The finished image at the requested size and format, and its base64."""
    if not params.images:  # generations are pure functions of their parameters: load tests repeat them
        return _render_generation(replace(params, stream=False, partial_images=0))
    image = _render(params)
    return image, _b64(_encode(image, params.output_format, params.compression))


@functools.lru_cache(maxsize=4)
def _render_generation(params: Params) -> tuple[Image.Image, str]:
    image = _render(params)
    return image, _b64(_encode(image, params.output_format, params.compression))


def partial(final: Image.Image, params: Params, index: int) -> str:
    """Partial image `index` of `final`, as base64 in the requested format."""
    if not params.images:  # like the final: the same parameters give the same partials
        return _generation_partial(replace(params, stream=False), index)
    return _render_partial(final, params, index)


@functools.lru_cache(maxsize=16)
def _generation_partial(params: Params, index: int) -> str:
    final, _ = _render_generation(replace(params, partial_images=0))
    return _render_partial(final, params, index)


def _render_partial(final: Image.Image, params: Params, index: int) -> str:
    """A blurred stand-in for partial image `index`: sharper the later it comes, always the final size."""
    factor = 2 ** (params.partial_images - index + 2)
    small = final.resize(
        (max(1, final.width // factor), max(1, final.height // factor)), Image.Resampling.BOX
    )
    blurred = small.resize(final.size, Image.Resampling.BILINEAR)
    return _b64(_encode(blurred, params.output_format, params.compression))
