"""Relax mode's batches, their lines and the relax jobs waiting for them: the tables behind bot/jobs/relax.py.

The rules these tables keep, whatever calls them:
- A batch is known by its own key (`key`) from just before it is sent; its API id is recorded once, when it is
  known (`adopt`: only while it has none). A batch is open until it is finished (`finished_at`), and the poll
  reads only the open ones.
- A batch line is one image: its `custom_id` (`<job>:<image>`), its job and its ledger row.
- A relax job is recorded once (a second record of the same job does nothing) and delivered once: of several
  processes, the one whose conditional write claims it (`claim_delivery`) delivers it, and its rendered rows
  become that process's (bot/store/jobstate.py), so if it dies the outbox sweep takes them over.

Every method runs inside the caller's write transaction (`Ledger.run_db`), on either backend: the SQL here is
the subset SQLite and PostgreSQL share (`?` placeholders, `ON CONFLICT`, the column `"user"` quoted).
Timestamps are stored as UTC ISO 8601 text with milliseconds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.model.request import Requester
from bot.store import jobstate
from bot.store.ledger import _iso
from bot.store.results import Database

SUBMITTING = "submitting"  # recorded under its key, its API id not known yet


@dataclass(frozen=True, slots=True)
class OpenBatch:
    """An open batch as the store has it (`id` is None while it is `submitting`)."""

    key: str
    id: str | None
    status: str
    owner: str | None  # the process that sent (or is sending) it
    created: datetime
    output_file_id: str | None
    error_file_id: str | None

    @property
    def name(self) -> str:
        return self.id or f"key {self.key}"


@dataclass(frozen=True, slots=True)
class Line:
    """One line of a batch: one image of a job, and its ledger row."""

    custom_id: str
    job_id: str
    row_id: int


@dataclass(frozen=True, slots=True)
class RelaxJob:
    """A relax job not delivered yet: who asked and where, and whether it was cancelled (made, not posted)."""

    job_id: str
    who: Requester
    discard: bool


class Batches:
    """The batches, batch lines and relax jobs of one database, inside the caller's transaction."""

    def __init__(self, db: Database) -> None:
        self.conn: Any = db.conn

    # -- relax jobs -----------------------------------------------------------------------------------

    def add_job(self, *, job_id: str, who: Requester, submitted: datetime) -> None:
        """Record a relax job as it starts waiting for its batch (once: a second record does nothing)."""
        self.conn.execute(
            'INSERT INTO relax_jobs (job_id, platform, workspace, channel, "user", submitted_at) '
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (job_id) DO NOTHING",
            [job_id, who.platform, who.workspace, who.channel, who.user, _iso(submitted)],
        )

    def discard(self, job_id: str) -> None:
        """The job was cancelled while sharing its batch: its images are made and charged, not posted."""
        self.conn.execute("UPDATE relax_jobs SET discard=1 WHERE job_id=?", [job_id])

    def waiting_job(self, job_id: str) -> RelaxJob | None:
        """The relax job `job_id` if it is not delivered yet."""
        row = self.conn.execute(
            'SELECT platform, workspace, channel, "user", discard FROM relax_jobs '
            "WHERE job_id=? AND delivered_at IS NULL",
            [job_id],
        ).fetchone()
        if row is None:
            return None
        return RelaxJob(job_id, Requester(row[0], row[1], row[2], row[3]), bool(row[4]))

    def claim_delivery(self, *, job_id: str, owner: str, now: datetime) -> bool:
        """Claim a job's delivery for the process `owner` (True once, for whoever gets there first), and make
        its rendered rows that process's."""
        claimed = self.conn.execute(
            "UPDATE relax_jobs SET delivered_at=? WHERE job_id=? AND delivered_at IS NULL",
            [_iso(now), job_id],
        ).rowcount
        if claimed:
            jobstate.own(self.conn, job_id, owner, _iso(now))
        return bool(claimed)

    # -- batches and their lines ----------------------------------------------------------------------

    def add_submitting(
        self,
        *,
        key: str,
        endpoint: str,
        input_file_id: str,
        lines: Sequence[Line],
        owner: str,
        now: datetime,
    ) -> None:
        """Record a batch about to be sent (`submitting`, its API id unknown) with its lines."""
        self.conn.execute(
            "INSERT INTO batches (key, id, endpoint, input_file_id, status, created_at, checked_at, owner) "
            "VALUES (?, NULL, ?, ?, ?, ?, ?, ?)",
            [key, endpoint, input_file_id, SUBMITTING, _iso(now), _iso(now), owner],
        )
        for line in lines:
            self.conn.execute(
                "INSERT INTO batch_lines (custom_id, batch_key, job_id, row_id, state) VALUES (?, ?, ?, ?, 'open')",
                [line.custom_id, key, line.job_id, line.row_id],
            )

    def adopt(self, *, key: str, batch_id: str, status: str, now: datetime) -> bool:
        """Record the API id of the batch of `key` (only if none is recorded yet)."""
        cursor = self.conn.execute(
            "UPDATE batches SET id=?, status=?, checked_at=? WHERE key=? AND id IS NULL",
            [batch_id, status, _iso(now), key],
        )
        return bool(cursor.rowcount)

    def open_batches(self) -> list[OpenBatch]:
        """Every batch not finished yet, oldest first."""
        rows = self.conn.execute(
            "SELECT key, id, status, owner, created_at, output_file_id, error_file_id FROM batches "
            "WHERE finished_at IS NULL ORDER BY created_at"
        ).fetchall()
        return [OpenBatch(r[0], r[1], r[2], r[3], datetime.fromisoformat(r[4]), r[5], r[6]) for r in rows]

    def checked(
        self,
        *,
        key: str,
        status: str,
        now: datetime,
        output_file_id: str | None,
        error_file_id: str | None,
    ) -> None:
        """What the last look at the batch found."""
        self.conn.execute(
            "UPDATE batches SET status=?, checked_at=?, output_file_id=?, error_file_id=? WHERE key=?",
            [status, _iso(now), output_file_id, error_file_id, key],
        )

    def set_status(self, *, key: str, status: str) -> None:
        self.conn.execute("UPDATE batches SET status=? WHERE key=?", [status, key])

    def finish(self, *, key: str, now: datetime, status: str | None = None) -> None:
        """The batch needs no more polling (its status changed too, when given)."""
        self.conn.execute(
            "UPDATE batches SET finished_at=?, status=COALESCE(?, status) WHERE key=?",
            [_iso(now), status, key],
        )

    def lines(self, key: str) -> list[Line]:
        """The batch's lines, by custom_id."""
        rows = self.conn.execute(
            "SELECT custom_id, job_id, row_id FROM batch_lines WHERE batch_key=? ORDER BY custom_id", [key]
        ).fetchall()
        return [Line(r[0], r[1], int(r[2])) for r in rows]

    def others_in_batch(self, *, key: str | None, job_id: str) -> int:
        """How many lines of the batch of `key` belong to jobs other than `job_id`."""
        (count,) = self.conn.execute(
            "SELECT COUNT(*) FROM batch_lines WHERE batch_key=? AND job_id<>?", [key, job_id]
        ).fetchone()
        return int(count)

    def undelivered_jobs(self, key: str) -> int:
        """How many jobs of the batch of `key` are not delivered yet (by any process)."""
        (count,) = self.conn.execute(
            "SELECT COUNT(*) FROM relax_jobs WHERE delivered_at IS NULL AND job_id IN "
            "(SELECT job_id FROM batch_lines WHERE batch_key=?)",
            [key],
        ).fetchone()
        return int(count)

    # -- what relax mode reads of the ledger ----------------------------------------------------------

    def live_instances(self, now: datetime) -> set[str]:
        """The processes whose lease had not run out at `now`."""
        rows = self.conn.execute("SELECT id FROM instances WHERE expires_at >= ?", [_iso(now)]).fetchall()
        return {str(r[0]) for r in rows}

    def row_price(self, row_id: int) -> tuple[str, int]:
        """A line's ledger row: its model and what it reserved."""
        model, reserved = self.conn.execute(
            "SELECT model, reserved_micros FROM ledger WHERE id=?", [row_id]
        ).fetchone()
        return str(model), int(reserved)

    def job_place(self, job_id: str) -> tuple[dict[str, Any], int]:
        """Where a job is shown (the context its view recorded) and what each of its images reserved."""
        context, each = self.conn.execute(
            "SELECT context, reserved_micros FROM ledger WHERE job_id=? ORDER BY seq LIMIT 1", [job_id]
        ).fetchone()
        return json.loads(context or "{}"), int(each)
