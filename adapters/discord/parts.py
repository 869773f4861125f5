"""What the parts of the Discord adapter (the client, its commands, the buttons and what a press does, the
listeners, a job's view) ask of the adapter that builds them, written down as protocols. The adapter
(adapter.py) stands above its parts: it imports them and hands itself in; they know it only as `AdapterSide`,
so no part imports the adapter's module."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

import discord
from discord.ext import commands as ext

from bot import commands
from bot.app import Core
from bot.concurrency import TokenBucket
from bot.jobs.job import JobView
from bot.model.request import ImageRequest, Requester

from .images import Images


class ClientSide(Protocol):
    """What the parts use of the discord.py client (client.py's `Client`)."""

    @property
    def user(self) -> discord.ClientUser | None: ...

    def get_guild(self, id: int, /) -> discord.Guild | None: ...

    def get_partial_messageable(
        self, id: int, *, guild_id: int | None = None
    ) -> discord.PartialMessageable: ...

    async def rules_channel(self, channel: discord.abc.Messageable, deadline: float) -> str: ...


class PressesSide(Protocol):
    """What a press of a button or a submitted form does (presses.py's `Presses`)."""

    async def action(self, interaction: discord.Interaction[Any], key: str) -> None: ...

    async def edit_form(self, interaction: discord.Interaction[Any], key: str, instruction: str) -> None: ...

    async def open_form(self, interaction: discord.Interaction[Any], form: discord.ui.Modal) -> None: ...

    async def price_check(self, interaction: discord.Interaction[Any], token: str, render: bool) -> None: ...

    async def cancel(self, interaction: discord.Interaction[Any], job_id: str) -> None: ...


class ShownJob(JobView, Protocol):
    """A job's view as a press reads it back (view.py's `DiscordJobView`): whose job, and whether it refused."""

    who: Requester
    refusals: int


class AdapterSide(Protocol):
    """What the parts ask of the adapter (adapter.py's `DiscordAdapter`): the core, the client, the knobs of a
    job's messages, and what an interaction needs of them (answered once, its requester under their channel's
    rules, a private word); what reads only the interaction is in interactions.py."""

    @property
    def core(self) -> Core: ...
    @property
    def client(self) -> ClientSide: ...
    @property
    def images(self) -> Images: ...
    @property
    def presses(self) -> PressesSide: ...
    @property
    def listeners(self) -> ext.Cog: ...
    @property
    def guild_ready_timeout(self) -> float: ...
    @property
    def token_lifetime(self) -> float: ...
    @property
    def edit_interval(self) -> float: ...
    @property
    def edits(self) -> TokenBucket: ...
    @property
    def preview_interval(self) -> float: ...
    @property
    def post_timeout(self) -> float: ...
    @property
    def upload_timeout(self) -> float: ...
    @property
    def refusal_lifetime(self) -> float: ...

    async def first_time(self, interaction: discord.Interaction[Any]) -> bool: ...

    async def on_error(self, interaction: discord.Interaction[Any], error: BaseException) -> None: ...

    async def requester(self, interaction: discord.Interaction[Any]) -> Requester: ...

    def upload_limit_for(self, interaction: discord.Interaction[Any] | None, guild_id: int | None) -> int: ...

    async def reply(
        self, interaction: discord.Interaction[Any], make: Callable[[Requester], Awaitable[commands.Reply]]
    ) -> None: ...

    async def tell_privately(
        self, interaction: discord.Interaction[Any], text: str, view: discord.ui.View | None = None
    ) -> None: ...

    async def submit(self, interaction: discord.Interaction[Any], request: ImageRequest) -> None: ...

    async def job_view(self, interaction: discord.Interaction[Any], anchor: int | None) -> ShownJob: ...


def adapter_of(interaction: discord.Interaction[Any]) -> AdapterSide:
    """The adapter whose client received `interaction` (client.py's client carries it)."""
    return cast(AdapterSide, interaction.client.adapter)
