"""Reference images and masks (docs/rules.md §3): PNG/JPEG/WebP only, at most 50 MB, decoded with the
decompression-bomb guard; and re-encoding a result to fit an upload limit."""

from __future__ import annotations

import io
import struct
import time
import zlib

import pytest
from PIL import Image

from bot.errors import UserError
from bot.model.images import (
    MAX_DECODE_PIXELS,
    MAX_FILE_BYTES,
    fit_under,
    image_size,
    load_image,
    preview_jpeg,
)
from tests.support.images import encode

MIB = 1024 * 1024


def rejection(name: str, data: bytes) -> str:
    with pytest.raises(UserError) as caught:
        load_image(name, data)
    return str(caught.value)


def png_claiming(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose header claims `width`x`height` (8-bit RGB): a decompression bomb."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1024))
        + chunk(b"IEND", b"")
    )


# --- accepted ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "name"), [("PNG", "png"), ("JPEG", "jpeg"), ("WEBP", "webp")])
def test_png_jpeg_and_webp_are_accepted(fmt: str, name: str) -> None:
    data = encode(fmt)
    image = load_image(f"photo.{name}", data)
    assert (image.format, image.width, image.height) == (name, 320, 200)
    assert image.mime == f"image/{name}"
    assert image.data == data
    assert not image.has_alpha


def test_alpha_is_noticed() -> None:
    assert load_image("mask.png", encode("PNG", mode="RGBA")).has_alpha
    assert load_image("mask.png", encode("PNG", mode="LA")).has_alpha


def test_the_name_says_what_was_checked_not_what_it_claims() -> None:
    # A JPEG called .png is still a JPEG: the bytes decide, not the name.
    assert load_image("actually-a-jpeg.png", encode("JPEG")).format == "jpeg"


def test_the_repr_does_not_dump_the_bytes() -> None:
    text = repr(load_image("photo.png", encode("PNG")))
    assert text == f"ImageInput('photo.png', 320x200 png, {len(encode('PNG'))} bytes)"


# --- rejected ---------------------------------------------------------------------------------


def test_a_gif_named_png_is_rejected_as_a_gif() -> None:
    message = rejection("cat.png", encode("GIF"))
    assert "cat.png is GIF" in message
    assert "PNG, JPEG or WebP" in message


@pytest.mark.parametrize("fmt", ["BMP", "TIFF"])
def test_other_image_formats_are_rejected(fmt: str) -> None:
    assert "must be PNG, JPEG or WebP" in rejection("scan.png", encode(fmt))


@pytest.mark.parametrize(
    "data",
    [b"this is not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 64, encode("PNG")[:100]],
    ids=["text", "png-signature-then-zeros", "truncated-png"],
)
def test_garbage_is_rejected(data: bytes) -> None:
    message = rejection("upload.png", data)
    assert "upload.png" in message
    assert "PNG, JPEG or WebP" in message


def test_an_empty_file_is_rejected() -> None:
    message = rejection("empty.png", b"")
    assert "empty.png is empty" in message


def test_a_file_over_50_mb_is_rejected_before_decoding() -> None:
    started = time.perf_counter()
    message = rejection("huge.png", b"\0" * (MAX_FILE_BYTES + 1))
    assert "huge.png" in message
    assert "at most 50 MB" in message
    assert time.perf_counter() - started < 1


@pytest.mark.parametrize("edge", [20_000, 10_000, 8_100])
def test_a_decompression_bomb_is_rejected_quickly_without_decoding(edge: int) -> None:
    bomb = png_claiming(edge, edge)
    assert len(bomb) < 200
    started = time.perf_counter()
    message = rejection("bomb.png", bomb)
    assert time.perf_counter() - started < 1
    assert "bomb.png" in message
    assert "decompression bomb" in message
    assert f"{MAX_DECODE_PIXELS // 1_000_000} MP" in message  # names the limit


# --- fit_under --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def noisy_png() -> bytes:
    noise = Image.merge("RGB", [Image.effect_noise((2048, 2048), 100) for _ in range(3)])
    buffer = io.BytesIO()
    noise.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def test_fit_under_shrinks_a_noisy_2048_png_under_1_mib(noisy_png: bytes) -> None:
    assert len(noisy_png) > 8 * MIB
    data, fmt, note = fit_under(noisy_png, MIB)
    assert len(data) <= MIB
    assert fmt == "jpeg"
    assert note is not None and "JPEG" in note and "1 MiB" in note
    assert Image.open(io.BytesIO(data)).format == "JPEG"
    width, height = image_size(data)
    assert width == height and width <= 2048


def test_fit_under_leaves_a_small_image_alone() -> None:
    data = encode("PNG")
    assert fit_under(data, MIB) == (data, "png", None)


@pytest.mark.parametrize(
    ("size", "fmt"), [((3840, 2160), "PNG"), ((1024, 1536), "JPEG"), ((300, 200), "WEBP")]
)
def test_a_preview_is_a_small_jpeg_of_the_same_shape(size: tuple[int, int], fmt: str) -> None:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, fmt)
    with Image.open(io.BytesIO(preview_jpeg(out.getvalue()))) as preview:
        assert preview.format == "JPEG" and max(preview.size) == min(512, max(size))
        assert abs(preview.width / preview.height - size[0] / size[1]) < 0.01


# --- only the allowed decoders ever see user bytes (item 8) --------------------------------------------


def test_user_bytes_are_opened_only_by_the_png_jpeg_and_webp_decoders(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every Image.open on bytes a user (or the API) handed us names the allowed formats, so Pillow never runs
    its other ~40 format detectors (and their parsers) on them; a GIF is still refused by name."""
    seen: list[object] = []
    real_open = Image.open

    def spying_open(fp: object, mode: str = "r", formats: object = None) -> Image.Image:
        seen.append(formats)
        return real_open(fp, mode, formats)  # type: ignore[arg-type]

    monkeypatch.setattr(Image, "open", spying_open)
    png, jpeg = encode("PNG", (64, 48)), encode("JPEG", (64, 48))
    load_image("a.png", png)
    image_size(png)
    fit_under(png, 10**9)
    fit_under(png, 400)
    preview_jpeg(jpeg)
    assert "cat.png is GIF" in rejection("cat.png", encode("GIF"))
    assert seen and all(f is not None and sorted(f) == ["JPEG", "PNG", "WEBP"] for f in seen), seen  # type: ignore[call-overload]
