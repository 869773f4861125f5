"""Command names and descriptions in the reader's language, discord.py's own way (a Translator): the catalog
id of each is `discord.cmd.<command path>.name|description` (bot/i18n.py catalogs)."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands

from bot.i18n import CATALOGS, ENGLISH, supported


def command_key(context: app_commands.TranslationContextTypes) -> str | None:
    """The catalog id of a command's (or option's) name or description: `discord.cmd.<command path>[.<option>]`
    + `.name` / `.description`, the path lowercased with dots for spaces
    (`discord.cmd.imagine-admin.quota.limits.description`, the context menu `discord.cmd.edit.image.name`).
    None for what we do not translate (choices are flag values, typed as they are)."""
    where = context.location
    data: Any = context.data
    kinds = app_commands.TranslationContextLocation
    if where in (kinds.command_name, kinds.group_name, kinds.command_description, kinds.group_description):
        path = data.qualified_name
    elif where in (kinds.parameter_name, kinds.parameter_description):
        path = f"{data.command.qualified_name} {data.name}"
    else:
        return None
    part = "name" if where in (kinds.command_name, kinds.group_name, kinds.parameter_name) else "description"
    return f"discord.cmd.{path.lower().replace(' ', '.')}.{part}"


class CommandTranslator(app_commands.Translator):
    """Command and option names and descriptions in every language we have a catalog for (discord.py's own
    way: the tree sends them as `name_localizations` / `description_localizations`, so a zh-CN client shows
    the Chinese ones). None where the catalog has none: Discord then shows the English of the code."""

    async def translate(
        self,
        string: app_commands.locale_str,
        locale: discord.Locale,
        context: app_commands.TranslationContextTypes,
    ) -> str | None:
        language = supported(locale.value)
        key = command_key(context)
        if language is None or language == ENGLISH or key is None:
            return None
        return CATALOGS.own(language, key)
