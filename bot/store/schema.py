"""The SQLite file: connection settings, schema and migrations (via sqlite-utils).

Several processes may share one file: WAL mode, a busy timeout, and writes that check limits
run inside `BEGIN IMMEDIATE` so that only one writer decides at a time.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import sqlite_utils

from bot.store import pg

log = logging.getLogger("imagebot.store")
BUSY_TIMEOUT_MS = 30_000
SCHEMA_VERSION = 12


def _v1(db: sqlite_utils.Database) -> None:
    """The first schema: the ledger, limits overrides, counters for quota periods, live instances."""
    db.table("ledger").create(
        {
            "id": int,
            "job_id": str,
            "seq": int,
            "platform": str,
            "workspace": str,
            "channel": str,
            "user": str,
            "model": str,
            "size": str,
            "quality": str,
            "format": str,
            "prompt": str,
            "status": str,
            "reserved_micros": int,
            "actual_micros": int,
            "text_tokens": int,
            "image_tokens": int,
            "output_tokens": int,
            "request_ids": str,
            "attempts": int,
            "latency_ms": int,
            "error": str,
            "owner": str,
            "day": str,
            "month": str,
            "created_at": str,
            "updated_at": str,
            "finished_at": str,
        },
        pk="id",
        not_null={"job_id", "status", "reserved_micros", "actual_micros"},
        defaults={"actual_micros": 0, "attempts": 0},
    )
    db.table("ledger").create_index(["job_id"])
    db.table("ledger").create_index(["status"])
    db.table("ledger").create_index(["channel", "created_at"])
    db.table("ledger").create_index(["user", "created_at"])
    db.table("limits").create(
        {
            "scope": str,
            "key": str,
            "daily_micros": int,
            "daily_images": int,
            "monthly_micros": int,
            "monthly_images": int,
            "updated_at": str,
        },
        pk=("scope", "key"),
    )
    db.table("counters").create(
        {"scope": str, "key": str, "period": str, "micros": int, "images": int},
        pk=("scope", "key", "period"),
        not_null={"micros", "images"},
    )
    db.table("instances").create(
        {"id": str, "host": str, "pid": int, "started_at": str, "heartbeat_at": str}, pk="id"
    )


def _v2(db: sqlite_utils.Database) -> None:
    """Adapter context on jobs (where to tell the user after a crash) and seen platform events."""
    db.table("ledger").add_column("context", str)
    db.table("seen_events").create({"key": str, "at": str}, pk="key")
    db.table("seen_events").create_index(["at"])


def _v3(db: sqlite_utils.Database) -> None:
    """Fewer pages written per job: counters as a WITHOUT ROWID table (one b-tree, not two), and an
    index of open rows only (recovery's query) instead of one over every row's status."""
    conn = db.conn
    conn.execute(
        "CREATE TABLE counters_v3 (scope TEXT NOT NULL, key TEXT NOT NULL, period TEXT NOT NULL, "
        "micros INTEGER NOT NULL, images INTEGER NOT NULL, PRIMARY KEY (scope, key, period)) WITHOUT ROWID"
    )
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


def _v5_part(text: str | None) -> str:
    """One part of a tenant-scoped key, escaped as bot/policy/quota.py does (frozen here, as migrations are)."""
    return (text or "").replace("%", "%25").replace(":", "%3A")


def _v5_sql_part(column: str) -> str:
    return f"replace(replace(coalesce({column}, ''), '%', '%25'), ':', '%3A')"


def _v5(db: sqlite_utils.Database) -> None:
    """Tenancy: limits and counters keyed inside their tenant (`slack:T1`, `slack:T1:U1`, `slack:T1:C1`; see
    bot/policy/quota.py) instead of by bare ids that every Slack workspace and Discord guild shared.

    Counters are rebuilt from the ledger under the new keys, periods from each row's day/month columns: an
    open row (reserved, running) counts its reserved_micros and 1 image, a closed row its actual_micros and
    1 image only if it succeeded (the invariant the old counters kept, so nothing is lost).

    A limits row gets its tenant(s) from the ledger's platform + workspace columns: a user or channel gets a
    row in every tenant where the ledger has seen that id in that role, a workspace limit one per platform
    the ledger has seen that workspace id on. An id the ledger never saw: a user or channel goes to the only
    tenant if the ledger has exactly one; a workspace keeps its id on the only platform if every tenant in
    the ledger is on one platform. Anything else is dropped, with a warning naming the row and its values,
    because guessing would apply a limit (or a lifted limit) to a stranger's tenant.
    """
    conn = db.conn
    tenant = f"{_v5_sql_part('platform')} || ':' || {_v5_sql_part('workspace')}"
    spend = (
        "CASE WHEN status IN ('reserved', 'running') THEN reserved_micros ELSE coalesce(actual_micros, 0) END"
    )
    images = "CASE WHEN status IN ('reserved', 'running', 'succeeded') THEN 1 ELSE 0 END"
    conn.execute("DELETE FROM counters")
    for scope, key, period in (
        ("user_day", f"{tenant} || ':' || {_v5_sql_part('user')}", "day"),
        ("user_month", f"{tenant} || ':' || {_v5_sql_part('user')}", "month"),
        ("channel_month", f"{tenant} || ':' || {_v5_sql_part('channel')}", "month"),
        ("workspace_month", tenant, "month"),
    ):
        conn.execute(
            f"INSERT INTO counters (scope, key, period, micros, images) "
            f"SELECT '{scope}', {key}, {period}, sum({spend}), sum({images}) FROM ledger "
            f"WHERE {period} IS NOT NULL GROUP BY 2, 3 HAVING sum({spend}) != 0 OR sum({images}) != 0"
        )

    tenants = [(p or "", w or "") for p, w in conn.execute("SELECT DISTINCT platform, workspace FROM ledger")]
    platforms = {p for p, _ in tenants}
    old = conn.execute(
        "SELECT scope, key, daily_micros, daily_images, monthly_micros, monthly_images, updated_at "
        "FROM limits"
    ).fetchall()
    conn.execute("DELETE FROM limits")
    kept = 0
    for scope, key, daily_micros, daily_images, monthly_micros, monthly_images, updated_at in old:
        column = {"user": "user", "channel": "channel", "workspace": "workspace"}.get(scope)
        seen = (
            [
                (p or "", w or "")
                for p, w in conn.execute(
                    f"SELECT DISTINCT platform, workspace FROM ledger WHERE {column} = ?", [key]
                )
            ]
            if column
            else []
        )
        if not seen and scope in ("user", "channel") and len(tenants) == 1:
            seen = tenants
        elif not seen and scope == "workspace" and len(platforms) == 1:
            seen = [(next(iter(platforms)), key)]
        if not seen:
            log.warning(
                "schema 5: dropped the %s limit of %r (daily_micros=%s daily_images=%s monthly_micros=%s "
                "monthly_images=%s): the ledger never saw it in one tenant it could belong to; set it "
                "again with its tenant (imagebot quota set --tenant PLATFORM:WORKSPACE ...)",
                scope,
                key,
                daily_micros,
                daily_images,
                monthly_micros,
                monthly_images,
            )
            continue
        for platform, workspace in seen:
            new_key = f"{_v5_part(platform)}:{_v5_part(workspace)}"
            if scope != "workspace":
                new_key += f":{_v5_part(key)}"
            conn.execute(
                "INSERT OR REPLACE INTO limits (scope, key, daily_micros, daily_images, monthly_micros, "
                "monthly_images, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [scope, new_key, daily_micros, daily_images, monthly_micros, monthly_images, updated_at],
            )
            kept += 1
    if old:
        log.info(
            "schema 5: %d limits rows moved to %d tenant-scoped rows; counters rebuilt from the ledger",
            len(old),
            kept,
        )


def _v6(db: sqlite_utils.Database) -> None:
    """Result actions and price checks (bot/jobs/actions.py): each job's request and where its images live (its
    buttons' state), its input images as blobs, pending price checks, and per-channel settings."""
    db.table("results").create(
        {
            "job_id": str,
            "platform": str,
            "workspace": str,
            "channel": str,
            "user": str,
            "request": str,
            "images": str,
            "created_at": str,
        },
        pk="job_id",
        not_null={"request", "images", "created_at"},
    )
    db.table("results").create_index(["created_at"])
    db.table("blobs").create({"sha256": str, "data": bytes}, pk="sha256", not_null={"data"})
    db.table("confirmations").create(
        {
            "token": str,
            "platform": str,
            "workspace": str,
            "channel": str,
            "user": str,
            "request": str,
            "created_at": str,
            "state": str,
        },
        pk="token",
        not_null={"request", "created_at", "state"},
    )
    db.table("channel_settings").create(
        {"tenant": str, "channel": str, "name": str, "value": str},
        pk=("tenant", "channel", "name"),
        not_null={"value"},
    )


def _v7(db: sqlite_utils.Database) -> None:
    """Access rules (bot/policy/access.py): a tenant's own settings (who may render, who is blocked, its pace)."""
    db.table("tenant_settings").create(
        {"tenant": str, "name": str, "value": str}, pk=("tenant", "name"), not_null={"value"}
    )


def _v8(db: sqlite_utils.Database) -> None:
    """Relax mode (bot/jobs/relax.py): each row's mode (fast or relax), the batches, their lines, and the relax jobs
    (where to deliver them, once)."""
    db.table("ledger").add_column("mode", str, not_null_default="fast")
    db.table("batches").create(
        {
            "id": str,
            "endpoint": str,
            "input_file_id": str,
            "status": str,
            "created_at": str,
            "checked_at": str,
            "finished_at": str,
        },
        pk="id",
        not_null={"endpoint", "status", "created_at"},
    )
    db.table("batches").create_index(["status"])
    db.table("batch_lines").create(
        {"custom_id": str, "batch_id": str, "job_id": str, "row_id": int, "state": str},
        pk="custom_id",
        not_null={"batch_id", "job_id", "row_id", "state"},
    )
    db.table("batch_lines").create_index(["batch_id"])
    db.table("relax_jobs").create(
        {
            "job_id": str,
            "platform": str,
            "workspace": str,
            "channel": str,
            "user": str,
            "submitted_at": str,
            "discard": int,
            "delivered_at": str,
        },
        pk="job_id",
        not_null={"platform", "submitted_at"},
        defaults={"discard": 0},
    )


def _v9_jobstate(db: sqlite_utils.Database) -> None:
    """The job state machine (bot/store/jobstate.py): a paid image is `rendered`, then `delivered` (what was
    `succeeded`); its bytes wait in the outbox until the platform confirms; a settlement above its reservation
    is flagged `overage`."""
    db.table("ledger").add_column("overage", int, not_null_default=0)
    db.execute("UPDATE ledger SET status='delivered' WHERE status='succeeded'")
    db.table("outbox").create(
        {
            "row_id": int,
            "job_id": str,
            "seq": int,
            "data": bytes,
            "width": int,
            "height": int,
            "format": str,
            "elapsed_ms": int,
            "tries": int,
            "created_at": str,
        },
        pk="row_id",
        not_null={"job_id", "data", "created_at"},
    )
    db.table("outbox").create_index(["job_id"])
    db.execute("CREATE INDEX IF NOT EXISTS idx_ledger_rendered ON ledger (status) WHERE status='rendered'")


# Who holds each stored input image: `r:<job_id>` (a result's request), `c:<token>` (a price check's). A blob
# nobody holds any more is deleted by the purge (bot/jobs/actions.py); these statements also fill the table from the
# requests stored before it existed.
BLOB_REFS_BACKFILL = (
    "INSERT OR IGNORE INTO blob_refs (sha256, holder) SELECT json_extract(ref.value, '$.sha256'), 'r:' || job_id "
    "FROM results, json_each(results.request, '$.references') AS ref",
    "INSERT OR IGNORE INTO blob_refs (sha256, holder) SELECT json_extract(request, '$.mask.sha256'), "
    "'r:' || job_id FROM results WHERE json_extract(request, '$.mask.sha256') IS NOT NULL",
    "INSERT OR IGNORE INTO blob_refs (sha256, holder) SELECT json_extract(ref.value, '$.sha256'), 'c:' || token "
    "FROM confirmations, json_each(confirmations.request, '$.references') AS ref",
    "INSERT OR IGNORE INTO blob_refs (sha256, holder) SELECT json_extract(request, '$.mask.sha256'), "
    "'c:' || token FROM confirmations WHERE json_extract(request, '$.mask.sha256') IS NOT NULL",
)


def _v10_resources(db: sqlite_utils.Database) -> None:
    """Stored requests are purged (bot/jobs/actions.py `purge`): who holds each blob, so an unheld one can go."""
    db.table("blob_refs").create({"sha256": str, "holder": str}, pk=("holder", "sha256"))
    db.table("blob_refs").create_index(["sha256"])
    db.table("confirmations").create_index(["user", "created_at"])
    for statement in BLOB_REFS_BACKFILL:
        db.execute(statement)


def _v11_relax(db: sqlite_utils.Database) -> None:
    """Batches with a key (bot/jobs/relax.py): a batch is recorded as `submitting` under a key (also sent in its
    metadata) before `POST /v1/batches`, so its API `id` may not be known yet; `key` becomes the primary key
    (an older row's key is its id), `id` stays unique, `owner` is the process sending it, and the batch's
    output and error file ids are kept once seen. A line belongs to its batch by key."""
    db.table("batches").add_column("key", str)
    db.execute("UPDATE batches SET key = id")
    db.table("batches").transform(pk="key", not_null={"key", "endpoint", "status", "created_at"})
    db.table("batches").add_column("owner", str)
    db.table("batches").add_column("output_file_id", str)
    db.table("batches").add_column("error_file_id", str)
    db.execute("CREATE UNIQUE INDEX IF NOT EXISTS idx_batches_id ON batches (id)")
    db.table("batch_lines").transform(rename={"batch_id": "batch_key"})
    db.execute("DROP INDEX IF EXISTS idx_batch_lines_batch_id")
    db.execute("CREATE INDEX IF NOT EXISTS idx_batch_lines_batch_key ON batch_lines (batch_key)")


def _v12_people(db: sqlite_utils.Database) -> None:
    """Each person's own defaults per tenant (bot/store/people.py, /imagine-settings): name/value rows."""
    db.table("user_settings").create(
        {"tenant": str, "user": str, "name": str, "value": str},
        pk=("tenant", "user", "name"),
        not_null={"value"},
    )


MIGRATIONS: dict[int, Callable[[sqlite_utils.Database], None]] = {
    1: _v1,
    2: _v2,
    3: _v3,
    4: _v4,
    5: _v5,
    6: _v6,
    7: _v7,
    8: _v8,
    9: _v9_jobstate,
    10: _v10_resources,
    11: _v11_relax,
    12: _v12_people,
}


def connect(path: Path | str) -> sqlite_utils.Database:
    """Open (creating folder and file) and migrate the database; safe to call from several processes.
    A `postgresql://` URL opens PostgreSQL instead (bot/store/pg.py), which takes the same calls."""
    if pg.is_url(path):
        return cast(sqlite_utils.Database, pg.connect(str(path)))  # the same surface, duck-typed
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
    )
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    _wal(conn)
    conn.execute("PRAGMA synchronous = NORMAL")
    db = sqlite_utils.Database(conn)
    migrate(db)
    return db


def _wal(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL. While another process creates or switches the same new file, SQLite answers
    "database is locked" at once, without waiting out the busy timeout: try again, within that timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


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
