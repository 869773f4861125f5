"""Everything the bot says to people, in plain text, in one place (platform markup is the adapters' job:
they escape these strings for mrkdwn or Discord markdown and add mentions).

Each function takes the core's data (a Progress, a JobResult, ...) and returns the words; nothing here
knows which platform shows them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bot import platforms
from bot.jobs.outcomes import JobFailure, JobResult, Progress
from bot.model.pricing import format_usd
from bot.model.request import Defaults, ImageRequest, Requester, clip

if TYPE_CHECKING:
    from bot.jobs.card import JobCard
    from bot.policy.preferences import Preferences
    from bot.store.ledger import Interrupted

BAR_WIDTH = 20
OFFLINE = "offline image server"
RESTARTING = "the bot is restarting and not taking new jobs; try again in a minute"
CANCEL_REFUSED = "Only the person who started this job can cancel it, and only while it runs."
NOT_AN_IMAGE_MESSAGE = (
    "That message has no image to edit; use it on a message with a PNG, JPEG or WebP image."
)
TOKEN_EXPIRING = (
    "Still working. Discord stops edits of this message after 15 minutes, so progress and the image "
    "continue in a reply to it."
)


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    filled = int(width * fraction)
    return "█" * filled + "░" * (width - filled)


def settings_line(request: ImageRequest, offline: bool) -> str:
    """`1536x1024 high jpeg · edit · x2 · offline image server`."""
    parts = [
        request.describe(),
        "edit" if request.is_edit else "",
        f"x{request.count}" if request.count > 1 else "",
        OFFLINE if offline else "",
    ]
    return " · ".join(p for p in parts if p)


def status_line(progress: Progress, code: Callable[[str], str] = str) -> str:
    """Queue position, or a progress bar with elapsed/expected seconds (`code` marks the bar up)."""
    if progress.state == "relax":
        return progress.detail
    if progress.state == "queued":
        return f"queued, position {progress.queue_position} · {progress.elapsed:.0f} s"
    status = f"{code(bar(progress.fraction))} {progress.elapsed:.0f} s of ~{progress.expected:.0f} s"
    if progress.count > 1:
        status += f" · {progress.done}/{progress.count} done"
    return status


def result_summary(result: JobResult) -> str:
    """Size, quality, format, cost, time, quota and request ids; then notes, what did not finish, offline."""
    first = result.images[0]
    ids = ", ".join(i for img in result.images for i in img.request_ids) or "none"
    parts = [
        f"{first.width}x{first.height} {result.request.quality} {result.request.format}",
        plural(len(result.images), "image") if result.request.count > 1 else "",
        format_usd(result.total_micros),
        f"{result.elapsed:.1f} s",
        result.quota_left,
        f"request id {ids}",
    ]
    text = " · ".join(p for p in parts if p)
    extra = list(result.request.notes) + list(result.failures)
    if result.offline:
        extra.append(f"made by the {OFFLINE}, not OpenAI")
    return text + "".join(f"\n{note}" for note in extra)


def failure_summary(failure: JobFailure) -> str:
    """Why no image came, the request ids, and what was charged and why."""
    ids = f" (request id {', '.join(failure.request_ids)})" if failure.request_ids else ""
    head = "Cancelled" if failure.cancelled else "Failed"
    if not failure.charged_micros:
        money = "Nothing was charged."
    elif failure.cancelled:
        money = (
            f"Charged {format_usd(failure.charged_micros)}: its API call had already started, and the API "
            "may bill a call even when its answer is never read."
        )
    else:
        money = f"Charged {format_usd(failure.charged_micros)}: the API may have billed attempts that gave no image."
    return f"{head}: {failure.message}{ids}. {money}" + (f" ({OFFLINE})" if failure.offline else "")


def summary(outcome: JobResult | JobFailure) -> str:
    """The summary of either outcome."""
    return result_summary(outcome) if isinstance(outcome, JobResult) else failure_summary(outcome)


def image_failed(error: str) -> str:
    """One image of a job that did not come, beside those that did."""
    return f"failed: {error}"


def image_stopped(reason: str, charged_micros: int) -> str:
    verb = "cancelled by the requester" if reason == "cancelled" else "interrupted by a shutdown"
    if charged_micros:
        return f"1 image {verb} during its API call, charged {format_usd(charged_micros)} as possibly billed"
    return f"1 image {verb} before its API call, nothing charged"


def stopped_job(reason: str) -> str:
    return (
        "cancelled by the requester"
        if reason == "cancelled"
        else "interrupted because the bot is shutting down; run it again in a minute"
    )


def done_line(result: JobResult, where: str = "in the thread") -> str:
    """The progress message's last state once the image is delivered."""
    first = result.images[0]
    return (
        f"Done: {first.width}x{first.height} {result.request.quality} · {format_usd(result.total_micros)} · "
        f"{result.elapsed:.0f} s · {plural(len(result.images), 'image')} {where}"
    )


def cannot_post(reason: str) -> str:
    """The progress message could not be posted, so the job never started."""
    return f"I could not post in this channel ({reason}). Nothing was charged."


def undelivered(why: str, summary: str, job_id: str | None = None, request_ids: Sequence[str] = ()) -> str:
    """Made and paid for, but the platform did not take the upload: never silently, and never lost (the image
    is kept until `imagebot redeliver` posts it, for IMAGEBOT_ACTIONS_DAYS)."""
    ids = f" Request ids: {', '.join(request_ids)}." if request_ids else ""
    kept = f" It is kept: an admin can post it later with `imagebot redeliver {job_id}`." if job_id else ""
    return f"The image was made and charged, but it could not be posted: {why}.{ids}{kept}\n{summary}"


def price_check(request: ImageRequest, estimate_micros: int, threshold_micros: int) -> str:
    """The private question before an expensive render: its settings and exactly what it will reserve."""
    return (
        f"This render may cost up to {format_usd(estimate_micros)} ({settings_line(request, False)}), above "
        f"this channel's {format_usd(threshold_micros)} price check. Nothing is reserved or rendered until you "
        "press Render; the question expires in 10 minutes."
    )


EXPIRED_BUTTON = "this button has expired or is not known here; run /imagine again"
DELETED = "Deleted."


def already_deleted(index: int) -> str:
    return f"image {index} of this job was deleted; a re-roll makes a new one"


def no_such_image(index: int, count: int) -> str:
    return f"this job has no image {index}; it has {count} image{'s' if count != 1 else ''} (1-{count})"


DELETE_REFUSED = "Only the person who made this image (or an admin) can delete it."
CONFIRM_CANCELLED = "Cancelled: nothing was reserved or charged."


def interrupted(job: Interrupted) -> str:
    """A job a stopped process left unfinished, told by whichever process serves its platform."""
    money = (
        f"it was charged {format_usd(job.charged_micros)} because the API call had started and may have been "
        "billed"
        if job.charged_micros
        else "nothing was charged"
    )
    return f"this job was interrupted by a restart before it finished; {money}. Run /imagine again to retry."


# -- your settings, a job's card, your history, spoilers -----------------------------------------------------

SETTINGS_USAGE = (
    "size=auto|1k|2k|4k|WxH, ar=W:H (with size 1k, 2k or 4k), quality=low|medium|high|auto, "
    "format=png|jpeg|webp, count=1-4, mode=fast|relax, language=en|zh-CN "
    "(NAME=default clears one, reset clears them all)"
)
SIZE_VALUES = "auto, 1k, 2k, 4k or WxH (e.g. 1536x1024)"
AR_VALUES = "W:H with whole numbers, e.g. 16:9 (it shapes a 1k, 2k or 4k size)"
SHOW_LABEL = "Show"
SETTINGS_FORM_TITLE = "Your imagebot defaults"  # at most 24 characters (a Slack modal's title)
SETTINGS_FORM_SAVE = "Save"
SETTINGS_FORM_CANCEL = "Cancel"
SETTING_NOT_SET = "default (not set)"
SETTING_HINTS = {"size": "auto, 1k, 2k, 4k or WxH", "ar": "W:H, e.g. 16:9 (with 1k, 2k or 4k)"}
SPOILER_HIDDEN = "The image is hidden in this channel (spoiler=on): press Show to see it (only you will)."
SPOILER_GONE = "That image is no longer here (deleted, or kept no longer); nothing to show."
SETTING_LABELS = {
    "size": "size",
    "ar": "aspect ratio",
    "quality": "quality",
    "format": "format",
    "count": "images per request",
    "mode": "mode",
    "language": "language",
}


def bad_spoiler(value: str) -> str:
    """`/imagine-admin channel #c spoiler=...` with a value other than on or off."""
    return f"spoiler={value}: use on (images posted hidden until clicked) or off"


def unknown_setting(word: str) -> str:
    """A word of /imagine-settings that names no setting."""
    return f"{word!r} is not one of your settings; use {SETTINGS_USAGE}. Nothing was changed."


def bad_setting(name: str, value: str, valid: str, why: str = "") -> str:
    """A setting given a value it cannot take."""
    because = f" ({why})" if why else ""
    return f"{name}={value} is not a valid {name}{because}; use {valid}. Nothing was changed."


def settings_conflict(why: str) -> str:
    """Settings that are each fine but together would not make a request."""
    return f"Together these defaults would not make a valid request: {why}. Nothing was changed."


def your_settings(mine: Preferences, base: Defaults, place: str, saved: bool = False) -> str:
    """`/imagine-settings`: each of the caller's defaults here, and where the ones they did not set come from."""
    head = "Saved. Your defaults" if saved else "Your defaults"
    lines = [f"{head} {place} (a flag in a request overrides each; channel ceilings still apply):"]
    bot = {
        "size": base.size,
        "ar": "none",
        "quality": base.quality,
        "format": base.format,
        "count": str(base.count),
        "mode": "the channel's (fast unless it says relax=on)",
        "language": "your platform's, else English",
    }
    for name, label in SETTING_LABELS.items():
        value = getattr(mine, name)
        if value is None:
            lines.append(f"- {label}: {bot[name]} (not set: the bot's default)")
        else:
            lines.append(f"- {label}: {value} (yours)")
    lines.append(
        f"Change them: /imagine-settings size=2k quality=high (or --size 2k --quality high); {SETTINGS_USAGE}"
    )
    return "\n".join(lines)


def from_your_default(name: str) -> str:
    """Added to a channel's refusal when the refused value was the requester's own default."""
    return f"(That {name} is your default from /imagine-settings: give --{name} to override it, or change it there.)"


def no_such_job(ref: str) -> str:
    """Any job the caller may not see, or that does not exist: the same words, so nothing leaks."""
    return f"No such job: {ref!r}. /imagine-history lists yours (use its number or the job id)."


def history_usage(text: str, most: int) -> str:
    return f"{text!r} is not a number of jobs; use /imagine-history [N] with N from 1 to {most}"


def _person(who: Requester) -> str:
    return f"<@{who.user}>" if platforms.of(who.platform).mentions else who.user


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M %Z").strip() if moment is not None else "unknown"


def _status(statuses: Sequence[str]) -> str:
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{n} {status}" for status, n in counts.items())


def job_card(card: JobCard, link: Callable[[dict[str, Any]], str | None] = lambda where: None) -> str:
    """A job's card: prompt, model and settings, input images, money, request ids, render time, who and when
    (`link`: the adapter's link to where it is shown, if it can make one)."""
    sizes = ", ".join(dict.fromkeys(card.sizes))
    size = sizes if sizes and sizes != card.size else card.size
    if sizes and sizes != card.size:
        size += f" (asked {card.size})"
    lines = [
        f"Job {card.job_id} · asked by {_person(card.who)} on {_when(card.asked_at)}",
        f"Prompt: {card.prompt if card.prompt is not None else '(not stored)'}",
        f"Model: {card.model} · size {size} · quality {card.quality} · format {card.format} · "
        f"{plural(card.count, 'image')} · {card.mode}",
        "References: "
        + (", ".join(card.references) if card.references else "none" if card.kept else "no longer kept"),
        f"Mask: {card.mask or ('none' if card.kept else 'no longer kept')}",
        f"Cost: reserved {format_usd(card.reserved_micros)}, charged {format_usd(card.charged_micros)}",
        f"Request ids: {', '.join(card.request_ids) or 'none'}",
        "Render time: " + (f"{card.render_seconds:.1f} s" if card.render_seconds is not None else "none"),
        f"Status: {_status(card.statuses)}",
    ]
    where = link(card.where)
    if where:
        lines.append(f"Link: {where}")
    return "\n".join(lines)


def history(
    cards: Sequence[JobCard], link: Callable[[dict[str, Any]], str | None] = lambda where: None
) -> str:
    """`/imagine-history`: the caller's latest jobs, newest first, numbered for /imagine-info N."""
    if not cards:
        return "You have no jobs here yet: try /imagine a lighthouse at dusk."
    lines = [f"Your last {plural(len(cards), 'job')} here (newest first; /imagine-info N for a card):"]
    for n, card in enumerate(cards, start=1):
        prompt = card.prompt if card.prompt is not None else "(prompt not stored)"
        size = card.sizes[0] if card.sizes else card.size
        where = link(card.where)
        parts = [
            f"{n}. {_when(card.asked_at)}",
            f"{size} {card.quality}",
            plural(card.count, "image"),
            format_usd(card.charged_micros),
            _status(card.statuses),
            *([where] if where else []),
            f"job {card.job_id}",
        ]
        lines.append(" · ".join(parts) + f"\n   {clip(' '.join(prompt.split()), 80)}")
    return "\n".join(lines)
