"""Result actions (Re-roll, Vary, Upscale, Edit, Delete) and the price check before expensive renders.

A finished job leaves a record: its request (input images kept as blobs), who asked and where, and where
each of its images lives on the platform. A button carries only a short key (`vary:<job>:2`), so buttons
keep working across restarts for IMAGEBOT_ACTIONS_DAYS days; a click is a new job of whoever clicked.
A request whose worst case is above the confirm threshold waits, stored, for its requester's Render: it is
admitted first by the job's own access, pace and quota checks (reserving nothing), and a user has at most
MAX_PENDING such price checks waiting. Nothing stored lives for ever (`purge`, run by the periodic sweep):
results and their input images go after IMAGEBOT_ACTIONS_DAYS, price checks an hour after they were asked,
and an input image (a blob, shared by every request that uses the same bytes) once nobody holds it.
The tables and their rules are bot/store/results.py's; this module decides what a record means to a user.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from bot.errors import UserError
from bot.i18n import ENGLISH, lazy, money, msg
from bot.model.images import ImageInput
from bot.model.pricing import PriceTable
from bot.model.request import Defaults, ImageRequest, Requester, notes_for, parse_request, split_flags
from bot.model.sizes import GPT_IMAGE_2, Size, SizeRule
from bot.policy.price_check import CONFIRM_KEPT, CONFIRM_TTL, MAX_PENDING
from bot.store import results
from bot.store.results import Database, Results
from bot.store.results import Purged as Purged  # the sweep's counts, as callers of `purge` know them

VARY_PROMPT = "Make a close variation of this image, keeping its subject, composition and style."
UPSCALE_PROMPT = "Keep the composition exactly; render it at this larger size with more fine detail."


class Kind(StrEnum):
    REROLL = "reroll"
    VARY = "vary"
    UPSCALE = "upscale"
    EDIT = "edit"
    REMOVE = "delete"  # the Delete button (not named after the SQL keyword: only the store holds SQL)
    INFO = "info"  # the job's card, privately (bot/jobs/card.py)


LABELS = {
    Kind.REROLL: msg("actions.reroll"),
    Kind.VARY: msg("actions.vary"),
    Kind.UPSCALE: msg("actions.upscale"),
    Kind.EDIT: msg("actions.edit"),
    Kind.REMOVE: msg("actions.delete"),
    Kind.INFO: msg("actions.info"),
}


@dataclass(frozen=True, slots=True)
class Button:
    """One action on a finished job: what a platform draws (label) and sends back (key)."""

    kind: Kind
    job_id: str
    index: int  # 1..N for an image; 0 for Re-roll (the whole request)
    label: str  # a Text: drawn in the reader's language (bot/i18n.py)
    cost_micros: (
        int | None
    )  # the estimate that a click reserves (None: Edit's depends on the instruction, Delete)

    @property
    def key(self) -> str:
        """`vary:0123456789abcdef:2`: at most 32 characters, well inside Discord's 100 for a custom id."""
        return f"{self.kind}:{self.job_id}:{self.index}"


def parse_key(key: str) -> tuple[Kind, str, int]:
    """A button's key back into (kind, job id, image number); UserError if it is not one of ours."""
    kind, _, rest = key.partition(":")
    job_id, _, index = rest.partition(":")
    try:
        return Kind(kind), job_id, int(index)
    except ValueError:
        raise UserError(msg("actions.not_ours")) from None


class ImageStore(Protocol):
    """Where an adapter keeps the images it posted: fetch one again (to vary it), or delete it."""

    async def fetch(self, where: dict[str, Any]) -> bytes: ...

    async def delete(self, where: dict[str, Any]) -> None: ...


@dataclass(frozen=True, slots=True)
class Record:
    """A finished job, as its buttons need it."""

    job_id: str
    who: Requester
    request: ImageRequest
    images: tuple[dict[str, Any], ...]  # per image: width, height, format, and `where` (the platform's own)
    created: datetime


def upscale_size(width: int, height: int, rule: SizeRule = GPT_IMAGE_2) -> Size | None:
    """The largest size of exactly this aspect ratio the rule allows (edges multiples of 16, long edge and
    pixels within the limits), or None if there is none larger than the image (or the rule is a fixed list)."""
    if rule.is_fixed:
        return None
    g = math.gcd(width, height)
    a, b = width // g, height // g
    # w = a*t and h = b*t must both be multiples of the rule's edge multiple.
    step = math.lcm(rule.multiple // math.gcd(a, rule.multiple), rule.multiple // math.gcd(b, rule.multiple))
    t = min(rule.max_edge // max(a, b), math.isqrt(rule.max_pixels // (a * b)))
    t -= t % step
    while t > 0 and rule.problem(a * t, b * t) is not None:
        t -= step
    if t <= 0 or a * t * b * t <= width * height:
        return None
    return Size(a * t, b * t)


def derive(
    kind: Kind, record: Record, base: ImageInput | None, instruction: str, prices: PriceTable
) -> ImageRequest:
    """The request a click makes: Re-roll repeats it; Vary, Upscale and Edit edit the clicked image."""
    original = record.request
    if kind == Kind.REROLL:
        return original
    assert base is not None
    capabilities = prices.model(original.model).capabilities

    def one(size: Size, **changes: Any) -> ImageRequest:
        notes = notes_for(
            prompt=original.prompt,
            size=size,
            format=original.format,
            model=original.model,
            capabilities=capabilities,
        )
        return replace(original, references=(base,), mask=None, count=1, size=size, notes=notes, **changes)

    if kind == Kind.VARY:
        return one(Size(base.width, base.height), prompt=f"{original.prompt}\n\n{VARY_PROMPT}")
    if kind == Kind.UPSCALE:
        size = upscale_size(base.width, base.height, capabilities.sizes)
        if size is None:
            raise UserError(msg("actions.already_largest", model=original.model))
        return one(size, prompt=f"{original.prompt}\n\n{UPSCALE_PROMPT}", quality="high")
    if kind == Kind.EDIT:
        if not instruction.strip():
            raise UserError(msg("actions.empty_instruction"))
        # Flags work in the form as in a message (`make it blue --quality high`); unsaid, the image's own
        # size and the original settings hold.
        defaults = Defaults(
            size=str(Size(base.width, base.height)), quality=original.quality, model=original.model
        )
        edit = parse_request(instruction, prices=prices, defaults=defaults, references=[base])
        given = split_flags(instruction)[1]
        if "format" not in given and "compression" not in given:
            edit = replace(edit, format=original.format, compression=original.compression)
        return edit
    raise UserError(msg("actions.does_not_render", kind=str(kind)))


# -- the records, on the ledger's database (bot/store/results.py) ------------------------------------------


def _blob(db: Database, image: ImageInput, holder: str) -> dict[str, Any]:
    """Store an input image once (by its digest), held by `holder` (`r:<job>`, `c:<token>`) until purged."""
    digest = hashlib.sha256(image.data).hexdigest()
    Results(db).hold_blob(sha256=digest, data=image.data, holder=holder)
    return {
        "name": image.name,
        "sha256": digest,
        "width": image.width,
        "height": image.height,
        "format": image.format,
        "has_alpha": image.has_alpha,
    }


def _image(db: Database, ref: dict[str, Any]) -> ImageInput:
    data = Results(db).blob(ref["sha256"])
    if data is None:
        raise UserError(msg("actions.inputs_gone"))
    return ImageInput(ref["name"], data, ref["width"], ref["height"], ref["format"], ref["has_alpha"])


def request_json(db: Database, request: ImageRequest, holder: str) -> str:
    """A request as stored: its settings, and its input images as blob references (held by `holder`)."""
    return json.dumps(
        {
            "prompt": request.prompt,
            "size": str(request.size),
            "quality": request.quality,
            "format": request.format,
            "compression": request.compression,
            "count": request.count,
            "model": request.model,
            "references": [_blob(db, r, holder) for r in request.references],
            "mask": _blob(db, request.mask, holder) if request.mask is not None else None,
            "relax": request.relax,
            "spoiler": request.spoiler,
        }
    )


def request_from(db: Database, text: str) -> ImageRequest:
    raw = json.loads(text)
    size = raw["size"]
    width, _, height = size.partition("x")
    return ImageRequest(
        prompt=raw["prompt"],
        size=Size(0, 0) if size == "auto" else Size(int(width), int(height)),
        quality=raw["quality"],
        format=raw["format"],
        compression=raw["compression"],
        count=raw["count"],
        model=raw["model"],
        references=tuple(_image(db, r) for r in raw["references"]),
        mask=_image(db, raw["mask"]) if raw["mask"] else None,
        relax=raw.get("relax"),  # a button on a relax image keeps its mode
        spoiler=bool(raw.get("spoiler")),  # a late delivery is hidden as the first would have been
    )


def save_job(db: Database, job_id: str, who: Requester, request: ImageRequest, now: datetime) -> None:
    """Keep a job's request as it starts, so its Re-roll works whatever happens to its delivery."""
    text = request_json(db, request, f"r:{job_id}")
    Results(db).save(job_id=job_id, who=who, request=text, created=now)


def save_images(db: Database, job_id: str, images: list[dict[str, Any]]) -> None:
    Results(db).set_images(job_id=job_id, images=images)


def mark_deleted(db: Database, job_id: str, index: int) -> None:
    """Image `index` (1-based) of a job was deleted where it was posted: its buttons say so from now on."""
    found = Results(db).get(job_id)
    if found is not None and 0 < index <= len(found.images):
        images = [dict(image) for image in found.images]
        images[index - 1]["deleted"] = True
        save_images(db, job_id, images)


def load_job(db: Database, job_id: str, oldest: datetime) -> Record:
    """A job's record; UserError (shown privately) if it is unknown or older than the buttons' life."""
    found = Results(db).get(job_id)
    if found is None:
        raise UserError(msg("actions.unknown_job"))
    created = found.created
    if created < oldest:
        raise UserError(msg("actions.button_expired", n=(datetime.now(created.tzinfo) - oldest).days))
    return Record(job_id, found.who, request_from(db, found.request), found.images, created)


def last_job(db: Database, who: Requester) -> str:
    """The id of `who`'s latest job with images (the console's actions act on it); UserError if none."""
    job_id = Results(db).latest_with_images(who)
    if job_id is None:
        raise UserError(msg("actions.no_image_yet"))
    return job_id


def save_confirmation(
    db: Database,
    who: Requester,
    request: ImageRequest,
    now: datetime,
    admit: Callable[[], None] | None = None,
) -> str:
    """Store a price check for `who`'s Render: first `admit` (the job's pace and quota checks, reserving
    nothing; raises UserError), then at most MAX_PENDING waiting per user; only then the request and its images.
    Call inside a write transaction (Ledger.run_db), so two at once cannot both slip under the limit."""
    if admit is not None:
        admit()
    store = Results(db)
    waiting = store.waiting_checks(who, since=now - CONFIRM_TTL)
    if len(waiting) >= MAX_PENDING:
        frees = waiting[0] + CONFIRM_TTL - now
        raise UserError(
            msg(
                "actions.too_many_pending",
                waiting=len(waiting),
                most=MAX_PENDING,
                seconds=max(1, math.ceil(frees.total_seconds())),
            )
        )
    token = secrets.token_hex(8)
    store.add_check(token=token, who=who, request=request_json(db, request, f"c:{token}"), created=now)
    return token


def claim_confirmation(
    db: Database, token: str, who: Requester, now: datetime, render: bool
) -> ImageRequest | None:
    """Render (the stored request, once) or Cancel (None) a pending price check of `who`'s own. Either way its
    stored request is let go at once (a Render's job keeps its own copy); the row stays, to answer a second
    click, until the purge."""
    store = Results(db)
    check = store.get_check(token)
    if check is None:
        raise UserError(msg("actions.check_gone"))
    owner = check.who
    if (owner.platform, owner.workspace, owner.user) != (who.platform, who.workspace, who.user):
        raise UserError(msg("actions.not_your_check"))
    if check.state != results.PENDING:
        raise UserError(msg("actions.already_answered"))
    if render and check.created < now - CONFIRM_TTL:
        raise UserError(msg("actions.check_expired"))
    request = request_from(db, check.request) if render else None
    if not store.answer_check(token=token, render=render):
        raise UserError(msg("actions.already_answered"))
    return request


def purge(db: Database, now: datetime, days: int) -> Purged:
    """Delete results (with their requests) older than `days` (IMAGEBOT_ACTIONS_DAYS: their buttons have
    expired), price checks older than an hour, and the input images nobody holds any more; the outbox bytes of
    delivered images go, and those never posted are kept for `imagebot redeliver` as long as buttons live.
    Call inside a write transaction (Ledger.run_db); on PostgreSQL it waits for the transactions storing
    images to finish, so an image just taken by a new request is never deleted under it."""
    return Results(db).purge(results_before=now - timedelta(days=days), checks_before=now - CONFIRM_KEPT)


def buttons(
    record_id: str, request: ImageRequest, images: list[tuple[int, int]], prices: PriceTable, estimate: Any
) -> list[Button]:
    """The actions of a finished job, each with what a click reserves (`estimate(request)`: the whole job's)."""
    out = [Button(Kind.REROLL, record_id, 0, "", estimate(request))]
    rule = prices.model(request.model).capabilities.sizes
    numbered = len(images) > 1
    for n, (width, height) in enumerate(images, start=1):
        base = ImageInput("base.png", b"", width, height, "png", False)
        vary = replace(request, references=(base,), mask=None, count=1, size=Size(width, height))
        out.append(Button(Kind.VARY, record_id, n, "", estimate(vary)))
        big = upscale_size(width, height, rule)
        if big is not None:
            out.append(
                Button(Kind.UPSCALE, record_id, n, "", estimate(replace(vary, size=big, quality="high")))
            )
    for n in range(1, len(images) + 1):
        out.append(Button(Kind.EDIT, record_id, n, "", None))
        out.append(Button(Kind.REMOVE, record_id, n, "", None))
    out.append(Button(Kind.INFO, record_id, 0, "", None))
    return [replace(b, label=lazy(_label, b, numbered)) for b in out]


def _label(button: Button, numbered: bool, locale: str = ENGLISH) -> str:
    """`Vary 2 · $0.0420`: the action, the image's number when there are several, what a click reserves."""
    words = LABELS[button.kind].render(locale) + (f" {button.index}" if numbered and button.index else "")
    return words + (f" · {money(button.cost_micros, locale)}" if button.cost_micros is not None else "")
