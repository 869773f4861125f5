"""Everything the bot says about a job, in plain text, in the reader's language (platform markup is the
adapters' job: they escape these strings for mrkdwn or Discord markdown and add mentions).

Each function takes the core's data (a Progress, a JobResult, ...) and a `locale` (bot/i18n.py: `en` or
`zh-CN`), and returns the words from the catalogs; nothing here knows which platform shows them. The core,
which does not know who reads, passes `i18n.lazy(texts.fn, ...)` or a `Msg` to its views; the adapter says it
in the reader's language with `i18n.translate`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bot.i18n import ENGLISH, Msg, lazy, msg, say, translate, usd
from bot.i18n import money as _money
from bot.i18n import number as _number
from bot.jobs.outcomes import JobFailure, JobResult, Progress
from bot.model.request import ImageRequest
from bot.store.ledger import Interrupted

BAR_WIDTH = 20
OFFLINE = msg("texts.offline")
RESTARTING = msg("jobs.restarting")
CANCEL_REFUSED = msg("cancel.refused")
NOT_AN_IMAGE_MESSAGE = msg("edit.not_an_image_message")
TOKEN_EXPIRING = msg("discord.token_expiring")
EXPIRED_BUTTON = msg("actions.expired_button")
DELETED = msg("actions.deleted")
DELETE_REFUSED = msg("actions.delete_refused")
CONFIRM_CANCELLED = msg("actions.confirm_cancelled")


def images(count: int) -> Msg:
    """`1 image`, `3 images`."""
    return msg("texts.images", n=count)


def seconds(value: float, locale: str = ENGLISH, decimals: int = 0) -> str:
    """`12 s`."""
    return say(locale, "texts.seconds", seconds=_number(value, locale, decimals))


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    filled = int(width * fraction)
    return "█" * filled + "░" * (width - filled)


def settings_line(request: ImageRequest, offline: bool, locale: str = ENGLISH) -> str:
    """`1536x1024 high jpeg · edit · x2 · offline image server` (sizes and flag values as typed)."""
    parts = [
        request.describe(),
        say(locale, "texts.edit") if request.is_edit else "",
        f"x{request.count}" if request.count > 1 else "",
        OFFLINE.render(locale) if offline else "",
    ]
    return " · ".join(p for p in parts if p)


def status_line(progress: Progress, code: Callable[[str], str] = str, locale: str = ENGLISH) -> str:
    """Queue position, or a progress bar with elapsed/expected seconds (`code` marks the bar up)."""
    if progress.state == "relax":
        return translate(progress.detail, locale)
    if progress.state == "queued":
        return say(
            locale,
            "progress.queued",
            position=progress.queue_position,
            elapsed=_number(progress.elapsed, locale),
        )
    status = say(
        locale,
        "progress.running",
        bar=code(bar(progress.fraction)),
        elapsed=_number(progress.elapsed, locale),
        expected=_number(progress.expected, locale),
    )
    if progress.count > 1:
        status += " · " + say(locale, "progress.done_of", done=progress.done, count=progress.count)
    return status


def heading(request: ImageRequest, locale: str = ENGLISH) -> str:
    """`Rendering` or `Editing`: what the progress message is doing."""
    return say(locale, "progress.editing" if request.is_edit else "progress.rendering")


def result_summary(result: JobResult, locale: str = ENGLISH) -> str:
    """Size, quality, format, cost, time, quota and request ids; then notes, what did not finish, offline."""
    first = result.images[0]
    ids = ", ".join(i for img in result.images for i in img.request_ids) or say(locale, "texts.no_request_id")
    parts = [
        f"{first.width}x{first.height} {result.request.quality} {result.request.format}",
        images(len(result.images)).render(locale) if result.request.count > 1 else "",
        _money(result.total_micros, locale),
        seconds(result.elapsed, locale, 1),
        translate(result.quota_left, locale),
        say(locale, "texts.request_ids", ids=ids),
    ]
    text = " · ".join(p for p in parts if p)
    extra = [translate(note, locale) for note in (*result.request.notes, *result.failures)]
    if result.offline:
        extra.append(say(locale, "texts.made_offline", offline=OFFLINE))
    return text + "".join(f"\n{note}" for note in extra)


def failure_summary(failure: JobFailure, locale: str = ENGLISH) -> str:
    """Why no image came, the request ids, and what was charged and why."""
    ids = say(locale, "texts.failure_ids", ids=", ".join(failure.request_ids)) if failure.request_ids else ""
    if not failure.charged_micros:
        money = say(locale, "texts.nothing_charged")
    elif failure.cancelled:
        money = say(locale, "texts.charged_cancelled", cost=usd(failure.charged_micros))
    else:
        money = say(locale, "texts.charged_failed", cost=usd(failure.charged_micros))
    return say(
        locale,
        "texts.cancelled" if failure.cancelled else "texts.failed",
        why=translate(failure.message, locale),
        ids=ids,
        money=money,
    ) + (say(locale, "texts.offline_suffix", offline=OFFLINE) if failure.offline else "")


def summary(outcome: JobResult | JobFailure, locale: str = ENGLISH) -> str:
    """The summary of either outcome."""
    if isinstance(outcome, JobResult):
        return result_summary(outcome, locale)
    return failure_summary(outcome, locale)


def image_failed(error: object) -> Msg:
    """One image of a job that did not come, beside those that did."""
    return msg("texts.image_failed", error=error)


def image_stopped(reason: str, charged_micros: int) -> Msg:
    cancelled = reason == "cancelled"
    if charged_micros:
        key = "texts.image_cancelled_charged" if cancelled else "texts.image_interrupted_charged"
        return msg(key, cost=usd(charged_micros))
    return msg("texts.image_cancelled_free" if cancelled else "texts.image_interrupted_free")


def stopped_job(reason: str) -> Msg:
    return msg("texts.stopped_cancelled" if reason == "cancelled" else "texts.stopped_interrupted")


def done_line(result: JobResult, where: str | None = None, locale: str = ENGLISH) -> str:
    """The progress message's last state once the image is delivered (`where`: a catalog id for where the
    images are; in the thread by default)."""
    first = result.images[0]
    return say(
        locale,
        "texts.done",
        size=f"{first.width}x{first.height}",
        quality=result.request.quality,
        cost=usd(result.total_micros),
        seconds=seconds(result.elapsed, locale),
        images=images(len(result.images)),
        where=say(locale, where or "texts.in_the_thread"),
    )


def cannot_post(reason: object) -> Msg:
    """The progress message could not be posted, so the job never started."""
    return msg("texts.cannot_post", reason=reason)


def undelivered(
    why: object, summary: object, job_id: str | None = None, request_ids: Sequence[str] = ()
) -> Msg:
    """Made and paid for, but the platform did not take the upload: never silently, and never lost (the image
    is kept until `imagebot redeliver` posts it, for IMAGEBOT_ACTIONS_DAYS)."""
    return msg(
        "texts.undelivered",
        why=why,
        ids=msg("texts.undelivered_ids", ids=", ".join(request_ids)) if request_ids else "",
        kept=msg("texts.undelivered_kept", job_id=job_id) if job_id else "",
        summary=summary,
    )


def price_check(request: ImageRequest, estimate_micros: int, threshold_micros: int) -> Msg:
    """The private question before an expensive render: its settings and exactly what it will reserve."""
    return msg(
        "texts.price_check",
        estimate=usd(estimate_micros),
        settings=lazy(settings_line, request, False),
        threshold=usd(threshold_micros),
    )


def interrupted(job: Interrupted) -> Msg:
    """A job a stopped process left unfinished, told by whichever process serves its platform."""
    money = (
        msg("texts.interrupted_charged", cost=usd(job.charged_micros))
        if job.charged_micros
        else msg("texts.nothing_charged_lower")
    )
    return msg("texts.interrupted", money=money)


def already_deleted(index: int) -> Msg:
    return msg("texts.already_deleted", index=index)


def no_such_image(index: int, count: int) -> Msg:
    return msg("texts.no_such_image", n=count, index=index)
