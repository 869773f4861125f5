"""Slack result actions and the price check, end to end: the real bolt app in HTTP mode, the fake Slack, the
offline image server (docs/rules.md §9). Buttons are pressed by their labels, as a person would."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot import texts
from tests.e2e.harness import RunningBot, running_bot, slack_env
from tests.fakes.slack import FakeSlack
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
    return [e["text"] for e in slack.ephemerals if e["user"] == user and not e.get("deleted")]


async def set_back(bot: RunningBot, table: str, column: str, value: str, delta: timedelta) -> None:
    """Move one row's created_at into the past, as if that much time had gone by."""

    def move(db: Any) -> None:
        [row] = db.conn.execute(f"SELECT created_at FROM {table} WHERE {column}=?", [value]).fetchall()
        moved = (datetime.fromisoformat(row[0]) - delta).isoformat(timespec="milliseconds")
        db.conn.execute(f"UPDATE {table} SET created_at=? WHERE {column}=?", [moved, value])

    await bot.core.ledger.run_db(move)


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


async def test_reroll_repeats_the_request_in_the_same_thread(slack: FakeSlack, bot: RunningBot) -> None:
    ts = await imagine(slack, bot, "a red fox --size 1536x1024 --quality low")
    status, _ = await slack.press(bot.events_url, "Re-roll", message_ts=ts)
    assert status == 200
    reply = await reply_job(slack, bot, ts)
    rows = await bot.settled(2)
    first, again = bot.server.calls
    assert again.endpoint == "generations" and (again.prompt, again.size, again.quality) == (
        first.prompt,
        first.size,
        first.quality,
    )
    assert [u.thread_ts for u in slack.uploaded] == [ts, ts]
    assert labels(slack, reply)  # the new job's message has its own buttons
    assert [r["user"] for r in rows] == ["U1", "U1"] and rows[1]["status"] == "delivered"


async def test_vary_edits_the_delivered_image(slack: FakeSlack, bot: RunningBot) -> None:
    ts = await imagine(slack, bot, "a red fox --size 1536x1024 --quality low")
    await slack.press(bot.events_url, "Vary", message_ts=ts)
    await reply_job(slack, bot, ts)
    await bot.settled(2)
    vary = bot.server.calls[-1]
    assert vary.endpoint == "edits" and vary.images == 1 and not vary.mask
    assert vary.size == "1536x1024" and vary.prompt is not None and vary.prompt.startswith("a red fox")
    [info] = slack.calls_to("files.info")
    assert info.args["file"] == slack.uploaded[0].id
    [download] = slack.calls_to("file_download")
    assert download.headers["Authorization"] == f"Bearer {slack.bot_token}"


async def test_upscale_renders_the_largest_size_of_the_shape_at_high(
    slack: FakeSlack, bot: RunningBot
) -> None:
    ts = await imagine(slack, bot, "a red fox --size 1536x1024 --quality low")
    await slack.press(bot.events_url, "Upscale", message_ts=ts)
    reply = await reply_job(slack, bot, ts)
    await bot.settled(2)
    upscale = bot.server.calls[-1]
    assert (upscale.endpoint, upscale.images, upscale.size, upscale.quality) == (
        "edits",
        1,
        "3504x2336",
        "high",
    )
    # An image already at its largest has no Upscale.
    assert [label.split(" · ")[0] for label in labels(slack, reply)[0]] == ["Re-roll", "Vary"]


async def test_edit_opens_a_form_and_its_instruction_becomes_the_prompt(
    slack: FakeSlack, bot: RunningBot
) -> None:
    ts = await imagine(slack, bot, "a quiet harbour --size 1024x1024 --quality low")
    status, _ = await slack.press(bot.events_url, "Edit", message_ts=ts, user_id="U2")
    assert status == 200
    [opened] = await slack.wait_for("views.open")
    [view_id] = slack.views
    form = slack.views[view_id]
    assert form["user"] == "U2" and form["view"]["callback_id"] == "imagebot_edit"
    assert bot.server.calls[1:] == []  # a form is not a job
    status, body = await slack.send_view_submission(
        bot.events_url, view_id, {"instruction": "make the sky stormy"}
    )
    assert (status, body.strip()) == (200, "") and form["closed"]
    reply = await reply_job(slack, bot, ts)
    rows = await bot.settled(2)
    edit = bot.server.calls[-1]
    assert (edit.endpoint, edit.images, edit.prompt, edit.size) == (
        "edits",
        1,
        "make the sky stormy",
        "1024x1024",
    )
    assert rows[1]["user"] == "U2" and str(slack.uploaded[-1].initial_comment).startswith("<@U2>")
    assert slack.uploaded[-1].thread_ts == ts and labels(slack, reply)
    assert opened.args["trigger_id"]


async def test_delete_is_the_requesters_or_an_admins(slack: FakeSlack, bot: RunningBot) -> None:
    ts = await imagine(slack, bot, "a secret plan --size 1024x1024 --quality low")
    [file] = slack.uploaded
    await slack.press(bot.events_url, "Delete", message_ts=ts, user_id="U2")
    await until(lambda: private_to(slack, "U2"))
    assert private_to(slack, "U2") == [texts.DELETE_REFUSED]
    assert not slack.calls_to("files.delete") and slack.uploaded == [file]
    await slack.press(bot.events_url, "Delete", message_ts=ts, user_id="U1")
    [deleted] = await slack.wait_for("files.delete")
    assert deleted.args["file"] == file.id and slack.uploaded == [] and slack.deleted_files == [file]
    await until(lambda: texts.DELETED in private_to(slack, "U1"))
    # Its other buttons now say so, privately, and call nothing.
    await slack.press(bot.events_url, "Vary", message_ts=ts, user_id="U1")
    await until(lambda: len(private_to(slack, "U1")) == 2)
    assert "deleted" in private_to(slack, "U1")[-1] and len(bot.server.calls) == 1
    # A workspace admin may delete anyone's image.
    other = await imagine(slack, bot, "another plan --size 1024x1024 --quality low")
    slack.admins.add("U9")
    await slack.press(bot.events_url, "Delete", message_ts=other, user_id="U9")
    await slack.wait_for("files.delete", 2)
    assert slack.uploaded == [] and len(slack.deleted_files) == 2
    await until(lambda: private_to(slack, "U9") == [texts.DELETED])
    assert all(e["thread_ts"] in (ts, other) for e in slack.ephemerals)


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
    env = {
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_APP_TOKEN": slack.app_token,
        "SLACK_API_URL": slack.api_url,
        "IMAGEBOT_CONFIRM_USD": "off",
    }
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


async def test_a_click_is_the_clickers_job(slack: FakeSlack, bot: RunningBot) -> None:
    ts = await imagine(slack, bot, "a blue whale --size 1024x1024 --quality low")
    await slack.press(bot.events_url, "Re-roll", message_ts=ts, user_id="U2")
    reply = await reply_job(slack, bot, ts)
    rows = await bot.settled(2)
    assert [r["user"] for r in rows] == ["U1", "U2"] and rows[1]["channel"] == "C1"
    assert str(slack.uploaded[-1].initial_comment).startswith("<@U2>") and slack.uploaded[-1].thread_ts == ts
    assert message(slack, reply)["thread_ts"] == ts


async def test_a_click_over_the_clickers_quota_is_refused_privately(slack: FakeSlack, tmp_path: Path) -> None:
    env = slack_env(slack, IMAGEBOT_CONFIRM_USD="off", IMAGEBOT_USER_DAILY_IMAGES="1")
    async with running_bot(tmp_path, env, latency=0.05) as bot:
        ts = await imagine(slack, bot, "mine --size 1024x1024 --quality low", user="U1")
        await imagine(slack, bot, "theirs --size 1024x1024 --quality low", user="U2")
        await slack.press(bot.events_url, "Vary", message_ts=ts, user_id="U2")
        [told] = await until(lambda: private_to(slack, "U2"))
        assert "daily images" in told
        await bot.idle()  # whatever the click set off has ended
        assert len(bot.server.calls) == 2 and len(await bot.ledger()) == 2
        assert [m for m in job_messages(slack) if m.get("thread_ts") == ts and m["ts"] != ts] == []


async def test_buttons_work_after_a_restart_and_expire_privately(slack: FakeSlack, tmp_path: Path) -> None:
    env = slack_env(slack, IMAGEBOT_CONFIRM_USD="off")
    async with running_bot(tmp_path, env, latency=0.05) as first:
        ts = await imagine(slack, first, "a lasting image --size 1024x1024 --quality low")
        old = await imagine(slack, first, "an old image --size 1024x1024 --quality low")
    async with running_bot(tmp_path, env, latency=0.05) as second:
        await slack.press(second.events_url, "Vary", message_ts=ts)
        await reply_job(slack, second, ts)
        await second.settled(3)
        [vary] = second.server.calls
        assert vary.endpoint == "edits" and vary.images == 1
        # Past IMAGEBOT_ACTIONS_DAYS (30) a button only says so, privately, and calls nothing.
        job_id = slack.button("Re-roll", message_ts=old)["value"].split(":")[1]
        await set_back(second, "results", "job_id", job_id, timedelta(days=31))
        await slack.press(second.events_url, "Re-roll", message_ts=old)
        [told] = await until(lambda: private_to(slack, "U1"))
        assert "expired" in told
        await second.idle()
        assert len(second.server.calls) == 1 and len(await second.ledger()) == 3


# -- the price check ----------------------------------------------------------------------------------------


def confirm_env(slack: FakeSlack) -> dict[str, str]:
    return slack_env(slack, IMAGEBOT_CONFIRM_USD="0.10")


async def price_check(slack: FakeSlack, bot: RunningBot, text: str) -> dict[str, Any]:
    """Send /imagine that asks first; return the private question (with its Render and Cancel)."""
    before = len(slack.ephemerals)
    await slack.send_slash_command(bot.events_url, text=text)
    [question] = await until(lambda: [e for e in slack.ephemerals[before:] if e.get("blocks")])
    return dict(question)


async def test_an_expensive_render_asks_first_and_renders_on_render(slack: FakeSlack, tmp_path: Path) -> None:
    async with running_bot(tmp_path, confirm_env(slack), latency=0.05) as bot:
        question = await price_check(slack, bot, "a cathedral --size 1024x1024 --quality high")
        assert question["user"] == "U1" and question["source"] == "response_url"
        assert "up to $0.21" in question["text"] and "$0.1000" in question["text"]
        assert [b["text"]["text"] for b in slack.buttons(question["blocks"])] == ["Render", "Cancel"]
        await bot.idle()
        assert await bot.ledger() == [] and bot.server.calls == [] and not slack.calls_to("chat.postMessage")
        status, _ = await slack.press(bot.events_url, "Render", message_ts=question["message_ts"])
        assert status == 200
        [row] = await bot.settled(1)
        assert row["user"] == "U1" and row["status"] == "delivered"
        [call] = bot.server.calls
        assert (call.prompt, call.size, call.quality) == ("a cathedral", "1024x1024", "high")
        [progress] = slack.calls_to("chat.postMessage")
        assert progress.args["channel"] == "C1" and "thread_ts" not in progress.args  # at the root
        await until(lambda: (slack.ephemeral(question["message_ts"], "U1") or {}).get("deleted"))  # gone
        # Pressed again (a second tab), it renders nothing more.
        await slack.press(bot.events_url, "Render", message_ts=question["message_ts"])
        await until(lambda: any("already confirmed" in e["text"] for e in slack.ephemerals))
        assert len(bot.server.calls) == 1


async def test_cancel_says_nothing_was_charged(slack: FakeSlack, tmp_path: Path) -> None:
    async with running_bot(tmp_path, confirm_env(slack), latency=0.05) as bot:
        question = await price_check(slack, bot, "a cathedral --size 1024x1024 --quality high")
        await slack.press(bot.events_url, "Cancel", message_ts=question["message_ts"])
        answered = await until(
            lambda: (e := slack.ephemeral(question["message_ts"], "U1")) and e.get("previous") and e
        )
        assert answered["text"] == texts.CONFIRM_CANCELLED and not answered["blocks"]
        await bot.idle()
        assert await bot.ledger() == [] and bot.server.calls == []


async def test_render_by_another_user_or_too_late_is_refused(slack: FakeSlack, tmp_path: Path) -> None:
    async with running_bot(tmp_path, confirm_env(slack), latency=0.05) as bot:
        question = await price_check(slack, bot, "a cathedral --size 1024x1024 --quality high")
        await slack.press(bot.events_url, "Render", message_ts=question["message_ts"], user_id="U2")
        [told] = await until(lambda: private_to(slack, "U2"))
        assert "only the person who asked" in told
        token = slack.button("Render", message_ts=question["message_ts"])["value"].split(":")[0]
        await set_back(bot, "confirmations", "token", token, timedelta(minutes=11))
        await slack.press(bot.events_url, "Render", message_ts=question["message_ts"])
        await until(
            lambda: "expired" in (slack.ephemeral(question["message_ts"], "U1") or {}).get("text", "")
        )
        await bot.idle()
        assert await bot.ledger() == [] and bot.server.calls == [] and not slack.calls_to("chat.postMessage")


async def test_a_cheap_render_does_not_ask(slack: FakeSlack, tmp_path: Path) -> None:
    async with running_bot(tmp_path, confirm_env(slack), latency=0.05) as bot:
        await imagine(slack, bot, "a pebble --size 1024x1024 --quality low")
        assert not [e for e in slack.ephemerals if e.get("blocks")]
        assert len(bot.server.calls) == 1


async def test_an_expensive_click_asks_in_its_thread_and_renders_there(
    slack: FakeSlack, tmp_path: Path
) -> None:
    async with running_bot(tmp_path, confirm_env(slack), latency=0.05) as bot:
        ts = await imagine(slack, bot, "a red fox --size 1536x1024 --quality low")
        await slack.press(bot.events_url, "Upscale", message_ts=ts, user_id="U2")
        [question] = await until(lambda: [e for e in slack.ephemerals if e.get("blocks")])
        assert (question["source"], question["user"], question["thread_ts"]) == (
            "chat.postEphemeral",
            "U2",
            ts,
        )
        assert len(bot.server.calls) == 1
        await slack.press(bot.events_url, "Render", message_ts=question["message_ts"], user_id="U2")
        await reply_job(slack, bot, ts)
        rows = await bot.settled(2)
        assert rows[1]["user"] == "U2" and bot.server.calls[-1].size == "3504x2336"


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


async def test_a_replayed_command_click_or_form_is_no_new_job(slack: FakeSlack, bot: RunningBot) -> None:
    """The same signed request sent again within Slack's 5 minutes (same trigger_id) is acked and ignored: one
    job, one API call, one message each, and the replays get no word of their own."""
    await slack.send_slash_command(bot.events_url, text="a red fox --size 1024x1024 --quality low")
    for _ in range(2):
        assert (await slack.replay())[0] == 200
    posted = await until(lambda: job_messages(slack))
    ts = str(posted[0]["ts"])
    await finished(slack, bot, ts)

    await slack.press(bot.events_url, "Re-roll", message_ts=ts)
    for _ in range(2):
        assert (await slack.replay())[0] == 200
    await reply_job(slack, bot, ts)

    await slack.press(bot.events_url, "Edit", message_ts=ts)
    await slack.wait_for("views.open")
    [view_id] = slack.views
    await slack.send_view_submission(bot.events_url, view_id, {"instruction": "make the sky stormy"})
    for _ in range(2):
        assert (await slack.replay())[0] == 200
    await reply_job(slack, bot, ts, nth=2)

    # A positive signal that every replay above was handled: a new command after them renders.
    await slack.send_slash_command(bot.events_url, text="a grey wolf --size 1024x1024 --quality low")
    await until(lambda: len(job_messages(slack)) >= 4)
    rows = await bot.settled(4)
    assert [r["status"] for r in rows] == ["delivered"] * 4, rows
    assert len(bot.server.calls) == 4 and len(slack.calls_to("views.open")) == 1
    assert len(slack.calls_to("chat.postMessage")) == 4 and len(slack.uploaded) == 4
    assert private_to(slack, "U1") == []  # and no replay got a word of its own
