"""Attachments before download (docs/rules.md §10): the count and declared sizes are checked from what the platform
declares, and one process downloads at most IMAGEBOT_MAX_DOWNLOADS files at once."""

from __future__ import annotations

import asyncio

import pytest

from bot.app import Attachment, decode_attachments
from bot.config import Settings
from bot.errors import ConfigError, UserError
from tests.support.core import MakeCore
from tests.support.images import encode


@pytest.mark.parametrize("value", ["0", "-1", "many", "257"])
def test_a_bad_max_downloads_names_the_variable_and_its_range(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.load(environ={"IMAGEBOT_MAX_DOWNLOADS": value}, env_file=None)
    assert "IMAGEBOT_MAX_DOWNLOADS" in str(caught.value) and "1-256" in str(caught.value)
    assert Settings.load(environ={}, env_file=None).max_downloads == 8


async def test_the_count_the_mask_and_declared_sizes_are_checked_without_fetching(
    make_core: MakeCore,
) -> None:
    core = await make_core()
    fetched: list[str] = []

    def file(name: str, size: int | None = 1000) -> Attachment:
        async def fetch() -> bytes:
            fetched.append(name)
            return encode("PNG")

        return Attachment(name, size, fetch)

    cases = [
        ([file(f"p{i}.png") for i in range(6)], {}, "6 images given; at most 5"),
        ([file(f"p{i}.png") for i in range(5)], {"base": True}, "6 images given; at most 5"),
        ([file("a.png"), file("mask1.png"), file("mask2.png")], {}, "two masks"),
        ([file("a.png"), file("big.png", 50_000_001)], {}, "big.png is over 50 MB"),
    ]
    for files, options, said in cases:
        with pytest.raises(UserError, match=said):
            core.check_attachments("fuse them", files, **options)  # type: ignore[arg-type]
    core.check_attachments("fuse them", [file(f"p{i}.png", None) for i in range(5)])  # no size declared: ok
    assert fetched == []
    references, mask = await decode_attachments([file("a.png"), file("b-mask.png")])
    assert [r.name for r in references] == ["a.png"] and mask is not None and mask.name == "b-mask.png"


async def test_one_process_downloads_at_most_max_downloads_files_at_once(make_core: MakeCore) -> None:
    core = await make_core(IMAGEBOT_MAX_DOWNLOADS="3")
    now = peak = 0
    data = encode("PNG")

    async def fetch() -> bytes:
        nonlocal now, peak
        async with core.downloading():
            now += 1
            peak = max(peak, now)
            await asyncio.sleep(0.01)
            now -= 1
            return data

    users = [[Attachment(f"u{u}-{i}.png", len(data), fetch) for i in range(5)] for u in range(6)]
    done = await asyncio.gather(*(decode_attachments(files, slot=core.downloading) for files in users))
    assert peak == 3 and all(len(refs) == 5 for refs, _ in done)
