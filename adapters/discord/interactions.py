"""What every interaction needs that reads only the interaction (and the core): who asked and under which
channel's rules, the language to answer in, the answer within Discord's 3 seconds, the response message that
answer made, and links to a job's message. Functions of the interaction, so a part calls them directly rather
than through the adapter."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any, cast

import discord
from discord import app_commands

from bot.app import Core
from bot.model.request import Requester

BORN, DEFERRED = "imagebot:born", "imagebot:deferred"  # what `answer` keeps in an interaction's extras


def who(interaction: discord.Interaction[Any]) -> Requester:
    """Who asked, and the channel whose rules and budget apply: a thread's or forum post's parent (the
    interaction's `channel` object carries its `parent_id`), else the channel itself."""
    channel = interaction.channel
    rules = channel.parent_id if isinstance(channel, discord.Thread) else interaction.channel_id
    return Requester("discord", str(interaction.guild_id or ""), str(rules or ""), str(interaction.user.id))


async def language(core: Core, interaction: discord.Interaction[Any]) -> str:
    """The language to answer this interaction in: the user's own setting, else the locale of their
    Discord client (`interaction.locale`), else English (bot/i18n.py `language_for`)."""
    locale = getattr(interaction, "locale", None)
    return await core.language(who(interaction), getattr(locale, "value", locale))


async def answer(
    core: Core, interaction: discord.Interaction[Any], *, thinking: bool = True, private: bool = False
) -> None:
    """Answer within Discord's 3 seconds, before any other work: "thinking" (a loading message, the job's
    own message later; `private`: only the requester sees it), or silently (`thinking=False`: a button
    whose message stays as it is). Work after an answer waits until a burst of them has gone out."""
    interaction.extras[BORN] = time.monotonic()  # the interaction token lives 15 minutes from about now
    async with core.acking():
        interaction.extras[DEFERRED] = await interaction.response.defer(thinking=thinking, ephemeral=private)
    await core.calm()


async def answer_command(core: Core, interaction: discord.Interaction[Any], *, private: bool) -> bool:
    """The `interaction_check` of a command answered with "thinking": the answer comes before its options
    are read or its callback runs. A failure to answer is the command's, for the tree's `on_error`."""
    try:
        await answer(core, interaction, private=private)
    except Exception as exc:
        command = cast(app_commands.Command[Any, ..., Any], interaction.command)
        raise app_commands.CommandInvokeError(command, exc) from exc
    return True


async def original(interaction: discord.Interaction[Any]) -> int | None:
    """The id of the interaction's response message (the "thinking" one `answer` made)."""
    deferred = interaction.extras.get(DEFERRED)
    message = deferred.message_id if deferred is not None else None
    if message is None:  # the callback answer did not say: ask
        with contextlib.suppress(Exception):
            message = (await interaction.original_response()).id
    return message


def linker(interaction: discord.Interaction[Any]) -> Callable[[dict[str, Any]], str | None]:
    """A job's message on this server (where its images are, else its progress message), for cards."""
    guild = interaction.guild_id

    def link(where: dict[str, Any]) -> str | None:
        images = [i for i in where.get("images") or [] if i.get("message_id")]
        place = images[0] if images else where
        channel, message = place.get("channel_id"), place.get("message_id")
        if not (guild and str(channel or "").isdigit() and str(message or "").isdigit()):
            return None
        return f"https://discord.com/channels/{guild}/{channel}/{message}"

    return link
