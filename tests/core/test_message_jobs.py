"""A message that asks the bot for an image (a mention with attachments, a reply to one of its images), as an
adapter hands it to the core in plain data: the requester, the text, the attachments as the platform declares
them (name, size, type, and how to fetch each) and the image it edits. The core's one sequence: the place and
person rules, then the count and declared sizes, and only then any download."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from bot.app import Attachment
from bot.errors import UserError
from bot.model.images import ImageInput, load_image
from tests.support.core import ALICE, AccessView, MakeCore, rows
from tests.support.images import encode


class Platform:
    """Attachments and a base image that record when they are fetched."""

    def __init__(self) -> None:
        self.fetched: list[str] = []

    def file(self, name: str, size: int | None = 1000, mime: str | None = "image/png") -> Attachment:
        async def fetch() -> bytes:
            self.fetched.append(name)
            return encode("PNG")

        return Attachment(name, size, fetch, mime)

    def base(self, found: bool = True) -> Callable[[], Awaitable[ImageInput | None]]:
        async def fetch() -> ImageInput | None:
            self.fetched.append("base")
            return load_image("image-0.png", encode("PNG")) if found else None

        return fetch


async def test_too_many_images_are_refused_before_anything_is_fetched(make_core: MakeCore) -> None:
    core, platform = await make_core(), Platform()
    files = [platform.file(f"p{i}.png") for i in range(5)]
    with pytest.raises(UserError, match="6 images given; at most 5"):  # the image replied to counts
        await core.from_message(
            ALICE, AccessView(), "fuse them", files, base=platform.base(), base_known=True
        )
    with pytest.raises(UserError, match="6 images given; at most 5"):
        await core.from_message(ALICE, AccessView(), "fuse them", [*files, platform.file("p5.png")])
    assert platform.fetched == [] and rows(core) == []


async def test_a_file_declared_over_50_mb_is_refused_before_any_download(make_core: MakeCore) -> None:
    core, platform = await make_core(), Platform()
    files = [platform.file("small.png"), platform.file("huge.png", 51_000_000)]
    with pytest.raises(UserError, match="huge.png is over 50 MB"):
        await core.from_message(ALICE, AccessView(), "fuse", files, base=platform.base(), base_known=True)
    assert platform.fetched == [] and rows(core) == []


async def test_the_place_rules_come_before_the_attachments_are_even_counted(make_core: MakeCore) -> None:
    core, platform = await make_core(IMAGEBOT_CHANNELS="C9"), Platform()
    files = [platform.file(f"p{i}.png") for i in range(12)]
    with pytest.raises(UserError) as refused:
        await core.from_message(ALICE, AccessView(), "fuse", files, base=platform.base(), base_known=True)
    assert "images given" not in str(refused.value)
    assert platform.fetched == [] and rows(core) == []


async def test_an_edit_puts_the_base_first_and_ignores_files_that_are_not_images(make_core: MakeCore) -> None:
    core, platform = await make_core(), Platform()
    files = [
        platform.file("notes.txt", mime="text/plain"),
        *(platform.file(f"p{i}.png") for i in range(3)),
        platform.file("photo", mime="image/png; charset=binary"),  # an image by its type alone
    ]
    view = AccessView()
    await core.from_message(ALICE, view, "make it blue", files, base=platform.base(), base_known=True)
    [result] = view.delivered
    assert [r.name for r in result.request.references] == [
        "image-0.png",
        "p0.png",
        "p1.png",
        "p2.png",
        "photo",
    ]
    assert "notes.txt" not in platform.fetched and platform.fetched.count("base") == 1


async def test_a_base_that_may_be_missing_is_not_counted_and_none_makes_a_fusion(make_core: MakeCore) -> None:
    """On Slack a mention in a thread edits the bot's latest image there, if the thread has one: it is not
    counted before the download (it may not exist), and without it the attachments alone are the request."""
    core, platform = await make_core(), Platform()
    files = [platform.file(f"p{i}.png") for i in range(5)]
    view = AccessView()
    await core.from_message(ALICE, view, "fuse them", files, base=platform.base(found=False))
    [result] = view.delivered
    assert [r.name for r in result.request.references] == [f"p{i}.png" for i in range(5)]
    assert platform.fetched[0] == "base"  # the base is read first, then the attachments
