"""What a press of one of our buttons does (docs/rules.md §9, bot/jobs/actions.py): a result action (Re-roll,
Vary, Upscale, Edit, Delete, Info), a price check's Render or Cancel, a job's Cancel, and the Edit button's
form coming back. Each press is answered (deferred) before any other Discord call; then the core decides."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import discord

from bot.errors import UserError
from bot.jobs import actions, texts
from bot.jobs.actions import Kind

from .components import ActionEditForm
from .images import ClickedMessage
from .interactions import answer, language, original, who

if TYPE_CHECKING:
    from .parts import AdapterSide

log = logging.getLogger("imagebot.discord")


class Presses:
    """The handlers the buttons of components.py call, for one adapter."""

    def __init__(self, adapter: AdapterSide) -> None:
        self.adapter = adapter
        self.core = adapter.core

    async def action(self, interaction: discord.Interaction[Any], key: str) -> None:
        """A result button. Edit opens its form (that is the answer); the others are answered with "thinking"
        (private for Info, whose card is the clicker's alone), Delete silently (type 6: the clicked message
        stays this interaction's to edit, so one image can be taken off it; its only words are a private
        follow-up). Then the core acts: a new job of the clicker's, shown in this interaction's response
        (replies past its token's life go to the image's message)."""
        kind = actions.parse_key(key)[0]
        if kind == Kind.EDIT:
            await self.open_form(interaction, ActionEditForm(key, await language(self.core, interaction)))
            return
        await answer(self.core, interaction, thinking=kind != Kind.REMOVE, private=kind == Kind.INFO)
        await self._act(interaction, key)

    async def edit_form(self, interaction: discord.Interaction[Any], key: str, instruction: str) -> None:
        """The Edit button's form, submitted with its instruction: answered with "thinking", then acted on."""
        try:
            await answer(self.core, interaction)
            await self._act(interaction, key, instruction)
        except Exception as exc:
            await self.adapter.on_error(interaction, exc)

    async def open_form(self, interaction: discord.Interaction[Any], form: discord.ui.Modal) -> None:
        """Open an edit form, unless the place or person rules (bot/policy/access.py) already refuse its submit:
        then say why privately instead. The form (or the refusal) is the interaction's answer, so the check is
        part of the ack; it reads the database and nothing of Discord's."""
        async with self.core.acking():
            standing = await self.adapter.job_view(interaction, None)
            try:
                await self.core.may_render(standing.who, standing)
            except UserError as exc:
                await self.adapter.tell_privately(interaction, exc.text)
                return
            await interaction.response.send_modal(form)

    async def _act(self, interaction: discord.Interaction[Any], key: str, instruction: str = "") -> None:
        """After the answer: hand the press to the core, with the pressed message as the store of the images."""
        clicked = interaction.message  # the image's message (a form carries the message of its button)
        anchor = clicked.id if clicked is not None else await original(interaction)
        view = await self.adapter.job_view(interaction, anchor)
        await self.core.act(
            key,
            view.who,
            view,
            ClickedMessage(self.adapter.images, interaction),
            instruction=instruction,
            platform_admin=bool(interaction.permissions.manage_guild),
        )
        if actions.parse_key(key)[0] == Kind.REMOVE and not view.refusals:
            await self.adapter.tell_privately(interaction, texts.DELETED)

    async def price_check(self, interaction: discord.Interaction[Any], token: str, render: bool) -> None:
        """Render (answered with a public "thinking": that message becomes the job's) or Cancel (answered
        privately); then the core claims the check: its requester's, once, Render within 10 minutes."""
        await answer(self.core, interaction, private=not render)
        view = await self.adapter.job_view(interaction, await original(interaction))
        await self.core.price_check(token, view.who, view, render=render)

    async def cancel(self, interaction: discord.Interaction[Any], job_id: str) -> None:
        """A job's Cancel button: only the requester may press it. The press is answered first: cancelling sets
        off the job's settling and its last edit, which must not race (or delay) the 3-second answer."""
        try:
            await interaction.response.defer()  # the job's own message turns into "Cancelled"
        except Exception:  # too late or unreachable: the press was still meant, so cancel all the same
            log.warning("could not answer the Cancel button", exc_info=True, extra={"job_id": job_id})
        if not self.core.cancel(job_id, who(interaction)) and interaction.response.is_done():
            text = texts.CANCEL_REFUSED.render(await language(self.core, interaction))
            await interaction.followup.send(text, ephemeral=True)
