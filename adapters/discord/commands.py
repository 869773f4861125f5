"""The slash commands everyone may use, as one discord.py cog (`/imagine`, `/imagine-usage`, `/imagine-quota`,
`/imagine-settings`, `/imagine-info`, `/imagine-history`), the "Edit image" message command, and `install`,
which puts them and `/imagine-admin` (admin.py) on a client's command tree. Each command turns its typed
options into the core's words, hands them to the core, and shows its answer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands as ext

from bot import commands
from bot.app import Core
from bot.jobs import texts
from bot.model.request import FORMATS, QUALITIES
from bot.model.sizes import KNOWN_SIZES
from bot.policy import preferences

from .admin import AdminCommands
from .components import EditModal
from .images import is_image
from .interactions import answer, answer_command, language, linker

if TYPE_CHECKING:
    from .parts import AdapterSide

SIZE_SUGGESTIONS = ("auto", "1k", "2k", "4k", *(f"{w}x{h}" for w, h in KNOWN_SIZES))
DEFAULT_CHOICE = "default"  # a /imagine-settings choice that clears the setting
QUALITY_CHOICES = [app_commands.Choice(name=q, value=q) for q in QUALITIES]
FORMAT_CHOICES = [app_commands.Choice(name=f, value=f) for f in FORMATS]


async def install(client: ext.Bot, adapter: AdapterSide) -> None:
    """The bot's commands on `client`'s tree, in the order they are sent to Discord."""
    cog = ImageCommands(adapter)
    await client.add_cog(cog)
    client.tree.add_command(AdminCommands(adapter))
    client.tree.add_command(cog.edit_menu)


async def size_autocomplete(
    interaction: discord.Interaction[Any], current: str
) -> list[app_commands.Choice[str]]:
    """Sizes that start with (or contain) what was typed; what was typed itself first: the core validates it."""
    typed = current.strip().lower()
    found = [s for s in SIZE_SUGGESTIONS if s.startswith(typed) or typed in s]
    if typed and typed not in found:
        found.insert(0, typed)
    return [app_commands.Choice(name=s, value=s) for s in found[:25]]


def unset_or(values: Sequence[str]) -> list[app_commands.Choice[str]]:
    """A /imagine-settings option's choices: its values, and one that clears the setting."""
    return [app_commands.Choice(name=v, value=v) for v in values] + [
        app_commands.Choice(name=texts.SETTING_NOT_SET, value=DEFAULT_CHOICE)
    ]


def settings_words(reset: bool | None, given: dict[str, str | None]) -> str:
    """/imagine-settings' options as the core's words: `reset` and `name=value` for each option given."""
    return " ".join(
        [*(["reset"] if reset else []), *(f"{n}={''.join(v.split())}" for n, v in given.items() if v)]
    )


def member_command(name: str, description: str, *, private: bool = False) -> Callable[[Any], Any]:
    """A command of a server's members: in a server only (Discord offers it nowhere else), answered for the
    requester alone when `private` (its extras say so to `ImageCommands.interaction_check`)."""

    def command(callback: Any) -> Any:
        return app_commands.command(name=name, description=description, extras={"private": private})(
            app_commands.guild_only()(callback)
        )

    return command


class ImageCommands(ext.Cog):
    """The commands of a server's members, each in a server only. The "Edit image" message command is one of
    them (a context menu cannot be a cog's method in discord.py: it is made here, and `install` puts it on the
    tree)."""

    def __init__(self, adapter: AdapterSide) -> None:
        self.adapter = adapter
        self.edit_menu = app_commands.guild_only(
            app_commands.ContextMenu(name="Edit image", callback=self.edit_image)
        )

    @property
    def core(self) -> Core:
        return self.adapter.core

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        """Every command here is answered at once, before its options are read: "thinking", only for the
        requester where the command's extras say `private` (its answer is theirs alone)."""
        command = interaction.command
        return await answer_command(
            self.core, interaction, private=bool(command and command.extras.get("private"))
        )

    @member_command("imagine", "Make an image with gpt-image-2 (attach references to edit)")
    @app_commands.describe(
        prompt="What to draw (flags like --ar 16:9 work here too)",
        size="auto, 1k, 2k, 4k or WxH",
        quality="Render quality",
        format="Output format",
        compression="0-100, jpeg/webp only",
        count="How many images (1-4)",
        ref1="Reference image (makes it an edit)",
        ref2="Reference image",
        ref3="Reference image",
        ref4="Reference image",
        ref5="Reference image",
        mask="PNG with alpha, the size of ref1: transparent pixels mark where to edit",
        relax="Relax mode: half price through the Batch API, delivered when ready (usually minutes)",
    )
    @app_commands.choices(quality=QUALITY_CHOICES, format=FORMAT_CHOICES)
    @app_commands.autocomplete(size=size_autocomplete)
    async def imagine(
        self,
        interaction: discord.Interaction[Any],
        prompt: str,
        size: str | None = None,
        quality: str | None = None,
        format: str | None = None,
        compression: app_commands.Range[int, 0, 100] | None = None,
        count: app_commands.Range[int, 1, 4] | None = None,
        ref1: discord.Attachment | None = None,
        ref2: discord.Attachment | None = None,
        ref3: discord.Attachment | None = None,
        ref4: discord.Attachment | None = None,
        ref5: discord.Attachment | None = None,
        mask: discord.Attachment | None = None,
        relax: bool | None = None,
    ) -> None:
        options = {
            "size": "".join(size.split()) or None if size else None,  # "1536 x 1024" is one size
            "quality": quality,
            "format": format,
            "compression": compression,
            "count": count,
            "relax": relax,
        }
        refs = [a for a in (ref1, ref2, ref3, ref4, ref5) if a is not None]
        await self._imagine(interaction, prompt, options, refs, mask)

    async def _imagine(
        self,
        interaction: discord.Interaction[Any],
        prompt: str,
        options: dict[str, str | int | None],
        refs: Sequence[discord.Attachment],
        mask: discord.Attachment | None,
    ) -> None:
        """`/imagine` after the answer: download and decode attachments, build the request, submit."""
        images = self.adapter.images
        model = options.get("model")
        self.core.check_attachments(  # counted, sizes checked: before any download
            prompt,
            images.attachments([*refs, *([mask] if mask else [])]),
            model=model if isinstance(model, str) else None,
        )
        references = list(await asyncio.gather(*(images.decode(a) for a in refs)))
        decoded_mask = await images.decode(mask) if mask is not None else None
        who = await self.adapter.requester(interaction)
        request = await self.core.parse_for(who, prompt, references, decoded_mask, **options)
        await self.adapter.submit(interaction, request)

    async def edit_image(self, interaction: discord.Interaction[Any], message: discord.Message) -> None:
        """The "Edit image" message command: a form asks for the instruction; its submit edits the image."""
        image = next((a for a in message.attachments if is_image(a)), None)
        if image is None:
            await self.adapter.tell_privately(interaction, texts.NOT_AN_IMAGE_MESSAGE)
            return

        async def submit(interaction: discord.Interaction[Any], instruction: str) -> None:
            await answer(self.core, interaction)
            who = await self.adapter.requester(interaction)
            request = await self.core.parse_for(who, instruction, [await self.adapter.images.decode(image)])
            await self.adapter.submit(interaction, request)

        locale = await language(self.core, interaction)
        await self.adapter.presses.open_form(interaction, EditModal(submit, locale))

    @member_command("imagine-usage", "This channel's image usage and spend, with a chart")
    @app_commands.describe(days="How many days back (default 30)")
    async def usage(
        self, interaction: discord.Interaction[Any], days: app_commands.Range[int, 1, 366] = 30
    ) -> None:
        await self.adapter.reply(interaction, lambda who: commands.usage(self.core, who, f"--days {days}"))

    @member_command("imagine-quota", "Your remaining image quota (only you see it)", private=True)
    async def my_quota(self, interaction: discord.Interaction[Any]) -> None:
        await self.adapter.reply(interaction, lambda who: commands.my_quota(self.core, who))

    @member_command(
        "imagine-settings",
        "Your own defaults for /imagine (only you see them); options given change them",
        private=True,
    )
    @app_commands.describe(
        size="auto, 1k, 2k, 4k or WxH (default: clear)",
        ar="Aspect ratio W:H for a 1k/2k/4k size, e.g. 16:9 (default: clear)",
        quality="Render quality",
        format="Output format",
        count="Images per request (1-4; 0 clears it)",
        mode="Fast, or relax (half price, delivered later)",
        language="The language the bot answers you in",
        reset="Clear all of your defaults",
    )
    @app_commands.choices(
        quality=unset_or(QUALITIES),
        format=unset_or(FORMATS),
        mode=unset_or(preferences.MODES),
        language=unset_or(preferences.LANGUAGES),
    )
    @app_commands.autocomplete(size=size_autocomplete)
    async def my_settings(
        self,
        interaction: discord.Interaction[Any],
        size: str | None = None,
        ar: str | None = None,
        quality: str | None = None,
        format: str | None = None,
        count: app_commands.Range[int, 0, 4] | None = None,
        mode: str | None = None,
        language: str | None = None,
        reset: bool | None = None,
    ) -> None:
        given = {"size": size, "ar": ar, "quality": quality, "format": format, "mode": mode}
        given |= {"language": language, "count": None if count is None else str(count or DEFAULT_CHOICE)}
        words = settings_words(reset, given)
        await self.adapter.reply(interaction, lambda who: commands.my_settings(self.core, who, words))

    @member_command("imagine-info", "A job's card: prompt, settings, cost (only you see it)", private=True)
    @app_commands.describe(job="N from /imagine-history (1: your latest), or a job id")
    async def info(self, interaction: discord.Interaction[Any], job: str = "1") -> None:
        admin, link = bool(interaction.permissions.manage_guild), linker(interaction)
        await self.adapter.reply(
            interaction, lambda who: commands.info(self.core, who, job, platform_admin=admin, link=link)
        )

    @member_command("imagine-history", "Your last jobs with links and costs (only you see it)", private=True)
    @app_commands.describe(count="How many (1-50, default 10)")
    async def history(
        self, interaction: discord.Interaction[Any], count: app_commands.Range[int, 1, 50] = 10
    ) -> None:
        link = linker(interaction)
        await self.adapter.reply(
            interaction, lambda who: commands.my_history(self.core, who, str(count), link=link)
        )
