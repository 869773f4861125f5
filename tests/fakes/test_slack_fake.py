"""The Slack fake against the real slack_sdk and slack_bolt: if these pass, the fake speaks Slack."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack import FakeSlack
from tests.support.waits import until

PNG = (
    b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + (64).to_bytes(4, "big") + (32).to_bytes(4, "big") + b"rest"
)


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as f:
        yield f


@pytest.fixture
def client(fake: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)


def _bolt_app(fake: FakeSlack) -> AsyncApp:
    return AsyncApp(
        signing_secret=fake.signing_secret,
        client=AsyncWebClient(token=fake.bot_token, base_url=fake.api_url),
    )


async def _serve(app: AsyncApp) -> tuple[web.AppRunner, str]:
    """Serve a bolt app on loopback the way `app.start()` would, but on a free port."""
    runner = web.AppRunner(app.web_app(path="/slack/events"), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/slack/events"


# ---------------------------------------------------------------- Web API via AsyncWebClient


async def test_auth_test_and_token_errors(fake: FakeSlack, client: AsyncWebClient) -> None:
    res = await client.auth_test()
    assert (res["user_id"], res["bot_id"], res["team_id"]) == ("UBOT", "BBOT", "T0001")
    assert res.headers["X-OAuth-Scopes"]

    with pytest.raises(SlackApiError) as bad:
        await AsyncWebClient(token="xoxb-wrong", base_url=fake.api_url).auth_test()
    assert bad.value.response["error"] == "invalid_auth"
    with pytest.raises(SlackApiError) as missing:
        await AsyncWebClient(base_url=fake.api_url).auth_test()
    assert missing.value.response["error"] == "not_authed"
    with pytest.raises(SlackApiError) as wrong_kind:
        await AsyncWebClient(token=fake.app_token, base_url=fake.api_url).auth_test()
    assert wrong_kind.value.response["error"] == "not_allowed_token_type"
    assert fake.calls_to("auth.test")[0].headers["Authorization"] == "Bearer xoxb-test-token"


async def test_post_update_thread_and_replies(fake: FakeSlack, client: AsyncWebClient) -> None:
    parent = await client.chat_postMessage(channel="C1", text="Rendering a cat...")
    ts = parent["ts"]
    assert parent["message"]["bot_id"] == "BBOT"
    # chat.postMessage goes out as JSON, not form.
    assert fake.calls_to("chat.postMessage")[0].headers["Content-Type"].startswith("application/json")

    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "50%"}}]
    updated = await client.chat_update(channel="C1", ts=ts, text="Half way", blocks=blocks)
    assert updated["message"]["text"] == "Half way"
    assert fake.messages["C1"][0]["blocks"] == blocks
    with pytest.raises(SlackApiError) as unknown:
        await client.chat_update(channel="C1", ts="1.000001", text="x")
    assert unknown.value.response["error"] == "message_not_found"

    reply = await client.chat_postMessage(channel="C1", thread_ts=ts, text="done")
    replies = await client.conversations_replies(channel="C1", ts=ts)
    assert [m["ts"] for m in replies["messages"]] == [ts, reply["ts"]]
    assert replies["messages"][0]["reply_count"] == 1
    assert replies["messages"][1]["thread_ts"] == ts

    eph = await client.chat_postEphemeral(channel="C1", user="U1", text="only you")
    assert eph["message_ts"] and fake.ephemerals[-1]["user"] == "U1"

    await client.chat_delete(channel="C1", ts=reply["ts"])
    assert [m["ts"] for m in fake.messages["C1"]] == [ts]


async def test_files_upload_v2_lands_in_thread_and_downloads(fake: FakeSlack, client: AsyncWebClient) -> None:
    parent = await client.chat_postMessage(channel="C1", text="job 1")
    res = await client.files_upload_v2(
        channel="C1", thread_ts=parent["ts"], file=PNG, filename="x.png", initial_comment="here you go"
    )
    assert res["file"]["name"] == "x.png"

    [up] = fake.uploaded
    assert (up.bytes, up.name, up.channel_id, up.thread_ts, up.initial_comment) == (
        PNG,
        "x.png",
        "C1",
        parent["ts"],
        "here you go",
    )
    # The upload POST carries the raw bytes and no token.
    [upload] = fake.calls_to("upload")
    assert upload.args["size"] == len(PNG) and "Authorization" not in upload.headers

    replies = await client.conversations_replies(channel="C1", ts=parent["ts"])
    file_msg = replies["messages"][1]
    assert file_msg["text"] == "here you go" and file_msg["user"] == "UBOT"
    [f] = file_msg["files"]
    assert (f["id"], f["mimetype"], f["original_w"]) == (up.id, "image/png", 64)

    info = await client.files_info(file=up.id)
    assert info["file"]["shares"]["public"]["C1"][0]["ts"] == file_msg["ts"]

    url = f["url_private_download"]
    async with aiohttp.ClientSession() as http:
        async with http.get(url, headers={"Authorization": f"Bearer {fake.bot_token}"}) as r:
            assert r.status == 200 and await r.read() == PNG
        async with http.get(url, allow_redirects=False) as r:
            assert r.status == 302 and "/signin" in r.headers["Location"]
        # Following the redirect "succeeds" with Slack's HTML sign-in page: check the content type.
        async with http.get(url, headers={"Authorization": "Bearer xoxb-wrong"}) as r:
            assert r.status == 200 and r.content_type == "text/html"
        fake.unauthorized_download = "forbidden"
        async with http.get(url) as r:
            assert r.status == 403
    downloads = fake.calls_to("file_download")
    assert [d.status for d in downloads] == [200, 302, 302, 403]
    assert downloads[0].headers["Authorization"] == "Bearer xoxb-test-token"
    assert "Authorization" not in downloads[1].headers


async def test_added_file_users_info_and_rate_limit(fake: FakeSlack, client: AsyncWebClient) -> None:
    shared = fake.add_file(name="in.png", data=PNG, mimetype="image/png", filetype="png")
    async with aiohttp.ClientSession() as http:
        async with http.get(
            shared["url_private"], headers={"Authorization": f"Bearer {fake.bot_token}"}
        ) as r:
            assert await r.read() == PNG

    fake.admins.add("U9")
    assert (await client.users_info(user="U9"))["user"]["is_admin"] is True
    assert (await client.users_info(user="U1"))["user"]["is_admin"] is False

    fake.fail_next["chat.update"] = {"status": 429, "retry_after": 7}
    with pytest.raises(SlackApiError) as limited:
        await client.chat_update(channel="C1", ts="1.1", text="x")
    assert limited.value.response.status_code == 429
    assert limited.value.response["error"] == "ratelimited"
    assert limited.value.response.headers["Retry-After"] == "7"

    fake.fail_next["chat.postMessage"] = {"status": 429, "retry_after": 0}
    retrying = AsyncWebClient(
        token=fake.bot_token,
        base_url=fake.api_url,
        retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)],
    )
    assert (await retrying.chat_postMessage(channel="C1", text="second try"))["ok"]
    assert [c.status for c in fake.calls_to("chat.postMessage")] == [429, 200]

    fake.fail_next["chat.postMessage"] = {"error": "channel_not_found"}
    with pytest.raises(SlackApiError) as gone:
        await client.chat_postMessage(channel="C1", text="x")
    assert gone.value.response.status_code == 200 and gone.value.response["error"] == "channel_not_found"


# ---------------------------------------------------------------- bolt over HTTP


async def test_bolt_http_slash_command_events_and_actions(fake: FakeSlack, client: AsyncWebClient) -> None:
    app = _bolt_app(fake)
    seen: dict[str, Any] = {}
    got = {k: asyncio.Event() for k in ("command", "event", "action")}

    @app.command("/imagine")
    async def imagine(ack: Any, command: dict[str, Any], respond: Any) -> None:
        await ack()
        seen["command"] = command
        await respond("queued")
        got["command"].set()

    @app.event("message")
    async def message(event: dict[str, Any], body: dict[str, Any]) -> None:
        seen["event"], seen["event_id"] = event, body["event_id"]
        got["event"].set()

    @app.action("regenerate")
    async def regenerate(ack: Any, body: dict[str, Any]) -> None:
        await ack()
        seen["action"] = body
        got["action"].set()

    runner, url = await _serve(app)
    try:
        status, body, ack_seconds = await fake.send_slash_command(url, text="a red fox")
        assert status == 200 and ack_seconds < 3
        await asyncio.wait_for(got["command"].wait(), 5)
        assert seen["command"]["text"] == "a red fox" and seen["command"]["user_id"] == "U1"
        await fake.wait_for("response_url")
        assert fake.ephemerals[-1]["text"] == "queued" and fake.ephemerals[-1]["source"] == "response_url"

        assert (await fake.send_slash_command(url, text="x", bad_signature=True))[0] == 401
        stale = int(time.time()) - 6 * 60
        assert (await fake.send_slash_command(url, text="x", timestamp=stale))[0] == 401

        event = fake.message_event(text="make it bigger", thread_ts=None)
        status, _ = await fake.send_event(
            url, event, event_id="Ev123", retry_num=1, retry_reason="http_timeout"
        )
        assert status == 200
        await asyncio.wait_for(got["event"].wait(), 5)
        assert seen["event_id"] == "Ev123" and seen["event"]["text"] == "make it bigger"

        button = {
            "type": "button",
            "action_id": "regenerate",
            "value": "job-7",
            "text": {"type": "plain_text", "text": "Again"},
        }
        posted = await client.chat_postMessage(
            channel="C1", text="done", blocks=[{"type": "actions", "block_id": "b1", "elements": [button]}]
        )
        status, _ = await fake.send_block_action(
            url, action_id="regenerate", value="job-7", message_ts=posted["ts"]
        )
        assert status == 200
        await asyncio.wait_for(got["action"].wait(), 5)
        action = seen["action"]["actions"][0]
        assert (action["value"], action["block_id"]) == ("job-7", "b1")
        assert seen["action"]["container"]["message_ts"] == posted["ts"]
    finally:
        await runner.cleanup()


def test_message_event_shapes() -> None:
    fake = FakeSlack()
    plain = fake.message_event(text="hi", channel="C1")
    mention = fake.message_event(text="draw", mention=True, ts=plain["ts"])
    assert mention["type"] == "app_mention" and mention["text"] == "<@UBOT> draw"
    assert mention["ts"] == plain["ts"] and len(fake.messages["C1"]) == 1
    with_file = fake.message_event(text="edit this", files=[{"id": "F1"}], thread_ts=plain["ts"])
    assert with_file["subtype"] == "file_share" and with_file["thread_ts"] == plain["ts"]
    assert with_file["parent_user_id"] == "U1"


# ---------------------------------------------------------------- bolt over Socket Mode


async def test_socket_mode_slash_command(fake: FakeSlack) -> None:
    app = _bolt_app(fake)
    texts: list[str] = []

    events: list[str] = []
    actions: list[str] = []

    @app.command("/imagine")
    async def imagine(ack: Any, command: dict[str, Any]) -> None:
        await ack()
        texts.append(command["text"])

    @app.event("message")
    async def message(body: dict[str, Any]) -> None:
        events.append(body["event_id"])

    @app.action("regenerate")
    async def regenerate(ack: Any, action: dict[str, Any]) -> None:
        await ack()
        actions.append(action["value"])

    # The socket client asks apps.connections.open through app.client, so its base_url is the fake's.
    handler = AsyncSocketModeHandler(app, app_token=fake.app_token)
    await handler.connect_async()
    try:
        [opened] = await fake.wait_for("apps.connections.open")
        assert opened.headers["Authorization"] == f"Bearer {fake.app_token}"
        await fake.wait_for("socket_connect")

        payload = fake.slash_command_payload(text="a blue whale")
        ack = await fake.socket_send("slash_commands", payload, timeout=5)
        assert set(ack) == {"envelope_id"}
        assert ack["envelope_id"] == fake.socket_acks[-1]["envelope_id"]
        assert texts == ["a blue whale"]

        event = fake.message_event(text="hello over the socket")
        await fake.socket_send("events_api", fake.event_envelope(event, event_id="EvS1"), timeout=5)
        clicks = await fake.socket_send(
            "interactive",
            fake.block_action_payload(action_id="regenerate", value="job-9", message_ts="1.000001"),
            timeout=5,
        )
        assert "envelope_id" in clicks
        assert events == ["EvS1"] and actions == ["job-9"]

        # Slack's periodic "disconnect" makes the client fetch a new URL and reconnect.
        await fake.socket_disconnect()
        await fake.wait_for("apps.connections.open", 2, timeout=5)
        await fake.wait_for("socket_connect", 2, timeout=5)
        await fake.socket_send("slash_commands", fake.slash_command_payload(text="again"), timeout=5)
        assert texts[-1] == "again"
    finally:
        await handler.close_async()


async def test_share_delay_and_response_url_limits(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.share_delay = 0.2
    res = await client.files_upload_v2(channel="C2", file=b"data", filename="a.txt")
    # Like Slack, the upload is complete before its message exists and its shares are filled in.
    assert res["file"]["shares"] == {} and "C2" not in fake.messages
    await until(lambda: fake.messages.get("C2"))  # after share_delay
    assert fake.messages["C2"][0]["files"][0]["id"] == res["file"]["id"]

    url = fake.response_url(channel_id="C1", user_id="U1")
    async with aiohttp.ClientSession() as http:
        statuses = []
        for i in range(6):
            async with http.post(url, json={"text": f"update {i}"}) as r:
                statuses.append(r.status)
        async with http.post(
            fake.response_url(channel_id="C1"), json={"response_type": "in_channel", "text": "hi"}
        ):
            pass
    assert statuses == [200] * 5 + [404]
    assert len(fake.ephemerals) == 5 and fake.messages["C1"][-1]["text"] == "hi"


# ---------------------------------------------------------------- faults and ordering knobs


async def test_dropped_connections(fake: FakeSlack) -> None:
    client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url, retry_handlers=[])
    fake.fail_next["chat.postMessage"] = {"drop": True}
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await client.chat_postMessage(channel="C1", text="lost")
    assert fake.calls_to("chat.postMessage")[-1].status == 0 and "C1" not in fake.messages
    fake.fail_next["upload"] = {"drop": True}
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await client.files_upload_v2(channel="C1", file=b"data", filename="a.txt")
    assert fake.calls_to("upload")[-1].status == 0 and not fake.uploaded
    assert (await client.chat_postMessage(channel="C1", text="kept"))["ok"]  # one drop per entry


async def test_hold_until_answered_shows_work_done_before_the_ack(fake: FakeSlack) -> None:
    """A held method is answered only after the fake's request to the bot was: a listener that calls it
    before returning (process_before_response) holds its own ack until the hold times out."""
    app = AsyncApp(
        signing_secret=fake.signing_secret,
        process_before_response=True,
        client=AsyncWebClient(token=fake.bot_token, base_url=fake.api_url),
    )
    tasks: set[asyncio.Task[Any]] = set()

    @app.action("before")
    async def before(ack: Any, client: AsyncWebClient) -> None:
        await ack()
        await client.chat_postEphemeral(channel="C1", user="U1", text="before the answer")

    @app.action("after")
    async def after(ack: Any, client: AsyncWebClient) -> None:
        await ack()
        tasks.add(asyncio.create_task(client.chat_postEphemeral(channel="C1", user="U1", text="after it")))

    fake.hold_until_answered.add("chat.postEphemeral")
    fake.hold_timeout = 0.5
    runner, url = await _serve(app)
    try:
        assert (await fake.send_block_action(url, action_id="before", value="v", message_ts="1.000001"))[
            0
        ] == 200
        assert (await fake.send_block_action(url, action_id="after", value="v", message_ts="1.000001"))[
            0
        ] == 200
        await fake.wait_for("chat.postEphemeral", 2)
        assert [c.held for c in fake.calls_to("chat.postEphemeral")] == ["timeout", "answered"]
    finally:
        await asyncio.gather(*tasks)
        await runner.cleanup()


# ---------------------------------------------------------------- buttons, modals, ephemerals, deletes


async def test_press_a_labelled_button_open_a_modal_and_submit_it(fake: FakeSlack) -> None:
    """bolt's app.action / app.view against the fake: a click's trigger_id opens one modal (once, within
    trigger_ttl), and the view_submission carries what was typed under the input's block and action ids."""
    app = AsyncApp(
        signing_secret=fake.signing_secret,
        process_before_response=True,
        client=AsyncWebClient(token=fake.bot_token, base_url=fake.api_url),
    )
    opened: list[dict[str, Any]] = []
    errors: list[str] = []
    submitted: list[dict[str, Any]] = []
    form = {
        "type": "modal",
        "callback_id": "edit",
        "title": {"type": "plain_text", "text": "Edit 2"},
        "submit": {"type": "plain_text", "text": "Render"},
        "private_metadata": '{"key": "edit:abc:2"}',
        "blocks": [
            {
                "type": "input",
                "block_id": "instruction",
                "label": {"type": "plain_text", "text": "What should change?"},
                "element": {"type": "plain_text_input", "action_id": "text", "multiline": True},
            }
        ],
    }

    @app.action("open")
    async def open_form(ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        opened.append((await client.views_open(trigger_id=body["trigger_id"], view=form))["view"])
        try:  # a trigger is exchanged once
            await client.views_open(trigger_id=body["trigger_id"], view=form)
        except SlackApiError as exc:
            errors.append(exc.response["error"])

    @app.view("edit")
    async def edit(ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        await ack()
        submitted.append(body)

    button = {
        "type": "button",
        "action_id": "open",
        "value": "edit:abc:2",
        "text": {"type": "plain_text", "text": "Edit 2"},
    }
    other = {
        "type": "button",
        "action_id": "vary",
        "value": "v",
        "text": {"type": "plain_text", "text": "Vary · $0.05"},
    }
    client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
    posted = await client.chat_postMessage(
        channel="C1", text="done", blocks=[{"type": "actions", "elements": [other, button]}]
    )
    assert fake.button("Vary", message_ts=posted["ts"])["action_id"] == "vary"
    with pytest.raises(LookupError):
        fake.button("Upscale", message_ts=posted["ts"])
    runner, url = await _serve(app)
    try:
        status, _ = await fake.press(url, "Edit 2", message_ts=posted["ts"], user_id="U2")
        assert status == 200 and errors == ["exchanged_trigger_id"]
        [view] = opened
        assert view["id"] in fake.views and fake.views[view["id"]]["user"] == "U2"
        assert view["private_metadata"] == '{"key": "edit:abc:2"}' and view["callback_id"] == "edit"
        with pytest.raises(ValueError, match="required"):
            fake.view_submission_payload(view["id"], {})
        status, body = await fake.send_view_submission(url, view["id"], {"text": "make it blue"})
        assert (status, body) == (200, "") and fake.views[view["id"]]["closed"]
        [sub] = submitted
        assert sub["type"] == "view_submission" and sub["user"]["id"] == "U2"
        assert sub["view"]["state"]["values"]["instruction"]["text"]["value"] == "make it blue"
        # Unknown and stale triggers are refused as Slack refuses them.
        with pytest.raises(SlackApiError) as unknown:
            await client.views_open(trigger_id="1.2.nope", view=form)
        assert unknown.value.response["error"] == "invalid_trigger_id"
        stale = fake.block_action_payload(action_id="open", value="v", message_ts=posted["ts"])["trigger_id"]
        fake.trigger_ttl = 0
        with pytest.raises(SlackApiError) as expired:
            await client.views_open(trigger_id=stale, view=form)
        assert expired.value.response["error"] == "expired_trigger_id"
    finally:
        await runner.cleanup()


async def test_ephemeral_clicks_and_their_response_url(fake: FakeSlack, client: AsyncWebClient) -> None:
    """A click on an ephemeral message has no `message`; its response_url replaces or deletes it."""
    buttons = [
        {
            "type": "button",
            "action_id": "go",
            "value": "t1",
            "text": {"type": "plain_text", "text": "Render"},
        },
        {
            "type": "button",
            "action_id": "no",
            "value": "t1",
            "text": {"type": "plain_text", "text": "Cancel"},
        },
    ]
    blocks = [{"type": "actions", "elements": buttons}]
    first = await client.chat_postEphemeral(
        channel="C1", user="U1", text="sure?", blocks=blocks, thread_ts="1.5"
    )
    payload = fake.block_action_payload(action_id="no", value="t1", message_ts=first["message_ts"])
    assert "message" not in payload and payload["container"]["is_ephemeral"] is True
    assert payload["container"]["thread_ts"] == "1.5" and payload["actions"][0]["text"]["text"] == "Cancel"
    second = await client.chat_postEphemeral(channel="C1", user="U1", text="again?", blocks=blocks)
    again = fake.block_action_payload(action_id="go", value="t1", message_ts=second["message_ts"])
    async with aiohttp.ClientSession() as http:
        async with http.post(payload["response_url"], json={"text": "Cancelled", "replace_original": True}):
            pass
        async with http.post(again["response_url"], json={"delete_original": True}):
            pass
    replaced = fake.ephemeral(first["message_ts"])
    assert replaced is not None and replaced["text"] == "Cancelled" and replaced["previous"] == ["sure?"]
    assert not replaced["blocks"]
    deleted = fake.ephemeral(second["message_ts"])
    assert deleted is not None and deleted["deleted"] is True


async def test_files_delete_only_the_bots_own(fake: FakeSlack, client: AsyncWebClient) -> None:
    parent = await client.chat_postMessage(channel="C1", text="job")
    res = await client.files_upload_v2(channel="C1", thread_ts=parent["ts"], file=PNG, filename="x.png")
    file_id = res["files"][0]["id"]
    theirs = fake.add_file(name="theirs.png", data=PNG, mimetype="image/png", filetype="png", user="U1")
    with pytest.raises(SlackApiError) as refused:
        await client.files_delete(file=theirs["id"])
    assert refused.value.response["error"] == "cant_delete_file"
    [up] = fake.uploaded
    await client.files_delete(file=file_id)
    assert fake.uploaded == [] and fake.deleted_files == [up]
    [file_message] = [m for m in fake.messages["C1"] if m.get("files")]
    assert file_message["files"] == [{"id": file_id, "mode": "tombstone"}]
    for call in (client.files_info, client.files_delete):
        with pytest.raises(SlackApiError) as gone:
            await call(file=file_id)
        assert gone.value.response["error"] == "file_deleted"
    with pytest.raises(SlackApiError) as unknown:
        await client.files_delete(file="F404")
    assert unknown.value.response["error"] == "file_not_found"


# ---------------------------------------------------------------- user groups, Home tab, admins


async def test_usergroups_users_list(fake: FakeSlack, client: AsyncWebClient) -> None:
    """A registered group answers its members (replaced by a second add_usergroup); any other is
    no_such_subteam; the bot token and the usergroups:read scope are needed, as on Slack."""
    fake.add_usergroup("S0123ABC", ["U1", "U2"], handle="designers")
    res = await client.usergroups_users_list(usergroup="S0123ABC")
    assert res["users"] == ["U1", "U2"]
    # slack_sdk sends it as a GET with the arguments in the query string
    call = fake.calls_to("usergroups.users.list")[0]
    assert (
        call.args == {"usergroup": "S0123ABC"} and call.headers["Authorization"] == "Bearer xoxb-test-token"
    )
    with_options = await client.usergroups_users_list(
        usergroup="S0123ABC", include_disabled=True, team_id=fake.team_id
    )
    assert with_options["users"] == ["U1", "U2"]

    fake.add_usergroup("S0123ABC", ["U3"])
    assert (await client.usergroups_users_list(usergroup="S0123ABC"))["users"] == ["U3"]
    assert fake.usergroup_mention("S0123ABC") == "<!subteam^S0123ABC|@designers>"  # the handle is kept

    with pytest.raises(SlackApiError) as unknown:
        await client.usergroups_users_list(usergroup="S9999ZZZ")
    assert unknown.value.response["error"] == "no_such_subteam"
    with pytest.raises(SlackApiError) as bad_token:
        await AsyncWebClient(token=fake.app_token, base_url=fake.api_url).usergroups_users_list(
            usergroup="S0123ABC"
        )
    assert bad_token.value.response["error"] == "not_allowed_token_type"
    fake.bot_scopes = fake.bot_scopes.replace("usergroups:read,", "")
    with pytest.raises(SlackApiError) as no_scope:
        await client.usergroups_users_list(usergroup="S0123ABC")
    assert no_scope.value.response["error"] == "missing_scope"
    assert no_scope.value.response["needed"] == "usergroups:read"
    assert len(fake.calls_to("usergroups.users.list")) == 6

    # A slash command's text carries the group mention as the user typed it.
    payload = fake.slash_command_payload(
        command="/imagine-admin", text="quota <!subteam^S0123ABC|@designers> 5"
    )
    assert payload["text"] == "quota <!subteam^S0123ABC|@designers> 5"


async def test_users_info_reports_admins_and_owners(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.admins.add("U7")
    fake.owners.add("U8")
    admin, owner, member = [(await client.users_info(user=u))["user"] for u in ("U7", "U8", "U1")]
    assert (admin["is_admin"], admin["is_owner"]) == (True, False)
    assert (owner["is_admin"], owner["is_owner"]) == (True, True)
    assert (member["is_admin"], member["is_owner"]) == (False, False)


def _home(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"type": "home", "blocks": list(blocks)}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


async def test_views_publish_keeps_the_latest_home_view(fake: FakeSlack, client: AsyncWebClient) -> None:
    assert fake.home_view("U1") is None
    first = (await client.views_publish(user_id="U1", view=_home(_section("Your quota: 5 images"))))["view"]
    assert first["id"].startswith("V") and first["type"] == "home" and first["team_id"] == fake.team_id
    assert first["blocks"][0]["block_id"] and first["bot_id"] == fake.bot_id
    assert first["state"] == {"values": {}} and first["hash"]
    stored = fake.home_view("U1")
    assert stored is not None and stored["blocks"][0]["text"]["text"] == "Your quota: 5 images"

    # The view may also come as a JSON string (form-encoded here); the Home tab keeps its id, not its hash.
    second = await client.api_call(
        "views.publish",
        params={
            "user_id": "U1",
            "view": json.dumps(_home(_section("Your quota: 4 images"))),
            "hash": first["hash"],
        },
    )
    assert second["view"]["id"] == first["id"] and second["view"]["hash"] != first["hash"]
    assert fake.home_view("U1")["blocks"][0]["text"]["text"] == "Your quota: 4 images"  # type: ignore[index]
    with pytest.raises(SlackApiError) as stale:  # a hash from before the last publish lost the race
        await client.views_publish(user_id="U1", view=_home(_section("x")), hash=first["hash"])
    assert stale.value.response["error"] == "hash_conflict"
    assert fake.home_view("U2") is None and len(fake.calls_to("views.publish")) == 3

    # At the limits: 100 blocks, a section of 3000 characters, a header of 150.
    header = {"type": "header", "text": {"type": "plain_text", "text": "h" * 150}}
    full = _home(header, _section("s" * 3000), *[{"type": "divider"}] * 98)
    assert (await client.views_publish(user_id="U2", view=full))["ok"]

    bad = {
        "101 blocks": _home(*[{"type": "divider"}] * 101),
        "long section": _home(_section("s" * 3001)),
        "long header": _home({"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}),
        "mrkdwn header": _home({"type": "header", "text": {"type": "mrkdwn", "text": "*h*"}}),
        "a modal": {**_home(_section("x")), "type": "modal"},
        "a message-only block": _home({"type": "file", "external_id": "x", "source": "remote"}),
        "duplicate block ids": _home({**_section("a"), "block_id": "b"}, {**_section("b"), "block_id": "b"}),
    }
    for name, view in bad.items():
        with pytest.raises(SlackApiError) as refused:
            await client.views_publish(user_id="U3", view=view)
        assert refused.value.response["error"] == "invalid_arguments", name
        messages = refused.value.response["response_metadata"]["messages"]
        assert messages and all(m.startswith("[ERROR]") for m in messages), name
    assert fake.home_view("U3") is None
    fake.home_tab_enabled = False
    with pytest.raises(SlackApiError) as disabled:
        await client.views_publish(user_id="U3", view=_home(_section("x")))
    assert disabled.value.response["error"] == "not_enabled"


async def test_app_home_opened_over_http_and_socket_mode(fake: FakeSlack) -> None:
    """bolt's app.event("app_home_opened") gets Slack's event; its views.publish lands in home_view, and the
    next opening carries the published view, as Slack's does."""
    app = _bolt_app(fake)
    opened: list[dict[str, Any]] = []

    @app.event("app_home_opened")
    async def home(event: dict[str, Any], client: AsyncWebClient) -> None:
        opened.append(event)
        if event["tab"] == "home":
            await client.views_publish(
                user_id=event["user"], view=_home(_section(f"Hello <@{event['user']}> ({len(opened)})"))
            )

    event = fake.app_home_opened_event("U5")
    assert set(event) == {"type", "user", "channel", "tab", "event_ts"}
    assert (event["type"], event["user"], event["channel"], event["tab"]) == (
        "app_home_opened",
        "U5",
        "D5",
        "home",
    )
    assert fake.event_envelope(event)["event"] is event

    runner, url = await _serve(app)
    try:
        status, _ = await fake.send_app_home_opened(url, user="U5", event_id="EvHOME1")
        assert status == 200
        await fake.wait_for("views.publish")
        assert fake.home_view("U5")["blocks"][0]["text"]["text"] == "Hello <@U5> (1)"  # type: ignore[index]
        assert "view" not in opened[0]
    finally:
        await runner.cleanup()

    handler = AsyncSocketModeHandler(app, app_token=fake.app_token)
    await handler.connect_async()
    try:
        await fake.wait_for("socket_connect")
        ack = await fake.socket_send_app_home_opened(user="U5", timeout=5)
        assert set(ack) == {"envelope_id"}
        await fake.wait_for("views.publish", 2)
        assert opened[1]["view"]["type"] == "home" and opened[1]["view"]["id"] == fake.home_view("U5")["id"]  # type: ignore[index]
        assert fake.home_view("U5")["blocks"][0]["text"]["text"] == "Hello <@U5> (2)"  # type: ignore[index]
        await fake.socket_send_app_home_opened(user="U5", tab="messages", timeout=5)
        async with asyncio.timeout(5):  # bolt runs event listeners after the ack
            while len(opened) < 3:
                await asyncio.sleep(0.01)
        assert opened[2]["tab"] == "messages" and "view" not in opened[2]
        assert len(fake.calls_to("views.publish")) == 2
    finally:
        await handler.close_async()
