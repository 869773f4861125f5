"""Discord threads and forum posts (docs/rules.md §10): a thread follows its parent channel's rules and counts against
its parent's channel budget, on every way a job starts there (a command, a reply that mentions the bot, a
result button), while the job itself is still shown in the thread. The fake Discord models threads as Discord
does: type 11 with a `parent_id`, in an interaction's `channel` object and in GET /channels/{id}."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.fakes.discord import FakeDiscord
from tests.support.discord import admin, finished, first_call, guild, refused

THREAD = 1100000000000000201  # a thread under #general, known to the client from GUILD_CREATE
OTHER_THREAD = 1100000000000000202  # another thread under #general
FORUM = 1100000000000000203  # a forum channel
POST = 1100000000000000204  # a post (a thread) in the forum the client was never told of


def threads(fake: FakeDiscord) -> None:
    fake.add_thread(THREAD, "lighthouses", parent_id=fake.channel_id)
    fake.add_thread(OTHER_THREAD, "foxes", parent_id=fake.channel_id)
    fake.add_channel(FORUM, "gallery", type=15)
    fake.add_thread(POST, "my first post", parent_id=FORUM, cached=False)


async def imagine_in(fake: FakeDiscord, channel_id: int, prompt: str, **options: Any) -> dict[str, Any]:
    typed = [{"name": "prompt", "type": 3, "value": prompt}] + [
        {"name": name, "type": 4 if isinstance(value, int) else 3, "value": value}
        for name, value in {"quality": "low", "size": "1024x1024", **options}.items()
    ]
    return await fake.send_interaction(name="imagine", options=typed, channel_id=channel_id)


async def test_a_thread_and_a_forum_post_follow_their_parents_rules_on_every_path(tmp_path: Path) -> None:
    async with guild(tmp_path, setup=threads) as (fake, bot):
        # While on: a job in the thread is shown in the thread and counted for #general; a forum post's for
        # the forum.
        ix = await imagine_in(fake, THREAD, "a lighthouse")
        in_thread = await finished(fake, bot, ix, rows=1)
        assert in_thread["channel_id"] == str(THREAD)
        ix = await imagine_in(fake, POST, "a gallery piece")
        in_post = await finished(fake, bot, ix, rows=2)
        assert in_post["channel_id"] == str(POST)
        rows = await bot.ledger()
        assert [r["channel"] for r in rows] == [str(fake.channel_id), str(FORUM)]
        assert [json.loads(r["context"])["channel_id"] for r in rows] == [str(THREAD), str(POST)]

        said = await admin(fake, "channel", channel=fake.channel_id, settings="off")
        assert "set: off" in said
        assert "set: off" in await admin(fake, "channel", channel=FORUM, settings="off")

        # The slash command, in either thread and in the post.
        for place in (THREAD, OTHER_THREAD, POST):
            ix = await imagine_in(fake, place, "another one")
            await refused(fake, bot, ix, "turned off in this channel", rows=2)

        # A result button in the thread.
        press = await fake.press_button(in_thread, "Vary")
        await refused(fake, bot, press, "turned off in this channel", rows=2)

        # A reply that mentions the bot, in the thread and in the post (which the client must look up).
        for image in (in_thread, in_post):
            reply = await fake.send_message(
                content="make it blue --quality low",
                referenced_message=image,
                mentions_bot=True,
                channel_id=int(image["channel_id"]),
            )
            await first_call(fake, lambda c, r=reply: told_by_dm(fake, "turned off in this channel", r))
        assert len(bot.server.calls) == 2 and len(await bot.ledger()) == 2
        # The client was never told of the post: it asked Discord for its parent, once.
        assert len(fake.calls_matching("GET", rf"/channels/{POST}")) == 1


def told_by_dm(fake: FakeDiscord, words: str, about: dict[str, Any]) -> bool:
    """The user who wrote `about` was told `words` about it (the DM links it) by DM."""
    author = int(about["author"]["id"])
    said = [str(m["content"]).replace("\\", "") for m in fake.dm_messages(author)]
    return any(words in text and about["id"] in text for text in said)


async def test_threads_count_against_their_parents_channel_budget(tmp_path: Path) -> None:
    async with guild(tmp_path, setup=threads) as (fake, bot):
        said = await admin(fake, "quota", channel=fake.channel_id, limits="monthly_usd=0.007")
        assert "set: monthly_usd=$0.0070 " in said, said  # dollars to four decimals, as every amount is shown
        ix = await imagine_in(fake, THREAD, "a lighthouse")
        await finished(fake, bot, ix, rows=1)
        ix = await imagine_in(fake, OTHER_THREAD, "a fox")  # another thread of the same channel
        await refused(fake, bot, ix, "this channel's monthly spend limit is $0.0070", rows=1)
        [row] = await bot.ledger()
        assert row["channel"] == str(fake.channel_id) and row["status"] == "delivered"
