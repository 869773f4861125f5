"""A job's card (`Info`, `/imagine-info`) and a person's history (`/imagine-history`), from the ledger's rows
and the job's stored request: one composition (`compose`) for every place that shows a job (the chat
platforms, the console, the CLI, the dashboard).

Who may see a card: the person who asked, and the tenant's admins; nobody across tenants. Whoever may not
gets the same answer as for a job that does not exist (``no_such_job``), so a card leaks nothing, not
even that the job exists.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.errors import UserError
from bot.i18n import Msg, msg
from bot.model.request import Requester
from bot.store import people
from bot.store.ledger import Ledger

DEFAULT_HISTORY = 10
MAX_HISTORY = 50
_JOB_ID = re.compile(r"^[0-9a-f]{8,64}$")


@dataclass(frozen=True, slots=True)
class JobCard:
    """Everything a card shows about one job (money in micro-dollars, times in the database's clock)."""

    job_id: str
    who: Requester  # who asked, and where
    asked_at: datetime | None
    prompt: str | None  # None: not stored (IMAGEBOT_STORE_PROMPTS=0, and the request purged)
    model: str
    size: str  # as asked (`2048x2048`, `auto`)
    sizes: tuple[str, ...]  # as rendered, one per image that came (`2048x1152`)
    quality: str
    format: str
    count: int
    mode: str  # fast | relax
    statuses: tuple[str, ...]  # one per image: delivered, failed, possibly_billed, ...
    references: tuple[str, ...]  # `name (WxH)` per input image; () for a generation
    mask: str | None
    kept: bool  # the stored request (its input images, its buttons) is still kept
    reserved_micros: int
    charged_micros: int
    request_ids: tuple[str, ...]
    render_seconds: float | None  # the longest image's render time (they render side by side)
    where: dict[str, Any]  # where it is shown: the view's context, plus `images`: where each image lives

    @property
    def images(self) -> list[dict[str, Any]]:
        return list(self.where.get("images") or [])


def compose(rows: list[dict[str, Any]], result: dict[str, Any] | None) -> JobCard:
    """A job's card from its ledger rows (bot/store/people.py `job_rows`, one per image) and its stored request
    (`job_result`, or None once purged): the one place that decides what a card says."""
    first = rows[0]
    request = (result or {}).get("request") or {}
    images = (result or {}).get("images") or []

    def shown(ref: dict[str, Any]) -> str:
        return f"{ref.get('name') or 'image'} ({ref.get('width')}x{ref.get('height')})"

    ids: list[str] = []
    for row in rows:
        for request_id in json.loads(row["request_ids"] or "[]"):
            if request_id not in ids:
                ids.append(request_id)
    latencies = [row["latency_ms"] for row in rows if row["latency_ms"]]
    context = json.loads(first["context"] or "{}")
    asked = first["created_at"]
    return JobCard(
        job_id=first["job_id"],
        who=Requester(
            first["platform"] or "", first["workspace"] or "", first["channel"] or "", first["user"] or ""
        ),
        asked_at=datetime.fromisoformat(asked) if asked else None,
        prompt=first["prompt"] if first["prompt"] is not None else request.get("prompt"),
        model=first["model"] or request.get("model") or "",
        size=first["size"] or request.get("size") or "",
        sizes=tuple(f"{i['width']}x{i['height']}" for i in images if i.get("width")),
        quality=first["quality"] or "",
        format=first["format"] or "",
        count=len(rows),
        mode=first["mode"] or "fast",
        statuses=tuple(str(row["status"]) for row in rows),
        references=tuple(shown(r) for r in request.get("references") or []),
        mask=shown(request["mask"]) if request.get("mask") else None,
        kept=result is not None,
        reserved_micros=sum(int(row["reserved_micros"] or 0) for row in rows),
        charged_micros=sum(int(row["actual_micros"] or 0) for row in rows),
        request_ids=tuple(ids),
        render_seconds=max(latencies) / 1000 if latencies else None,
        where={**context, "images": [i.get("where") or {} for i in images]},
    )


def _visible(card_who: Requester, who: Requester, admin: bool) -> bool:
    same_tenant = (card_who.platform, card_who.workspace) == (who.platform, who.workspace)
    return same_tenant and (card_who.user == who.user or admin)


async def card(ledger: Ledger, who: Requester, ref: str, *, admin: bool = False) -> JobCard:
    """The card of job `ref` (its id, or N: the Nth of `who`'s history, 1 the latest; nothing: the latest) for
    `who`: theirs, or any of their tenant's for an admin. UserError `no_such_job` for anything else,
    whatever the reason."""
    ref = ref.strip() or "1"
    if ref.isascii() and ref.isdigit() and 1 <= int(ref) <= 1000:
        ids = await ledger.read_db(
            lambda db: people.recent_jobs(db, who.platform, who.workspace, who.user, 1, int(ref) - 1)
        )
        job_id = ids[0] if ids else ""
    elif _JOB_ID.match(ref.lower()):
        job_id = ref.lower()
    else:
        raise UserError(no_such_job(ref))
    found = await ledger.read_db(lambda db: _load(db, who, job_id)) if job_id else None
    if found is None or not _visible(found.who, who, admin):
        raise UserError(no_such_job(ref))
    return found


def _load(db: Any, who: Requester, job_id: str) -> JobCard | None:
    rows = people.job_rows(db, who.platform, who.workspace, job_id)
    return compose(rows, people.job_result(db, job_id)) if rows else None


def parse_count(args: str) -> int:
    """`/imagine-history [N]`: how many jobs (default DEFAULT_HISTORY, at most MAX_HISTORY)."""
    text = args.strip()
    if not text:
        return DEFAULT_HISTORY
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_HISTORY:
        raise UserError(history_usage(text, MAX_HISTORY))
    return int(text)


async def history(ledger: Ledger, who: Requester, count: int = DEFAULT_HISTORY) -> list[JobCard]:
    """`who`'s own latest `count` jobs in their tenant, newest first."""

    def read(db: Any) -> list[JobCard]:
        ids = people.recent_jobs(db, who.platform, who.workspace, who.user, count)
        cards = [_load(db, who, job_id) for job_id in ids]
        return [c for c in cards if c is not None]

    return await ledger.read_db(read)


def no_such_job(ref: str) -> Msg:
    """Any job the caller may not see, or that does not exist: the same words, so nothing leaks."""
    return msg("people.no_such_job", ref=repr(ref))


def history_usage(text: str, most: int) -> Msg:
    return msg("people.history_usage", text=repr(text), most=most)
