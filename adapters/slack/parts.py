"""What the parts of the Slack adapter (the middleware, the listeners, a job's view) ask of the adapter that
builds them, written down as protocols. The adapter (adapter.py) stands above its parts: it imports them and
hands itself in; they know it only as `SlackSide`, so no part imports the adapter's module."""

from __future__ import annotations

import asyncio
import re
from typing import Any, Protocol

from slack_sdk.web.async_client import AsyncWebClient

from bot.app import Core
from bot.concurrency import TokenBucket
from bot.model.request import Requester

from .files import Files
from .people import People


class Asker(Protocol):
    """Someone told something only they see (view.py's `Privately`), of the adapter that tells them."""

    @property
    def adapter(self) -> SlackSide: ...

    async def tell(self, text: str, blocks: list[dict[str, Any]] | None = None) -> None: ...


class SlackSide(Protocol):
    """What the parts ask of the adapter (adapter.py's `SlackAdapter`): the core, the Web API client and what is
    built on it, who the bot is, the work it runs after an ack, and the language to speak to someone in."""

    @property
    def core(self) -> Core: ...
    @property
    def client(self) -> AsyncWebClient: ...
    @property
    def people(self) -> People: ...
    @property
    def files(self) -> Files: ...
    @property
    def budget(self) -> TokenBucket: ...
    @property
    def bot_user_id(self) -> str | None: ...
    @property
    def bot_id(self) -> str | None: ...
    @property
    def mention(self) -> re.Pattern[str] | None: ...
    @property
    def site_url(self) -> str: ...

    def spawn(self, coro: Any, asker: Asker | None = None) -> asyncio.Task[Any]: ...

    async def language(self, who: Requester) -> str: ...

    def link(self, where: dict[str, Any]) -> str | None: ...
