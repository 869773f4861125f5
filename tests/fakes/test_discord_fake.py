"""The fake Discord against a real discord.py Client and CommandTree."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands
from PIL import Image

from tests.fakes.discord import FakeDiscord, point_discord_at, reset_discord_endpoints, use_gateway_from_api


def png_bytes(size: tuple[int, int] = (8, 6)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


class Harness:
    """A started fake plus a connected discord.py client with a command tree."""

    def __init__(self, fake: FakeDiscord, intents: discord.Intents | None = None) -> None:
        self.fake = fake
        self.client = discord.Client(intents=intents or discord.Intents.default(), guild_ready_timeout=0.05)
        self.tree = app_commands.CommandTree(self.client)
        self.task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        point_discord_at(self.fake.api_url)
        await self.client.login(self.fake.token)
        await use_gateway_from_api(self.client)
        self.task = asyncio.create_task(self.client.connect(reconnect=False))
        await self.fake.wait_ready()
        await asyncio.wait_for(self.client.wait_until_ready(), 5)

    async def close(self) -> None:
        await self.client.close()
        if self.task is not None:
            await asyncio.wait_for(self.task, 5)


async def connected(make_harness: Callable[..., Any]) -> tuple[Harness, discord.TextChannel]:
    """A harness whose client is connected, and the fake's text channel as the client sees it."""
    h = await make_harness()
    await h.connect()
    channel = h.client.get_channel(h.fake.channel_id)
    assert isinstance(channel, discord.TextChannel)
    return h, channel


def messages_from_others(h: Harness) -> asyncio.Queue[discord.Message]:
    """The messages the client's on_message sees from anyone but itself, in order."""
    got: asyncio.Queue[discord.Message] = asyncio.Queue()

    @h.client.event
    async def on_message(message: discord.Message) -> None:
        if message.author != h.client.user:
            await got.put(message)

    return got


@pytest.fixture
async def make_harness() -> AsyncIterator[Callable[..., asyncio.Future[Harness]]]:
    made: list[Harness] = []

    async def make(intents: discord.Intents | None = None, **fake_kwargs: object) -> Harness:
        fake = FakeDiscord(**fake_kwargs)  # type: ignore[arg-type]
        await fake.start()
        h = Harness(fake, intents)
        made.append(h)
        return h

    yield make  # type: ignore[misc]
    for h in made:
        await h.close()
        await h.fake.stop()
    reset_discord_endpoints()
    for h in made:
        assert not h.fake.errors, h.fake.errors


async def test_points_rest_and_gateway_at_the_fake(make_harness) -> None:
    h = await make_harness()
    await h.connect()
    fake, client = h.fake, h.client
    assert fake.calls_matching("GET", "/users/@me")
    assert fake.calls_matching("GET", "/gateway/bot")
    assert client.user is not None and client.user.id == fake.bot_user_id
    assert client.application_id == fake.application_id
    guild = client.get_guild(fake.guild_id)
    assert guild is not None and guild.me is not None
    assert isinstance(client.get_channel(fake.channel_id), discord.TextChannel)
    assert guild.filesize_limit == 10 * 1024 * 1024
    assert all(c.headers.get("Authorization") == f"Bot {fake.token}" for c in fake.calls)


async def test_slash_command_defer_edit_and_followup_with_file(make_harness) -> None:
    h = await make_harness()
    image = png_bytes()
    seen: dict[str, object] = {}
    done = asyncio.Event()

    @h.tree.command(name="ping", description="Ping with an image")
    async def ping(interaction: discord.Interaction, text: str, picture: discord.Attachment) -> None:
        seen["text"] = text
        seen["picture"] = await picture.read()
        seen["size"] = (picture.width, picture.height, picture.content_type)
        await interaction.response.defer(thinking=True)
        await interaction.edit_original_response(content="working")
        seen["followup"] = await interaction.followup.send(
            content="done", file=discord.File(io.BytesIO(image), "x.png"), wait=True
        )
        done.set()

    await h.connect()
    fake = h.fake
    h.tree.copy_global_to(guild=discord.Object(fake.guild_id))
    synced = await h.tree.sync(guild=discord.Object(fake.guild_id))
    assert [c.name for c in synced] == ["ping"]
    put = fake.calls_matching("PUT", rf"/applications/{fake.application_id}/guilds/{fake.guild_id}/commands")
    assert put and put[0].json[0]["options"][1]["type"] == 11
    assert fake.registered_commands[0]["guild_id"] == str(fake.guild_id)

    upload = fake.add_attachment(filename="in.png", data=png_bytes((5, 4)), content_type="image/png")
    ix = await fake.send_interaction(
        name="ping", options=[{"name": "text", "type": 3, "value": "hello"}], attachments={"picture": upload}
    )
    app, tok = fake.application_id, ix["token"]
    followups = await fake.wait_for("POST", rf"/webhooks/{app}/{tok}")
    await asyncio.wait_for(done.wait(), 5)

    [cb] = fake.calls_matching("POST", rf"/interactions/{ix['id']}/{tok}/callback")
    assert cb.json["type"] == 5
    assert cb.query.get("with_response") in ("1", "true")
    [patch] = fake.calls_matching("PATCH", rf"/webhooks/{app}/{tok}/messages/@original")
    assert patch.json["content"] == "working" and patch.status == 200
    [post] = followups
    assert post.json["content"] == "done"
    assert post.files == [("files[0]", "x.png", image)]
    assert seen["text"] == "hello"
    assert seen["size"] == (5, 4, "image/png")
    assert seen["picture"] == png_bytes((5, 4))

    # The original ("working") and the follow-up with its attachment are in the channel.
    msgs = fake.messages[fake.channel_id]
    assert [m["content"] for m in msgs] == ["working", "done"]
    followup = seen["followup"]
    assert isinstance(followup, discord.WebhookMessage)
    assert followup.attachments[0].filename == "x.png"
    assert await followup.attachments[0].read() == image
    async with aiohttp.ClientSession() as s, s.get(msgs[1]["attachments"][0]["url"]) as resp:
        assert resp.status == 200 and await resp.read() == image


async def test_first_followup_after_thinking_replaces_the_loading_message(make_harness) -> None:
    h = await make_harness()

    @h.tree.command(name="slow", description="x")
    async def slow(interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True, ephemeral=True)
        await interaction.followup.send("first")
        await interaction.followup.send("second")

    await h.connect()
    fake = h.fake
    ix = await fake.send_interaction(name="slow")
    await fake.wait_for("POST", rf"/webhooks/{fake.application_id}/{ix['token']}", count=2)
    msgs = fake.messages[fake.channel_id]
    assert [m["content"] for m in msgs] == ["first", "second"]
    assert msgs[0]["flags"] & 64 and not msgs[1]["flags"] & 64  # the defer's ephemeral flag carries over


async def test_message_create_reaches_on_message(make_harness) -> None:
    h = await make_harness()
    got = messages_from_others(h)
    await h.connect()
    fake = h.fake
    pic = fake.add_attachment(filename="a.png", data=png_bytes(), content_type="image/png")
    await fake.send_message(content="make it blue", mentions_bot=True, attachments=[pic])
    msg = await asyncio.wait_for(got.get(), 5)
    assert h.client.user is not None and h.client.user.mentioned_in(msg)
    assert msg.content == f"<@{fake.bot_user_id}> make it blue"
    assert msg.attachments[0].url == pic["url"] and await msg.attachments[0].read() == png_bytes()
    assert isinstance(msg.author, discord.Member) and msg.guild is not None

    # Without the message-content intent Discord blanks messages that do not mention the bot.
    await fake.send_message(content="just chatting")
    assert (await asyncio.wait_for(got.get(), 5)).content == ""

    # A reply to the bot's message with the mention left on.
    bot_msg = await h.client.get_channel(fake.channel_id).send("here is your image")  # type: ignore[union-attr]
    await fake.send_message(
        content="again please", referenced_message=fake.message(bot_msg.id), mentions_bot=True
    )
    reply = await asyncio.wait_for(got.get(), 5)
    assert reply.content == "again please"
    assert reply.reference is not None and reply.reference.message_id == bot_msg.id
    assert isinstance(reply.reference.resolved, discord.Message)


async def test_upload_over_the_guild_limit_is_413(make_harness) -> None:
    _, channel = await connected(make_harness)
    assert channel.guild.filesize_limit == 10 * 1024 * 1024
    big = discord.File(io.BytesIO(b"\0" * (10 * 1024 * 1024 + 1)), "big.png")
    with pytest.raises(discord.HTTPException) as err:
        await channel.send(file=big)
    assert err.value.status == 413 and err.value.code == 40005
    sent = await channel.send(file=discord.File(io.BytesIO(png_bytes()), "ok.png"))
    assert sent.attachments[0].size == len(png_bytes())


async def test_premium_tier_sets_filesize_limit_and_override(make_harness) -> None:
    h = await make_harness(premium_tier=2, filesize_limit_override=1000)
    await h.connect()
    guild = h.client.get_guild(h.fake.guild_id)
    assert guild is not None and guild.premium_tier == 2
    assert guild.filesize_limit == 50 * 1024 * 1024
    channel = guild.get_channel(h.fake.channel_id)
    with pytest.raises(discord.HTTPException) as err:
        await channel.send(file=discord.File(io.BytesIO(b"x" * 1001), "f.bin"))  # type: ignore[union-attr]
    assert err.value.status == 413


async def test_expired_interaction_token_is_401_50027(make_harness) -> None:
    h = await make_harness()
    expired = asyncio.Event()
    outcome: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    @h.tree.command(name="late", description="x")
    async def late(interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True)
        await expired.wait()
        try:
            await interaction.edit_original_response(content="too late")
        except Exception as e:  # handed to the test to inspect
            outcome.set_result(e)
            return
        outcome.set_result(None)

    await h.connect()
    fake = h.fake
    await fake.send_interaction(name="late")
    await fake.wait_for("POST", r"/interactions/\d+/[^/]+/callback")
    fake.expire_interaction_tokens()
    expired.set()
    exc = await asyncio.wait_for(outcome, 5)
    assert type(exc) is discord.HTTPException  # not NotFound / Forbidden
    assert exc.status == 401 and exc.code == 50027


async def test_late_ack_and_components_and_modals(make_harness) -> None:
    h = await make_harness(ack_deadline=0.2)
    clicked: asyncio.Queue[str] = asyncio.Queue()

    class Ask(discord.ui.Modal, title="Describe"):
        prompt: discord.ui.TextInput[Ask] = discord.ui.TextInput(label="Prompt")

        async def on_submit(self, interaction: discord.Interaction) -> None:
            await interaction.response.send_message(f"got {self.prompt.value}")
            await clicked.put("modal")

    class Buttons(discord.ui.View):
        @discord.ui.button(label="Again", custom_id="again")
        async def again(self, interaction: discord.Interaction, button: discord.ui.Button[Buttons]) -> None:
            await interaction.response.send_modal(Ask())
            await clicked.put("button")

    @h.tree.command(name="menu", description="x")
    async def menu(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("pick", view=Buttons())
        await clicked.put("menu")

    @h.tree.command(name="sleepy", description="x")
    async def sleepy(interaction: discord.Interaction) -> None:
        await asyncio.sleep(0.3)
        try:
            await interaction.response.defer()
        except discord.NotFound as e:
            await clicked.put(f"late {e.code}")

    await h.connect()
    fake = h.fake
    await fake.send_interaction(name="sleepy")
    assert await asyncio.wait_for(clicked.get(), 5) == "late 10062"

    await fake.send_interaction(name="menu")
    # wait for the bot, not just the fake: discord.py registers the view after reading the answer
    assert await asyncio.wait_for(clicked.get(), 5) == "menu"
    pick = fake.messages[fake.channel_id][-1]
    assert pick["content"] == "pick" and pick["components"][0]["components"][0]["custom_id"] == "again"
    await fake.send_interaction(type=3, custom_id="again", component_type=2, target_message=pick)
    assert await asyncio.wait_for(clicked.get(), 5) == "button"
    assert fake.modals[-1]["title"] == "Describe"
    await fake.send_interaction(type=5, modal_values={"Prompt": "a red fox"}, target_message=pick)
    assert await asyncio.wait_for(clicked.get(), 5) == "modal"
    assert fake.messages[fake.channel_id][-1]["content"] == "got a red fox"


async def test_unknown_routes_are_recorded_404(make_harness) -> None:
    h = await make_harness()
    await h.connect()
    with pytest.raises(discord.NotFound):
        await h.client.http.request(discord.http.Route("GET", "/nope/{x}", x=1))
    assert h.fake.calls_matching("GET", "/nope/1")[0].status == 404


async def test_fetches_edits_and_message_context_menu(make_harness) -> None:
    h = await make_harness()
    got: asyncio.Queue[discord.Message] = asyncio.Queue()

    @h.tree.context_menu(name="Vary")
    async def vary(interaction: discord.Interaction, message: discord.Message) -> None:
        await interaction.response.send_message(f"varying {message.id}", ephemeral=True)
        await got.put(message)

    await h.connect()
    fake, client = h.fake, h.client
    await h.tree.sync()
    assert fake.registered_commands[0]["type"] == 3 and "guild_id" not in fake.registered_commands[0]

    channel = await client.fetch_channel(fake.channel_id)
    assert isinstance(channel, discord.TextChannel) and channel.name == "general"
    guild = await client.fetch_guild(fake.guild_id)
    assert guild.premium_tier == 0 and guild.owner_id == fake.owner_id

    sent = await channel.send("v1", file=discord.File(io.BytesIO(png_bytes()), "a.png"))
    edited = await sent.edit(content="v2")  # keeps the attachment
    assert edited.content == "v2" and [a.filename for a in edited.attachments] == ["a.png"]
    edited = await edited.edit(attachments=[discord.File(io.BytesIO(png_bytes((3, 3))), "b.png")])
    assert [a.filename for a in edited.attachments] == ["b.png"]
    fetched = await channel.fetch_message(sent.id)
    assert fetched.content == "v2" and fetched.attachments[0].width == 3
    await fetched.add_reaction("⏳")
    assert fake.message(sent.id)["reactions"][0]["emoji"]["name"] == "⏳"  # type: ignore[index]

    ix = await fake.send_interaction(name="Vary", command_type=3, target_message=fake.message(sent.id))
    target = await asyncio.wait_for(got.get(), 5)
    assert target.id == sent.id and target.attachments[0].filename == "b.png"
    [cb] = await fake.wait_for("POST", rf"/interactions/{ix['id']}/[^/]+/callback")
    assert cb.json["type"] == 4 and cb.json["data"]["flags"] == 64
    reply = fake.messages[fake.channel_id][-1]
    assert reply["flags"] & 64 and reply["type"] == 23
    with pytest.raises(discord.NotFound):
        await channel.fetch_message(int(reply["id"]))  # ephemeral messages are not fetchable


async def test_faults_drop_hang_and_delay_calls(make_harness) -> None:
    h, channel = await connected(make_harness)
    fake = h.fake
    messages = rf"/channels/{fake.channel_id}/messages"

    fake.inject_fault("POST", messages, "drop", when=lambda call: call.json["content"] == "dropped")
    await channel.send("not this one")
    with pytest.raises(aiohttp.ClientConnectionError):
        await channel.send("dropped")
    fake.inject_fault("POST", messages, "hang")
    with pytest.raises(TimeoutError):  # only the client's own timeout ends an unanswered call
        async with asyncio.timeout(0.3):
            await channel.send("unanswered")
    fake.inject_fault("*", messages, "delay", seconds=0.5)
    sending = asyncio.create_task(channel.send("late"))
    await asyncio.sleep(0.05)
    await h.client.fetch_channel(fake.channel_id)  # answered while the late one waits
    await sending

    _, dropped, hung, late = fake.calls_matching("POST", messages)
    [quick] = fake.calls_matching("GET", rf"/channels/{fake.channel_id}")
    assert (dropped.status, dropped.answered, hung.status, hung.answered) == (0, 0.0, 0, 0.0)
    assert late.status == 200 and late.at < quick.at < quick.answered < late.answered
    # Neither the dropped nor the unanswered call was acted on; the late one was, once.
    assert [m["content"] for m in fake.messages[fake.channel_id]] == ["not this one", "late"]
    await channel.send("fine again")
    assert fake.calls_matching("POST", messages)[-1].status == 200


async def test_component_limits_are_discords(make_harness) -> None:
    h = await make_harness()
    await h.connect()
    fake = h.fake

    def row(*ids: str, label: str = "b") -> dict:
        return {
            "type": 1,
            "components": [{"type": 2, "style": 2, "label": label, "custom_id": i} for i in ids],
        }

    route = discord.http.Route("POST", "/channels/{channel_id}/messages", channel_id=fake.channel_id)
    bad = {
        "six rows": [row(f"r{n}") for n in range(6)],
        "six in a row": [row(*(f"b{n}" for n in range(6)))],
        "long custom id": [row("x" * 101)],
        "duplicated": [row("same", "same")],
        "long label": [row("ok", label="y" * 81)],
    }
    for name, components in bad.items():
        with pytest.raises(discord.HTTPException) as caught:
            await h.client.http.request(route, json={"content": name, "components": components})
        assert (caught.value.status, caught.value.code) == (400, 50035), name
    # At the limits: 5 rows of 5 buttons, custom ids of 100 characters.
    full = [row(*(f"{r}{b}".ljust(100, "x") for b in range(5))) for r in range(5)]
    sent = await h.client.http.request(route, json={"content": "full", "components": full})
    assert len(FakeDiscord.buttons(fake.message(int(sent["id"])) or {})) == 25
    # ... and an edit is held to the same rules.
    edit = discord.http.Route(
        "PATCH",
        "/channels/{channel_id}/messages/{message_id}",
        channel_id=fake.channel_id,
        message_id=sent["id"],
    )
    with pytest.raises(discord.HTTPException) as caught:
        await h.client.http.request(edit, json={"components": [row(f"r{n}") for n in range(6)]})
    assert caught.value.code == 50035 and len(FakeDiscord.buttons(fake.message(int(sent["id"])) or {})) == 25


async def test_buttons_are_pressed_on_messages_that_carry_them_and_deletes_are_discords(make_harness) -> None:
    h = await make_harness()
    pressed: asyncio.Queue[tuple[str, int | None]] = asyncio.Queue()
    deleted: asyncio.Queue[int] = asyncio.Queue()

    class Persistent(discord.ui.DynamicItem[discord.ui.Button], template=r"keep:(?P<n>\d+)"):  # type: ignore[type-arg]
        def __init__(self, n: int) -> None:
            super().__init__(discord.ui.Button(label=f"Keep {n}", custom_id=f"keep:{n}"))
            self.n = n

        @classmethod
        async def from_custom_id(cls, interaction, item, match, /):  # type: ignore[no-untyped-def]
            return cls(int(match["n"]))

        async def callback(self, interaction: discord.Interaction) -> None:
            await interaction.response.defer(thinking=True, ephemeral=True)
            await interaction.followup.send(f"kept {self.n}", ephemeral=True)
            await pressed.put((f"keep {self.n}", interaction.message.id if interaction.message else None))

    h.client.add_dynamic_items(Persistent)

    @h.client.event
    async def on_raw_message_delete(payload: discord.RawMessageDeleteEvent) -> None:
        await deleted.put(payload.message_id)

    await h.connect()
    fake, client = h.fake, h.client
    channel = client.get_channel(fake.channel_id)
    assert isinstance(channel, discord.TextChannel)
    view = discord.ui.View(timeout=None)
    view.add_item(Persistent(7))
    sent = await channel.send("with a button", view=view)
    message = fake.message(sent.id)
    assert message is not None and [b["label"] for b in fake.buttons(message)] == ["Keep 7"]

    ix = await fake.press_button(message, "Keep")
    assert await asyncio.wait_for(pressed.get(), 5) == ("keep 7", sent.id)
    reply = fake.messages[fake.channel_id][-1]
    assert reply["content"] == "kept 7" and reply["flags"] & 64
    assert reply["interaction_metadata"]["interacted_message_id"] == str(sent.id)
    with pytest.raises(ValueError, match="no component"):
        await fake.send_interaction(type=3, custom_id="keep:8", component_type=2, target_message=message)
    with pytest.raises(AssertionError, match="no button labelled"):
        await fake.press_button(message, "Nope")

    # Ephemeral messages are out of reach of the channel endpoints; others' messages need Manage Messages.
    with pytest.raises(discord.NotFound):
        await channel.get_partial_message(int(reply["id"])).delete()
    theirs = await fake.send_message(content="a member's message")
    with pytest.raises(discord.Forbidden):
        await channel.get_partial_message(int(theirs["id"])).delete()
    await sent.delete()
    assert await asyncio.wait_for(deleted.get(), 5) == sent.id and fake.message(sent.id) is None
    with pytest.raises(ValueError, match="does not exist"):
        await fake.send_interaction(type=3, custom_id="keep:7", component_type=2, target_message=message)
    assert ix["type"] == 3


async def test_subcommands_resolve_users_channels_and_roles(make_harness) -> None:
    """Options nested in a subcommand (type 1) or a group (type 2) are resolved like top-level ones: users
    (with members, without their user, in the guild), channels (partial) and roles (full), so discord.py
    hands the callback real objects; roles given with add_role/add_member are in discord.py's cache."""
    h = await make_harness()
    fake = h.fake
    role_id, member_id, stranger_id, art_id = (
        1100000000000000100,
        1100000000000000101,
        1100000000000000102,
        1100000000000000103,
    )
    role = fake.add_role(role_id, "designers", color=0x3498DB, mentionable=True)
    assert {
        "id",
        "name",
        "color",
        "hoist",
        "position",
        "permissions",
        "managed",
        "mentionable",
        "flags",
    } <= set(role)
    fake.add_member(member_id, roles=[role_id], username="dana")
    fake.add_member(fake.user_id, roles=[role_id])  # the invoking member has it too
    fake.add_channel(art_id, "art")
    got: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    admin = app_commands.Group(name="imagine-admin", description="Admin")
    grant = app_commands.Group(name="grant", description="Grant things", parent=admin)

    @admin.command(name="channel", description="Switch a channel")
    async def channel_cmd(
        interaction: discord.Interaction, channel: discord.abc.GuildChannel, text: str
    ) -> None:
        await interaction.response.send_message("ok", ephemeral=True)
        await got.put(("channel", (channel, text, interaction.user)))

    @admin.command(name="role", description="A role")
    async def role_cmd(interaction: discord.Interaction, role: discord.Role) -> None:
        await interaction.response.send_message("ok", ephemeral=True)
        await got.put(("role", role))

    @admin.command(name="user", description="A user")
    async def user_cmd(interaction: discord.Interaction, user: discord.User) -> None:
        await interaction.response.send_message("ok", ephemeral=True)
        await got.put(("user", user))

    @grant.command(name="quota", description="To a member or a role")
    async def grant_quota(
        interaction: discord.Interaction, target: discord.Member | discord.Role, images: int = 5
    ) -> None:
        await interaction.response.send_message("ok", ephemeral=True)
        await got.put(("grant", (target, images)))

    h.tree.add_command(admin, guild=discord.Object(fake.guild_id))
    await h.connect()
    guild = h.client.get_guild(fake.guild_id)
    cached = guild.get_role(role_id) if guild is not None else None
    assert cached is not None and cached.name == "designers"  # GUILD_CREATE carried the role
    await h.tree.sync(guild=discord.Object(fake.guild_id))
    [registered] = fake.registered_commands
    assert sorted(o["type"] for o in registered["options"]) == [1, 1, 1, 2]
    [group] = [o for o in registered["options"] if o["type"] == 2]
    assert group["options"][0]["options"][0]["type"] == 9  # a mentionable, nested twice

    ix = await fake.send_interaction(
        name="imagine-admin",
        options=[
            {
                "type": 1,
                "name": "channel",
                "options": [
                    {"name": "channel", "type": 7, "value": str(art_id)},
                    {"name": "text", "type": 3, "value": "off"},
                ],
            }
        ],
    )
    kind, (channel, text, invoker) = await asyncio.wait_for(got.get(), 5)
    assert kind == "channel" and channel.id == art_id and channel.name == "art" and text == "off"
    assert isinstance(invoker, discord.Member) and [r.id for r in invoker.roles if r.id == role_id] == [
        role_id
    ]
    assert ix["data"]["resolved"]["channels"][str(art_id)].keys() == {"id", "name", "type", "permissions"}
    assert ix["member"]["roles"] == [str(role_id)]

    ix = await fake.send_interaction(
        name="imagine-admin",
        options=[{"type": 1, "name": "role", "options": [{"name": "role", "type": 8, "value": role_id}]}],
    )
    kind, resolved_role = await asyncio.wait_for(got.get(), 5)
    assert kind == "role" and isinstance(resolved_role, discord.Role) and resolved_role.name == "designers"
    assert resolved_role.color.value == 0x3498DB and resolved_role.mentionable
    assert ix["data"]["options"][0]["options"][0]["value"] == str(role_id)  # snowflakes are strings
    assert ix["data"]["resolved"]["roles"][str(role_id)] == fake.role(role_id)

    ix = await fake.send_interaction(
        name="imagine-admin",
        options=[
            {"type": 1, "name": "user", "options": [{"name": "user", "type": 6, "value": str(member_id)}]}
        ],
    )
    kind, user = await asyncio.wait_for(got.get(), 5)
    assert kind == "user" and isinstance(user, discord.Member) and user.name == "dana"
    assert [r.name for r in user.roles] == ["@everyone", "designers"]
    members = ix["data"]["resolved"]["members"]
    assert "user" not in members[str(member_id)] and members[str(member_id)]["roles"] == [str(role_id)]
    assert ix["data"]["resolved"]["users"][str(member_id)]["username"] == "dana"

    # Someone who is not in the guild resolves to a user only.
    ix = await fake.send_interaction(
        name="imagine-admin",
        options=[
            {"type": 1, "name": "user", "options": [{"name": "user", "type": 6, "value": str(stranger_id)}]}
        ],
    )
    kind, stranger = await asyncio.wait_for(got.get(), 5)
    assert type(stranger) is discord.User and stranger.id == stranger_id
    assert "members" not in ix["data"]["resolved"]

    # A mentionable inside a subcommand group: a role, then a member.
    for target in (role_id, member_id):
        await fake.send_interaction(
            name="imagine-admin",
            options=[
                {
                    "type": 2,
                    "name": "grant",
                    "options": [
                        {
                            "type": 1,
                            "name": "quota",
                            "options": [{"name": "target", "type": 9, "value": str(target)}],
                        }
                    ],
                }
            ],
        )
        kind, (resolved_target, images) = await asyncio.wait_for(got.get(), 5)
        assert kind == "grant" and resolved_target.id == target and images == 5
        assert isinstance(resolved_target, discord.Role if target == role_id else discord.Member)

    with pytest.raises(ValueError, match="no channel"):
        await fake.send_interaction(
            name="imagine-admin",
            options=[
                {"type": 1, "name": "channel", "options": [{"name": "channel", "type": 7, "value": "42"}]}
            ],
        )


async def test_guild_messages_carry_the_authors_member_roles(make_harness) -> None:
    h = await make_harness(intents=discord.Intents.default() | discord.Intents(message_content=True))
    fake = h.fake
    role_id, author_id = 1100000000000000200, 1100000000000000201
    fake.add_role(role_id, "artists")
    fake.add_member(author_id, roles=[role_id])
    got = messages_from_others(h)
    await h.connect()
    await fake.send_message(content="hello", author_id=author_id)
    msg = await asyncio.wait_for(got.get(), 5)
    assert isinstance(msg.author, discord.Member) and [r.name for r in msg.author.roles] == [
        "@everyone",
        "artists",
    ]
    dispatched = fake.messages[fake.channel_id][-1]
    assert "member" not in dispatched  # the stored message; the gateway copy carries member (checked above)


async def test_command_registration_is_validated_at_every_level(make_harness) -> None:
    h = await make_harness()
    await h.connect()
    fake, http = h.fake, h.client.http
    app, guild = fake.application_id, fake.guild_id

    def opt(name: str, type: int = 3, **extra: object) -> dict:
        return {"type": type, "name": name, "description": f"the {name}", **extra}

    def sub(name: str, *options: dict, type: int = 1) -> dict:
        return {"type": type, "name": name, "description": f"the {name}", "options": list(options)}

    good = {
        "name": "imagine-admin",
        "description": "Admin",
        "options": [sub("channel", opt("channel", 7, required=True), opt("text"))],
    }
    assert len(await http.bulk_upsert_guild_commands(app, guild, [good])) == 1
    [before] = fake.registered_commands

    bad = {
        "upper-case subcommand": sub("Channel"),
        "33-character subcommand": sub("c" * 33),
        "a space in a subcommand": sub("two words"),
        "26 options": sub("many", *(opt(f"o{n}") for n in range(26))),
        "empty description": sub("x", opt("text", description="")),
        "101-character description": sub("x", opt("text", description="d" * 101)),
        "required after optional": sub("x", opt("a"), opt("b", required=True)),
        "a string beside a subcommand": opt("loose"),
        "a string in a group": sub("grp", opt("loose"), type=2),
        "a subcommand in a subcommand": sub("outer", sub("inner")),
        "a duplicated option": sub("x", opt("a"), opt("a")),
        "a locale Discord does not know": sub("x", opt("a", name_localizations={"zh": "甲"})),
        "an upper-case localized name": sub("x", opt("a", name_localizations={"de": "Name"})),
        "a space in a localized name": sub("x", opt("a", name_localizations={"zh-CN": "两 个"})),
        "an empty localized description": sub("x", opt("a", description_localizations={"zh-CN": ""})),
        "localizations that are not a map": sub("x", opt("a", name_localizations=["zh-CN"])),
    }
    for name, option in bad.items():
        payload = [{**good, "options": [*good["options"], option]}]
        with pytest.raises(discord.HTTPException) as refused:
            await http.bulk_upsert_guild_commands(app, guild, payload)
        assert (refused.value.status, refused.value.code) == (400, 50035), name
        assert fake.registered_commands == [before], name  # a rejected overwrite changes nothing
    # Top-level options follow the same rules.
    with pytest.raises(discord.HTTPException):
        await http.bulk_upsert_global_commands(
            app, [{"name": "imagine", "description": "x", "options": [opt("a"), opt("b", required=True)]}]
        )
    with pytest.raises(discord.HTTPException):
        await http.bulk_upsert_global_commands(app, [{"name": "Imagine", "description": "x"}])

    # Localized names follow the name rules (letters of any script), descriptions the description rules.
    localized = {
        **sub(
            "x",
            opt("a", name_localizations={"zh-CN": "提示词"}, description_localizations={"zh-CN": "要画什么"}),
        ),
        "name_localizations": {"zh-CN": "频道"},
    }
    assert await http.bulk_upsert_guild_commands(app, guild, [{**good, "options": [localized]}])

    # The body is Discord's: errors keyed by command index, then by option path.
    payload = [{**good, "options": [sub("x", opt("a"), opt("b", required=True), opt("c", description=""))]}]
    headers = {"Authorization": f"Bot {fake.token}"}
    async with aiohttp.ClientSession() as s:
        url = f"{fake.api_url}/applications/{app}/guilds/{guild}/commands"
        async with s.put(url, json=payload, headers=headers) as resp:
            assert resp.status == 400
            body = await resp.json()
    assert body["code"] == 50035 and body["message"] == "Invalid Form Body"
    nested = body["errors"]["0"]["options"]["0"]["options"]
    assert nested["1"]["_errors"][0]["code"] == "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID"
    assert nested["2"]["description"]["_errors"][0]["code"] == "BASE_TYPE_BAD_LENGTH"
    # At the limits: 25 options of 32-character names and 100-character descriptions.
    full = sub("full", *(opt(f"{n:02d}".ljust(32, "o"), description="d" * 100) for n in range(25)))
    assert await http.bulk_upsert_guild_commands(app, guild, [{**good, "options": [full]}])
