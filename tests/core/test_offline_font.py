"""The offline server writes a Chinese prompt in Chinese glyphs, not in boxes (Pillow's own font has none)."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

from bot.offline.drawing import CJK_FONT, Fonts, is_cjk


def _drawn(text: str, draw_text: object) -> bytes:
    image = Image.new("L", (400, 80), 0)
    draw_text(ImageDraw.Draw(image), text)  # type: ignore[operator]
    return image.tobytes()


def test_pillows_own_font_draws_every_chinese_character_as_the_same_box() -> None:
    font = ImageFont.load_default(size=40)
    plain = lambda draw, text: draw.text((4, 4), text, font=font, fill=255)  # noqa: E731
    assert _drawn("中", plain) == _drawn("文", plain)  # what the offline images showed before


def test_the_offline_fonts_draw_chinese_glyphs_and_latin_beside_them() -> None:
    fonts = Fonts(40)
    ours = lambda draw, text: fonts.draw(draw, (4, 4), text, fill=255)  # noqa: E731
    assert _drawn("中", ours) != _drawn("文", ours)
    assert any(_drawn("中", ours)) and any(_drawn("a", ours))
    assert [run for run, _ in fonts.runs("海报: launch 发布会!")] == ["海报", ": launch ", "发布会", "!"]
    assert is_cjk("，") and not is_cjk("a")
    assert CJK_FONT.stat().st_size < 1_200_000  # a subset: the repository stays small
