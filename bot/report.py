"""Usage reports (SPEC §6): data from direct SQL over the ledger, as text, as a PNG chart, as CSV.

The chart is drawn with Pillow: it is already a dependency, starts instantly, and a bar chart
needs nothing more (matplotlib would add ~40 MB and a second of import time for one picture).
"""

from __future__ import annotations

import asyncio
import csv
import io
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from statistics import median
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from bot.model.pricing import format_usd
from bot.policy.quota import Tenant
from bot.store.jobstate import SQL_PAID
from bot.store.ledger import Ledger

FAILED = ("failed", "possibly_billed", "interrupted", "cancelled")


@dataclass(frozen=True, slots=True)
class Report:
    """A usage report as data. Money in micro-dollars."""

    scope: str  # "channel C123 of slack:T1", "all channels of slack:T1", "all tenants"
    days: int
    since: datetime
    images: int
    spend_micros: int
    failures: int
    top_users: list[tuple[str, int, int]]  # user (across tenants: "slack:T1:U1"), images, micros
    by_size_quality: list[tuple[str, str, int, int]]  # size, quality, images, micros
    median_render_s: float | None
    daily: list[tuple[str, int, int]]  # day (UTC date), micros, images
    by_mode: list[tuple[str, int, int]] = field(default_factory=list)  # fast | relax, images, micros

    def text(self) -> str:
        """Reads well in Slack and Discord (no platform markup)."""
        lines = [
            f"Usage for {self.scope}, last {self.days} days: {self.images} images, "
            f"{format_usd(self.spend_micros)} spent, {self.failures} failed"
            + (f", median render {self.median_render_s:.1f} s" if self.median_render_s is not None else "")
        ]
        if self.top_users:
            lines.append(
                "Top users: " + ", ".join(f"{user} {n} img {format_usd(m)}" for user, n, m in self.top_users)
            )
        if self.by_size_quality:
            lines.append(
                "By size and quality: "
                + ", ".join(
                    f"{size} {quality} {n} img {format_usd(m)}"
                    for size, quality, n, m in self.by_size_quality
                )
            )
        if any(mode == "relax" for mode, _, _ in self.by_mode):  # relax mode bills at the batch price
            lines.append(
                "By mode: "
                + ", ".join(
                    f"{mode}{' (half price)' if mode == 'relax' else ''} {n} img {format_usd(m)}"
                    for mode, n, m in self.by_mode
                )
            )
        return "\n".join(lines)


def _where(
    tenant: Tenant | None, channel: str | None, user: str | None, since: datetime
) -> tuple[str, list[Any]]:
    clauses, params = ["created_at >= ?"], [since.isoformat(timespec="milliseconds")]
    if tenant:
        clauses.append("platform = ? AND workspace = ?")
        params += [tenant.platform, tenant.workspace]
    if channel:
        clauses.append("channel = ?")
        params.append(channel)
    if user:
        clauses.append('"user" = ?')
        params.append(user)
    return " AND ".join(clauses), params


def _scope(tenant: Tenant | None, channel: str | None, user: str | None) -> str:
    where = f"of {tenant}" if tenant else "(all tenants)"
    if channel and user:
        return f"user {user} in channel {channel} {where}"
    if channel or user:
        return f"channel {channel} {where}" if channel else f"user {user} {where}"
    return f"all channels of {tenant}" if tenant else "all tenants"


async def build(
    ledger: Ledger,
    *,
    tenant: Tenant | None = None,
    channel: str | None = None,
    user: str | None = None,
    days: int = 30,
    now: datetime | None = None,
) -> Report:
    """Every figure is a direct SQL sum over the ledger for the period, in `tenant` (None: every tenant,
    for operators; users are then named with their tenant, as `slack:T1:U1`). A channel or user id is one of
    `tenant`'s; without a tenant it matches that id in every tenant."""
    now = now or datetime.now(UTC)
    since = (now - timedelta(days=days)).astimezone(UTC)
    where, params = _where(tenant, channel, user, since)
    q = ledger.query
    images, spend, failures = (
        await q(
            f"SELECT coalesce(sum(CASE WHEN status IN {SQL_PAID} THEN 1 ELSE 0 END), 0), coalesce(sum(actual_micros), 0), "
            f"coalesce(sum(CASE WHEN status IN {FAILED} THEN 1 ELSE 0 END), 0) FROM ledger WHERE {where}",
            params,
        )
    )[0]
    who = '"user"' if tenant else "platform || ':' || workspace || ':' || \"user\""
    top = await q(
        f"SELECT {who}, sum(CASE WHEN status IN {SQL_PAID} THEN 1 ELSE 0 END), sum(actual_micros) FROM ledger WHERE {where} "
        "GROUP BY 1 ORDER BY sum(actual_micros) DESC, 1 LIMIT 5",
        params,
    )
    by = await q(
        f"SELECT size, quality, sum(CASE WHEN status IN {SQL_PAID} THEN 1 ELSE 0 END), sum(actual_micros) FROM ledger WHERE {where} "
        "GROUP BY size, quality ORDER BY sum(actual_micros) DESC",
        params,
    )
    modes = await q(
        f"SELECT mode, sum(CASE WHEN status IN {SQL_PAID} THEN 1 ELSE 0 END), sum(actual_micros) FROM ledger WHERE {where} GROUP BY mode ORDER BY mode",
        params,
    )
    latencies = [
        r[0]
        for r in await q(
            f"SELECT latency_ms FROM ledger WHERE {where} AND status IN {SQL_PAID} AND latency_ms IS NOT NULL",
            params,
        )
    ]
    daily = await q(
        f"SELECT substr(created_at, 1, 10), sum(actual_micros), sum(CASE WHEN status IN {SQL_PAID} THEN 1 ELSE 0 END) FROM ledger "
        f"WHERE {where} GROUP BY 1 ORDER BY 1",
        params,
    )
    return Report(
        _scope(tenant, channel, user),
        days,
        since,
        int(images),
        int(spend),
        int(failures),
        [(u, int(n), int(m)) for u, n, m in top],
        [(s, ql, int(n), int(m)) for s, ql, n, m in by],
        median(latencies) / 1000 if latencies else None,
        [(d, int(m), int(n)) for d, m, n in daily],
        [(str(mode), int(n), int(m)) for mode, n, m in modes],
    )


def chart_png(report: Report, width: int = 900, height: int = 360) -> bytes:
    """Daily spend bars with image counts on top, as PNG bytes. CPU work: run in a thread."""
    # From the (partial) day `since` falls on to today: every day the figures sum over gets its bar.
    days = [(report.since + timedelta(days=i)).strftime("%Y-%m-%d") for i in range(report.days + 1)]
    by_day = {d: (m, n) for d, m, n in report.daily}
    values = [by_day.get(d, (0, 0)) for d in days]
    top = max([m for m, _ in values] + [1])
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=14)
    small = ImageFont.load_default(size=11)
    left, bottom, right, top_pad = 70, height - 40, width - 20, 40
    draw.text(
        (left, 10),
        f"Daily spend, {report.scope}, last {report.days} days "
        f"(total {format_usd(report.spend_micros)}, {report.images} images)",
        fill="black",
        font=font,
    )
    draw.line((left, top_pad, left, bottom), fill="#888")
    draw.line((left, bottom, right, bottom), fill="#888")
    for frac in (0.5, 1.0):
        y = bottom - (bottom - top_pad) * frac
        draw.line((left - 4, y, right, y), fill="#ddd")
        draw.text((5, y - 7), format_usd(int(top * frac)), fill="#444", font=small)
    slot = (right - left) / max(1, len(days))
    for i, (micros, count) in enumerate(values):
        x0 = left + i * slot + slot * 0.15
        x1 = left + (i + 1) * slot - slot * 0.15
        y = bottom - (bottom - top_pad) * micros / top
        if micros:
            draw.rectangle((x0, y, x1, bottom), fill="#4a7bd0")
        if count:
            draw.text((x0, y - 14), str(count), fill="#c0392b", font=small)
        if i % max(1, len(days) // 6) == 0:
            draw.text((x0, bottom + 5), days[i][5:], fill="#444", font=small)
    out = io.BytesIO()
    img.save(out, "PNG", optimize=True)
    return out.getvalue()


async def export_csv(
    ledger: Ledger,
    path: str,
    *,
    tenant: Tenant | None = None,
    channel: str | None = None,
    user: str | None = None,
    days: int = 30,
) -> int:
    """Write the ledger rows of the period (in `tenant`, or every tenant) to `path`; returns the row count."""
    since = datetime.now(UTC) - timedelta(days=days)
    where, params = _where(tenant, channel, user, since)
    columns = [
        "id",
        "job_id",
        "seq",
        "platform",
        "workspace",
        "channel",
        "user",
        "model",
        "size",
        "quality",
        "format",
        "status",
        "reserved_micros",
        "actual_micros",
        "text_tokens",
        "image_tokens",
        "output_tokens",
        "request_ids",
        "attempts",
        "latency_ms",
        "error",
        "created_at",
        "finished_at",
    ]
    names = ", ".join(f'"{c}"' for c in columns)
    rows = await ledger.query(f"SELECT {names} FROM ledger WHERE {where} ORDER BY id", params)
    await asyncio.to_thread(_write_csv, path, columns, rows)
    return len(rows)


def _write_csv(path: str, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)
