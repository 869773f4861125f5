"""Discord's commands and options are localized the library's own way (a discord.py Translator): every name and
description has a Chinese one in the catalog, and the English catalog says what the code says."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands
from discord.ext import commands as ext

from adapters.discord import CommandTranslator, DiscordAdapter, command_key
from adapters.discord.commands import install
from bot.i18n import CATALOGS, CHINESE, ENGLISH


class Recorder(app_commands.Translator):
    """Every string discord.py asks to translate, by its catalog id, with the code's English."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    async def translate(self, string: app_commands.locale_str, locale: discord.Locale, context: Any) -> None:
        key = command_key(context)
        if key is not None:
            self.seen[key] = string.message


async def _tree() -> app_commands.CommandTree[Any]:
    client = ext.Bot(ext.when_mentioned, help_command=None, intents=discord.Intents.none())
    await install(client, DiscordAdapter.__new__(DiscordAdapter))  # the commands only: no core, no login
    return client.tree


async def test_every_command_and_option_has_a_chinese_name_and_description() -> None:
    tree, recorder = await _tree(), Recorder()
    for command in tree.get_commands():
        await command.get_translated_payload(tree, recorder)
    assert len(recorder.seen) > 60  # /imagine's options, the admin group's subcommands, the context menu
    for key, english in recorder.seen.items():
        assert CATALOGS.own(CHINESE, key), f"{key} has no Chinese"
        assert CATALOGS.own(ENGLISH, key) == english, f"{key}: the English catalog differs from the code"


async def test_the_payload_carries_zh_cn_only_where_we_speak_it() -> None:
    tree = await _tree()
    imagine = next(c for c in tree.get_commands() if c.name == "imagine")
    payload = await imagine.get_translated_payload(tree, CommandTranslator())
    assert payload["name_localizations"] == {"zh-CN": "画图"}
    assert set(payload["description_localizations"]) == {"zh-CN"}
    size = next(o for o in payload["options"] if o["name"] == "size")
    assert size["name_localizations"] == {"zh-CN": "尺寸"}
