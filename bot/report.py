"""Usage reports (docs/rules.md §6): sums over the ledger rows of a period (bot/store/usage.py), as text, as a PNG
chart, as CSV.

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

from bot.i18n import ENGLISH, money, msg, number, say, translate
from bot.model.pricing import format_usd
from bot.policy.quota import Tenant
from bot.store import usage
from bot.store.ledger import Ledger


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
    by_channel: list[tuple[str, int, int]] = field(default_factory=list)  # channel, images, micros
    by_model: list[tuple[str, int, int]] = field(default_factory=list)  # model, images, micros

    def text(self, locale: str = ENGLISH) -> str:
        """Reads well in Slack and Discord (no platform markup), in the reader's language."""
        median = (
            say(locale, "report.median", seconds=number(self.median_render_s, locale, 1))
            if self.median_render_s is not None
            else ""
        )
        lines = [
            say(
                locale,
                "report.head",
                scope=translate(self.scope, locale),
                days=self.days,
                images=self.images,
                spent=money(self.spend_micros, locale),
                failed=self.failures,
                median=median,
            )
        ]
        comma = say(locale, "report.comma")

        def used(n: int, m: int) -> str:
            return say(locale, "report.used", n=n, cost=money(m, locale))

        if self.top_users:
            users = comma.join(f"{user} {used(n, m)}" for user, n, m in self.top_users)
            lines.append(say(locale, "report.top_users", users=users))
        if self.by_size_quality:
            sizes = comma.join(
                f"{size} {quality} {used(n, m)}" for size, quality, n, m in self.by_size_quality
            )
            lines.append(say(locale, "report.by_size", sizes=sizes))
        if any(mode == "relax" for mode, _, _ in self.by_mode):  # relax mode bills at the batch price
            modes = comma.join(
                say(locale, "report.relax_mode" if mode == "relax" else "report.mode", mode=mode)
                + f" {used(n, m)}"
                for mode, n, m in self.by_mode
            )
            lines.append(say(locale, "report.by_mode", modes=modes))
        return "\n".join(lines)


def _rows(
    tenant: Tenant | None,
    channel: str | None,
    user: str | None,
    since: datetime,
    until: datetime | None = None,
) -> usage.Scope:
    return usage.Scope(
        since.isoformat(timespec="milliseconds"),
        tenant.platform if tenant else None,
        tenant.workspace if tenant else None,
        channel,
        user,
        until.astimezone(UTC).isoformat(timespec="milliseconds") if until is not None else None,
    )


def _scope(tenant: Tenant | None, channel: str | None, user: str | None) -> str:
    where = msg("report.of_tenant", tenant=str(tenant)) if tenant else msg("report.all_tenants_where")
    if channel and user:
        return msg("report.user_in_channel", user=user, channel=channel, where=where)
    if channel or user:
        return (
            msg("report.channel", channel=channel, where=where)
            if channel
            else msg("report.user", user=user, where=where)
        )
    return msg("report.all_channels", tenant=str(tenant)) if tenant else msg("report.all_tenants")


def chart_days(report: Report) -> list[str]:
    """The chart's bars: every day the figures sum over (whole UTC days ending today, period_start)."""
    return [(report.since + timedelta(days=i)).strftime("%Y-%m-%d") for i in range(report.days)]


def period_start(now: datetime, days: int) -> datetime:
    """ "The last N days" of a report, its chart and its export: N calendar days in UTC, today the last of
    them (so far), from the midnight that starts the first. The chart draws one bar per day: N bars."""
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days - 1)


async def build(
    ledger: Ledger,
    *,
    tenant: Tenant | None = None,
    channel: str | None = None,
    user: str | None = None,
    days: int = 30,
    now: datetime | None = None,
    until: datetime | None = None,
    top: int | None = 5,
) -> Report:
    """Every figure is a direct SQL sum over the ledger for the period, in `tenant` (None: every tenant,
    for operators; users are then named with their tenant, as `slack:T1:U1`). A channel or user id is one of
    `tenant`'s; without a tenant it matches that id in every tenant. The period is the `days` days up to `now`
    (`period_start`); with `until` (the dashboard's date range) nothing from `until` on counts. `top`: how many
    users to name (None: every one)."""
    since = period_start(now or datetime.now(UTC), days)
    figures = await ledger.usage.figures(scope=_rows(tenant, channel, user, since, until), top=top)
    return summarize(figures, scope=_scope(tenant, channel, user), days=days, since=since)


def summarize(figures: usage.Figures, *, scope: str, days: int, since: datetime) -> Report:
    """The report of the sums of a scope (bot/store/usage.py `figures`)."""
    latencies = figures.latencies_ms
    return Report(
        scope,
        days,
        since,
        figures.images,
        figures.spend_micros,
        figures.failures,
        figures.top_users,
        figures.by_size_quality,
        median(latencies) / 1000 if latencies else None,
        figures.daily,
        figures.by_mode,
        figures.by_channel,
        figures.by_model,
    )


def chart_png(report: Report, width: int = 900, height: int = 360) -> bytes:
    """Daily spend bars with image counts on top, as PNG bytes. CPU work: run in a thread."""
    days = chart_days(report)
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
    columns, rows = await ledger_rows(ledger, tenant=tenant, channel=channel, user=user, days=days)
    await asyncio.to_thread(_write_csv, path, columns, rows)
    return len(rows)


async def ledger_rows(
    ledger: Ledger,
    *,
    tenant: Tenant | None = None,
    channel: str | None = None,
    user: str | None = None,
    days: int = 30,
    now: datetime | None = None,
    until: datetime | None = None,
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The CSV export's columns and the ledger rows of the period (as `build` takes it), in id order."""
    since = period_start(now or datetime.now(UTC), days)
    rows = await ledger.usage.export_rows(scope=_rows(tenant, channel, user, since, until))
    return list(usage.EXPORT_COLUMNS), rows


Rows = list[dict[str, Any]]


async def recent_jobs(ledger: Ledger, *, tenant: Tenant | None, limit: int = 24) -> list[tuple[Rows, Rows]]:
    """The latest `limit` jobs of `tenant` (None: of every tenant), newest first: each job's ledger rows and its
    stored images (bot/store/usage.py `jobs`)."""
    return await ledger.usage.jobs(
        platform=tenant.platform if tenant else None,
        workspace=tenant.workspace if tenant else None,
        limit=limit,
    )


async def job(ledger: Ledger, *, tenant: Tenant | None, job_id: str) -> tuple[Rows, Rows] | None:
    """One job of `tenant` (None: of any tenant), or None if `tenant` has no such job: another tenant's job id
    is as unknown as one that never existed."""
    found = await ledger.usage.jobs(
        platform=tenant.platform if tenant else None,
        workspace=tenant.workspace if tenant else None,
        job_ids=[job_id],
    )
    return found[0] if found else None


async def tenants(ledger: Ledger) -> list[Tenant]:
    """Every tenant with rows in the ledger, in order (the operators' tenant picker)."""
    return [Tenant(p, w) for p, w in await ledger.usage.tenants()]


def _write_csv(path: str, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)
