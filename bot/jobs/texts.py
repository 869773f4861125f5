"""Everything the bot says about a job, in plain text, in the reader's language (platform markup is the
adapters' job: they escape these strings for mrkdwn or Discord markdown and add mentions).

Each function takes the core's data (a Progress, a JobResult, ...) and a `locale` (bot/i18n.py: `en` or
`zh-CN`), and returns the words from the catalogs; nothing here knows which platform shows them. The core,
which does not know who reads, passes `i18n.lazy(texts.fn, ...)` or a `Msg` to its views; the adapter says it
in the reader's language with `i18n.translate`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bot import platforms
from bot.i18n import ENGLISH, Msg, Text, lazy, msg, say, translate, usd
from bot.i18n import money as _money
from bot.i18n import number as _number
from bot.jobs.outcomes import JobFailure, JobResult, Progress
from bot.model.request import Defaults, ImageRequest, Requester, clip
from bot.policy.preferences import SETTINGS_USAGE, Preferences

if TYPE_CHECKING:
    from bot.jobs.card import JobCard
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


# -- your settings, a job's card, your history, spoilers -----------------------------------------------------

SHOW_LABEL = msg("people.show")
SETTINGS_FORM_TITLE = msg("people.form_title")  # at most 24 characters (a Slack modal's title)
SETTINGS_FORM_SAVE = msg("people.form_save")
SETTINGS_FORM_CANCEL = msg("people.form_cancel")
SETTING_NOT_SET = msg("people.not_set")
SETTING_HINTS = {"size": msg("people.hint.size"), "ar": msg("people.hint.ar")}
SPOILER_HIDDEN = msg("people.spoiler_hidden")
SPOILER_GONE = msg("people.spoiler_gone")
SETTING_LABELS = {
    name: msg(f"people.label.{name}")
    for name in ("size", "ar", "quality", "format", "count", "mode", "language")
}


def your_settings(mine: Preferences, base: Defaults, place: str, saved: bool = False) -> Text:
    """`/imagine-settings`: each of the caller's defaults here, and where the ones they did not set come from."""
    return lazy(_your_settings, mine, base, place, saved)


def _your_settings(mine: Preferences, base: Defaults, place: str, saved: bool, *, locale: str) -> str:
    here = place.render(locale) if isinstance(place, Text) else place
    lines = [say(locale, "people.saved_head" if saved else "people.head", place=here)]
    bot = {
        "size": base.size,
        "ar": say(locale, "people.bot.ar"),
        "quality": base.quality,
        "format": base.format,
        "count": str(base.count),
        "mode": say(locale, "people.bot.mode"),
        "language": say(locale, "people.bot.language"),
    }
    for name, label in SETTING_LABELS.items():
        value = getattr(mine, name)
        key = "people.not_yours" if value is None else "people.yours"
        lines.append(
            say(locale, key, label=label.render(locale), value=bot[name] if value is None else value)
        )
    lines.append(say(locale, "people.change", usage=SETTINGS_USAGE.render(locale)))
    return "\n".join(lines)


def _person(who: Requester) -> str:
    return f"<@{who.user}>" if platforms.of(who.platform).mentions else who.user


def _when(moment: datetime | None, locale: str) -> str:
    if moment is None:
        return say(locale, "people.unknown_time")
    return moment.strftime("%Y-%m-%d %H:%M %Z").strip()


def _status(statuses: Sequence[str]) -> str:
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{n} {status}" for status, n in counts.items())


Link = Callable[[dict[str, Any]], "str | None"]


def _no_link(where: dict[str, Any]) -> str | None:
    return None


def job_card(card: JobCard, link: Link = _no_link) -> Text:
    """A job's card: prompt, model and settings, input images, money, request ids, render time, who and when
    (`link`: the adapter's link to where it is shown, if it can make one)."""
    return lazy(_job_card, card, link)


def _job_card(card: JobCard, link: Link, *, locale: str) -> str:
    sizes = ", ".join(dict.fromkeys(card.sizes))
    size = card.size
    if sizes and sizes != card.size:
        size = say(locale, "people.card.asked", sizes=sizes, size=card.size)
    none = say(locale, "people.card.none" if card.kept else "people.card.gone")
    seconds = card.render_seconds
    lines = [
        say(
            locale,
            "people.card.head",
            job=card.job_id,
            who=_person(card.who),
            when=_when(card.asked_at, locale),
        ),
        say(
            locale,
            "people.card.prompt",
            prompt=card.prompt if card.prompt is not None else say(locale, "people.card.not_stored"),
        ),
        say(
            locale,
            "people.card.model",
            model=card.model,
            size=size,
            quality=card.quality,
            format=card.format,
            images=say(locale, "people.images", n=card.count),
            mode=card.mode,
        ),
        say(locale, "people.card.references", refs=", ".join(card.references) if card.references else none),
        say(locale, "people.card.mask", mask=card.mask or none),
        say(
            locale,
            "people.card.cost",
            reserved=_money(card.reserved_micros, locale),
            charged=_money(card.charged_micros, locale),
        ),
        say(locale, "people.card.ids", ids=", ".join(card.request_ids) or say(locale, "people.card.none")),
        say(
            locale,
            "people.card.render",
            time=say(locale, "people.card.seconds", s=_number(seconds, locale, 1))
            if seconds is not None
            else say(locale, "people.card.none"),
        ),
        say(locale, "people.card.status", status=_status(card.statuses)),
    ]
    where = link(card.where)
    if where:
        lines.append(say(locale, "people.card.link", link=where))
    return "\n".join(lines)


def history(cards: Sequence[JobCard], link: Link = _no_link) -> Text:
    """`/imagine-history`: the caller's latest jobs, newest first, numbered for /imagine-info N."""
    return lazy(_history, tuple(cards), link)


def _history(cards: tuple[JobCard, ...], link: Link, *, locale: str) -> str:
    if not cards:
        return say(locale, "people.history.none")
    lines = [say(locale, "people.history.head", n=len(cards))]
    for n, card in enumerate(cards, start=1):
        prompt = card.prompt if card.prompt is not None else say(locale, "people.history.prompt_gone")
        size = card.sizes[0] if card.sizes else card.size
        where = link(card.where)
        parts = [
            f"{n}. {_when(card.asked_at, locale)}",
            f"{size} {card.quality}",
            say(locale, "people.images", n=card.count),
            _money(card.charged_micros, locale),
            _status(card.statuses),
            *([where] if where else []),
            say(locale, "people.history.job", job=card.job_id),
        ]
        lines.append(" · ".join(parts) + f"\n   {clip(' '.join(prompt.split()), 80)}")
    return "\n".join(lines)
