"""PostgreSQL as the shared store of several replicas (SPEC §12): `IMAGEBOT_DB=postgresql://...`.

The rest of the core speaks one dialect of SQL through `db.conn.execute(sql, params)`: the subset that
SQLite and PostgreSQL share, with `?` placeholders. `PgDatabase` gives the same surface over one psycopg 3
connection (the ledger's database thread owns it, as it owns the SQLite connection), translating what differs:
`?` -> `%s`, `INSERT OR IGNORE` -> `ON CONFLICT DO NOTHING`, the column `user` (a reserved word there)
quoted, `BEGIN IMMEDIATE` -> `BEGIN`, and the marker `/*lock*/` -> `FOR UPDATE` (in SQLite a comment: there
`BEGIN IMMEDIATE` already makes a writer the only one).

Race-free reservations: a reservation first locks the quota counters it checks (creating any missing one),
always in the same order (sorted by scope, key, period), so two reservations never deadlock and a second
one that needs a counter waits for the first to commit, then sees its rows (READ COMMITTED: each statement
reads what is committed). So no two replicas can both pass a limit only one fits. A settlement locks its
ledger row first, so two replicas recovering the same row cannot both move the counters. Should PostgreSQL
still abort a transaction (a deadlock, a serialization failure), the ledger runs it again (`is_retryable`, a
bounded number of times): no user ever sees one. Why psycopg 3: a plain synchronous driver fits the ledger's
one database thread per process, and its binary package needs no compiler.

The schema is created at start (one set of migrations for this backend, `SCHEMA`), under an advisory lock so
replicas starting together do not race.

psycopg is the optional `[postgres]` extra: this module imports it only when a PostgreSQL database is opened,
so a SQLite-only install never needs it. Without it, a PostgreSQL `IMAGEBOT_DB` is a configuration error
(`require_driver`, checked when the settings load: exit 2, one line).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    import psycopg

MISSING_DRIVER = (
    "IMAGEBOT_DB is a PostgreSQL URL, but psycopg is not installed: pip install 'imagebot[postgres]'"
)

SCHEMA_VERSION = 4  # the versions of MIGRATIONS below
MIGRATION_LOCK = 72_710_001  # pg_advisory_xact_lock key for schema changes
SCHEMA = [
    """CREATE TABLE IF NOT EXISTS ledger (
        id BIGSERIAL PRIMARY KEY, job_id TEXT NOT NULL, seq INTEGER, platform TEXT, workspace TEXT, channel TEXT,
        "user" TEXT, model TEXT, size TEXT, quality TEXT, format TEXT, prompt TEXT, status TEXT NOT NULL,
        reserved_micros BIGINT NOT NULL, actual_micros BIGINT NOT NULL DEFAULT 0, text_tokens BIGINT,
        image_tokens BIGINT, output_tokens BIGINT, request_ids TEXT, attempts INTEGER DEFAULT 0,
        latency_ms BIGINT, error TEXT, owner TEXT, day TEXT, month TEXT, created_at TEXT, updated_at TEXT,
        finished_at TEXT, context TEXT, notice TEXT, mode TEXT NOT NULL DEFAULT 'fast')""",
    "CREATE INDEX IF NOT EXISTS idx_ledger_job_id ON ledger (job_id)",
    "CREATE INDEX IF NOT EXISTS idx_ledger_channel_created_at ON ledger (channel, created_at)",
    'CREATE INDEX IF NOT EXISTS idx_ledger_user_created_at ON ledger ("user", created_at)',
    "CREATE INDEX IF NOT EXISTS idx_ledger_open ON ledger (status) WHERE status IN ('reserved', 'running')",
    """CREATE TABLE IF NOT EXISTS limits (scope TEXT, key TEXT, daily_micros BIGINT, daily_images BIGINT,
        monthly_micros BIGINT, monthly_images BIGINT, updated_at TEXT, PRIMARY KEY (scope, key))""",
    """CREATE TABLE IF NOT EXISTS instances (id TEXT PRIMARY KEY, host TEXT, pid INTEGER, started_at TEXT,
        heartbeat_at TEXT, expires_at TEXT)""",
    "CREATE TABLE IF NOT EXISTS seen_events (key TEXT PRIMARY KEY, at TEXT)",
    "CREATE INDEX IF NOT EXISTS idx_seen_events_at ON seen_events (at)",
    """CREATE TABLE IF NOT EXISTS counters (scope TEXT NOT NULL, key TEXT NOT NULL, period TEXT NOT NULL,
        micros BIGINT NOT NULL, images BIGINT NOT NULL, PRIMARY KEY (scope, key, period))""",
    """CREATE TABLE IF NOT EXISTS results (job_id TEXT PRIMARY KEY, platform TEXT, workspace TEXT, channel TEXT,
        "user" TEXT, request TEXT NOT NULL, images TEXT NOT NULL, created_at TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS idx_results_created_at ON results (created_at)",
    "CREATE TABLE IF NOT EXISTS blobs (sha256 TEXT PRIMARY KEY, data BYTEA NOT NULL)",
    """CREATE TABLE IF NOT EXISTS confirmations (token TEXT PRIMARY KEY, platform TEXT, workspace TEXT,
        channel TEXT, "user" TEXT, request TEXT NOT NULL, created_at TEXT NOT NULL, state TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS channel_settings (tenant TEXT, channel TEXT, name TEXT, value TEXT NOT NULL,
        PRIMARY KEY (tenant, channel, name))""",
    """CREATE TABLE IF NOT EXISTS tenant_settings (tenant TEXT, name TEXT, value TEXT NOT NULL,
        PRIMARY KEY (tenant, name))""",
    """CREATE TABLE IF NOT EXISTS batches (id TEXT PRIMARY KEY, endpoint TEXT NOT NULL, input_file_id TEXT,
        status TEXT NOT NULL, created_at TEXT NOT NULL, checked_at TEXT, finished_at TEXT)""",
    "CREATE INDEX IF NOT EXISTS idx_batches_status ON batches (status)",
    """CREATE TABLE IF NOT EXISTS batch_lines (custom_id TEXT PRIMARY KEY, batch_id TEXT NOT NULL,
        job_id TEXT NOT NULL, row_id BIGINT NOT NULL, state TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS idx_batch_lines_batch_id ON batch_lines (batch_id)",
    """CREATE TABLE IF NOT EXISTS relax_jobs (job_id TEXT PRIMARY KEY, platform TEXT NOT NULL, workspace TEXT,
        channel TEXT, "user" TEXT, submitted_at TEXT NOT NULL, discard INTEGER DEFAULT 0, delivered_at TEXT)""",
]
# Version 2, the job state machine (bot/jobstate.py; SQLite's `_v9_jobstate`): paid images are rendered, then
# delivered (what was `succeeded`), their bytes kept in the outbox until then; overage flags a settlement above
# its reservation.
JOBSTATE = [
    "ALTER TABLE ledger ADD COLUMN IF NOT EXISTS overage INTEGER NOT NULL DEFAULT 0",
    "UPDATE ledger SET status='delivered' WHERE status='succeeded'",
    """CREATE TABLE IF NOT EXISTS outbox (row_id BIGINT PRIMARY KEY, job_id TEXT NOT NULL, seq INTEGER,
        data BYTEA NOT NULL, width INTEGER, height INTEGER, format TEXT, elapsed_ms BIGINT, tries INTEGER,
        created_at TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS idx_outbox_job_id ON outbox (job_id)",
    "CREATE INDEX IF NOT EXISTS idx_ledger_rendered ON ledger (status) WHERE status='rendered'",
]
# Version 3 (SQLite's `_v10_resources`): who holds each stored image, filled from the requests stored before.
RESOURCES = [
    "CREATE TABLE IF NOT EXISTS blob_refs (sha256 TEXT NOT NULL, holder TEXT NOT NULL, PRIMARY KEY (holder, sha256))",
    "CREATE INDEX IF NOT EXISTS idx_blob_refs_sha256 ON blob_refs (sha256)",
    'CREATE INDEX IF NOT EXISTS idx_confirmations_user_created_at ON confirmations ("user", created_at)',
    """INSERT INTO blob_refs (sha256, holder) SELECT ref->>'sha256', 'r:' || job_id FROM results,
        jsonb_array_elements(request::jsonb->'references') AS ref ON CONFLICT DO NOTHING""",
    """INSERT INTO blob_refs (sha256, holder) SELECT request::jsonb->'mask'->>'sha256', 'r:' || job_id
        FROM results WHERE request::jsonb->'mask'->>'sha256' IS NOT NULL ON CONFLICT DO NOTHING""",
    """INSERT INTO blob_refs (sha256, holder) SELECT ref->>'sha256', 'c:' || token FROM confirmations,
        jsonb_array_elements(request::jsonb->'references') AS ref ON CONFLICT DO NOTHING""",
    """INSERT INTO blob_refs (sha256, holder) SELECT request::jsonb->'mask'->>'sha256', 'c:' || token
        FROM confirmations WHERE request::jsonb->'mask'->>'sha256' IS NOT NULL ON CONFLICT DO NOTHING""",
]
# Version 4, batches with a key (bot/relax.py; SQLite's `_v11_relax` in bot/store.py): `key` is the primary key,
# `id` (the API's) may be unknown while `submitting`, `owner` is the process sending it, file ids once seen; a
# line belongs to its batch by key.
RELAX_KEYS = [
    "ALTER TABLE batches ADD COLUMN IF NOT EXISTS key TEXT",
    "UPDATE batches SET key = id WHERE key IS NULL",
    "ALTER TABLE batches DROP CONSTRAINT IF EXISTS batches_pkey",
    "ALTER TABLE batches ALTER COLUMN id DROP NOT NULL",
    "ALTER TABLE batches ADD PRIMARY KEY (key)",
    "ALTER TABLE batches ADD COLUMN IF NOT EXISTS owner TEXT",
    "ALTER TABLE batches ADD COLUMN IF NOT EXISTS output_file_id TEXT",
    "ALTER TABLE batches ADD COLUMN IF NOT EXISTS error_file_id TEXT",
    "CREATE UNIQUE INDEX IF NOT EXISTS idx_batches_id ON batches (id)",
    "ALTER TABLE batch_lines RENAME COLUMN batch_id TO batch_key",
    "DROP INDEX IF EXISTS idx_batch_lines_batch_id",
    "CREATE INDEX IF NOT EXISTS idx_batch_lines_batch_key ON batch_lines (batch_key)",
]
MIGRATIONS = {1: SCHEMA, 2: JOBSTATE, 3: RESOURCES, 4: RELAX_KEYS}

_USER = re.compile(r"""(?<![\w."'])user(?![\w"'])""")  # the column, not 'user' in a string literal
_OR_IGNORE = re.compile(r"^\s*INSERT\s+OR\s+IGNORE\s+INTO", re.IGNORECASE)


def is_url(target: object) -> bool:
    return str(target).startswith(("postgresql://", "postgres://"))


def require_driver() -> None:
    """ConfigError (MISSING_DRIVER) when psycopg, the `[postgres]` extra, cannot be imported."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise ConfigError(MISSING_DRIVER) from None


@lru_cache(maxsize=512)
def translate(sql: str) -> str:
    """One statement of the shared dialect, as PostgreSQL takes it."""
    if sql.strip().upper() == "BEGIN IMMEDIATE":
        return "BEGIN"
    text = sql.replace("%", "%%").replace("?", "%s").replace("/*lock*/", "FOR UPDATE")
    text = _USER.sub('"user"', text)
    if _OR_IGNORE.match(text):
        text = _OR_IGNORE.sub("INSERT INTO", text) + " ON CONFLICT DO NOTHING"
    return text


def is_retryable(exc: BaseException) -> bool:
    """A transaction that lost a race (serialization failure, deadlock): run it again."""
    if "psycopg" not in sys.modules:  # no PostgreSQL connection was ever opened: a SQLite error
        return False
    from psycopg import errors

    return isinstance(exc, errors.SerializationFailure | errors.DeadlockDetected)


class _Cursor:
    """What callers use of a sqlite3 cursor: fetchone, fetchall, rowcount, iteration."""

    def __init__(self, cursor: psycopg.Cursor[Any]) -> None:
        self._cursor = cursor

    def fetchone(self) -> Any:
        return self._cursor.fetchone() if self._cursor.description else None

    def fetchall(self) -> list[Any]:
        return self._cursor.fetchall() if self._cursor.description else []

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class PgConnection:
    """A psycopg connection that takes the shared dialect (autocommit; transactions are explicit)."""

    def __init__(self, url: str) -> None:
        require_driver()
        import psycopg

        self._conn = psycopg.connect(url, autocommit=True)
        self.round_trips = 0  # statements sent, each one network round trip (benchmarks/quota.py reads it)

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> _Cursor:
        self.round_trips += 1
        return _Cursor(self._conn.execute(translate(sql), list(params) if params else None))  # type: ignore[arg-type]

    def native(self, sql: str, params: Sequence[Any] | None = None) -> _Cursor:
        """One statement in PostgreSQL's own dialect (`%s` placeholders, nothing translated)."""
        self.round_trips += 1
        return _Cursor(self._conn.execute(sql, list(params) if params is not None else None))  # type: ignore[arg-type]

    @property
    def in_transaction(self) -> bool:
        from psycopg import pq

        return self._conn.info.transaction_status != pq.TransactionStatus.IDLE

    def close(self) -> None:
        self._conn.close()


class PgDatabase:
    """The surface of sqlite_utils.Database the core uses, over PostgreSQL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn = PgConnection(url)

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> _Cursor:
        return self.conn.execute(sql, params)


def connect(url: str) -> PgDatabase:
    """Open the database and bring its schema up to date (safe when several replicas start at once)."""
    db = PgDatabase(url)
    conn = db.conn
    conn.execute("BEGIN")
    try:
        conn.execute(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT)"
        )
        (current,) = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version VALUES (?, now()::text)", [version])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return db
