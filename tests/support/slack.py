"""Driving the bot through the fake Slack (tests/fakes/slack.py): `/imagine` and `/imagine-admin` as a person
sends them, and reading the job messages, buttons and private answers the bot posted."""

from __future__ import annotations

import asyncio
import html
import json
from typing import Any

from tests.e2e.harness import RunningBot
from tests.fakes.slack import FakeSlack
from tests.support.waits import until

RESULT = "imagebot_action:"


def message(slack: FakeSlack, ts: str, channel: str = "C1") -> dict[str, Any]:
    [found] = [m for m in slack.messages.get(channel, []) if m["ts"] == ts]
    return found


def job_messages(slack: FakeSlack, channel: str = "C1") -> list[dict[str, Any]]:
    """The bot's job messages (progress, then done line), in order: bot messages with blocks and no files."""
    return [
        m
        for m in slack.messages.get(channel, [])
        if m.get("bot_id") and m.get("blocks") and not m.get("files")
    ]


def labels(slack: FakeSlack, ts: str) -> list[list[str]]:
    """The result buttons on a job's message, row by row."""
    return [
        [el["text"]["text"] for el in block["elements"]]
        for block in message(slack, ts).get("blocks") or []
        if block["type"] == "actions" and block["elements"][0]["action_id"].startswith(RESULT)
    ]


async def finished(slack: FakeSlack, bot: RunningBot, ts: str) -> str:
    """Wait until the job of the message at `ts` shows its result buttons and the core has recorded where its
    images live (what a click needs); return the job id."""
    await until(lambda: labels(slack, ts))
    # The Re-roll button by its key (`reroll:<job>:0`), whatever language its label is in.
    [key] = [
        str(el["value"])
        for block in message(slack, ts).get("blocks") or []
        if block["type"] == "actions"
        for el in block["elements"]
        if str(el.get("value", "")).startswith("reroll:")
    ]
    job_id = key.split(":")[1]

    async def recorded() -> bool:
        rows = await bot.core.ledger.query("SELECT images FROM results WHERE job_id=?", [job_id])
        return bool(rows and json.loads(rows[0][0]))

    await until(recorded, message="the job's images were never recorded")
    return job_id


async def imagine_ts(slack: FakeSlack, bot: RunningBot, text: str, user: str = "U1") -> str:
    """Run /imagine to the end; return its job message's ts (the root of its thread)."""
    before = len(job_messages(slack))
    await slack.send_slash_command(bot.events_url, text=text, user_id=user)
    posted = await until(lambda: job_messages(slack)[before:])
    ts = str(posted[0]["ts"])
    await finished(slack, bot, ts)
    return ts


async def reply_job(slack: FakeSlack, bot: RunningBot, thread: str, nth: int = 1) -> str:
    """The `nth` job message a click made in `thread`, once it has finished; its ts."""
    ts = await until(
        lambda: [m["ts"] for m in job_messages(slack) if m.get("thread_ts") == thread and m["ts"] != thread][
            nth - 1 : nth
        ]
    )
    await finished(slack, bot, ts[0])
    return str(ts[0])


async def a_later_relax_job_delivered(slack: FakeSlack, bot: RunningBot, user: str = "U8") -> None:
    """A positive signal for a negative check on relax mode: a later relax job (`user`'s, in C1) is batched,
    polled and delivered, so the bot's poller has gone round several times since every earlier batch ended."""
    bot.server.batch_latency = 0.1
    await slack.send_slash_command(
        bot.events_url, text="a marker --relax --size 1024x1024 --quality low", user_id=user
    )
    await until(
        lambda: bot.ledger("\"user\"=? AND status='delivered'", [user]), 20, "the marker was never delivered"
    )


ADMIN = "U9"  # a workspace admin (users.info is_admin): a tenant admin of the fake's workspace
GENERAL = "<#C1|general>"  # how Slack sends a channel picked from the autocomplete (should_escape)


def private_to(slack: FakeSlack, user: str) -> list[dict[str, Any]]:
    """What only `user` saw (response_url replies and chat.postEphemeral), oldest first."""
    return [e for e in slack.ephemerals if e["user"] == user and not e.get("deleted")]


async def told(
    slack: FakeSlack, bot: RunningBot, user: str, before: int, work: set[asyncio.Task[Any]]
) -> dict[str, Any]:
    """The one private message `user` got after they had `before` of them, once the work the request set off
    has ended (`work`: the bot's work before it was sent); its text as a person reads it."""
    [new, *_] = await until(lambda: private_to(slack, user)[before:])
    await bot.idle(since=work)  # a second message would show by now
    assert len(private_to(slack, user)) == before + 1, private_to(slack, user)
    return {**new, "text": html.unescape(new["text"])}


async def admin(slack: FakeSlack, bot: RunningBot, text: str, user: str = ADMIN) -> str:
    """`/imagine-admin <text>` as `user`; the private answer, as the admin reads it."""
    before, work = len(private_to(slack, user)), bot.work()
    await slack.send_slash_command(bot.events_url, command="/imagine-admin", text=text, user_id=user)
    answer = await told(slack, bot, user, before, work)
    assert answer["source"] == "response_url"
    return str(answer["text"])


async def imagine_row(
    slack: FakeSlack, bot: RunningBot, text: str, *, user: str = "U1", channel: str = "C1"
) -> dict[str, Any]:
    """/imagine that should render: wait for its upload and its ledger row; the row."""
    uploads = len(slack.uploaded)
    rows = len(await bot.ledger())
    await slack.send_slash_command(bot.events_url, text=text, user_id=user, channel_id=channel)
    await until(lambda: len(slack.uploaded) > uploads)
    settled = await bot.settled(rows + 1)
    assert settled[-1]["user"] == user and settled[-1]["status"] == "delivered", settled
    return settled[-1]


async def refused(
    slack: FakeSlack, bot: RunningBot, text: str, *, user: str = "U1", channel: str = "C1"
) -> str:
    """/imagine that the rules refuse: its private answer. Nothing was posted, called or booked."""
    posts, calls, rows = (
        len(slack.calls_to("chat.postMessage")),
        len(bot.server.calls),
        len(await bot.ledger()),
    )
    before, work = len(private_to(slack, user)), bot.work()
    await slack.send_slash_command(bot.events_url, text=text, user_id=user, channel_id=channel)
    answer = await told(slack, bot, user, before, work)
    assert answer["source"] == "response_url" and "nothing was charged" in answer["text"].lower()
    assert len(slack.calls_to("chat.postMessage")) == posts
    assert len(bot.server.calls) == calls and len(await bot.ledger()) == rows
    return str(answer["text"])
