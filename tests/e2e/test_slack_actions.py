"""Slack result actions and the price check (docs/rules.md §9), what only Slack has, end to end: the real bolt app
in HTTP mode (Socket Mode where said), the fake Slack, the offline image server. How the buttons are laid out and
where each image is recorded, a click in a thread, clicks and forms over Socket Mode, every listener acking before
the Web API calls its click causes. What the buttons do, the same on Discord, is in
tests/e2e/test_actions_rules.py."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import RunningBot, running_bot, slack_env, socket_env
from tests.fakes.slack import FakeSlack
from tests.support import slack as on_slack
from tests.support.slack import RESULT, finished, job_messages, labels, message, reply_job
from tests.support.slack import imagine_ts as imagine
from tests.support.waits import until


@pytest.fixture
async def bot(slack: FakeSlack, tmp_path: Path) -> AsyncIterator[RunningBot]:
    """The bot without price checks (IMAGEBOT_CONFIRM_USD=off): each click renders at once."""
    env = slack_env(slack, IMAGEBOT_CONFIRM_USD="off")
    async with running_bot(tmp_path, env, latency=0.05) as running:
        yield running


async def answered(slack: FakeSlack, message_ts: str, how: str) -> None:
    """Wait until the private question at `message_ts` was answered: `deleted`, or replaced (`previous`)."""
    await until(lambda: (slack.ephemeral(message_ts) or {}).get(how))


def private_to(slack: FakeSlack, user: str) -> list[str]:
    return [e["text"] for e in on_slack.private_to(slack, user)]


# -- the buttons --------------------------------------------------------------------------------------------


async def test_the_finished_message_carries_priced_buttons(slack: FakeSlack, bot: RunningBot) -> None:
    ts = await imagine(slack, bot, "a lighthouse --size 1536x1024 --quality low")
    [renders, others] = labels(slack, ts)
    assert [label.split(" · ")[0] for label in renders] == ["Re-roll", "Vary", "Upscale"]
    assert all(" · $" in label for label in renders) and others == ["Edit", "Delete", "Info"]
    blocks = message(slack, ts)["blocks"]
    assert blocks[0]["type"] == "context" and "Done: 1536x1024 low" in blocks[0]["elements"][0]["text"]
    assert "Cancel" not in str(blocks)
    elements = [el for block in blocks[1:] for el in block["elements"]]
    assert len({el["action_id"] for el in elements}) == len(elements)  # unique within the message
    assert all(el["action_id"] == RESULT + el["value"] for el in elements)
    # The core knows where the image lives: the uploaded file, in this thread.
    job_id = elements[0]["value"].split(":")[1]
    [[images]] = await bot.core.ledger.query("SELECT images FROM results WHERE job_id=?", [job_id])
    [image] = json.loads(images)
    assert image["where"] == {"file_id": slack.uploaded[0].id, "channel": "C1", "thread_ts": ts}
    assert (image["width"], image["height"]) == (1536, 1024)


async def test_several_images_get_numbered_buttons(slack: FakeSlack, bot: RunningBot) -> None:
    ts = await imagine(slack, bot, "two cats --size 1024x1024 --quality low --count 2")
    [renders, others] = labels(slack, ts)
    assert [label.split(" · ")[0] for label in renders] == [
        "Re-roll",
        "Vary 1",
        "Upscale 1",
        "Vary 2",
        "Upscale 2",
    ]
    assert others == ["Edit 1", "Delete 1", "Edit 2", "Delete 2", "Info"]
    job_id = await finished(slack, bot, ts)
    [[images]] = await bot.core.ledger.query("SELECT images FROM results WHERE job_id=?", [job_id])
    assert [i["where"]["file_id"] for i in json.loads(images)] == [u.id for u in slack.uploaded]


async def test_a_click_on_a_message_inside_a_thread_stays_in_that_thread(
    slack: FakeSlack, bot: RunningBot
) -> None:
    root = slack.message_event(text="poster ideas?", user="U2")
    await slack.send_event(
        bot.events_url, slack.message_event(text="a kite --quality low", thread_ts=root["ts"], mention=True)
    )
    [progress] = await until(lambda: job_messages(slack))
    assert progress["thread_ts"] == root["ts"]
    await finished(slack, bot, progress["ts"])
    await slack.press(bot.events_url, "Re-roll", message_ts=progress["ts"], user_id="U2")
    again = await reply_job(slack, bot, root["ts"], 2)
    await bot.settled(2)
    assert message(slack, again)["thread_ts"] == root["ts"]
    assert [u.thread_ts for u in slack.uploaded] == [root["ts"], root["ts"]]


async def test_socket_mode_clicks_and_forms(slack: FakeSlack, tmp_path: Path) -> None:
    env = socket_env(slack, IMAGEBOT_CONFIRM_USD="off")
    async with running_bot(tmp_path, env, latency=0.05) as bot:
        await slack.socket_send(
            "slash_commands", slack.slash_command_payload(text="a socket cat --size 1024x1024 --quality low")
        )
        [progress] = await until(lambda: job_messages(slack))
        ts = progress["ts"]
        await finished(slack, bot, ts)
        edit = slack.button("Edit", message_ts=ts)
        click = slack.block_action_payload(action_id=edit["action_id"], value=edit["value"], message_ts=ts)
        assert "envelope_id" in await slack.socket_send("interactive", click)
        await slack.wait_for("views.open")
        [view_id] = slack.views
        ack = await slack.socket_send(
            "interactive", slack.view_submission_payload(view_id, {"instruction": "make it purple"})
        )
        assert "payload" not in ack  # an empty ack: the form closes
        await reply_job(slack, bot, ts)
        rows = await bot.settled(2)
        assert bot.server.calls[-1].prompt == "make it purple" and rows[1]["status"] == "delivered"


# -- whose job a click is ------------------------------------------------------------------------------


# -- the price check ----------------------------------------------------------------------------------------


def confirm_env(slack: FakeSlack) -> dict[str, str]:
    return slack_env(slack, IMAGEBOT_CONFIRM_USD="0.10")


async def price_check(slack: FakeSlack, bot: RunningBot, text: str) -> dict[str, Any]:
    """Send /imagine that asks first; return the private question (with its Render and Cancel)."""
    before = len(slack.ephemerals)
    await slack.send_slash_command(bot.events_url, text=text)
    [question] = await until(lambda: [e for e in slack.ephemerals[before:] if e.get("blocks")])
    return dict(question)


# -- every new listener acks before the Web API calls its click causes ---------------------------------------


async def test_every_click_and_form_is_acked_before_slack_is_called(slack: FakeSlack, tmp_path: Path) -> None:
    """The fake answers these only once every request it sent the bot has been answered: a call made before
    its ack would wait out the hold ("timeout")."""
    held = {
        "chat.postMessage",
        "chat.postEphemeral",
        "files.info",
        "files.delete",
        "users.info",
        "views.open",
        "response_url",
    }
    slack.hold_until_answered |= held
    slack.hold_timeout = 3
    async with running_bot(tmp_path, confirm_env(slack), latency=0.05) as bot:
        ts = await imagine(slack, bot, "a small boat --size 1024x1024 --quality low")
        await slack.press(bot.events_url, "Re-roll", message_ts=ts)  # chat.postMessage first
        await reply_job(slack, bot, ts, 1)
        await slack.press(bot.events_url, "Vary", message_ts=ts)  # files.info first
        await reply_job(slack, bot, ts, 2)
        await slack.press(bot.events_url, "Edit", message_ts=ts)  # views.open first
        await slack.wait_for("views.open")
        [view_id] = slack.views
        await slack.send_view_submission(bot.events_url, view_id, {"instruction": "add a gull"})
        await reply_job(slack, bot, ts, 3)
        await slack.press(bot.events_url, "Delete", message_ts=ts, user_id="U2")  # users.info first
        await until(lambda: private_to(slack, "U2"))
        await slack.press(bot.events_url, "Delete", message_ts=ts)
        await slack.wait_for("files.delete")
        for render in (True, False):
            question = await price_check(slack, bot, "a galleon --size 1024x1024 --quality high")
            await slack.press(
                bot.events_url, "Render" if render else "Cancel", message_ts=question["message_ts"]
            )
            await answered(slack, question["message_ts"], "deleted" if render else "previous")
        await bot.settled(5)
        calls = [c for c in slack.calls if c.method in held]
        assert {c.method for c in calls} == held
        assert [c for c in calls if c.held != "answered"] == []
