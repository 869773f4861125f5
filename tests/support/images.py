"""Small images made in memory, for uploads and attachments."""

from __future__ import annotations

import io

from PIL import Image


def encode(fmt: str, size: tuple[int, int] = (320, 200), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, "teal" if mode != "1" else 1).save(buffer, fmt)
    return buffer.getvalue()


def png(width: int, height: int, *, alpha: bool = False, color: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGBA" if alpha else "RGB", (width, height), color).save(out, "PNG")
    return out.getvalue()
