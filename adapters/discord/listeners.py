"""The gateway events the bot listens to, besides its commands and buttons: a reply to one of our images that
mentions the bot is an edit of that image, and the Edit button's form comes back as a bare modal submit."""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from typing import TYPE_CHECKING, Any, cast

import discord
from discord.ext import commands as ext

from bot.errors import UserError
from bot.i18n import ENGLISH, say, translate
from bot.model.request import Requester

from .components import EDIT_FORM_PREFIX, form_value
from .images import is_image
from .text import NO_PINGS, clip, describe, escape
from .view import DiscordJobView, Tell

if TYPE_CHECKING:
    from .parts import AdapterSide

log = logging.getLogger("imagebot.discord")


class Listeners(ext.Cog):
    """`on_message` (reply-to-edit) and `on_interaction` (the Edit button's form), for one adapter."""

    def __init__(self, adapter: AdapterSide) -> None:
        self.adapter = adapter
        self.core = adapter.core

    @ext.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction[Any]) -> None:
        """Every interaction passes here (after discord.py's own dispatch): the Edit button's form is ours."""
        if interaction.type is not discord.InteractionType.modal_submit:
            return
        data = cast(dict[str, Any], interaction.data or {})
        custom_id = str(data.get("custom_id") or "")
        if not custom_id.startswith(EDIT_FORM_PREFIX) or not await self.adapter.first_time(interaction):
            return
        key = custom_id[len(EDIT_FORM_PREFIX) :]
        await self.adapter.presses.edit_form(interaction, key, form_value(data, "instruction"))

    @ext.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        """A reply (with the mention on) to one of our image messages is an edit of that image."""
        me = self.adapter.client.user
        image = await self._our_image_replied_to(message, me) if me is not None else None
        if me is None or message.guild is None or image is None:
            return
        if not await self.core.first_time(f"discord:{message.id}"):
            return
        text = re.sub(rf"<@!?{me.id}>", "", message.content).strip()
        # A message carries no locale of its author's: their own setting, else the server's language.
        asker = Requester("discord", str(message.guild.id), str(message.channel.id), str(message.author.id))
        server = getattr(message.guild, "preferred_locale", None)
        locale = await self.core.language(asker, getattr(server, "value", server))
        tell = self._teller(message, locale)
        try:
            # A thread (or forum post) follows its parent channel's rules and counts against its budget.
            rules = await self.adapter.client.rules_channel(message.channel, self.adapter.post_timeout)
            who = Requester("discord", str(message.guild.id), rules, str(message.author.id))
            view = DiscordJobView(
                self.adapter,
                who,
                tell,
                anchor=message.id,
                person=message.author,
                place=str(message.channel.id),
                locale=locale,
            )
            # The edit: the replied-to image as the base (sure to exist: counted), the reply's images as references.
            images = self.adapter.images
            base = functools.partial(images.decode, image)
            files = images.attachments(message.attachments)
            await self.core.from_message(who, view, text, files, base=base, base_known=True)
        except UserError as exc:  # this path has no interaction: a DM is the private word
            await tell(exc.text, None)

    @staticmethod
    async def _our_image_replied_to(
        message: discord.Message, me: discord.abc.User
    ) -> discord.Attachment | None:
        """The image we made that `message` replies to, if it is a person's reply that mentions us."""
        reference = message.reference
        if message.author.bot or message.guild is None or reference is None or reference.message_id is None:
            return None
        # Without the message-content intent Discord sends the text only if we are mentioned.
        if not any(user.id == me.id for user in message.mentions):
            return None
        target = reference.resolved
        if not isinstance(target, discord.Message):
            try:
                target = await message.channel.fetch_message(reference.message_id)
            except discord.HTTPException:
                return None
        # Not about an image we made (a usage chart is not one): nothing.
        image = next((a for a in target.attachments if is_image(a) and a.filename.startswith("image-")), None)
        return image if target.author.id == me.id else None

    def _teller(self, message: discord.Message, locale: str) -> Tell:
        """How the reply's author is told something: a refusal privately (by DM), a price check in a reply."""

        async def tell(reply: str, buttons: discord.ui.View | None = None) -> None:
            reply = translate(reply, locale)
            if buttons is None:  # a refusal: this path has no private reply, so it goes by DM
                await self._tell_by_dm(message, reply, locale)
                return
            await message.reply(  # a price check: its Render and Cancel work only here, and only for them
                clip(escape(reply)), view=buttons, mention_author=False, allowed_mentions=NO_PINGS
            )

        return tell

    async def _tell_by_dm(self, message: discord.Message, text: str, locale: str = ENGLISH) -> None:
        """Tell the author of `message` something only they should see, where no ephemeral reply exists: by DM
        (naming the message it is about); if their DMs are closed (50007) or the DM fails, by a reply that
        deletes itself after `refusal_lifetime` seconds. Never raises."""
        words = clip(escape(say(locale, "discord.about_message", url=message.jump_url, text=text)))
        try:
            async with asyncio.timeout(self.adapter.post_timeout):
                await message.author.send(words, allowed_mentions=NO_PINGS)
            return
        except discord.HTTPException as exc:
            log.info(
                "could not tell the author by DM; replying briefly instead",
                extra={"status": exc.status, "code": exc.code},
            )
        except Exception as exc:
            log.warning("could not tell the author by DM: %s", describe(exc))
        try:
            async with asyncio.timeout(self.adapter.post_timeout):
                await message.reply(
                    clip(escape(text)),
                    mention_author=False,
                    allowed_mentions=NO_PINGS,
                    delete_after=self.adapter.refusal_lifetime,
                )
        except Exception as exc:
            log.warning("could not tell the author: %s", describe(exc))
