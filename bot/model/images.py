"""Reference images and masks: decode safely with Pillow, and re-encode to fit upload limits."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass

from PIL import Image

from bot.errors import UserError
from bot.i18n import msg

MAX_REFERENCES = 5
MAX_FILE_BYTES = 50_000_000
# Pillow's decompression-bomb guard: above this many pixels we refuse to decode.
MAX_DECODE_PIXELS = 36_000_000
ACCEPTED_FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}
# Every Image.open of bytes from outside passes these: Pillow otherwise runs every format's detector (and
# possibly its parser) before our allow-list is even consulted.
OPEN_FORMATS = tuple(ACCEPTED_FORMATS)
# Only to name a refused file's format in the message (no decoder of theirs ever runs).
_SIGNATURES = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\0", "TIFF"),
    (b"MM\0*", "TIFF"),
    (b"\0\0\1\0", "ICO"),
    (b"8BPS", "PSD"),
    (b"%PDF", "PDF"),
)


def open_image(data: bytes) -> Image.Image:
    """Open encoded bytes with the PNG, JPEG and WebP decoders only (header only; pixels on `load()`)."""
    return Image.open(io.BytesIO(data), formats=OPEN_FORMATS)


def _sniff(data: bytes) -> str | None:
    """The name of a well-known format that is not ours, from its first bytes; None if unknown."""
    return next((name for magic, name in _SIGNATURES if data.startswith(magic)), None)


@dataclass(frozen=True, slots=True)
class ImageInput:
    """A decoded, validated input image (reference or mask)."""

    name: str
    data: bytes
    width: int
    height: int
    format: str  # png | jpeg | webp
    has_alpha: bool

    @property
    def mime(self) -> str:
        return f"image/{self.format}"

    def __repr__(self) -> str:
        return f"ImageInput({self.name!r}, {self.width}x{self.height} {self.format}, {len(self.data)} bytes)"


def too_large(name: str) -> UserError:
    return UserError(msg("images.over_50mb", name=name))


async def read_capped(chunks: AsyncIterator[bytes], name: str, declared: int | None = None) -> bytes:
    """Read an attachment's bytes, refusing (and stopping) as soon as it passes the 50 MB cap."""
    if declared is not None and declared > MAX_FILE_BYTES:
        raise too_large(name)
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > MAX_FILE_BYTES:
            raise too_large(name)
        parts.append(chunk)
    return b"".join(parts)


def load_image(name: str, data: bytes) -> ImageInput:
    """Decode `data` with the bomb guard on; raise UserError naming the rule if it is not acceptable.

    CPU work: call it through `asyncio.to_thread` from async code.
    """
    if len(data) > MAX_FILE_BYTES:
        raise UserError(msg("images.too_large", name=name, mb=f"{len(data) / 1e6:.1f}"))
    if not data:
        raise UserError(msg("images.empty", name=name))
    try:
        # The pixel check below runs on the header, before any pixel is decoded; Pillow's own
        # guard (DecompressionBombError) catches the truly absurd ones already at open.
        with open_image(data) as img:
            fmt = ACCEPTED_FORMATS.get(img.format or "")
            if fmt is None:
                raise UserError(
                    msg("images.wrong_format", name=name, format=img.format or msg("images.not_an_image"))
                )
            if img.width * img.height > MAX_DECODE_PIXELS:
                raise UserError(
                    msg(
                        "images.bomb_size",
                        name=name,
                        size=f"{img.width}x{img.height}",
                        mp=MAX_DECODE_PIXELS // 1_000_000,
                    )
                )
            img.load()
            has_alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
            return ImageInput(name, data, img.width, img.height, fmt, has_alpha)
    except Image.DecompressionBombError:
        raise UserError(msg("images.bomb", name=name, mp=MAX_DECODE_PIXELS // 1_000_000)) from None
    except UserError:
        raise
    except Image.UnidentifiedImageError:
        other = _sniff(data)
        if other is not None:
            raise UserError(msg("images.wrong_format", name=name, format=other)) from None
        raise UserError(msg("images.undecodable", name=name)) from None
    except Exception:
        raise UserError(msg("images.undecodable", name=name)) from None


def check_mask(mask: ImageInput, first: ImageInput) -> None:
    """A mask must be a PNG with an alpha channel, the same size as the first image."""
    if mask.format != "png":
        raise UserError(msg("images.mask_not_png", name=mask.name, format=mask.format.upper()))
    if not mask.has_alpha:
        raise UserError(msg("images.mask_no_alpha", name=mask.name))
    if (mask.width, mask.height) != (first.width, first.height):
        raise UserError(
            msg(
                "images.mask_size",
                name=mask.name,
                size=f"{mask.width}x{mask.height}",
                first=f"{first.width}x{first.height}",
            )
        )


def image_size(data: bytes) -> tuple[int, int]:
    """Width and height of encoded image bytes (reads the header only)."""
    with open_image(data) as img:
        return img.width, img.height


def fit_under(data: bytes, limit: int) -> tuple[bytes, str, str | None]:
    """Re-encode `data` until it is at most `limit` bytes.

    Returns (bytes, format, note); the note says what was done, or is None if nothing was needed.
    Tries JPEG at falling quality, then halves the scale. CPU work: run in a thread.
    """
    if len(data) <= limit:
        with open_image(data) as img:
            return data, ACCEPTED_FORMATS.get(img.format or "", "png"), None
    with open_image(data) as img:
        original = img.convert("RGB")
    scale = 1.0
    while True:
        frame = (
            original
            if scale == 1.0
            else original.resize(
                (max(16, int(original.width * scale)), max(16, int(original.height * scale))),
                Image.Resampling.LANCZOS,
            )
        )
        for quality in (90, 80, 70, 60, 50, 40):
            out = io.BytesIO()
            frame.save(out, "JPEG", quality=quality, optimize=True)
            if out.tell() <= limit:
                note = msg(
                    "images.reencoded",
                    quality=quality,
                    size=msg("images.reencoded_size", size=f"{frame.width}x{frame.height}")
                    if scale < 1.0
                    else "",
                    limit=_size_text(limit),
                )
                return out.getvalue(), "jpeg", note
        scale /= 2
        if original.width * scale < 16:
            raise ValueError("image cannot be made small enough")


PREVIEW_SIDE = 512


def preview_jpeg(data: bytes, side: int = PREVIEW_SIDE) -> bytes:
    """A partial image as a small JPEG (longest side `side`) for a progress message.

    A preview is a hint of what is coming: full-size partials (megabytes at 4K) would cost an upload each
    and slow the result behind them. JPEG partials decode straight at a fraction of their size (draft mode).
    CPU work: run in a thread.
    """
    with open_image(data) as img:
        if img.width * img.height > MAX_DECODE_PIXELS:
            raise ValueError("partial image too large to decode")
        img.draft("RGB", (side, side))
        frame = img.convert("RGB")
    frame.thumbnail((side, side), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    frame.save(out, "JPEG", quality=75)
    return out.getvalue()


def _size_text(size: int) -> str:
    """1048576 -> '1 MiB', 250000 -> '244 KiB'."""
    return f"{size / 1048576:.3g} MiB" if size >= 1048576 else f"{size / 1024:.0f} KiB"
