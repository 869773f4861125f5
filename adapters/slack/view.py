"""How the Slack adapter shows things: a job (its progress message, the images in its thread, the final line
with the result buttons: `SlackJobView`, the core's JobView) and what only one person may see (`Privately`)."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError

from bot.errors import CannotPost, DeliveryFailed
from bot.i18n import ENGLISH, msg, say, translate
from bot.jobs import texts
from bot.jobs.actions import Button
from bot.jobs.outcomes import JobFailure, JobResult, Progress
from bot.model.request import Requester, clip

from .blocks import confirm_blocks, done_blocks, escape, hidden_blocks, progress_blocks
from .client import why_not

if TYPE_CHECKING:
    from .parts import SlackSide

log = logging.getLogger("imagebot.slack")


@dataclass
class Privately:
    """Where to tell one person something only they see: the command's response_url, else an ephemeral."""

    adapter: SlackSide
    who: Requester
    respond: Any = None  # bolt's respond(): a slash command's, or a click's on a private message
    thread_ts: str | None = None
    replace: bool = False  # `respond` is a click's on our private message: the reply replaces that message
    locale: str | None = None  # their language, once known (`language`)

    async def language(self) -> str:
        """The person's language (bot/i18n.py): asked once (their setting, else their Slack locale), then kept."""
        if self.locale is None:
            self.locale = await self.adapter.language(self.who)
        return self.locale

    async def tell(self, text: str, blocks: list[dict[str, Any]] | None = None) -> None:
        """An ephemeral reply in the person's language, where Slack still takes one (a failure here is logged,
        not raised)."""
        text = translate(text, await self.language())
        try:
            if self.respond is not None:
                extra = {"replace_original": True} if self.replace else {}
                await self.respond(text=escape(text), blocks=blocks, response_type="ephemeral", **extra)
            else:
                await self.adapter.client.chat_postEphemeral(
                    channel=self.who.channel,
                    user=self.who.user,
                    text=escape(text),
                    blocks=blocks,
                    thread_ts=self.thread_ts,
                )
        except Exception as exc:
            log.warning("slack private reply failed", extra={"user": self.who.user, "error": why_not(exc)})


@dataclass
class SlackJobView:
    """Shows one job in Slack: a progress message (in `thread_ts` for edits and clicks, else at the channel
    root), then the image uploaded into its thread, and the message's final line with the result buttons.

    `question`: the respond() of a click on a private price check; once the job has its message, the question
    (with its Render and Cancel buttons) is removed."""

    adapter: SlackSide
    asker: Privately
    thread_ts: str | None = None
    ts: str = ""
    job_id: str = ""
    question: Any = None
    admin: bool | None = None  # platform_admin(), once asked (the rules may ask more than once per job)
    previews = False  # chat.update cannot show a partial image
    confirms = True  # an expensive render asks its requester first, privately, with Render and Cancel

    @property
    def who(self) -> Requester:
        return self.asker.who

    @property
    def channel(self) -> str:
        return self.who.channel

    @property
    def thread(self) -> str:
        return self.thread_ts or self.ts

    async def open(self, first: Progress) -> dict[str, Any]:
        self.job_id = first.job_id
        locale = await self.asker.language()
        try:
            posted = await self.adapter.client.chat_postMessage(
                channel=self.channel,
                thread_ts=self.thread_ts,
                text=say(locale, "slack.queued", prompt=escape(clip(first.request.prompt, 100))),
                blocks=progress_blocks(first, self.who, locale),
            )
        except SlackApiError as exc:
            raise CannotPost(msg("slack.cannot_post", why=why_not(exc))) from exc
        self.ts = posted["ts"]
        if self.question is not None:  # a confirmed price check: its question has been answered
            self.adapter.spawn(self._retire(self.question))
            self.question = None
            self.asker = Privately(self.adapter, self.who, thread_ts=self.thread, locale=locale)
        # The language goes with the job: a restart that delivers it (or tells of it) speaks the same one.
        return {"channel": self.channel, "thread_ts": self.thread, "ts": self.ts, "locale": locale}

    async def _retire(self, respond: Any) -> None:
        try:
            await respond(delete_original=True)
        except Exception as exc:
            log.warning("slack price check not removed", extra={"job_id": self.job_id, "error": why_not(exc)})

    async def platform_admin(self) -> bool:
        if self.admin is None:
            self.admin = await self.adapter.people.is_workspace_admin(self.who)
        return self.admin

    async def member_of(self, groups: Collection[str]) -> bool:
        return await self.adapter.people.in_groups(self.who.user, groups)

    async def refused(self, text: str) -> None:
        """Only the requester (or the clicker) sees why: the command's response_url, else an ephemeral in the
        channel (in the thread of a click); on a price check's Render or Cancel, in place of the question."""
        await self.asker.tell(text)

    async def confirm(self, text: str, token: str) -> None:
        """The private price check. The buttons carry the token and the thread the render will go to."""
        value = f"{token}:{self.thread_ts or ''}"
        locale = await self.asker.language()
        text = translate(text, locale)
        await self.asker.tell(text, blocks=confirm_blocks(escape(text), value, locale))

    async def progress(self, progress: Progress) -> None:
        if not self.adapter.budget.take():
            return  # over the workspace's chat.update budget: skip this tick, the next one catches up
        locale = await self.asker.language()
        await self.adapter.client.chat_update(
            channel=self.channel,
            ts=self.ts,
            text=say(locale, "slack.rendering", prompt=escape(clip(progress.request.prompt, 100))),
            blocks=progress_blocks(progress, self.who, locale),
        )

    async def deliver(self, result: JobResult) -> list[dict[str, Any]] | None:
        """Upload the images into the thread; the progress message becomes the done line with the buttons.
        Returns where each image lives (its file id, channel and thread), in order; None if not posted."""
        locale = await self.asker.language()
        said = f"<@{self.who.user}> {escape(texts.summary(result, locale))}"
        uploads = [
            {"file": image.data, "filename": image.filename, "title": clip(result.request.prompt, 100)}
            for image in result.images
        ]
        try:
            files = await self._upload(uploads, said, hidden=result.request.spoiler)
        except SlackApiError as exc:
            # Slack answered no: worth another try only if it was a 5xx or a rate limit (the client's own
            # retry handlers have already tried those a few times).
            status = getattr(exc.response, "status_code", 0) or 0
            log.warning("slack upload refused", extra={"job_id": self.job_id, "error": why_not(exc)})
            raise DeliveryFailed(
                msg("slack.upload_refused", why=why_not(exc)), retry=status >= 500 or status == 429
            ) from exc
        except (
            Exception
        ) as exc:  # a broken connection, no answer: the outbox keeps the image, the core retries
            log.warning("slack upload failed", extra={"job_id": self.job_id, "error": why_not(exc)})
            raise DeliveryFailed(msg("slack.upload_failed", why=why_not(exc))) from exc
        self._finish(escape(texts.done_line(result, locale=locale)), result.buttons, locale)
        return [
            {"file_id": f["id"], "channel": self.channel, "thread_ts": self.thread} for f in files
        ] or None

    async def _upload(
        self, uploads: list[dict[str, Any]], said: str, *, hidden: bool
    ) -> list[dict[str, Any]]:
        """The images into the job's thread with `said` beside them, and the files Slack made of them. `hidden`
        (the channel's spoiler=on): uploaded unshared, then a message whose Show buttons show them."""
        client = self.adapter.client
        if not hidden:
            response = await client.files_upload_v2(
                channel=self.channel,
                thread_ts=self.thread,
                file_uploads=uploads,
                initial_comment=said,
                request_file_info=False,
            )
            return list(response.get("files") or [])
        response = await client.files_upload_v2(file_uploads=uploads, request_file_info=False)
        said = f"{said}\n{escape(texts.SPOILER_HIDDEN)}"
        ids = [str(f["id"]) for f in response.get("files") or []]
        await client.chat_postMessage(
            channel=self.channel, thread_ts=self.thread, text=said, blocks=hidden_blocks(said, ids)
        )
        return list(response.get("files") or [])

    async def undelivered(self, text: str) -> None:
        """Paid for but not shown, after every retry: never silently (cost, request ids, how to get it)."""
        text = translate(text, await self.asker.language())
        await self._say(f"<@{self.who.user}> {escape(text)}")
        self._finish(clip(escape(text), 2900))

    async def failed(self, failure: JobFailure) -> None:
        text = escape(texts.summary(failure, await self.asker.language()))
        await self._say(f"<@{self.who.user}> {text}")
        self._finish(clip(text, 2900))

    async def _say(self, text: str) -> None:
        """Post in the job's thread; if Slack cannot take it, the final progress line still says it."""
        try:
            await self.adapter.client.chat_postMessage(channel=self.channel, thread_ts=self.thread, text=text)
        except Exception as exc:
            log.warning("slack thread message failed", extra={"job_id": self.job_id, "error": why_not(exc)})

    def _finish(self, text: str, buttons: Sequence[Button] = (), locale: str = ENGLISH) -> None:
        """Turn the progress message into its final line (with the result buttons), within the chat.update
        budget. Runs as its own task: the user already has the image (or the error) in the thread.
        """

        async def update() -> None:
            await self.adapter.budget.wait()
            await self.adapter.client.chat_update(
                channel=self.channel, ts=self.ts, text=text, blocks=done_blocks(text, buttons, locale)
            )

        self.adapter.spawn(update())


@dataclass
class ClickStore:
    """The adapter's images (bot.jobs.actions.ImageStore) as one click sees them: a Delete is confirmed to the
    clicker, privately."""

    adapter: SlackSide
    asker: Privately

    async def fetch(self, where: dict[str, Any]) -> bytes:
        return await self.adapter.files.fetch(where)

    async def delete(self, where: dict[str, Any]) -> None:
        await self.adapter.files.delete(where)
        await self.asker.tell(texts.DELETED)
