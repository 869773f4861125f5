"""What the store keeps for one person: their own defaults (`user_settings`), and the reads behind a job's
card and their history (the ledger's rows of a job, the job's stored request and where its images live).

Every read is keyed by the tenant (platform and workspace) first: a job id of another tenant finds nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from bot.store.db import Database

# The ledger columns a job's card is made of, in chat (bot/jobs/card.py `compose`) and on the dashboard
# (adapters/dashboard/cards.py, through bot/store/usage.py `jobs`), in this order.
CARD_COLUMNS = (
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
    "prompt",
    "status",
    "reserved_micros",
    "actual_micros",
    "request_ids",
    "attempts",
    "latency_ms",
    "error",
    "created_at",
    "finished_at",
    "context",
    "mode",
)
CARD_SELECT = ", ".join(f'"{c}"' for c in CARD_COLUMNS)  # quoted: "user" is a keyword on PostgreSQL


def load_settings(db: Database, tenant: str, user: str) -> dict[str, str]:
    """One person's stored defaults in one tenant (`Tenant.key`): name -> value."""
    rows = db.conn.execute(
        'SELECT name, value FROM user_settings WHERE tenant=? AND "user"=?', [tenant, user]
    ).fetchall()
    return {str(name): str(value) for name, value in rows}


def save_settings(db: Database, tenant: str, user: str, values: Sequence[tuple[str, str | None]]) -> None:
    """Set (a value) or clear (None) some of one person's defaults. Call inside a write transaction
    (Ledger.run_db): a change of several settings is written whole or not at all."""
    for name, value in values:
        if value is None:
            db.conn.execute(
                'DELETE FROM user_settings WHERE tenant=? AND "user"=? AND name=?', [tenant, user, name]
            )
        else:
            db.conn.execute(
                'INSERT INTO user_settings (tenant, "user", name, value) VALUES (?, ?, ?, ?) '
                'ON CONFLICT(tenant, "user", name) DO UPDATE SET value=excluded.value',
                [tenant, user, name, value],
            )


def job_rows(db: Database, platform: str, workspace: str, job_id: str) -> list[dict[str, Any]]:
    """The ledger rows of one job of one tenant (one per image, by seq); [] if the tenant has no such job."""
    rows = db.conn.execute(
        f"SELECT {CARD_SELECT} FROM ledger WHERE platform=? AND workspace=? AND job_id=? ORDER BY seq, id",
        [platform, workspace, job_id],
    ).fetchall()
    return [dict(zip(CARD_COLUMNS, row, strict=True)) for row in rows]


def job_result(db: Database, job_id: str) -> dict[str, Any] | None:
    """The job's stored request (JSON decoded) and where its images live, while they are kept
    (IMAGEBOT_ACTIONS_DAYS); None after."""
    row = db.conn.execute("SELECT request, images FROM results WHERE job_id=?", [job_id]).fetchone()
    if row is None:
        return None
    return {"request": json.loads(row[0] or "{}"), "images": json.loads(row[1] or "[]")}


def recent_jobs(
    db: Database, platform: str, workspace: str, user: str, count: int, skip: int = 0
) -> list[str]:
    """The ids of one person's latest jobs in one tenant, newest first."""
    rows = db.conn.execute(
        'SELECT job_id FROM ledger WHERE platform=? AND workspace=? AND "user"=? GROUP BY job_id '
        "ORDER BY MIN(created_at) DESC, MIN(id) DESC LIMIT ? OFFSET ?",
        [platform, workspace, user, count, skip],
    ).fetchall()
    return [str(row[0]) for row in rows]
