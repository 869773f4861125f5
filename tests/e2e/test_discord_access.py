"""Discord access rules (docs/rules.md §10), what only Discord has, end to end: `/imagine-admin` with one
subcommand per verb and typed options, set through the real discord.py command tree against the fake Discord, the
dashboard link, and the ways a job starts that only Discord has (a reply that mentions the bot, the Edit image
menu), roles that cannot be read, a refusal to closed DMs. The rules the same on Slack are in
tests/e2e/test_access_rules.py."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp

from bot.store import settings
from tests.e2e.harness import RunningBot
from tests.fakes.discord import FakeDiscord
from tests.support.discord import (
    ADMIN,
    ARTIST,
    ARTISTS,
    EPHEMERAL,
    MANAGE_GUILD,
    OTHER,
    admin,
    callback,
    content,
    finished,
    first_call,
    guild,
    private_answer,
    refused,
)
from tests.support.images import png

VERBS = ["quota", "report", "channel", "allow", "deny", "block", "unblock", "settings", "dashboard", "help"]


# -- helpers -------------------------------------------------------------------------------------------------


async def imagine(
    fake: FakeDiscord, prompt: str, *, user_id: int | None = None, **options: str | int
) -> dict[str, Any]:
    """`/imagine prompt:... <options>` by `user_id` (the default member unless told)."""
    typed = [{"name": "prompt", "type": 3, "value": prompt}] + [
        {"name": name, "type": 4 if isinstance(value, int) else 3, "value": value}
        for name, value in options.items()
    ]
    return await fake.send_interaction(name="imagine", options=typed, user_id=user_id)


async def image_message(
    fake: FakeDiscord, bot: RunningBot, prompt: str, rows: int = 1, **options: Any
) -> dict[str, Any]:
    """/imagine (low quality unless told) that renders; the message with the image once `rows` rows settled."""
    ix = await imagine(fake, prompt, **{"quality": "low", **options})
    return await finished(fake, bot, ix, rows)


async def settings_stored(bot: RunningBot) -> list[tuple[Any, ...]]:
    return [
        *await bot.core.ledger.query("SELECT channel, name, value FROM channel_settings"),
        *await bot.core.ledger.query(
            "SELECT name, value FROM tenant_settings WHERE tenant != ?", [settings.SYSTEM]
        ),
    ]


# -- the command ---------------------------------------------------------------------------------------------


async def test_admin_command_has_one_subcommand_per_verb_with_typed_targets(tmp_path: Path) -> None:
    async with guild(tmp_path) as (fake, _bot):
        [put] = fake.calls_matching("PUT", rf"/applications/{fake.application_id}/commands")
        assert put.status == 200  # Discord's rules for names, descriptions and option order hold
        [command] = [c for c in fake.registered_commands if c["name"] == "imagine-admin"]
        assert int(command["default_member_permissions"]) == MANAGE_GUILD  # hidden from members
        assert command["contexts"] == [0]  # servers only
        subcommands = {o["name"]: o for o in command["options"]}
        assert list(subcommands) == VERBS and {o["type"] for o in command["options"]} == {1}

        def options(verb: str) -> list[tuple[str, int, bool]]:
            return [
                (o["name"], o["type"], bool(o.get("required"))) for o in subcommands[verb].get("options", [])
            ]

        assert options("quota") == [("limits", 3, True), ("user", 6, False), ("channel", 7, False)]
        assert options("report") == [("days", 4, False)]
        assert options("channel") == [("channel", 7, True), ("settings", 3, True)]
        assert options("allow") == options("deny") == [("role", 8, False), ("everyone", 5, False)]
        assert options("block") == options("unblock") == [("user", 6, True)]
        assert options("settings") == [("text", 3, False)]
        assert options("help") == []
        # Only channels whose rules apply: no categories (4), and no threads (10-12), which follow their
        # parent's rules; forums (15) hold rules for their posts.
        [picker] = [o for o in subcommands["channel"]["options"] if o["name"] == "channel"]
        assert {0, 15} <= set(picker["channel_types"]) and not {4, 10, 11, 12} & set(picker["channel_types"])


async def test_help_is_answered_privately_with_a_private_thinking_first(tmp_path: Path) -> None:
    async with guild(tmp_path) as (fake, _bot):
        ix = await fake.send_interaction(
            name="imagine-admin", options=[{"type": 1, "name": "help"}], user_id=ADMIN
        )
        said = await private_answer(fake, ix)
        assert callback(fake, ix).json == {
            "type": 5,
            "data": {"flags": EPHEMERAL},
        }  # private "thinking" first
        assert "- dashboard" in said
        assert not [m for m in fake.messages[fake.channel_id] if not m["flags"] & EPHEMERAL]


async def test_dashboard_answers_the_admin_alone_with_a_link_that_signs_in(tmp_path: Path) -> None:
    async with guild(tmp_path) as (fake, bot):
        said = await admin(fake, "dashboard")
        link = re.search(r"(http://\S+/dashboard/signin/)([0-9a-f]{64})", said)
        assert link and f"discord:{fake.guild_id}" in said, said
        assert not [m for m in fake.messages[fake.channel_id] if not m["flags"] & EPHEMERAL]
        assert "Only admins" in await admin(fake, "dashboard", by=OTHER)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:  # an IP address
            signed = await http.post(
                f"{bot.url}/dashboard/signin/link", data={"link": link[2]}, allow_redirects=False
            )
            assert signed.status == 303 and "HttpOnly" in signed.headers["Set-Cookie"]
            page = await http.get(f"{bot.url}/dashboard/limits")
            assert page.status == 200 and f"discord:{fake.guild_id}" in await page.text()


# -- the person ----------------------------------------------------------------------------------------------


async def test_a_blocked_user_is_refused_on_the_reply_path_and_the_edit_image_menu(tmp_path: Path) -> None:
    """The paths only Discord has: a reply that mentions the bot (no interaction, so the word goes by DM, naming
    the reply) and the "Edit image" menu (no form opens, nothing is downloaded); the Edit button's refusal is its
    answer too."""
    async with guild(tmp_path) as (fake, bot):
        message = await image_message(fake, bot, "a red fox")  # made before the block
        photo = fake.add_attachment(filename="cat.png", data=png(800, 800), content_type="image/png")
        upload = await fake.send_message(content="my cat", attachments=[photo])
        assert f"<@{fake.user_id}> blocked" in await admin(fake, "block", user=fake.user_id)
        reply = await fake.send_message(
            content="make it blue --quality low", referenced_message=message, mentions_bot=True
        )
        told = await first_call(
            fake,
            lambda c: (
                c.method == "POST" and c.path.startswith("/channels/") and "You are blocked" in content(c)
            ),
        )
        [dm] = fake.dm_messages(fake.user_id)
        assert told.path == f"/channels/{dm['channel_id']}/messages" and reply["id"] in content(told)
        assert told.json["allowed_mentions"]["parse"] == [] and not told.files
        answers = [m for m in fake.messages[fake.channel_id] if m.get("referenced_message") == reply]
        assert not answers  # nothing public
        forms = len(fake.modals)
        press = await fake.press_button(message, "Edit")
        await refused(fake, bot, press, "blocked", rows=1)
        menu = await fake.send_interaction(name="Edit image", command_type=3, target_message=upload)
        await refused(fake, bot, menu, "blocked", rows=1)
        assert callback(fake, press).json["type"] == callback(fake, menu).json["type"] == 4
        assert len(fake.modals) == forms
        assert not [r for r in fake.cdn_requests if photo["id"] in r.path]  # nothing downloaded for the menu


async def test_allow_takes_exactly_one_of_a_role_and_everyone_and_the_everyone_role_is_everyone(
    tmp_path: Path,
) -> None:
    async with guild(tmp_path) as (fake, bot):
        for options in ({}, {"role": ARTISTS, "everyone": True}):
            said = await admin(fake, "allow", **options)
            assert "exactly one" in said, said
        assert await settings_stored(bot) == []
        assert f"Allowed: <@&{ARTISTS}>" in await admin(fake, "allow", role=ARTISTS)
        ix = await imagine(fake, "a fox", quality="low", user_id=OTHER)
        await refused(fake, bot, ix, f"Only members of <@&{ARTISTS}>", rows=0)
        assert "Allowed: everyone" in await admin(fake, "allow", role=fake.guild_id)  # the @everyone role
        await image_message(fake, bot, "anyone's fox", user_id=OTHER)
        assert [r["user"] for r in await bot.ledger()] == [str(OTHER)]


async def test_roles_that_cannot_be_read_fail_closed(tmp_path: Path) -> None:
    async with guild(tmp_path) as (fake, bot):
        message = await image_message(fake, bot, "a red fox", user_id=ARTIST)
        assert f"<@&{ARTISTS}>" in await admin(fake, "deny", role=ARTISTS)
        # The event names a user but not their roles: whether they are in the denied role cannot be told.
        await fake.send_message(
            content="make it blue --quality low",
            referenced_message=message,
            mentions_bot=True,
            author_id=ARTIST,
            with_member=False,
        )
        words = "Access cannot be checked right now; nothing was charged"
        await first_call(fake, lambda c: c.method == "POST" and words in content(c))
        assert [words in m["content"] for m in fake.dm_messages(ARTIST)] == [True]
        assert len(bot.server.calls) == 1 and len(await bot.ledger()) == 1


async def test_a_reply_path_refusal_to_closed_dms_is_a_reply_that_deletes_itself(tmp_path: Path) -> None:
    async with guild(tmp_path) as (fake, bot):
        message = await image_message(fake, bot, "a red fox")
        assert f"<@{fake.user_id}> blocked" in await admin(fake, "block", user=fake.user_id)
        fake.close_dms(fake.user_id)
        bot.adapters["discord"].refusal_lifetime = 0.5  # 60 s in production
        reply = await fake.send_message(
            content="make it blue --quality low", referenced_message=message, mentions_bot=True
        )
        channel = f"/channels/{fake.channel_id}/messages"
        told = await first_call(
            fake, lambda c: c.method == "POST" and c.path == channel and "You are blocked" in content(c)
        )
        assert told.status == 200 and str(told.json["message_reference"]["message_id"]) == reply["id"]
        assert told.json["allowed_mentions"]["parse"] == [] and not told.files
        [refused_dm] = [c for c in fake.calls if c.status == 403 and "You are blocked" in content(c)]
        assert refused_dm.json["content"].startswith("About your message")
        assert refused_dm.at < told.at  # the DM was tried first, and Discord said 50007
        posted = [m for m in fake.messages[fake.channel_id] if "You are blocked" in m["content"]]
        [gone] = posted
        await first_call(fake, lambda c: c.method == "DELETE" and c.path == f"{channel}/{gone['id']}")
        assert not [m for m in fake.messages[fake.channel_id] if "You are blocked" in m["content"]]
        assert len(bot.server.calls) == 1 and len(await bot.ledger()) == 1
