"""Trust at the edges of the Slack adapter: who may start a job (signatures, Socket Mode, mentions), exactly once
(twin events and retries), acks before Web API calls, and what a lost progress message leaves behind (the real
bolt app against the fake Slack, the offline image server). A lost upload or progress edit, the same on Discord,
is in tests/e2e/test_trust_rules.py."""

from __future__ import annotations

import hashlib
import hmac
import time
import urllib.parse
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from adapters.manifests import slack_manifest
from tests.e2e.harness import RunningBot, running_bot, slack_env, socket_env
from tests.fakes.slack import FakeSlack
from tests.support.images import png
from tests.support.waits import until


def admin_checks(slack: FakeSlack) -> list[Any]:
    """users.info calls that ask whether someone is an admin (not the ones that ask only their language)."""
    return [
        c
        for c in slack.calls_to("users.info")
        if str(c.args.get("include_locale")).lower() not in ("1", "true")
    ]


async def image_thread(slack: FakeSlack, bot: RunningBot) -> str:
    """Make one image with /imagine; return the thread it was delivered into."""
    await slack.send_slash_command(bot.events_url, text="base --size 1024x1024 --quality low --format png")
    await slack.wait_for("files.completeUploadExternal")
    await bot.settled(1)
    return str(slack.uploaded[0].thread_ts)


async def assert_books_balance(bot: RunningBot) -> None:
    """Nothing is left open, and every quota counter adds up to what the ledger charged."""
    rows = await bot.ledger()
    assert not [r for r in rows if r["status"] in ("reserved", "running")], rows
    charged = sum(r["actual_micros"] for r in rows)
    images = sum(r["status"] in ("rendered", "delivered", "undelivered") for r in rows)
    for scope, micros, count in await bot.core.ledger.query(
        "SELECT scope, sum(micros), sum(images) FROM counters GROUP BY scope"
    ):
        assert (micros, count) == (charged, images), scope


async def progress_finished(slack: FakeSlack) -> None:
    """The progress message ends as a done/failed line (no Cancel button), not a stuck bar."""
    await until(
        lambda: (
            slack.calls_to("chat.update")
            and "Cancel" not in str(slack.calls_to("chat.update")[-1].args.get("blocks"))
        )
    )


async def forge(url: str, fields: dict[str, str], secret: str | None) -> int:
    """POST a slash command as an attacker would: unsigned (`secret` None) or signed with `secret`."""
    body = urllib.parse.urlencode(fields).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if secret is not None:
        stamp = str(int(time.time()))
        digest = hmac.new(secret.encode(), b"v0:" + stamp.encode() + b":" + body, hashlib.sha256).hexdigest()
        headers |= {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": f"v0={digest}"}
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as response:
        return response.status


# -- 1. Socket Mode serves no /slack/events; HTTP mode verifies every request ------------------------------


async def test_socket_mode_has_no_http_events_route_and_still_works(slack: FakeSlack, tmp_path: Path) -> None:
    # No SLACK_SIGNING_SECRET: a Socket Mode app has none, so a served route could only be unsigned or
    # "signed" with the empty secret, which anybody can compute.
    env = socket_env(slack, IMAGEBOT_ADMINS="U9")
    async with running_bot(tmp_path, env, latency=0.05) as bot:
        await slack.wait_for("socket_connect")
        forged = [
            ("/imagine-admin", "quota <@U1> daily_usd=1000 monthly_images=100000"),
            ("/imagine", "a forged cat --count 4 --quality high"),
        ]
        for command, text in forged:
            fields = slack.slash_command_payload(command=command, text=text, user_id="U9")
            for secret in (None, ""):
                assert await forge(bot.events_url, fields, secret) == 404
        assert bot.adapters["slack"].routes() == []
        # The socket still carries commands and events (bolt skips signatures only for socket envelopes).
        await slack.socket_send(
            "slash_commands", slack.slash_command_payload(text="socket cat --quality low")
        )
        await slack.wait_for("files.completeUploadExternal")
        mention = slack.message_event(text="socket mention --quality low", mention=True)
        await slack.socket_send("events_api", slack.event_envelope(mention))
        await slack.wait_for("files.completeUploadExternal", 2)
        rows = await bot.settled(2)
        assert [r["status"] for r in rows] == ["delivered", "delivered"]
        assert [c.prompt for c in bot.server.calls] == ["socket cat", "socket mention"]
        assert await bot.core.ledger.query("SELECT * FROM limits") == []
        assert not slack.calls_to("response_url") and not admin_checks(slack)


async def test_http_mode_refuses_unsigned_and_badly_signed_requests(slack: FakeSlack, tmp_path: Path) -> None:
    async with running_bot(tmp_path, slack_env(slack, IMAGEBOT_ADMINS="U9"), latency=0.05) as bot:
        forged = [
            ("/imagine-admin", "quota <@U1> daily_usd=1000"),
            ("/imagine", "a cat --count 4 --quality high"),
        ]
        for command, text in forged:
            fields = slack.slash_command_payload(command=command, text=text, user_id="U9")
            for secret in (None, "", "not-the-signing-secret"):
                assert await forge(bot.events_url, fields, secret) == 401
        status, _ = await slack.send_event(
            bot.events_url, slack.message_event(text="a dog", mention=True), bad_signature=True
        )
        assert status == 401
        # A correctly signed request goes through, and by then the forged ones had their chance.
        await slack.send_slash_command(bot.events_url, command="/imagine-quota", text="")
        await slack.wait_for("response_url")
        assert len(slack.calls_to("response_url")) == 1
        assert bot.server.calls == [] and await bot.ledger() == []
        assert await bot.core.ledger.query("SELECT * FROM limits") == []
        assert not slack.calls_to("chat.postMessage") and not admin_checks(slack)


# -- 2. Only a message that mentions the bot is a job ------------------------------------------------------


async def test_a_plain_reply_under_a_bot_image_costs_nothing_and_calls_nothing(
    slack: FakeSlack, bot: RunningBot
) -> None:
    thread = await image_thread(slack, bot)
    await progress_finished(slack)
    before = len(slack.calls)
    status, _ = await slack.send_event(
        bot.events_url, slack.message_event(text="nice!", thread_ts=thread, user="U2")
    )
    assert status == 200
    photo = slack.add_file(
        name="mine.png", data=png(600, 600), mimetype="image/png", filetype="png", user="U2"
    )
    status, _ = await slack.send_event(
        bot.events_url, slack.message_event(text="here's mine", thread_ts=thread, user="U2", files=[photo])
    )
    assert status == 200
    # A mention elsewhere is a job; once it is done, the plain replies before it have had their chance.
    await slack.send_event(bot.events_url, slack.message_event(text="sentinel --quality low", mention=True))
    rows = await bot.settled(2)
    assert [c.prompt for c in bot.server.calls] == ["base", "sentinel"] and len(rows) == 2
    after = slack.calls[before:]
    assert not [
        c for c in after if c.method in ("conversations.replies", "file_download", "chat.postEphemeral")
    ]
    assert not [c for c in after if c.args.get("thread_ts") == thread]


async def test_a_mention_in_someone_elses_thread_is_a_new_image(slack: FakeSlack, bot: RunningBot) -> None:
    root = slack.message_event(text="ideas for the poster?", user="U2")
    await slack.send_event(
        bot.events_url,
        slack.message_event(text="a lighthouse --quality low", thread_ts=root["ts"], mention=True),
    )
    await slack.wait_for("files.completeUploadExternal")
    [row] = await bot.settled(1)
    assert row["status"] == "delivered" and bot.server.calls[0].endpoint == "generations"
    assert bot.server.calls[0].prompt == "a lighthouse"
    progress = slack.calls_to("chat.postMessage")[0]
    assert progress.args["thread_ts"] == root["ts"] == slack.uploaded[0].thread_ts


# -- 3a. Relevance first, then one job per message -------------------------------------------------------


@pytest.mark.parametrize("first", ["message", "app_mention"])
async def test_either_twin_makes_exactly_one_job_and_a_retry_none(
    first: str, slack: FakeSlack, bot: RunningBot
) -> None:
    """Slack sends a mention as `message` and `app_mention`: whichever comes first makes the one job."""
    root = slack.message_event(text="our two logos", user="U2")
    a = slack.add_file(name="a.png", data=png(600, 600), mimetype="image/png", filetype="png")
    b = slack.add_file(name="b.png", data=png(600, 600, color="green"), mimetype="image/png", filetype="png")
    message = slack.message_event(
        text=f"<@{slack.bot_user_id}> blend these --quality low", thread_ts=root["ts"], files=[a, b]
    )
    mention = slack.message_event(
        text="blend these --quality low", thread_ts=root["ts"], files=[a, b], mention=True, ts=message["ts"]
    )
    twins = {"message": (message, "EvM"), "app_mention": (mention, "EvA")}
    order = [twins[first], *[twin for name, twin in twins.items() if name != first]]
    for event, event_id in order:
        assert (await slack.send_event(bot.events_url, event, event_id=event_id))[0] == 200
    event, event_id = order[0]
    status, _ = await slack.send_event(
        bot.events_url, event, event_id=event_id, retry_num=1, retry_reason="http_timeout"
    )
    assert status == 200
    await slack.send_event(bot.events_url, slack.message_event(text="sentinel --quality low", mention=True))
    rows = await bot.settled(2)
    assert sorted((c.endpoint, c.images) for c in bot.server.calls) == [("edits", 2), ("generations", 0)]
    assert [r["status"] for r in rows] == ["delivered", "delivered"]


# -- 3b. Listeners ack before any Web API call --------------------------------------------------------


async def test_cancel_button_answers_before_it_calls_slack(slack: FakeSlack, bot: RunningBot) -> None:
    """The fake answers chat.postEphemeral only after the click's HTTP answer has come back."""
    slack.hold_until_answered.add("chat.postEphemeral")
    slack.hold_timeout = 3
    bot.server.latency = 5
    await slack.send_slash_command(bot.events_url, text="slow one --quality low")
    await slack.wait_for("chat.postMessage")
    msg = slack.messages["C1"][0]
    job_id = msg["blocks"][-1]["elements"][0]["value"]
    status, _ = await slack.send_block_action(
        bot.events_url, action_id="imagebot_cancel", value=job_id, user_id="U2", message_ts=msg["ts"]
    )
    assert status == 200
    [refusal] = await slack.wait_for("chat.postEphemeral")
    assert refusal.held == "answered" and refusal.args["user"] == "U2"
    status, _ = await slack.send_block_action(
        bot.events_url, action_id="imagebot_cancel", value=job_id, user_id="U1", message_ts=msg["ts"]
    )
    assert status == 200
    [row] = await bot.settled(1)
    assert row["status"] == "cancelled" and not slack.uploaded


# -- 3c. A broken connection to Slack never leaves a job open -----------------------------------------------


async def test_lost_progress_message_releases_the_job_and_says_so(slack: FakeSlack, bot: RunningBot) -> None:
    slack.fail_next["chat.postMessage"] = {"drop": True}
    await slack.send_slash_command(bot.events_url, text="never shown --quality low")
    await slack.wait_for("response_url")
    told = slack.ephemerals[-1]["text"]
    assert "Nothing was charged" in told and "ServerDisconnectedError" in told
    [row] = await bot.settled(1)
    assert row["actual_micros"] == 0 and bot.server.calls == []
    await assert_books_balance(bot)


async def test_lost_progress_message_for_a_mention_is_told_privately(
    slack: FakeSlack, bot: RunningBot
) -> None:
    slack.fail_next["chat.postMessage"] = {"drop": True}
    await slack.send_event(
        bot.events_url, slack.message_event(text="never shown --quality low", mention=True)
    )
    [told] = await slack.wait_for("chat.postEphemeral")
    assert "Nothing was charged" in told.args["text"] and told.args["user"] == "U1"
    [row] = await bot.settled(1)
    assert row["actual_micros"] == 0 and bot.server.calls == []
    await assert_books_balance(bot)


# -- 4. The manifest escapes mentions; the token goes only to Slack's file host over https ---------------------


def test_manifest_asks_slack_to_escape_mentions_in_admin_commands() -> None:
    """/imagine-admin quota @bob ... must arrive as <@U123|bob>; an /imagine prompt stays as typed."""
    for socket_mode in (True, False):
        commands = {
            c["command"]: c for c in slack_manifest(socket_mode=socket_mode)["features"]["slash_commands"]
        }
        assert commands["/imagine-admin"]["should_escape"] is True
        assert commands["/imagine"]["should_escape"] is False


def test_trusted_file_urls() -> None:
    from adapters.slack.files import trusted_file_url

    slack_api = "https://slack.com/api/"
    assert trusted_file_url("https://files.slack.com/files-pri/T1-F1/download/a.png", slack_api)
    assert trusted_file_url("https://files.slack.com:443/files-pri/T1-F1/a.png", slack_api)
    for url in (
        "http://files.slack.com/files-pri/T1-F1/download/a.png",  # plain http: the token in clear
        "https://files.slack.com.evil.example/a.png",
        "https://user@files.slack.com/a.png",
        "https://files.slack.com:8443/a.png",
        "ftp://files.slack.com/a.png",
        "http://slack.com/a.png",
        "https://127.0.0.1/a.png",
        "files.slack.com/a.png",
        "",
    ):
        assert not trusted_file_url(url, slack_api), url
    fake_api = "http://127.0.0.1:8123/api/"  # a loopback fake: plain http to its own host only
    assert trusted_file_url("http://127.0.0.1:8123/files-pri/T1-F1/a.png", fake_api)
    assert not trusted_file_url("http://127.0.0.1:8124/files-pri/T1-F1/a.png", fake_api)
    assert not trusted_file_url("http://files.slack.com/files-pri/T1-F1/a.png", fake_api)


class SpySession:
    """Stands in for the adapter's download session: records every GET; only the fake is reachable."""

    def __init__(self, session: aiohttp.ClientSession, fake: FakeSlack) -> None:
        self.session = session
        self.fake_host = urlsplit(fake.api_url).netloc
        self.sent: list[tuple[str, dict[str, str]]] = []

    def get(self, url: str, **kwargs: Any) -> Any:
        self.sent.append((url, dict(kwargs.get("headers") or {})))
        if urlsplit(url).netloc != self.fake_host:
            raise aiohttp.ClientConnectionError("the test has no network")
        return self.session.get(url, **kwargs)

    async def close(self) -> None:
        await self.session.close()


async def test_plain_http_file_url_gets_no_token_and_a_clear_refusal(
    slack: FakeSlack, bot: RunningBot, monkeypatch: pytest.MonkeyPatch
) -> None:
    adapter = bot.adapters["slack"]
    spy = SpySession(adapter.http, slack)
    monkeypatch.setattr(adapter, "http", spy)
    lure = {
        "id": "F777",
        "name": "x.png",
        "mimetype": "image/png",
        "filetype": "png",
        "url_private_download": "http://files.slack.com/files-pri/T0001-F777/download/x.png",
        "url_private": "http://files.slack.com/files-pri/T0001-F777/x.png",
    }
    await slack.send_event(bot.events_url, slack.message_event(text="edit this", files=[lure], mention=True))
    await until(lambda: slack.calls_to("chat.postEphemeral") or spy.sent)
    assert spy.sent == []
    [told] = slack.calls_to("chat.postEphemeral")
    assert "x.png is not hosted by Slack" in told.args["text"] and "https" in told.args["text"]
    assert bot.server.calls == [] and await bot.ledger() == []


async def test_an_admin_of_another_workspace_in_a_shared_channel_is_not_an_admin_here(
    slack: FakeSlack, bot: RunningBot
) -> None:
    """Slack Connect: users.info says is_admin for a guest who administers their own workspace, not ours."""
    slack.admins.add("U7")
    slack.home_teams["U7"] = "T0999"
    await slack.send_slash_command(
        bot.events_url, command="/imagine-admin", text="quota <@U7> daily_usd=unlimited", user_id="U7"
    )
    await slack.wait_for("response_url")
    assert any("Only admins" in str(e) for e in slack.ephemerals), slack.ephemerals
    assert await bot.core.ledger.query("SELECT * FROM limits") == []
