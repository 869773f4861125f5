"""Finished jobs' results, their input images (blobs) and price checks: the tables behind the result buttons.

The rules these tables keep, whatever calls them (bot/jobs/actions.py says what they are for):
- A result is one row per job (`results`): who asked and where, the request as JSON, and where each of its
  images lives on the platform. Saving a job again replaces its row.
- An input image is stored once by its SHA-256 (`blobs`) and held by every request that uses it
  (`blob_refs`: holder `r:<job>` for a result, `c:<token>` for a price check). It goes only once no holder is
  left (`purge`).
- A price check (`confirmations`) is answered once: Render or Cancel moves it out of `pending` in one
  conditional write, and lets go of its stored request and images at once; a second answer finds it answered.

Every method runs inside the caller's write transaction (`Ledger.run_db`), on either backend: the SQL here is
the subset SQLite and PostgreSQL share (`?` placeholders, `ON CONFLICT`, the column `"user"` quoted).
Timestamps are stored as ISO 8601 text with milliseconds, as they are given (the caller's time zone).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.model.request import Requester
from bot.store import jobstate, pg
from bot.store.db import Database  # what Ledger.run_db hands its function

PENDING = "pending"
RENDERED = "rendered"
CANCELLED = "cancelled"


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class StoredResult:
    """A job's result row: who asked, the request (JSON, images as blob references) and its images' places."""

    job_id: str
    who: Requester
    request: str
    images: tuple[dict[str, Any], ...]
    created: datetime


@dataclass(frozen=True, slots=True)
class StoredCheck:
    """A price check: whose it is, its request (JSON; `{}` once answered), when it was asked, its state."""

    token: str
    who: Requester
    request: str
    created: datetime
    state: str


@dataclass(frozen=True, slots=True)
class Purged:
    results: int
    confirmations: int
    blobs: int
    undelivered: int = 0  # kept images of undelivered rows, past IMAGEBOT_ACTIONS_DAYS


class Results:
    """The results, blobs and price checks of one database, inside the caller's transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.conn: Any = db.conn

    # -- blobs ----------------------------------------------------------------------------------------

    def hold_blob(self, *, sha256: str, data: bytes, holder: str) -> None:
        """Store an image's bytes once (by digest) and record that `holder` holds them."""
        self.conn.execute(
            "INSERT INTO blob_refs (sha256, holder) VALUES (?, ?) ON CONFLICT (holder, sha256) DO NOTHING",
            [sha256, holder],
        )
        self.conn.execute(
            "INSERT INTO blobs (sha256, data) VALUES (?, ?) ON CONFLICT (sha256) DO NOTHING", [sha256, data]
        )

    def blob(self, sha256: str) -> bytes | None:
        row = self.conn.execute("SELECT data FROM blobs WHERE sha256=?", [sha256]).fetchone()
        return None if row is None else bytes(row[0])

    # -- results --------------------------------------------------------------------------------------

    def save(self, *, job_id: str, who: Requester, request: str, created: datetime) -> None:
        """A job's row as it starts (no images yet); a job saved again is replaced whole."""
        self.conn.execute(
            'INSERT INTO results (job_id, platform, workspace, channel, "user", request, images, created_at) '
            "VALUES (?, ?, ?, ?, ?, ?, '[]', ?) ON CONFLICT (job_id) DO UPDATE SET platform=excluded.platform, "
            'workspace=excluded.workspace, channel=excluded.channel, "user"=excluded."user", '
            "request=excluded.request, images=excluded.images, created_at=excluded.created_at",
            [job_id, who.platform, who.workspace, who.channel, who.user, request, _iso(created)],
        )

    def set_images(self, *, job_id: str, images: list[dict[str, Any]]) -> None:
        """Where the job's images live on the platform, once posted."""
        self.conn.execute("UPDATE results SET images=? WHERE job_id=?", [json.dumps(images), job_id])

    def get(self, job_id: str) -> StoredResult | None:
        row = self.conn.execute(
            'SELECT platform, workspace, channel, "user", request, images, created_at FROM results '
            "WHERE job_id=?",
            [job_id],
        ).fetchone()
        if row is None:
            return None
        return StoredResult(
            job_id,
            Requester(row[0], row[1], row[2], row[3]),
            row[4],
            tuple(json.loads(row[5])),
            datetime.fromisoformat(row[6]),
        )

    def latest_with_images(self, who: Requester) -> str | None:
        """The id of `who`'s latest job (in its workspace, any channel) that has images."""
        row = self.conn.execute(
            "SELECT job_id FROM results WHERE platform=? AND workspace=? AND \"user\"=? AND images != '[]' "
            "ORDER BY created_at DESC LIMIT 1",
            [who.platform, who.workspace, who.user],
        ).fetchone()
        return None if row is None else str(row[0])

    # -- price checks ---------------------------------------------------------------------------------

    def waiting_checks(self, who: Requester, *, since: datetime) -> list[datetime]:
        """When each of `who`'s pending price checks asked after `since` was asked, oldest first."""
        rows = self.conn.execute(
            'SELECT created_at FROM confirmations WHERE "user"=? AND platform=? AND workspace=? '
            "AND state=? AND created_at > ? ORDER BY created_at",
            [who.user, who.platform, who.workspace, PENDING, _iso(since)],
        ).fetchall()
        return [datetime.fromisoformat(row[0]) for row in rows]

    def add_check(self, *, token: str, who: Requester, request: str, created: datetime) -> None:
        self.conn.execute(
            'INSERT INTO confirmations (token, platform, workspace, channel, "user", request, created_at, state) '
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [token, who.platform, who.workspace, who.channel, who.user, request, _iso(created), PENDING],
        )

    def get_check(self, token: str) -> StoredCheck | None:
        row = self.conn.execute(
            'SELECT platform, workspace, channel, "user", request, created_at, state FROM confirmations '
            "WHERE token=?",
            [token],
        ).fetchone()
        if row is None:
            return None
        return StoredCheck(
            token, Requester(row[0], row[1], row[2], row[3]), row[4], datetime.fromisoformat(row[5]), row[6]
        )

    def answer_check(self, *, token: str, render: bool) -> bool:
        """Move a pending price check to rendered or cancelled, letting go of its stored request and images.
        False (and nothing changed) if it was not pending: it was answered already."""
        cursor = self.conn.execute(
            "UPDATE confirmations SET state=?, request='{}' WHERE token=? AND state=?",
            [RENDERED if render else CANCELLED, token, PENDING],
        )
        if cursor.rowcount == 0:
            return False
        self.conn.execute("DELETE FROM blob_refs WHERE holder=?", [f"c:{token}"])
        return True

    # -- the sweep ------------------------------------------------------------------------------------

    def purge(self, *, results_before: datetime, checks_before: datetime) -> Purged:
        """Delete the results made before `results_before` and the price checks asked before `checks_before`
        (with what they hold), the images nobody holds any more, the outbox bytes of delivered images, and
        those of undelivered images past `results_before`. On PostgreSQL it first waits for the transactions
        storing images to finish, so an image just taken by a new request is never deleted under it."""
        if isinstance(self.db, pg.PgDatabase):
            self.conn.execute("LOCK TABLE blob_refs IN SHARE ROW EXCLUSIVE MODE")
        old_results = [_iso(results_before)]
        old_checks = [_iso(checks_before)]
        self.conn.execute(
            "DELETE FROM blob_refs WHERE holder IN (SELECT 'r:' || job_id FROM results WHERE created_at < ?)",
            old_results,
        )
        results = self.conn.execute("DELETE FROM results WHERE created_at < ?", old_results).rowcount
        self.conn.execute(
            "DELETE FROM blob_refs WHERE holder IN "
            "(SELECT 'c:' || token FROM confirmations WHERE created_at < ?)",
            old_checks,
        )
        checks = self.conn.execute("DELETE FROM confirmations WHERE created_at < ?", old_checks).rowcount
        blobs = self.conn.execute(
            "DELETE FROM blobs WHERE NOT EXISTS (SELECT 1 FROM blob_refs WHERE blob_refs.sha256 = blobs.sha256)"
        ).rowcount
        # Delivered images' bytes go (bot/store/jobstate.py); those never posted are kept for `imagebot
        # redeliver` as long as buttons live.
        jobstate.forget_delivered(self.conn)
        kept = self.conn.execute(
            "DELETE FROM outbox WHERE created_at < ? AND row_id IN "
            "(SELECT id FROM ledger WHERE status='undelivered')",
            old_results,
        ).rowcount
        return Purged(max(results, 0), max(checks, 0), max(blobs, 0), max(kept, 0))
