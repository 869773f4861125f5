"""Slack end to end: the real bolt app in HTTP mode, a fake Slack Web API, the offline image server."""

from __future__ import annotations

import io
import time
from pathlib import Path

from PIL import Image

from tests.e2e.harness import RunningBot, running_bot, slack_env, socket_env
from tests.fakes.slack import FakeSlack


def png(width: int, height: int, *, alpha: bool = False, color: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGBA" if alpha else "RGB", (width, height), color).save(out, "PNG")
    return out.getvalue()


async def test_imagine_posts_progress_then_uploads_image_into_the_thread(
    slack: FakeSlack, bot: RunningBot
) -> None:
    status, body, _ = await slack.send_slash_command(
        bot.events_url, text="a lighthouse at dawn --size 1536x1024 --quality low"
    )
    assert status == 200
    [post] = await slack.wait_for("chat.postMessage")
    assert post.args["channel"] == "C1"
    [upload] = await slack.wait_for("files.completeUploadExternal")
    rows = await bot.settled(1)
    await bot.idle()  # the job's work is over: its message ends with the done line
    [uploaded] = slack.uploaded
    image = Image.open(io.BytesIO(uploaded.bytes))
    assert image.size == (1536, 1024) and image.format == "JPEG"
    thread_ts = slack.messages["C1"][0]["ts"]  # the progress message
    assert uploaded.thread_ts == thread_ts
    assert "1536x1024 low jpeg" in uploaded.initial_comment and "request id req_" in uploaded.initial_comment
    assert "offline" in uploaded.initial_comment
    assert len(slack.calls_to("chat.update")) >= 1  # progress, then the done line
    done = slack.calls_to("chat.update")[-1]
    assert "Done" in str(done.args)
    [row] = rows
    assert row["status"] == "delivered" and 0 < row["actual_micros"] <= row["reserved_micros"]
    assert row["platform"] == "slack" and row["channel"] == "C1" and row["user"] == "U1"


async def test_invalid_size_is_ephemeral_costs_nothing_and_calls_no_api(
    slack: FakeSlack, bot: RunningBot
) -> None:
    status, _, _ = await slack.send_slash_command(bot.events_url, text="a cat --size 4000x1000")
    assert status == 200
    await slack.wait_for("response_url")
    assert any("4000 is over the 3840 limit" in str(e) for e in slack.ephemerals)
    assert not slack.calls_to("chat.postMessage")
    assert bot.server.calls == [] and await bot.ledger() == []


async def test_quota_refusal_names_the_limit_privately(slack: FakeSlack, tmp_path: Path) -> None:
    async with running_bot(tmp_path, slack_env(slack, IMAGEBOT_USER_DAILY_IMAGES="1")) as bot:
        await slack.send_slash_command(bot.events_url, text="first --quality low")
        await bot.settled(1)
        await slack.send_slash_command(bot.events_url, text="second --quality low")
        await slack.wait_for("response_url")
        assert any("daily images" in str(e) and "resets" in str(e) for e in slack.ephemerals)
        assert len(bot.server.calls) == 1 and len(await bot.ledger()) == 1


async def test_provider_failure_says_so_in_the_thread_with_request_id_and_charges_nothing(
    slack: FakeSlack, bot: RunningBot
) -> None:
    bot.server.push_faults("500*")
    await slack.send_slash_command(bot.events_url, text="a storm")
    rows = await bot.settled(1)
    await slack.wait_for("chat.postMessage", 2)
    failure = slack.calls_to("chat.postMessage")[-1].args["text"]
    assert "HTTP 500" in failure and "req_" in failure and "Nothing was charged" in failure
    assert rows[0]["status"] == "failed" and rows[0]["actual_micros"] == 0 and rows[0]["attempts"] == 3


async def test_bad_signature_is_rejected_and_nothing_happens(slack: FakeSlack, bot: RunningBot) -> None:
    status, _, _ = await slack.send_slash_command(bot.events_url, text="a cat", bad_signature=True)
    assert status == 401
    stale, _, _ = await slack.send_slash_command(
        bot.events_url, text="a cat", timestamp=int(time.time()) - 600
    )
    assert stale == 401
    await bot.idle()  # nothing was set off; whatever had been has ended
    assert not slack.calls_to("chat.postMessage") and bot.server.calls == []


async def test_chinese_prompt_round_trips(slack: FakeSlack, bot: RunningBot) -> None:
    await slack.send_slash_command(bot.events_url, text='海报：我们的发布会 🚀 "引号" --quality low')
    await slack.wait_for("files.completeUploadExternal")
    assert bot.server.calls[0].prompt == '海报：我们的发布会 🚀 "引号"'


async def _first_image_thread(slack: FakeSlack, bot: RunningBot) -> str:
    await slack.send_slash_command(
        bot.events_url, text="a red square --size 1024x1024 --quality low --format png"
    )
    await slack.wait_for("files.completeUploadExternal")
    await bot.settled(1)
    return slack.uploaded[0].thread_ts


async def test_mention_in_thread_edits_the_latest_image_with_a_reference_and_a_mask(
    slack: FakeSlack, bot: RunningBot
) -> None:
    thread = await _first_image_thread(slack, bot)
    ref = slack.add_file(
        name="style.png", data=png(512, 512, color="blue"), mimetype="image/png", filetype="png"
    )
    mask = slack.add_file(
        name="my-mask.png", data=png(1024, 1024, alpha=True), mimetype="image/png", filetype="png"
    )
    # Only a reply that mentions the bot is an edit (docs/rules.md §2); here its `message` (file_share) event.
    event = slack.message_event(
        text=f"<@{slack.bot_user_id}> make it blue --quality low", thread_ts=thread, files=[ref, mask]
    )
    status, _ = await slack.send_event(bot.events_url, event)
    assert status == 200
    await slack.wait_for("files.completeUploadExternal", 2)
    rows = await bot.settled(2)
    edit = bot.server.calls[-1]
    assert edit.endpoint == "edits" and edit.images == 2 and edit.mask
    assert edit.prompt == "make it blue"
    assert slack.uploaded[1].thread_ts == thread
    assert [r["status"] for r in rows] == ["delivered", "delivered"]
    downloads = slack.calls_to("file_download")
    assert downloads and all(d.headers.get("Authorization") == f"Bearer {slack.bot_token}" for d in downloads)


async def test_mention_with_images_is_a_fusion(slack: FakeSlack, bot: RunningBot) -> None:
    a = slack.add_file(name="a.png", data=png(600, 600), mimetype="image/png", filetype="png")
    b = slack.add_file(name="b.jpg", data=png(600, 600, color="green"), mimetype="image/png", filetype="png")
    event = slack.message_event(text="blend these --quality low", files=[a, b], mention=True)
    await slack.send_event(bot.events_url, event)
    await slack.wait_for("files.completeUploadExternal")
    assert bot.server.calls[0].endpoint == "edits" and bot.server.calls[0].images == 2


async def test_duplicate_and_retried_events_start_one_job(slack: FakeSlack, bot: RunningBot) -> None:
    thread = await _first_image_thread(slack, bot)
    event = slack.message_event(text=f"<@{slack.bot_user_id}> now green --quality low", thread_ts=thread)
    await slack.send_event(bot.events_url, event, event_id="Ev1")
    await slack.send_event(bot.events_url, event, event_id="Ev1", retry_num=1, retry_reason="http_timeout")
    twin = slack.message_event(text="now green --quality low", thread_ts=thread, ts=event["ts"], mention=True)
    await slack.send_event(bot.events_url, twin, event_id="Ev2")
    await bot.settled(2)
    await bot.idle()  # every copy of the event has been handled to its end
    assert len(bot.server.calls) == 2 and len(await bot.ledger()) == 2


async def test_the_bots_own_messages_and_other_bots_make_no_job(slack: FakeSlack, bot: RunningBot) -> None:
    """Slack sends the bot its own posts back as events. One that mentions the bot makes no job, whether it
    carries the bot's user id alone (an app_mention, a file share) or its bot id too (a chat.postMessage); nor
    does another bot's. A person's mention, sent after them, is the one job."""
    me = f"<@{slack.bot_user_id}>"
    as_its_user = slack.message_event(text="a fox --quality low", user=slack.bot_user_id, mention=True)
    with_its_bot_id = {
        **slack.message_event(text=f"{me} a wolf --quality low", user=slack.bot_user_id),
        "bot_id": slack.bot_id,
    }
    another_bot = {
        **slack.message_event(text=f"{me} a crow --quality low", user="U0OTHER"),
        "bot_id": "B0OTHER",
    }
    for event in (as_its_user, with_its_bot_id, another_bot):
        assert (await slack.send_event(bot.events_url, event))[0] == 200
    await slack.send_event(bot.events_url, slack.message_event(text="a heron --quality low", mention=True))
    await bot.settled(1)
    await bot.idle()  # whatever any of the four set off has ended
    assert [(row["user"], row["prompt"]) for row in await bot.ledger()] == [("U1", "a heron")]
    assert [call.prompt for call in bot.server.calls] == ["a heron"]


async def test_foreign_file_host_is_never_fetched_and_token_never_sent(
    slack: FakeSlack, bot: RunningBot
) -> None:
    thread = await _first_image_thread(slack, bot)
    evil = {
        "id": "F666",
        "name": "x.png",
        "mimetype": "image/png",
        "filetype": "png",
        "url_private_download": "http://127.0.0.2:9/steal.png",
        "url_private": "http://127.0.0.2:9/steal.png",
    }
    await slack.send_event(
        bot.events_url, slack.message_event(text="edit", thread_ts=thread, files=[evil], mention=True)
    )
    await slack.wait_for("chat.postEphemeral")
    assert "not hosted by Slack" in slack.calls_to("chat.postEphemeral")[-1].args["text"]
    assert len(bot.server.calls) == 1


async def test_cancel_button_only_for_the_requester(slack: FakeSlack, bot: RunningBot) -> None:
    bot.server.latency = 5
    await slack.send_slash_command(bot.events_url, text="slow one --quality low")
    [post] = await slack.wait_for("chat.postMessage")
    await bot.wait_rows(lambda rows: rows[0]["status"] == "running")  # the job is under way: cancellable
    msg = slack.messages["C1"][0]
    job_id = msg["blocks"][-1]["elements"][0]["value"]
    await slack.send_block_action(
        bot.events_url, action_id="imagebot_cancel", value=job_id, user_id="U2", message_ts=msg["ts"]
    )
    await slack.wait_for("chat.postEphemeral")
    await slack.send_block_action(
        bot.events_url, action_id="imagebot_cancel", value=job_id, user_id="U1", message_ts=msg["ts"]
    )
    rows = await bot.settled(1)
    assert rows[0]["status"] == "cancelled"
    assert not slack.uploaded
    assert post


async def test_usage_report_posts_chart_and_quota_is_private(slack: FakeSlack, bot: RunningBot) -> None:
    await slack.send_slash_command(bot.events_url, text="one --quality low")
    await bot.settled(1)
    await slack.send_slash_command(bot.events_url, command="/imagine-usage", text="--days 7")
    await slack.wait_for("files.completeUploadExternal", 2)
    chart = slack.uploaded[-1]
    assert Image.open(io.BytesIO(chart.bytes)).format == "PNG"
    assert "1 images" in chart.initial_comment
    await slack.send_slash_command(bot.events_url, command="/imagine-quota", text="")
    await slack.wait_for("response_url")
    assert any("quota" in str(e).lower() for e in slack.ephemerals)


async def test_admin_command_refused_to_members_and_allowed_to_workspace_admins(
    slack: FakeSlack, bot: RunningBot
) -> None:
    await slack.send_slash_command(
        bot.events_url, command="/imagine-admin", text="quota <@U3> daily_images=2", user_id="U2"
    )
    await slack.wait_for("response_url")
    assert any("Only admins" in str(e) for e in slack.ephemerals)
    slack.admins.add("U9")
    await slack.send_slash_command(
        bot.events_url, command="/imagine-admin", text="quota <@U3|bob> daily_images=2", user_id="U9"
    )
    await slack.wait_for("response_url", 2)
    assert any("Limits for user U3 set" in str(e) for e in slack.ephemerals)


async def test_socket_mode_receives_a_slash_command_and_delivers(slack: FakeSlack, tmp_path: Path) -> None:
    env = socket_env(slack)
    async with running_bot(tmp_path, env) as bot:
        ack = await slack.socket_send(
            "slash_commands", slack.slash_command_payload(text="socket cat --size 1024x1024 --quality low")
        )
        assert "envelope_id" in ack
        await slack.wait_for("files.completeUploadExternal")
        rows = await bot.settled(1)
        assert Image.open(io.BytesIO(slack.uploaded[0].bytes)).size == (1024, 1024)
        assert rows[0]["status"] == "delivered"
        assert (
            slack.calls_to("apps.connections.open")[0].headers["Authorization"] == f"Bearer {slack.app_token}"
        )


async def test_a_refused_upload_is_reported_with_cost_and_request_id(
    slack: FakeSlack, bot: RunningBot
) -> None:
    slack.fail_next["files.completeUploadExternal"] = {"error": "not_in_channel"}
    await slack.send_slash_command(bot.events_url, text="paid for --quality low")
    [row] = await bot.settled(1)
    posts = await slack.wait_for("chat.postMessage", 2)
    told = posts[-1].args["text"]
    assert "refused the upload (not_in_channel" in told and "request id req_" in told and "$" in told
    assert f"imagebot redeliver {row['job_id']}" in told  # kept: an admin can post it later
    [row] = await bot.ledger()
    assert row["status"] == "undelivered" and row["actual_micros"] > 0  # billed by the provider: charged
