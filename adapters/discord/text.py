"""Discord's message text: escaped, within its length, pinging only whom it means to, and a failed Discord call
said in words for the requester."""

from __future__ import annotations

import aiohttp
import discord

from bot.i18n import msg
from bot.model.request import clip as clip_to

MAX_CONTENT = 2000  # Discord's message length limit
NO_PINGS = discord.AllowedMentions.none()
# Discord codes: 50027 invalid webhook token (interaction past 15 min), 10015 unknown webhook,
# 10008 unknown message (the original response was deleted), 40005 request entity too large.
TOKEN_GONE_CODES = (50027, 10015, 10008)


def escape(text: str) -> str:
    """Discord markdown escaped, so a prompt cannot format, spoil or quote its way into the message."""
    return discord.utils.escape_markdown(text)


def clip(text: str, limit: int = MAX_CONTENT) -> str:
    """Within Discord's message length."""
    return clip_to(text, limit)


def quote(prompt: str, limit: int = 300) -> str:
    """The prompt as a block quote, escaped and clipped."""
    return "\n".join("> " + line for line in escape(clip(prompt, limit)).splitlines() or [""])


def pings(user: str) -> discord.AllowedMentions:
    """Ping the requester and nobody else (no @everyone, roles or other users from the prompt)."""
    return discord.AllowedMentions(
        everyone=False, roles=False, users=[discord.Object(int(user))], replied_user=False
    )


def token_gone(exc: discord.HTTPException) -> bool:
    """The interaction token can no longer be used: past 15 minutes, or its message is gone."""
    return exc.status == 401 or exc.code in TOKEN_GONE_CODES


def too_large(exc: discord.HTTPException) -> bool:
    return exc.status == 413 or exc.code == 40005


def describe(exc: BaseException) -> str:
    """A failed Discord call, in words for the requester (a Text: logged in English, shown in theirs)."""
    if isinstance(exc, discord.HTTPException):
        return msg("discord.http_refused", status=exc.status, code=exc.code, text=exc.text)
    if isinstance(exc, TimeoutError):  # before OSError, of which it is one
        return msg("discord.no_answer")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return msg("discord.connection_failed", error=type(exc).__name__)
    return f"{type(exc).__name__}: {exc}"
