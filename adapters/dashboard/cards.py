"""What the dashboard shows of one job (its card) and of a period's daily spend (its chart), as plain data
for the templates. No money is summed here that a report does not sum: a card adds up one job's own rows."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from bot.model.pricing import format_usd
from bot.store.jobstate import PAID


@dataclass(frozen=True, slots=True)
class Card:
    """One job as the gallery and the job page show it."""

    job_id: str
    tenant: str
    channel: str
    user: str
    prompt: str
    model: str
    size: str
    quality: str
    format: str
    mode: str
    status: str  # each row's status, e.g. "delivered" or "delivered, failed"
    rows: int  # images asked for (one ledger row each)
    images: int  # images made (paid)
    reserved: str
    charged: str
    request_ids: tuple[str, ...]
    created: str
    render_s: float | None
    image_numbers: tuple[int, ...]  # the images a browser can ask for (/dashboard/image/<job>/<n>)


def card(rows: list[dict[str, Any]], images: list[dict[str, Any]]) -> Card:
    """The card of one job from its ledger rows (one per image, in `seq` order) and where its images live
    (the stored result's `images`). The one place that decides what a card says: swap it for the chat's Info
    card when they should read the same."""
    first = rows[0]
    request_ids: list[str] = []
    for row in rows:
        for rid in json.loads(row.get("request_ids") or "[]"):
            if rid not in request_ids:
                request_ids.append(rid)
    statuses: list[str] = []
    for row in rows:
        if row["status"] not in statuses:
            statuses.append(str(row["status"]))
    latencies = [int(r["latency_ms"]) for r in rows if r.get("latency_ms") is not None]
    return Card(
        job_id=str(first["job_id"]),
        tenant=f"{first['platform']}:{first['workspace']}",
        channel=str(first.get("channel") or ""),
        user=str(first.get("user") or ""),
        prompt=str(first.get("prompt") or ""),
        model=str(first.get("model") or ""),
        size=str(first.get("size") or ""),
        quality=str(first.get("quality") or ""),
        format=str(first.get("format") or ""),
        mode=str(first.get("mode") or "fast"),
        status=", ".join(statuses),
        rows=len(rows),
        images=sum(1 for r in rows if r["status"] in PAID),
        reserved=format_usd(sum(int(r["reserved_micros"] or 0) for r in rows)),
        charged=format_usd(sum(int(r["actual_micros"] or 0) for r in rows)),
        request_ids=tuple(request_ids),
        created=str(first.get("created_at") or "")[:19].replace("T", " ") + " UTC",
        render_s=max(latencies) / 1000 if latencies else None,
        image_numbers=tuple(
            i for i, image in enumerate(images, 1) if image.get("where") and not image.get("deleted")
        ),
    )


@dataclass(frozen=True, slots=True)
class Bar:
    day: str
    micros: int
    images: int
    x: float
    y: float
    w: float
    h: float
    label: str  # the date under every few bars


@dataclass(frozen=True, slots=True)
class Tick:
    y: float
    label: str


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    left: int
    right: int
    bottom: int
    bars: tuple[Bar, ...]
    ticks: tuple[Tick, ...]


def daily_chart(
    daily: list[tuple[str, int, int]], first: date, last: date, width: int = 960, height: int = 280
) -> Chart:
    """Bars of daily spend (a report's `daily`: day, micros, images), one per day from `first` to `last`
    (days without spend too), drawn as inline SVG by the template."""
    by_day = {d: (m, n) for d, m, n in daily}
    days = [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
    left, right, top, bottom = 70, width - 16, 16, height - 28
    peak = max([by_day.get(d, (0, 0))[0] for d in days] + [1])
    slot = (right - left) / max(1, len(days))
    every = max(1, len(days) // 8)
    bars = []
    for i, day in enumerate(days):
        micros, images = by_day.get(day, (0, 0))
        h = (bottom - top) * micros / peak
        bars.append(
            Bar(
                day=day,
                micros=micros,
                images=images,
                x=round(left + i * slot + slot * 0.12, 1),
                y=round(bottom - h, 1),
                w=round(max(1.0, slot * 0.76), 1),
                h=round(h, 1),
                label=day[5:] if i % every == 0 else "",
            )
        )
    ticks = tuple(
        Tick(round(bottom - (bottom - top) * frac, 1), format_usd(int(peak * frac))) for frac in (0.5, 1.0)
    )
    return Chart(width, height, left, right, bottom, tuple(bars), ticks)
