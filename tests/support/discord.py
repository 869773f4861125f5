"""Driving the bot through the fake Discord (tests/fakes/discord.py): a guild with members and the bot connected
to it, `/imagine` and `/imagine-admin` as a member sends them, and reading what the bot answered."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from PIL import Image

from adapters.discord import DiscordAdapter
from tests.e2e.harness import RunningBot, running_bot
from tests.fakes.discord import FakeDiscord, RestCall, reset_discord_endpoints
from tests.support.waits import until

EPHEMERAL = 1 << 6
RESULT_LABELS = ["Re-roll", "Vary", "Upscale", "Edit", "Delete", "Info"]  # one image's buttons, in English
MANAGE_GUILD = 1 << 5


@contextlib.asynccontextmanager
async def discord_bot(
    tmp_path: Path, *, fake_kwargs: dict[str, Any] | None = None, **env: str
) -> AsyncIterator[tuple[FakeDiscord, RunningBot]]:
    """A fake Discord and the bot connected to it, with its commands synced."""
    fake = FakeDiscord(**(fake_kwargs or {}))
    await fake.start()
    try:
        async with running_bot(
            tmp_path, {"DISCORD_TOKEN": fake.token, "DISCORD_API_URL": fake.api_url, **env}
        ) as bot:
            await fake.wait_ready()
            await fake.wait_for("PUT", rf"/applications/{fake.application_id}/commands")
            adapter: DiscordAdapter = bot.adapters["discord"]
            adapter.edit_interval, adapter.preview_interval = 0.05, 0.1  # a 0.2 s render still shows progress
            yield fake, bot
    finally:
        await fake.stop()
        reset_discord_endpoints()
    assert not fake.errors, fake.errors


async def imagine(
    fake: FakeDiscord, prompt: str, *, attachments: dict[str, dict] | None = None, **options: str | int
) -> dict[str, Any]:
    """Dispatch `/imagine prompt:... <options>` as the default member."""
    typed = [{"name": "prompt", "type": 3, "value": prompt}] + [
        {"name": name, "type": 4 if isinstance(value, int) else 3, "value": value}
        for name, value in options.items()
    ]
    return await fake.send_interaction(name="imagine", options=typed, attachments=attachments)


async def first_call(fake: FakeDiscord, found: Callable[[RestCall], bool], within: float = 30) -> RestCall:
    """The first recorded call for which `found` is true, waiting for it."""
    hits = await until(lambda: [c for c in fake.calls if found(c)], within, "no such Discord call")
    return hits[0]


def content(call: RestCall) -> str:
    body = call.json if isinstance(call.json, dict) else {}
    return str(body.get("content") or "").replace("\\", "")  # without markdown escapes


def final_result(call: RestCall) -> bool:
    """The image with its summary, not a progress update carrying a preview: only the result names a request id."""
    return bool(call.files) and "request id" in content(call)


def original_edits(fake: FakeDiscord, ix: dict[str, Any]) -> list[RestCall]:
    return fake.calls_matching("PATCH", rf"/webhooks/{fake.application_id}/{ix['token']}/messages/@original")


def decoded(call: RestCall) -> Image.Image:
    [(_, _, data)] = call.files
    return Image.open(io.BytesIO(data))


def buttons(call: Any) -> list[dict[str, Any]]:
    """The buttons on a message as sent (every row)."""
    return [c for row in call.json.get("components") or [] for c in row.get("components", [])]


def cancel_buttons(call: Any) -> list[dict[str, Any]]:
    return [c for c in buttons(call) if str(c.get("custom_id", "")).startswith("imagebot:cancel:")]


@contextlib.asynccontextmanager
async def bot_on(fake: FakeDiscord, tmp_path: Path, **env: str) -> AsyncIterator[RunningBot]:
    """The bot against an already running fake Discord (so a second one can follow it: a restart), once it is
    connected: its start-up, a command sync included (only when the commands changed), is over."""
    async with running_bot(
        tmp_path, {"DISCORD_TOKEN": fake.token, "DISCORD_API_URL": fake.api_url, **env}
    ) as bot:
        adapter: DiscordAdapter = bot.adapters["discord"]
        async with asyncio.timeout(10):
            while not (adapter.connected and fake.identified_sessions == 1):
                await asyncio.sleep(0.02)
        adapter.edit_interval, adapter.preview_interval = 0.05, 0.1
        yield bot


def response_of(fake: FakeDiscord, ix: dict[str, Any]) -> dict[str, Any]:
    """The public message that answers interaction `ix` (its "thinking" message, then its job's)."""
    [message] = [
        m
        for messages in fake.messages.values()
        for m in messages
        if (m.get("interaction_metadata") or {}).get("id") == ix["id"] and not m["flags"] & EPHEMERAL
    ]
    return message


async def finished(fake: FakeDiscord, bot: RunningBot, ix: dict[str, Any], rows: int) -> dict[str, Any]:
    """Wait for `ix`'s job to deliver (its response edited into the image and buttons, `rows` ledger rows
    settled in all); return the message that carries the image."""
    await first_call(fake, lambda c: c in original_edits(fake, ix) and final_result(c) and c.status == 200)
    await bot.settled(rows)
    return response_of(fake, ix)


async def private_words(fake: FakeDiscord, ix: dict[str, Any]) -> RestCall:
    """The ephemeral follow-up that tells the clicker (and only them) something."""
    calls = await fake.wait_for("POST", rf"/webhooks/{fake.application_id}/{ix['token']}")
    [told] = [c for c in calls if c.status == 200]
    assert told.json["flags"] & EPHEMERAL
    return told


def callback(fake: FakeDiscord, ix: dict[str, Any]) -> RestCall:
    [answer] = fake.calls_matching("POST", rf"/interactions/{ix['id']}/[^/]+/callback")
    return answer


def response_of_gone(fake: FakeDiscord, ix: dict[str, Any]) -> bool:
    """The public "thinking" message of a refused click is gone: only the clicker saw why."""
    return not [
        m
        for messages in fake.messages.values()
        for m in messages
        if (m.get("interaction_metadata") or {}).get("id") == ix["id"] and not m["flags"] & EPHEMERAL
    ]


ADMIN = 1100000000000000098  # a member with Manage Server
OTHER = 1100000000000000099  # a member without any role
ARTIST = 1100000000000000097  # a member of the artists role
ARTISTS = 1100000000000000096  # a role
# Discord's option types: the typed targets travel as snowflakes, resolved in `data.resolved`.
TYPES = {"user": 6, "channel": 7, "role": 8, "everyone": 5, "days": 4}


@contextlib.asynccontextmanager
async def guild(
    tmp_path: Path, setup: Callable[[FakeDiscord], None] | None = None, **env: str
) -> AsyncIterator[tuple[FakeDiscord, RunningBot]]:
    """A guild with an admin (Manage Server), an artists role with one member, another member, and the bot;
    `setup` adds to the guild before the bot connects."""
    fake = guild_fake(setup)
    await fake.start()
    try:
        async with bot_on(fake, tmp_path, IMAGEBOT_CONFIRM_USD="off", **env) as bot:
            yield fake, bot
    finally:
        await fake.stop()
        reset_discord_endpoints()
    assert not fake.errors, fake.errors


def guild_fake(setup: Callable[[FakeDiscord], None] | None = None) -> FakeDiscord:
    """A fake Discord (not started) whose guild has an admin (Manage Server), an artists role with one member and
    another member; `setup` adds to it."""
    fake = FakeDiscord()
    if setup is not None:
        setup(fake)
    fake.add_role(ARTISTS, "artists")  # before the bot connects: GUILD_CREATE carries the roles
    fake.add_member(ADMIN, permissions=str(MANAGE_GUILD))
    fake.add_member(ARTIST, roles=[ARTISTS])
    fake.add_member(OTHER)
    return fake


async def admin(fake: FakeDiscord, verb: str, *, by: int = ADMIN, **options: Any) -> str:
    """`/imagine-admin <verb>` with typed options, by `by`: what only they see (answered within the ack)."""
    typed = [
        {
            "name": name,
            "type": TYPES.get(name, 3),
            "value": str(value) if TYPES.get(name) in (6, 7, 8) else value,
        }
        for name, value in options.items()
    ]
    ix = await fake.send_interaction(
        name="imagine-admin", options=[{"type": 1, "name": verb, "options": typed}], user_id=by
    )
    return await private_answer(fake, ix)


async def private_answer(fake: FakeDiscord, ix: dict[str, Any]) -> str:
    """What interaction `ix` told its user alone: in its callback (a refusal that is the answer), or in an
    ephemeral follow-up after a private or public "thinking"."""
    answered = await first_call(
        fake, lambda c: c.method == "POST" and c.path.startswith(f"/interactions/{ix['id']}/")
    )
    assert answered.status == 200
    if answered.json["type"] == 4:
        assert answered.json["data"]["flags"] & EPHEMERAL
        return str(answered.json["data"]["content"]).replace("\\", "")
    told = await private_words(fake, ix)
    return content(told)


async def refused(fake: FakeDiscord, bot: RunningBot, ix: dict[str, Any], words: str, rows: int) -> str:
    """`ix` was refused privately with `words`, left nothing public, called no image API and wrote no row
    beyond the `rows` there were."""
    said = await private_answer(fake, ix)
    assert words in said, said
    assert response_of_gone(fake, ix)
    assert len(bot.server.calls) == rows and len(await bot.ledger()) == rows
    return said


NO_CHECK = {"IMAGEBOT_CONFIRM_USD": "off"}  # no price check before a render


async def image_message(
    fake: FakeDiscord, bot: RunningBot, prompt: str = "a lighthouse", rows: int = 1, **options: str | int
) -> dict[str, Any]:
    """/imagine (low quality, 1536x1024 unless told) as the default member; the message with the image."""
    ix = await imagine(fake, prompt, **{"size": "1536x1024", "quality": "low", **options})
    return await finished(fake, bot, ix, rows)


def content_of(message: dict[str, Any]) -> str:
    """A message's text as a member reads it (without markdown escapes)."""
    return str(message.get("content") or "").replace("\\", "")
