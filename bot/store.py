"""The SQLite file: connection settings, schema and migrations (via sqlite-utils).

Several processes may share one file: WAL mode, a busy timeout, and writes that check limits
run inside `BEGIN IMMEDIATE` so that only one writer decides at a time.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlite_utils

BUSY_TIMEOUT_MS = 30_000
SCHEMA_VERSION = 4


def _v1(db: sqlite_utils.Database) -> None:
    """The first schema: the ledger, limits overrides, counters for quota periods, live instances."""
    db.table("ledger").create({
        "id": int, "job_id": str, "seq": int, "platform": str, "workspace": str, "channel": str, "user": str,
        "model": str, "size": str, "quality": str, "format": str, "prompt": str, "status": str,
        "reserved_micros": int, "actual_micros": int, "text_tokens": int, "image_tokens": int,
        "output_tokens": int, "request_ids": str, "attempts": int, "latency_ms": int, "error": str,
        "owner": str, "day": str, "month": str, "created_at": str, "updated_at": str, "finished_at": str,
    }, pk="id", not_null={"job_id", "status", "reserved_micros", "actual_micros"},
        defaults={"actual_micros": 0, "attempts": 0})
    db.table("ledger").create_index(["job_id"])
    db.table("ledger").create_index(["status"])
    db.table("ledger").create_index(["channel", "created_at"])
    db.table("ledger").create_index(["user", "created_at"])
    db.table("limits").create({
        "scope": str, "key": str, "daily_micros": int, "daily_images": int,
        "monthly_micros": int, "monthly_images": int, "updated_at": str,
    }, pk=("scope", "key"))
    db.table("counters").create({"scope": str, "key": str, "period": str, "micros": int, "images": int},
                          pk=("scope", "key", "period"), not_null={"micros", "images"})
    db.table("instances").create({"id": str, "host": str, "pid": int, "started_at": str, "heartbeat_at": str}, pk="id")


def _v2(db: sqlite_utils.Database) -> None:
    """Adapter context on jobs (where to tell the user after a crash) and seen platform events."""
    db.table("ledger").add_column("context", str)
    db.table("seen_events").create({"key": str, "at": str}, pk="key")
    db.table("seen_events").create_index(["at"])


def _v3(db: sqlite_utils.Database) -> None:
    """Fewer pages written per job: counters as a WITHOUT ROWID table (one b-tree, not two), and an
    index of open rows only (recovery's query) instead of one over every row's status."""
    conn = db.conn
    conn.execute("CREATE TABLE counters_v3 (scope TEXT NOT NULL, key TEXT NOT NULL, period TEXT NOT NULL, "
                 "micros INTEGER NOT NULL, images INTEGER NOT NULL, PRIMARY KEY (scope, key, period)) WITHOUT ROWID")
    conn.execute("INSERT INTO counters_v3 SELECT scope, key, period, micros, images FROM counters")
    conn.execute("DROP TABLE counters")
    conn.execute("ALTER TABLE counters_v3 RENAME TO counters")
    conn.execute("DROP INDEX IF EXISTS idx_ledger_status")
    conn.execute("CREATE INDEX idx_ledger_open ON ledger (status) WHERE status IN ('reserved', 'running')")


def _v4(db: sqlite_utils.Database) -> None:
    """Leases: a process holds its running jobs until `expires_at` (renewed by its heartbeat), so any process
    can recover a dead one's jobs whatever its host name or pid; and the notice owed to an interrupted job's
    user, which the process that serves that platform sends."""
    db.table("instances").add_column("expires_at", str)
    db.conn.execute("UPDATE instances SET expires_at = heartbeat_at")
    db.table("ledger").add_column("notice", str)  # pending -> sent, for jobs closed as interrupted


MIGRATIONS: dict[int, Callable[[sqlite_utils.Database], None]] = {1: _v1, 2: _v2, 3: _v3, 4: _v4}


def connect(path: Path | str) -> sqlite_utils.Database:
    """Open (creating folder and file) and migrate the database; safe to call from several processes."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                           check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    db = sqlite_utils.Database(conn)
    migrate(db)
    return db


def schema_version(db: sqlite_utils.Database) -> int:
    if "schema_version" not in db.table_names():
        return 0
    row = db.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(db: sqlite_utils.Database, target: int = SCHEMA_VERSION) -> None:
    """Bring the schema up to `target`, one version per transaction."""
    with immediate(db):
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT)")
    while (current := schema_version(db)) < target:
        with immediate(db):
            if schema_version(db) != current:  # another process migrated meanwhile
                continue
            MIGRATIONS[current + 1](db)
            db.execute("INSERT INTO schema_version VALUES (?, datetime('now'))", [current + 1])


@contextmanager
def immediate(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """A write transaction that takes the write lock at once (`BEGIN IMMEDIATE`)."""
    conn = db.conn  # straight to sqlite3: this is the hot path of every reservation and settlement
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
        conn.execute("COMMIT")
    except BaseException:
        # SQLite may already have rolled back (disk full, I/O error, RAISE(ROLLBACK)): a second ROLLBACK
        # would hide the real error. And a failed COMMIT must not keep the write lock for good.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
