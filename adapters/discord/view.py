"""How a job is shown on Discord (bot/jobs' JobView): the interaction's original response is edited with its
progress and then its images, within the interaction token's 15-minute life; after it the job carries on in
a channel message that replies to the original. Images over the guild's upload limit are re-encoded with the
core's `fit_under`, and every Discord call of a job has a deadline: whatever fails, the requester hears what
became of their money."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
import discord
from discord.utils import MISSING

from bot.errors import CannotPost, DeliveryFailed
from bot.i18n import ENGLISH, Msg, msg, translate
from bot.jobs import texts
from bot.jobs.outcomes import JobFailure, JobResult, Progress
from bot.model.images import fit_under, image_size
from bot.model.request import Requester
from bot.policy.access import MembershipUnknown

from .components import cancel_view, confirm_view, progress_text, result_view
from .text import NO_PINGS, clip, describe, escape, pings, quote, token_gone, too_large

if TYPE_CHECKING:
    from .parts import AdapterSide

log = logging.getLogger("imagebot.discord")

SPOILER = "SPOILER_"  # Discord's own marker: an attachment named so is blurred until clicked
UPLOAD_ATTEMPTS = 4
# Says `text` (with buttons, if a view is given) to the requester alone, wherever their job came from.
Tell = Callable[[str, discord.ui.View | None], Awaitable[Any]]


def fit_images(images: Sequence[tuple[bytes, str]], budget: int) -> tuple[list[tuple[str, bytes]], list[Msg]]:
    """(data, filename) pairs -> uploads each at most `budget` bytes, plus notes on what was re-encoded.

    CPU work: run in a thread.
    """
    uploads: list[tuple[str, bytes]] = []
    notes: list[Msg] = []
    for data, filename in images:
        fitted, fmt, note = fit_under(data, budget)
        if note is None:
            uploads.append((filename, data))
            continue
        width, height = image_size(fitted)
        uploads.append((f"image-{width}x{height}.{'jpg' if fmt == 'jpeg' else fmt}", fitted))
        notes.append(msg("discord.refitted", filename=filename, note=note))
    return uploads, notes


class DiscordJobView:
    """Shows one job: edits the interaction's original response (or, once the interaction token is past its
    life, a channel message replying to the original), then puts the image there."""

    previews = True  # an edit of the message can carry the latest partial image
    confirms = True  # an expensive render first asks its requester privately, with Render and Cancel

    def __init__(
        self,
        adapter: AdapterSide,
        who: Requester,
        tell: Tell,
        *,
        interaction: discord.Interaction[Any] | None = None,
        born: float | None = None,
        anchor: int | None = None,
        person: discord.abc.User | None = None,
        place: str | None = None,
        locale: str = ENGLISH,
    ) -> None:
        self.adapter = adapter
        self.who = who
        self.locale = locale  # the requester's language: everything this job says is in it (bot/i18n.py)
        # Where the job is shown: a thread or forum post itself, while `who.channel` (whose rules and budget
        # apply) is its parent channel.
        self.place = place or who.channel
        self.person = (
            person  # the requester as the gateway sent them (a Member in a guild: roles, permissions)
        )
        self.tell = tell  # a reply only the requester sees
        self.refusals = 0  # how many times the core told the requester why nothing was done
        self.interaction = interaction
        # Monotonic time the interaction was answered (else now): its token lives 15 minutes from then.
        self.born = time.monotonic() if born is None else born
        self.anchor = anchor  # the message replies go to: the original response, or the user's message
        self.upload_limit = adapter.upload_limit_for(interaction, int(who.workspace or 0))
        self.channel = adapter.client.get_partial_messageable(int(self.place), guild_id=int(who.workspace))
        self.job_id = ""
        self.prompt = ""
        self.expired = interaction is None
        self.progress_message: discord.Message | None = None
        self._pending: asyncio.Task[None] | None = None
        self._last_edit = float("-inf")
        self._last_preview = float("-inf")
        self._preview: bytes | None = None

    # -- who the requester is (access.Standing) -------------------------------------------

    async def platform_admin(self) -> bool:
        """Manage Server: as the interaction reports it, else from the member's roles."""
        if self.interaction is not None:
            return bool(self.interaction.permissions.manage_guild)
        permissions = getattr(self.person, "guild_permissions", None)
        return bool(permissions is not None and permissions.manage_guild)

    async def member_of(self, groups: Collection[str]) -> bool:
        """Holds any of these roles (ids), by the member's roles (`Member.roles`, resolved against the guild's
        roles, which the gateway keeps current). MembershipUnknown when they cannot be read: the event named a
        user but not their roles, or the guild is unavailable (its roles may be stale): the rules fail closed."""
        person = self.person
        if not isinstance(person, discord.Member) or person.guild.unavailable:
            raise MembershipUnknown(self.who.user)
        return not {str(role.id) for role in person.roles}.isdisjoint(groups)

    # -- where to show it -----------------------------------------------------------------

    @property
    def token_alive(self) -> bool:
        return (
            self.interaction is not None
            and not self.expired
            and time.monotonic() - self.born < self.adapter.token_lifetime
        )

    @property
    def reference(self) -> discord.MessageReference:
        """A reply to the anchor that still posts if the anchor was deleted (MISSING: no anchor)."""
        if self.anchor is None:
            return MISSING
        return discord.MessageReference(
            message_id=self.anchor,
            channel_id=int(self.place),
            guild_id=int(self.who.workspace),
            fail_if_not_exists=False,
        )

    async def _via_interaction(self, edit: Callable[[discord.Interaction[Any]], Awaitable[Any]]) -> bool:
        """Try `edit` with the interaction token; False (and from now on the channel) if the token is gone.
        Any other failure raises."""
        if self.interaction is None or self.expired:
            return False
        if not self.token_alive:  # about to expire: say where the job went while we still can
            self.expired = True
            with contextlib.suppress(Exception):
                await self.interaction.edit_original_response(
                    content=f"{quote(self.prompt)}\n{texts.TOKEN_EXPIRING.render(self.locale)}",
                    allowed_mentions=NO_PINGS,
                )
            return False
        try:
            await edit(self.interaction)
            return True
        except discord.HTTPException as exc:
            if not token_gone(exc):
                raise
            log.info(
                "interaction token gone; continuing in the channel",
                extra={"job_id": self.job_id, "status": exc.status, "code": exc.code},
            )
            self.expired = True
            return False

    # -- progress -------------------------------------------------------------------------

    async def open(self, first: Progress) -> dict[str, Any]:
        """The interaction's response is the progress message; without an interaction, post one now (within
        `post_timeout`). Returns what a restart needs to tell the user: the channel and the message to reply to."""
        self.job_id, self.prompt = first.job_id, first.request.prompt
        if self.interaction is None:
            try:
                async with asyncio.timeout(self.adapter.post_timeout):
                    self.progress_message = await self.channel.send(
                        progress_text(first, self.locale),
                        view=cancel_view(self.job_id, self.locale),
                        reference=self.reference,
                        allowed_mentions=NO_PINGS,
                    )
            except discord.HTTPException as exc:
                raise CannotPost(msg("discord.cannot_post_permissions", why=describe(exc))) from exc
            except Exception as exc:  # dropped or unanswered
                raise CannotPost(msg("discord.try_again", why=describe(exc))) from exc
            self._last_edit = time.monotonic()
        # The language goes with the job: a restart that delivers it (or tells of it) speaks the same one.
        return {
            "channel_id": self.place,
            "message_id": str(self.anchor) if self.anchor else None,
            "locale": self.locale,
        }

    async def refused(self, text: str) -> None:
        self.refusals += 1
        try:
            async with asyncio.timeout(self.adapter.post_timeout):
                await self.tell(translate(text, self.locale), None)
        except Exception:
            log.warning("could not tell the requester", exc_info=True, extra={"job_id": self.job_id})

    async def confirm(self, text: str, token: str) -> None:
        """The price check, to the requester alone, with Render and Cancel (nothing is reserved yet)."""
        async with asyncio.timeout(self.adapter.post_timeout):
            await self.tell(translate(text, self.locale), confirm_view(token, self.locale))

    async def progress(self, progress: Progress) -> None:
        if progress.preview is not None:
            self._preview = progress.preview
        now = time.monotonic()
        if (
            self._pending is not None and not self._pending.done()
        ) or now - self._last_edit < self.adapter.edit_interval:
            return  # Discord rate-limits edits: skip this tick, the next one catches up
        if not self.adapter.edits.take():
            return  # over the bot-wide progress budget (many jobs at once): skip, as above
        preview = None
        if self._preview is not None and now - self._last_preview >= self.adapter.preview_interval:
            preview, self._preview, self._last_preview = self._preview, None, now
        self._last_edit = now
        # Its own task: the core cancels its ticker when the image arrives, which must not cut an edit in half.
        self._pending = asyncio.create_task(
            self._show_progress(progress_text(progress, self.locale), preview)
        )

    async def _show_progress(self, content: str, preview: bytes | None) -> None:
        shown = preview is not None and len(preview) <= self.upload_limit

        def files() -> list[discord.File]:  # a File is read once: fresh ones for every call
            return [discord.File(io.BytesIO(preview or b""), "preview.jpg")] if shown else MISSING

        try:
            # A deadline: an edit that hangs would hold up the result (see _drain) and, on the interaction,
            # every later edit (discord.py sends one webhook call per token at a time).
            async with asyncio.timeout(self.adapter.post_timeout):
                await self._put_progress(content, files)
        except discord.HTTPException as exc:
            if preview is not None and too_large(exc):
                # Discord's real limit is below what it told us: remember, so the image is fitted up front.
                self.upload_limit = min(self.upload_limit, len(preview) - 1)
            log.warning(
                "progress update failed",
                extra={"job_id": self.job_id, "status": exc.status, "code": exc.code},
            )
        except Exception as exc:  # a dropped connection, no answer: the next tick tries again
            log.warning("progress update failed: %s", describe(exc), extra={"job_id": self.job_id})

    async def _put_progress(self, content: str, files: Callable[[], list[discord.File]]) -> None:
        """`content` and `files()` with Cancel: on the interaction's response while its token lives, else on a
        channel message of the job's own (posted the first time)."""

        def look() -> dict[str, Any]:
            view = cancel_view(self.job_id, self.locale)
            return {"content": content, "view": view, "allowed_mentions": NO_PINGS}

        if await self._via_interaction(lambda ix: ix.edit_original_response(attachments=files(), **look())):
            return
        if self.progress_message is None:
            self.progress_message = await self.channel.send(files=files(), reference=self.reference, **look())
        else:
            await self.progress_message.edit(attachments=files(), **look())

    async def _drain(self) -> None:
        """Let an edit in flight land first, so it cannot overwrite the result (it ends by `post_timeout`)."""
        if self._pending is not None:
            with contextlib.suppress(Exception):
                await self._pending

    # -- the outcome ----------------------------------------------------------------------

    async def _final(
        self, content: str, uploads: list[tuple[str, bytes]], view: discord.ui.View | None = None
    ) -> discord.Message:
        """Replace the progress with `content`, `uploads` and `view` (the result's buttons; None: no buttons):
        in the original response while its token lives, else as a new channel message replying to the
        original (which pings the requester). Returns the message that carries them. Raises if Discord
        refuses, drops the connection or does not answer in time."""

        def files() -> list[discord.File]:  # a File is read once: fresh ones for every attempt
            return [discord.File(io.BytesIO(data), name) for name, data in uploads]

        edited: list[discord.Message] = []

        async def edit(ix: discord.Interaction[Any]) -> None:
            edited.append(
                await ix.edit_original_response(
                    content=clip(content), attachments=files(), view=view, allowed_mentions=NO_PINGS
                )
            )

        deadline = self.adapter.upload_timeout if uploads else self.adapter.post_timeout
        async with asyncio.timeout(deadline):
            if await self._via_interaction(edit):
                return edited[0]
        async with asyncio.timeout(deadline):
            posted = await self.channel.send(
                clip(f"<@{self.who.user}>\n{content}"),
                files=files(),
                view=view if view is not None else MISSING,
                reference=self.reference,
                allowed_mentions=pings(self.who.user),
            )
        await self._drop_progress_message()  # posted: a leftover progress message must not fail the job
        return posted

    async def _drop_progress_message(self) -> None:
        """Delete the job's own progress message in the channel, if it has one. Never raises."""
        if self.progress_message is None:
            return
        message, self.progress_message = self.progress_message, None
        try:
            async with asyncio.timeout(self.adapter.post_timeout):
                await message.delete()
        except Exception as exc:
            log.warning(
                "could not delete the progress message: %s", describe(exc), extra={"job_id": self.job_id}
            )

    async def _last_word(self, content: str, request_ids: Sequence[str]) -> None:
        """Post `content` where the job is shown; if that fails too, in the channel. Never raises."""
        while True:
            try:
                await self._final(content, [])
                return
            except Exception:
                log.exception(
                    "could not tell the requester how their job ended",
                    extra={"job_id": self.job_id, "request_ids": ",".join(request_ids)},
                )
                if self.expired:
                    return  # the channel failed as well: the log is all that is left
                self.expired = True  # the interaction's message cannot be edited: reply to it instead

    async def _upload(self, result: JobResult) -> discord.Message:
        """Post the images with the summary and the result's buttons, fitted under the upload limit: the
        message that carries them. Raises DeliveryFailed, worth retrying on a 5xx, a 429 or a broken
        connection (discord.py has waited out its own rate limits by then)."""
        images = [(image.data, image.filename) for image in result.images]
        budget = self.upload_limit // len(images)  # per image, so the whole message fits too
        problem = "no attempt was made"
        for _ in range(UPLOAD_ATTEMPTS):
            try:
                uploads, notes = await self._fitted(images, budget, spoiler=result.request.spoiler)
                lines = [quote(result.request.prompt), escape(texts.summary(result, self.locale))]
                lines += [escape(translate(note, self.locale)) for note in notes]
                return await self._final("\n".join(lines), uploads, result_view(result.buttons, self.locale))
            except discord.HTTPException as exc:
                if not too_large(exc):
                    raise DeliveryFailed(describe(exc), retry=exc.status >= 500 or exc.status == 429) from exc
                # Discord's limit is lower than it told us: re-encode smaller and try again.
                budget = max(len(data) for _name, data in uploads) // 2
                problem = msg("discord.too_large", kib=f"{budget * 2 / 1024:.0f}")
                log.warning(
                    "upload too large, re-encoding smaller", extra={"job_id": self.job_id, "budget": budget}
                )
            except (OSError, aiohttp.ClientError, TimeoutError) as exc:  # no answer, a dropped connection
                raise DeliveryFailed(describe(exc)) from exc
            except Exception as exc:  # an image that cannot be made small, say: trying again will not help
                log.exception("image upload failed", extra={"job_id": self.job_id})
                raise DeliveryFailed(describe(exc), retry=False) from exc
        raise DeliveryFailed(problem, retry=False)

    @staticmethod
    async def _fitted(
        images: list[tuple[bytes, str]], budget: int, *, spoiler: bool
    ) -> tuple[list[tuple[str, bytes]], list[Msg]]:
        """(name, data) uploads each at most `budget` bytes, and notes on what was re-encoded. The channel's
        spoiler=on: Discord blurs an attachment whose file name starts with SPOILER_."""
        if max(len(data) for data, _name in images) > budget:
            uploads, notes = await asyncio.to_thread(fit_images, images, budget)
        else:
            uploads, notes = [(name, data) for data, name in images], []
        return [(f"{SPOILER}{name}" if spoiler else name, data) for name, data in uploads], notes

    async def deliver(self, result: JobResult) -> list[dict[str, Any]] | None:
        """Upload the images with the summary and their buttons; return where each image lives (the message
        that carries it, and which of its attachments), for the buttons. Raises DeliveryFailed: the core
        keeps the images, retries, and in the end calls `undelivered`."""
        await self._drain()
        message = await self._upload(result)
        # The attachment's id names the image even after another of the message's images is deleted.
        ids = [str(a.id) for a in getattr(message, "attachments", [])]
        return [
            {"channel_id": str(message.channel.id), "message_id": str(message.id), "index": index}
            | ({"attachment_id": ids[index]} if index < len(ids) else {})
            for index in range(len(result.images))
        ]

    async def undelivered(self, text: str) -> None:
        """Paid for but not shown: say so, with what it cost, the request ids and how to get it."""
        await self._drain()
        await self._last_word(escape(translate(text, self.locale)), [])

    async def failed(self, failure: JobFailure) -> None:
        await self._drain()
        await self._last_word(
            f"{quote(failure.request.prompt)}\n{escape(texts.summary(failure, self.locale))}",
            failure.request_ids,
        )
