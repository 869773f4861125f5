"""Images on Discord: attachments downloaded (a requester's references, capped as they are read), and the images
we posted, where a finished job's buttons find them again (bot.jobs.actions.ImageStore: a channel, a message
and which of its attachments)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
import discord

from bot.app import Attachment, Core, is_image_attachment
from bot.errors import UserError
from bot.i18n import msg
from bot.model.images import ImageInput, load_image, read_capped

from .text import describe


def is_image(attachment: discord.Attachment) -> bool:
    return is_image_attachment(attachment.filename, attachment.content_type)


def attachment_in(message: discord.Message, where: dict[str, Any]) -> discord.Attachment | None:
    """The attachment `where` names: by its id (stable when others are deleted), else by its position."""
    if where.get("attachment_id"):
        return next((a for a in message.attachments if str(a.id) == where["attachment_id"]), None)
    index = int(where.get("index") or 0)
    return message.attachments[index] if index < len(message.attachments) else None


class Images:
    """Downloads of attachments and the images we posted, for one client. `timeout()`: a Discord call's deadline
    (the adapter's `post_timeout`, a knob turned at run time)."""

    def __init__(self, client: discord.Client, core: Core, timeout: Callable[[], float]) -> None:
        self.client, self.core, self.timeout = client, core, timeout
        self.http: aiohttp.ClientSession | None = None

    def open(self) -> None:
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))

    async def close(self) -> None:
        if self.http is not None:
            await self.http.close()

    def attachments(self, attachments: Sequence[discord.Attachment]) -> list[Attachment]:
        """The core's view of attachments: name, size, and how to download each (not yet)."""
        return [
            Attachment(a.filename, a.size, functools.partial(self.download, a), a.content_type)
            for a in attachments
        ]

    async def decode(self, attachment: discord.Attachment) -> ImageInput:
        data = await self.download(attachment)
        return await asyncio.to_thread(load_image, attachment.filename, data)

    async def download(self, attachment: discord.Attachment) -> bytes:
        """Fetch an attachment from its (signed) URL, reading at most 50 MB."""
        assert self.http is not None
        try:
            async with self.core.downloading(), self.http.get(attachment.url) as response:
                if response.status != 200:
                    raise UserError(
                        msg("discord.download_http", name=attachment.filename, status=response.status)
                    )
                return await read_capped(
                    response.content.iter_chunked(1 << 16), attachment.filename, attachment.size
                )
        except aiohttp.ClientError as exc:
            raise UserError(
                msg("discord.download_failed", name=attachment.filename, error=type(exc).__name__)
            ) from None

    async def fetch(self, where: dict[str, Any]) -> bytes:
        """An image we posted, downloaded again from its message (attachment URLs are signed and expire, so
        the message is fetched for a fresh one). UserError if it is gone."""
        channel = self.client.get_partial_messageable(int(where["channel_id"]))
        try:
            async with asyncio.timeout(self.timeout()):
                message = await channel.fetch_message(int(where["message_id"]))
        except discord.NotFound:
            raise UserError(msg("discord.image_deleted")) from None
        except Exception as exc:
            raise UserError(msg("discord.cannot_fetch", why=describe(exc))) from None
        attachment = attachment_in(message, where)
        if attachment is None:
            raise UserError(msg("discord.image_gone"))
        return await self.download(attachment)

    async def delete(self, where: dict[str, Any]) -> None:
        """Delete the image: the attachment, or the whole message when it was the message's only image
        (gone already counts as done)."""
        channel = self.client.get_partial_messageable(int(where["channel_id"]))
        try:
            async with asyncio.timeout(self.timeout()):
                message = await channel.fetch_message(int(where["message_id"]))
                await self._take_off(message, where, message.edit)
        except discord.NotFound:
            return
        except Exception as exc:
            raise UserError(msg("discord.cannot_delete", why=describe(exc))) from None

    @staticmethod
    async def _take_off(message: discord.Message, where: dict[str, Any], edit: Any) -> None:
        """Take the image `where` names off `message` by `edit(attachments=the others)`, or delete the message
        when it was its only one; nothing when it is gone already."""
        attachment = attachment_in(message, where)
        if attachment is None:
            return
        others = [a for a in message.attachments if a.id != attachment.id]
        if others:
            await edit(attachments=others)
        else:
            await message.delete()


class ClickedMessage:
    """The image store for one button press: an image on the very message pressed is taken off it through the
    press's own interaction (a bot cannot edit an interaction's message through the channel); anything else
    goes through `images`."""

    def __init__(self, images: Images, interaction: discord.Interaction[Any]) -> None:
        self.images = images
        self.interaction = interaction

    async def fetch(self, where: dict[str, Any]) -> bytes:
        return await self.images.fetch(where)

    async def delete(self, where: dict[str, Any]) -> None:
        message = self.interaction.message
        pressed_on_it = message is not None and str(message.id) == str(where.get("message_id"))
        if (
            message is None
            or not pressed_on_it
            or self.interaction.response.type is not discord.InteractionResponseType.deferred_message_update
        ):
            await self.images.delete(where)
            return
        try:
            async with asyncio.timeout(self.images.timeout()):
                await Images._take_off(message, where, self.interaction.edit_original_response)
        except discord.NotFound:
            return
        except Exception as exc:
            raise UserError(msg("discord.cannot_delete", why=describe(exc))) from None
