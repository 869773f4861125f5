"""Where the bot's images live on Slack (bot.jobs.actions.ImageStore) and how files are read: files.info, the
download of a private file with the bot token (only from Slack's own hosts), files.delete."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import UserError
from bot.i18n import msg
from bot.model.images import read_capped

from .client import why_not

GONE_FILE_ERRORS = frozenset({"file_not_found", "file_deleted"})
FAILURES = (SlackApiError, aiohttp.ClientError, TimeoutError)  # Slack said no, or never answered
DEFAULT_PORTS = {"https": 443, "http": 80}


def trusted_file_url(url: str, api_url: str) -> bool:
    """May the bot token go to `url`? Only over https to Slack's file host, or to the Web API's own host with
    the API's own scheme: plain http only when SLACK_API_URL itself is http:// (a loopback fake)."""
    parts, api = urlsplit(url), urlsplit(api_url)
    try:
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
        api_port = api.port or DEFAULT_PORTS.get(api.scheme)
    except ValueError:  # a port that is not a number
        return False
    if parts.username is not None or parts.password is not None or port is None:
        return False
    return (parts.scheme, parts.hostname, port) in {
        ("https", "files.slack.com", 443),
        (api.scheme, api.hostname, api_port),
    }


def is_gone(exc: Exception) -> bool:
    """Slack says the file is no more (deleted, or never was)."""
    return isinstance(exc, SlackApiError) and why_not(exc) in GONE_FILE_ERRORS


class Files:
    """The bot's files through `client` and `http` (with `token`); `api_url` is SLACK_API_URL, `downloading`
    the core's limit on downloads at once."""

    def __init__(
        self,
        client: AsyncWebClient,
        http: aiohttp.ClientSession,
        token: str,
        api_url: str,
        downloading: Callable[[], AbstractAsyncContextManager[Any]],
    ) -> None:
        self.client, self.http, self.token = client, http, token
        self.api_url, self.downloading = api_url, downloading

    async def fetch(self, where: dict[str, Any]) -> bytes:
        """The bytes of an image the bot uploaded: files.info for its private URL, then the download."""
        try:
            info = await self.client.files_info(file=str(where.get("file_id", "")))
            return await self.download(info.get("file") or {})
        except FAILURES as exc:
            gone, why = msg("slack.image_deleted"), msg("slack.cannot_read_image", why=why_not(exc))
            raise UserError(gone if is_gone(exc) else why) from None

    async def delete(self, where: dict[str, Any]) -> None:
        """Delete an uploaded image (files.delete: the bot may delete the files it uploaded)."""
        try:
            await self.client.files_delete(file=str(where.get("file_id", "")))
        except FAILURES as exc:
            gone, why = msg("slack.already_deleted"), msg("slack.not_deleted", why=why_not(exc))
            raise UserError(gone if is_gone(exc) else why) from None

    async def download(self, file: dict[str, Any]) -> bytes:
        """Fetch a private file with the bot token, only from Slack's own file host, at most 50 MB."""
        url = file.get("url_private_download") or file.get("url_private") or ""
        if not trusted_file_url(url, self.api_url):
            raise UserError(msg("slack.not_hosted", name=file.get("name") or msg("slack.a_file")))
        async with (
            self.downloading(),  # at most IMAGEBOT_MAX_DOWNLOADS files at once in this process
            self.http.get(
                url, headers={"Authorization": f"Bearer {self.token}"}, allow_redirects=False
            ) as response,
        ):
            if response.status != 200 or response.content_type.startswith("text/html"):
                raise UserError(
                    msg(
                        "slack.download_http",
                        name=file.get("name") or msg("slack.a_file"),
                        status=response.status,
                    )
                )
            return await read_capped(
                response.content.iter_chunked(1 << 16), file.get("name", "a file"), response.content_length
            )
