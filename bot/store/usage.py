"""Reading the ledger back: the sums behind usage reports, a user's recent images, a tenant's spend, the rows
of an export and the tenants the ledger has seen. Every figure is a direct SQL sum over the ledger rows of a
period (the counters are for admission, bot/store/counters.py); a paid image is a row of `jobstate.PAID`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.store.jobstate import SQL_PAID
from bot.store.people import CARD_COLUMNS, CARD_SELECT
from bot.store.repo import Db, Runner

FAILED = ("failed", "possibly_billed", "interrupted", "cancelled")
_IMAGES = f"sum(CASE WHEN status IN {SQL_PAID} THEN 1 ELSE 0 END)"
EXPORT_COLUMNS = (
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
)


@dataclass(frozen=True, slots=True)
class Scope:
    """Which rows: created at or after `since` (ISO 8601, UTC), in one tenant (platform and workspace; None:
    every tenant), one channel and one user (None: all)."""

    since: str
    platform: str | None = None
    workspace: str | None = None
    channel: str | None = None
    user: str | None = None
    until: str | None = None  # a closed range (the dashboard's from/to): rows before this only

    def sql(self) -> tuple[str, list[Any]]:
        clauses = ["created_at >= ?"]
        params: list[Any] = [self.since]
        if self.until is not None:
            clauses.append("created_at < ?")
            params.append(self.until)
        if self.platform is not None:
            clauses.append("platform = ? AND workspace = ?")
            params += [self.platform, self.workspace]
        if self.channel:
            clauses.append("channel = ?")
            params.append(self.channel)
        if self.user:
            clauses.append('"user" = ?')
            params.append(self.user)
        return " AND ".join(clauses), params


@dataclass(frozen=True, slots=True)
class Figures:
    """The sums of one scope. Money in micro-dollars; images are paid images."""

    images: int
    spend_micros: int
    failures: int
    top_users: list[tuple[str, int, int]]  # user (every tenant: "platform:workspace:user"), images, micros
    by_size_quality: list[tuple[str, str, int, int]]  # size, quality, images, micros
    by_mode: list[tuple[str, int, int]]  # fast | relax, images, micros
    latencies_ms: list[int]  # of paid images
    daily: list[tuple[str, int, int]]  # day (UTC date), micros, images
    by_channel: list[tuple[str, int, int]] = field(default_factory=list)  # channel, images, micros
    by_model: list[tuple[str, int, int]] = field(default_factory=list)  # model, images, micros


@dataclass(frozen=True, slots=True)
class RecentJob:
    """One of a user's latest jobs with paid images."""

    job_id: str
    prompt: str | None
    size: str
    micros: int
    context: str | None  # JSON, as the adapter recorded it
    created_at: str


def figures(db: Db, *, scope: Scope, top: int | None = 5) -> Figures:
    """The sums of `scope`; `top`: how many users to name, the biggest spenders first (None: every one)."""
    where, params = scope.sql()

    def rows(sql: str) -> list[tuple[Any, ...]]:
        return list(db.execute(sql, params).fetchall())

    images, spend, failures = rows(
        f"SELECT coalesce({_IMAGES}, 0), coalesce(sum(actual_micros), 0), "
        f"coalesce(sum(CASE WHEN status IN {FAILED} THEN 1 ELSE 0 END), 0) FROM ledger WHERE {where}"
    )[0]
    # Across tenants a user is named with their tenant.
    who = '"user"' if scope.platform is not None else "platform || ':' || workspace || ':' || \"user\""
    top_users = rows(
        f"SELECT {who}, {_IMAGES}, sum(actual_micros) FROM ledger WHERE {where} "
        f"GROUP BY 1 ORDER BY sum(actual_micros) DESC, 1" + (f" LIMIT {int(top)}" if top is not None else "")
    )
    place = "channel" if scope.platform is not None else "platform || ':' || workspace || ':' || channel"
    channels = rows(
        f"SELECT {place}, {_IMAGES}, sum(actual_micros) FROM ledger WHERE {where} "
        "GROUP BY 1 ORDER BY sum(actual_micros) DESC, 1"
    )
    models = rows(
        f"SELECT model, {_IMAGES}, sum(actual_micros) FROM ledger WHERE {where} "
        "GROUP BY model ORDER BY sum(actual_micros) DESC, model"
    )
    by = rows(
        f"SELECT size, quality, {_IMAGES}, sum(actual_micros) FROM ledger WHERE {where} "
        "GROUP BY size, quality ORDER BY sum(actual_micros) DESC"
    )
    modes = rows(
        f"SELECT mode, {_IMAGES}, sum(actual_micros) FROM ledger WHERE {where} GROUP BY mode ORDER BY mode"
    )
    latencies = rows(
        f"SELECT latency_ms FROM ledger WHERE {where} AND status IN {SQL_PAID} AND latency_ms IS NOT NULL"
    )
    daily = rows(
        f"SELECT substr(created_at, 1, 10), sum(actual_micros), {_IMAGES} FROM ledger "
        f"WHERE {where} GROUP BY 1 ORDER BY 1"
    )
    return Figures(
        int(images),
        int(spend),
        int(failures),
        [(u, int(n), int(m)) for u, n, m in top_users],
        [(s, q, int(n), int(m)) for s, q, n, m in by],
        [(str(mode), int(n), int(m)) for mode, n, m in modes],
        [r[0] for r in latencies],
        [(d, int(m), int(n)) for d, m, n in daily],
        [(str(c or ""), int(n), int(m)) for c, n, m in channels],
        [(str(model or ""), int(n), int(m)) for model, n, m in models],
    )


def export_rows(db: Db, *, scope: Scope) -> list[tuple[Any, ...]]:
    """The rows of `scope`, `EXPORT_COLUMNS` each, oldest first."""
    where, params = scope.sql()
    columns = ", ".join('"user"' if c == "user" else c for c in EXPORT_COLUMNS)
    return list(db.execute(f"SELECT {columns} FROM ledger WHERE {where} ORDER BY id", params).fetchall())


def recent_jobs(db: Db, *, platform: str, workspace: str, user: str, limit: int) -> list[RecentJob]:
    """A user's latest jobs with paid images, newest first."""
    rows = db.conn.execute(
        "SELECT job_id, MAX(prompt), MAX(size), SUM(actual_micros), MAX(context), MAX(created_at) "
        f'FROM ledger WHERE platform=? AND workspace=? AND "user"=? AND status IN {SQL_PAID} '
        "GROUP BY job_id ORDER BY MAX(created_at) DESC LIMIT ?",
        [platform, workspace, user, limit],
    ).fetchall()
    return [RecentJob(str(j), p, str(s), int(m or 0), c, str(t)) for j, p, s, m, c, t in rows]


def month_spend(db: Db, *, platform: str, workspace: str, month: str) -> int:
    """A tenant's spend (micro-dollars) in one quota month (`YYYY-MM`, the ledger rows' `month`)."""
    (spent,) = db.conn.execute(
        "SELECT COALESCE(SUM(actual_micros), 0) FROM ledger WHERE platform=? AND workspace=? AND month=?",
        [platform, workspace, month],
    ).fetchone()
    return int(spent)


def tenants(
    db: Db, *, workspace: str | None = None, channel: str | None = None, user: str | None = None
) -> list[tuple[str, str]]:
    """(platform, workspace) of every tenant with ledger rows (of that workspace, channel and user, where
    given), sorted."""
    named = [(c, v) for c, v in (("workspace", workspace), ('"user"', user), ("channel", channel)) if v]
    where = " AND ".join(f"{column} = ?" for column, _ in named) or "1=1"
    rows = db.execute(
        f"SELECT DISTINCT platform, workspace FROM ledger WHERE {where} ORDER BY 1, 2", [v for _, v in named]
    ).fetchall()
    return [(p or "", w or "") for p, w in rows]


def latest_jobs(db: Db, *, platform: str | None, workspace: str | None, limit: int) -> list[str]:
    """The ids of a tenant's latest jobs (None: of every tenant), newest first."""
    where, params = (
        ("platform = ? AND workspace = ?", [platform, workspace]) if platform is not None else ("1=1", [])
    )
    rows = db.execute(
        f"SELECT job_id FROM ledger WHERE {where} GROUP BY job_id ORDER BY max(id) DESC LIMIT ?",
        [*params, limit],
    ).fetchall()
    return [str(r[0]) for r in rows]


def jobs(
    db: Db, *, job_ids: Sequence[str], platform: str | None, workspace: str | None
) -> list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """Each of `job_ids` that is the tenant's (None: any tenant's), in that order: its ledger rows (`seq` order,
    bot/store/people.py CARD_COLUMNS, the same as the chat's card) and its stored images (where each lives on its
    platform; none once purged). Another tenant's job is left out, as one that does not exist."""
    if not job_ids:
        return []
    marks = ", ".join("?" * len(job_ids))
    scope, params = (
        ("AND platform = ? AND workspace = ?", [platform, workspace]) if platform is not None else ("", [])
    )
    rows = db.execute(
        f"SELECT {CARD_SELECT} FROM ledger WHERE job_id IN ({marks}) {scope} ORDER BY job_id, seq, id",
        [*job_ids, *params],
    ).fetchall()
    stored = db.execute(
        f"SELECT job_id, images FROM results WHERE job_id IN ({marks}) {scope}", [*job_ids, *params]
    ).fetchall()
    images = {str(job_id): json.loads(text or "[]") for job_id, text in stored}
    by_job: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        entry = dict(zip(CARD_COLUMNS, row, strict=True))
        by_job.setdefault(str(entry["job_id"]), []).append(entry)
    return [(by_job[j], images.get(j, [])) for j in job_ids if j in by_job]


class Usage:
    """The functions above on the ledger's database thread (`Ledger.usage`)."""

    def __init__(self, run: Runner) -> None:
        self._run = run

    async def figures(self, *, scope: Scope, top: int | None = 5) -> Figures:
        return await self._run(lambda db: figures(db, scope=scope, top=top))

    async def jobs(
        self,
        *,
        platform: str | None,
        workspace: str | None,
        job_ids: Sequence[str] | None = None,
        limit: int = 24,
    ) -> list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
        """`jobs` of these ids, or (None) of the tenant's `limit` latest."""

        def read(db: Db) -> list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
            ids = (
                job_ids
                if job_ids is not None
                else latest_jobs(db, platform=platform, workspace=workspace, limit=limit)
            )
            return jobs(db, job_ids=ids, platform=platform, workspace=workspace)

        return await self._run(read)

    async def export_rows(self, *, scope: Scope) -> list[tuple[Any, ...]]:
        return await self._run(lambda db: export_rows(db, scope=scope))

    async def recent_jobs(self, *, platform: str, workspace: str, user: str, limit: int) -> list[RecentJob]:
        return await self._run(
            lambda db: recent_jobs(db, platform=platform, workspace=workspace, user=user, limit=limit)
        )

    async def month_spend(self, *, platform: str, workspace: str, month: str) -> int:
        return await self._run(
            lambda db: month_spend(db, platform=platform, workspace=workspace, month=month)
        )

    async def home(
        self, *, platform: str, workspace: str, user: str, month: str, limit: int
    ) -> tuple[list[RecentJob], int]:
        """A user's recent jobs and their tenant's spend this month, in one go (the Slack Home tab)."""

        def read(db: Db) -> tuple[list[RecentJob], int]:
            return (
                recent_jobs(db, platform=platform, workspace=workspace, user=user, limit=limit),
                month_spend(db, platform=platform, workspace=workspace, month=month),
            )

        return await self._run(read)

    async def tenants(
        self, *, workspace: str | None = None, channel: str | None = None, user: str | None = None
    ) -> list[tuple[str, str]]:
        return await self._run(lambda db: tenants(db, workspace=workspace, channel=channel, user=user))
