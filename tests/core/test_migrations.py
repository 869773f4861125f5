"""Migrations from every earlier schema version of both backends (docs/rules.md §12).

For each earlier version N a real store is built at N (SQLite: `store.migrate(db, target=N)` on a file;
PostgreSQL: `pg.connect(url, target=N)` on a fresh database), representative rows are written as the code of
that version wrote them (ledger rows of every kind, `succeeded` before the state machine, limits and counters
under the keys of that version, stored requests and their input images, settings, a batch with its lines),
and the store is then opened as the current code opens it (`store.connect`). The schema must then be the one a
new store gets, and every row must keep its meaning: `succeeded` reads `delivered`, the counters equal the
ledger's sums, a limit still refuses what it refused, the blobs a request holds are known to be held, a batch's
lines still belong to it. Finally the current ledger works on the migrated rows: it recovers the old open rows
and the counters still equal the sums.

Every database, migrated or new, is also compared with the declaration itself (bot/store/tables.py,
introspected: columns, types, NOT NULL, defaults, keys, indexes), and a table added to the declaration
reaches an existing database of either backend at its next start.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
import sqlite_utils

from bot.config import QuotaDefaults
from bot.errors import QuotaExceeded
from bot.model.request import ImageRequest, Requester
from bot.model.sizes import parse_size
from bot.store import pg, tables
from bot.store import schema as store
from bot.store.ledger import Ledger, Settlement, Status
from tests.pg import PgServer

DAY, MONTH = "2026-04-15", "2026-04"
NOON = datetime(2026, 4, 15, 12, 0, tzinfo=UTC)
STAMP = "2026-04-15T11:00:00.000+00:00"
# What each PostgreSQL schema version holds, as the SQLite version with the same tables (bot/store/pg.py): version 1
# was written after SQLite's schema 8, and each later one mirrors one SQLite migration.
PG_LEVEL = {1: 8, 2: 9, 3: 10, 4: 11, 5: 11, 6: 12}
OPEN = ("reserved", "running", "batched")
PAID = ("rendered", "delivered", "undelivered", "succeeded")
U1_DAILY = 200_000  # Alice's own daily limit, set before the migration


class Store:
    """One store at an earlier version: writes rows with `?` placeholders, whichever backend it is."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.postgres = pg.is_url(target)

    def _run(self, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.postgres:
            with psycopg.connect(self.target, autocommit=True) as conn:
                cursor = conn.execute(sql.replace("?", "%s"), list(params) or None)  # type: ignore[arg-type]
                return [tuple(r) for r in cursor.fetchall()] if cursor.description else []
        with sqlite3.connect(self.target) as conn:
            return [tuple(r) for r in conn.execute(sql, tuple(params)).fetchall()]

    def columns(self, table: str) -> list[str]:
        if self.postgres:
            return [
                r[0]
                for r in self._run(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                    "AND table_schema = 'public'",
                    [table],
                )
            ]
        return [r[1] for r in self._run(f"PRAGMA table_info({table})")]

    def insert(self, table: str, row: dict[str, Any]) -> None:
        """Insert the fields of `row` that this version's table has (a later column is left out)."""
        have = set(self.columns(table))
        fields = {name: value for name, value in row.items() if name in have}
        names = ", ".join(f'"{name}"' for name in fields)
        self._run(
            f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(fields))})", list(fields.values())
        )

    def select(self, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self._run(sql, params)


def _ledger_rows(level: int) -> list[dict[str, Any]]:
    """Ledger rows of every kind, as the code of SQLite schema `level` (or its PostgreSQL twin) wrote them."""
    paid = "delivered" if level >= 9 else "succeeded"

    def row(
        n: int, job: str, who: Requester, status: str, reserved: int, actual: int, **more: Any
    ) -> dict[str, Any]:
        return {
            "id": n,
            "job_id": job,
            "seq": 0,
            "platform": who.platform,
            "workspace": who.workspace,
            "channel": who.channel,
            "user": who.user,
            "model": "gpt-image-2",
            "size": "1024x1024",
            "quality": "medium",
            "format": "png",
            "prompt": "a red fox",
            "status": status,
            "reserved_micros": reserved,
            "actual_micros": actual,
            "attempts": 1,
            "owner": "gone",  # a process that no longer exists: its open rows are recovered
            "day": DAY,
            "month": MONTH,
            "created_at": STAMP,
            "updated_at": STAMP,
            "context": json.dumps({"channel": who.channel}),
            "mode": "fast",
            **more,
        }

    alice, bob = Requester("slack", "T1", "C1", "U1"), Requester("slack", "T1", "C2", "U2")
    elsewhere = Requester("discord", "G1", "C9", "U1")  # the same user id in another tenant
    rows = [
        row(1, "job-paid", alice, paid, 53_000, 41_000, request_ids='["req_1"]', latency_ms=900),
        row(2, "job-open", alice, "reserved", 20_000, 0),
        row(3, "job-running", bob, "running", 30_000, 0),
        row(4, "job-failed", bob, "failed", 10_000, 0, error="HTTP 500"),
        row(5, "job-billed", alice, "possibly_billed", 10_000, 10_000),
        row(6, "job-cancelled", bob, "cancelled", 10_000, 0),
        row(7, "job-other", elsewhere, paid, 41_000, 40_000),
    ]
    if level >= 9:
        rows += [
            row(8, "job-rendered", bob, "rendered", 6_000, 5_000),
            row(9, "job-undelivered", alice, "undelivered", 6_000, 5_000, error="upload failed"),
        ]
    return rows


def _counters(rows: list[dict[str, Any]], scoped: bool) -> dict[tuple[str, str, str], tuple[int, int]]:
    """The counters these rows feed: tenant-scoped keys (schema 5 on), or the bare ids before."""
    sums: dict[tuple[str, str, str], tuple[int, int]] = {}
    for r in rows:
        spend = r["reserved_micros"] if r["status"] in OPEN else r["actual_micros"]
        images = int(r["status"] in OPEN or r["status"] in PAID)
        tenant = f"{r['platform']}:{r['workspace']}" if scoped else r["workspace"]
        user = f"{tenant}:{r['user']}" if scoped else r["user"]
        channel = f"{tenant}:{r['channel']}" if scoped else r["channel"]
        for key in (
            ("user_day", user, r["day"]),
            ("user_month", user, r["month"]),
            ("channel_month", channel, r["month"]),
            ("workspace_month", tenant, r["month"]),
        ):
            old = sums.get(key, (0, 0))
            sums[key] = (old[0] + spend, old[1] + images)
    return {k: v for k, v in sums.items() if v != (0, 0)}


def _write(db: Store, level: int) -> None:
    """Representative rows of SQLite schema `level` (PostgreSQL: its twin), written as that version did."""
    rows = _ledger_rows(level)
    for r in rows:
        db.insert("ledger", r)
    scoped = level >= 5
    # From PostgreSQL schema 5 a trigger keeps the counters with the ledger: the rows above already moved them.
    kept_by_trigger = bool(db.select("SELECT 1 FROM counters LIMIT 1"))
    for (scope, key, period), (micros, images) in (
        {} if kept_by_trigger else _counters(rows, scoped)
    ).items():
        db.insert(
            "counters", {"scope": scope, "key": key, "period": period, "micros": micros, "images": images}
        )
    tenant = "slack:T1:" if scoped else ""
    db.insert(
        "limits", {"scope": "user", "key": f"{tenant}U1", "daily_micros": U1_DAILY, "updated_at": STAMP}
    )
    db.insert("limits", {"scope": "channel", "key": f"{tenant}C2", "monthly_micros": -1, "updated_at": STAMP})
    if level >= 2:
        db.insert("seen_events", {"key": "slack:Ev1", "at": STAMP})
    if level < 6:
        return
    request = {"prompt": "a red fox", "references": [{"sha256": "aa" * 32}], "mask": {"sha256": "bb" * 32}}
    db.insert(
        "results",
        {
            "job_id": "job-paid",
            "platform": "slack",
            "workspace": "T1",
            "channel": "C1",
            "user": "U1",
            "request": json.dumps(request),
            "images": json.dumps([{"row_id": 1}]),
            "created_at": STAMP,
        },
    )
    for sha, data in (("aa" * 32, b"reference"), ("bb" * 32, b"mask")):
        db.insert("blobs", {"sha256": sha, "data": data})
    db.insert(
        "confirmations",
        {
            "token": "tok1",
            "platform": "slack",
            "workspace": "T1",
            "channel": "C1",
            "user": "U1",
            "request": json.dumps({"prompt": "again", "references": [{"sha256": "aa" * 32}]}),
            "created_at": STAMP,
            "state": "pending",
        },
    )
    if level >= 10:  # who holds each blob, as that version kept it
        for sha, holder in (("aa" * 32, "r:job-paid"), ("bb" * 32, "r:job-paid"), ("aa" * 32, "c:tok1")):
            db.insert("blob_refs", {"sha256": sha, "holder": holder})
    db.insert(
        "channel_settings", {"tenant": "slack:T1", "channel": "C1", "name": "max_size", "value": "1024x1024"}
    )
    if level >= 7:
        db.insert("tenant_settings", {"tenant": "slack:T1", "name": "cooldown", "value": "30"})
    if level >= 8:
        db.insert(
            "batches",
            {
                "key": "batch_abc",  # schema 11 on (a column the insert leaves out before)
                "id": "batch_abc",
                "endpoint": "/v1/images/generations",
                "input_file_id": "file_in",
                "status": "in_progress",
                "created_at": STAMP,
            },
        )
        db.insert(
            "batch_lines",
            {
                "custom_id": "line-1",
                "batch_id": "batch_abc",
                "batch_key": "batch_abc",
                "job_id": "job-open",
                "row_id": 2,
                "state": "sent",
            },
        )
        db.insert(
            "relax_jobs",
            {
                "job_id": "job-open",
                "platform": "slack",
                "workspace": "T1",
                "channel": "C1",
                "user": "U1",
                "submitted_at": STAMP,
            },
        )
    if level >= 9:
        db.insert(
            "outbox",
            {
                "row_id": 8,
                "job_id": "job-rendered",
                "seq": 0,
                "data": b"png bytes",
                "width": 1024,
                "height": 1024,
                "format": "png",
                "elapsed_ms": 900,
                "tries": 0,
                "created_at": STAMP,
            },
        )


def _check(db: Store, level: int) -> None:
    """After the migration: every row kept its meaning."""
    rows = _ledger_rows(level)
    stored = {
        r[0]: r[1:]
        for r in db.select('SELECT id, job_id, status, reserved_micros, actual_micros, "user" FROM ledger')
    }
    assert len(stored) == len(rows)
    for r in rows:
        status = "delivered" if r["status"] == "succeeded" else r["status"]
        assert stored[r["id"]] == (r["job_id"], status, r["reserved_micros"], r["actual_micros"], r["user"])
    assert not db.select("SELECT id FROM ledger WHERE status = 'succeeded'")
    assert _stored_counters(db) == _counters([{**r, "status": stored[r["id"]][1]} for r in rows], scoped=True)
    limits = {
        (s, k): (d, m)
        for s, k, d, m in db.select("SELECT scope, key, daily_micros, monthly_micros FROM limits")
    }
    expected = {("user", "slack:T1:U1"): (U1_DAILY, None), ("channel", "slack:T1:C2"): (None, -1)}
    if level < 5:  # U1 was seen in two tenants: its bare-id limit applies in both
        expected[("user", "discord:G1:U1")] = (U1_DAILY, None)
    assert limits == expected
    if level >= 2:
        assert db.select("SELECT key FROM seen_events") == [("slack:Ev1",)]
    if level >= 6:
        assert sorted(db.select("SELECT sha256, holder FROM blob_refs")) == [
            ("aa" * 32, "c:tok1"),
            ("aa" * 32, "r:job-paid"),
            ("bb" * 32, "r:job-paid"),
        ]
        assert sorted(bytes(r[0]) for r in db.select("SELECT data FROM blobs")) == [b"mask", b"reference"]
        assert json.loads(db.select("SELECT request FROM results WHERE job_id = 'job-paid'")[0][0])[
            "prompt"
        ] == ("a red fox")
        assert db.select("SELECT value FROM channel_settings WHERE tenant = 'slack:T1'") == [("1024x1024",)]
    if level >= 7:
        assert db.select("SELECT name, value FROM tenant_settings") == [("cooldown", "30")]
    if level >= 8:
        assert db.select("SELECT key, id, status FROM batches") == [("batch_abc", "batch_abc", "in_progress")]
        assert db.select("SELECT custom_id, batch_key, row_id FROM batch_lines") == [
            ("line-1", "batch_abc", 2)
        ]
        assert db.select("SELECT mode FROM ledger WHERE id = 2") == [("fast",)]
    if level >= 9:
        assert [bytes(r[0]) for r in db.select("SELECT data FROM outbox WHERE row_id = 8")] == [b"png bytes"]


def _stored_counters(db: Store) -> dict[tuple[str, str, str], tuple[int, int]]:
    rows = db.select("SELECT scope, key, period, micros, images FROM counters")
    return {(s, k, p): (int(m), int(n)) for s, k, p, m, n in rows if (int(m), int(n)) != (0, 0)}


def _sums(db: Store) -> dict[tuple[str, str, str], tuple[int, int]]:
    rows = db.select(
        'SELECT platform, workspace, channel, "user", day, month, status, reserved_micros, '
        "actual_micros FROM ledger"
    )
    names = (
        "platform",
        "workspace",
        "channel",
        "user",
        "day",
        "month",
        "status",
        "reserved_micros",
        "actual_micros",
    )
    return _counters([dict(zip(names, r, strict=True)) for r in rows], scoped=True)


def _use(target: str) -> None:
    """The current ledger on the migrated rows: it recovers the old open rows, a limit set before the migration
    still refuses, and a new job is reserved and settled; the counters equal the ledger's sums throughout."""
    db = Store(target)
    ledger = Ledger(target, clock=lambda: NOON, defaults=QuotaDefaults())
    try:
        recovered = {i.job_id: (i.charged_micros, i.images) for i in ledger.recover_sync()}
        assert recovered == {"job-open": (0, 1), "job-running": (30_000, 1)}
        assert _stored_counters(db) == _sums(db)
        alice = Requester("slack", "T1", "C1", "U1")
        request = ImageRequest(prompt="a fox", size=parse_size("1024x1024"), quality="medium")
        used = sum(
            micros
            for (scope, key, _), (micros, _n) in _stored_counters(db).items()
            if (scope, key) == ("user_day", "slack:T1:U1")
        )
        with pytest.raises(QuotaExceeded, match="your daily spend limit is \\$0.2000"):
            ledger.reserve_sync(alice, request, U1_DAILY - used + 1)
        reservation = ledger.reserve_sync(alice, request, U1_DAILY - used)
        assert ledger.start_sync(reservation.row_ids[0])
        assert ledger.close_row_sync(
            reservation.row_ids[0], Settlement(status=Status.RENDERED, actual_micros=40_000)
        )
        assert _stored_counters(db) == _sums(db)
    finally:
        ledger.close()


# --- SQLite -----------------------------------------------------------------------------------------


def _sqlite_schema(path: str) -> dict[str, Any]:
    with sqlite3.connect(path) as conn:
        tables = [
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        ]
        return {
            "columns": {
                t: sorted(tuple(c[1:]) for c in conn.execute(f"PRAGMA table_info({t})"))
                for t in tables
                if t != "schema_version"
            },
            "indexes": sorted(
                r for r in conn.execute("SELECT name, tbl_name FROM sqlite_master WHERE type = 'index'")
            ),
        }


@pytest.mark.parametrize("version", range(1, store.SCHEMA_VERSION))
def test_a_sqlite_file_of_every_earlier_version_migrates_with_its_rows(tmp_path: Any, version: int) -> None:
    path = str(tmp_path / f"v{version}.sqlite3")
    conn = sqlite3.connect(path, isolation_level=None)
    store.migrate(sqlite_utils.Database(conn), target=version)
    conn.close()
    _write(Store(path), version)

    store.connect(path).conn.close()  # as the bot opens it

    fresh = str(tmp_path / "fresh.sqlite3")
    store.connect(fresh).conn.close()
    assert _sqlite_schema(path) == _sqlite_schema(fresh)
    for built in (path, fresh):
        assert tables.sqlite_differences(sqlite_utils.Database(built)) == []
    assert Store(path).select("SELECT max(version) FROM schema_version") == [(store.SCHEMA_VERSION,)]
    _check(Store(path), version)
    _use(path)


# --- PostgreSQL -------------------------------------------------------------------------------------


def _pg_differences(url: str) -> list[str]:
    """How the PostgreSQL database at `url` differs from the declared tables (none: it matches)."""
    db = pg.PgDatabase(url)
    try:
        return tables.postgres_differences(db)
    finally:
        db.close()


def _pg_schema(url: str) -> dict[str, Any]:
    db = Store(url)
    return {
        "columns": sorted(
            db.select(
                "SELECT table_name, column_name, data_type, is_nullable, column_default FROM "
                "information_schema.columns WHERE table_schema = 'public'"
            )
        ),
        "indexes": sorted(
            db.select("SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'")
        ),
        "functions": sorted(
            db.select(
                "SELECT p.proname, pg_get_function_arguments(p.oid) FROM pg_proc p JOIN pg_namespace n "
                "ON n.oid = p.pronamespace WHERE n.nspname = 'public'"
            )
        ),
        "triggers": sorted(
            db.select("SELECT tgname, tgrelid::regclass::text FROM pg_trigger WHERE NOT tgisinternal")
        ),
    }


@pytest.mark.parametrize("version", range(1, pg.SCHEMA_VERSION))
def test_a_postgres_database_of_every_earlier_version_migrates_with_its_rows(
    pg_server: PgServer, version: int
) -> None:
    url = pg_server.create_database()
    pg.connect(url, target=version).conn.close()
    level = PG_LEVEL[version]
    _write(Store(url), level)
    Store(url).select("SELECT setval('ledger_id_seq', (SELECT max(id) FROM ledger))")

    pg.connect(url).conn.close()  # as the bot opens it

    fresh = pg_server.create_database()
    pg.connect(fresh).conn.close()
    assert _pg_schema(url) == _pg_schema(fresh)
    for built in (url, fresh):
        assert _pg_differences(built) == []
    assert Store(url).select("SELECT max(version) FROM schema_version") == [(pg.SCHEMA_VERSION,)]
    _check(Store(url), level)
    _use(url)


# --- the declaration ---------------------------------------------------------------------------------

NOTES = tables.Table(  # what a helper adds: one entry, nothing else
    "notes",
    (
        tables.Column("id", "text"),
        tables.Column("body", "text", not_null=True),
        tables.Column("n", "int", default=0),
    ),
    pk=("id",),
    indexes=(tables.Index(("body",)),),
)
NOTE_COLUMN = tables.Column("note", "text")  # and a column added to an existing table


def _declare_more(monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = tables.table("ledger")
    more = tables.Table(ledger.name, (*ledger.columns, NOTE_COLUMN), ledger.pk, ledger.indexes)
    declared = tuple(more if t.name == "ledger" else t for t in tables.TABLES) + (NOTES,)
    monkeypatch.setattr(tables, "TABLES", declared)


def test_a_table_declared_later_reaches_an_existing_sqlite_file_and_a_new_one(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = str(tmp_path / "old.sqlite3")
    store.connect(old).close()
    _write(Store(old), store.SCHEMA_VERSION)
    _declare_more(monkeypatch)
    assert tables.sqlite_differences(sqlite_utils.Database(old)) == [
        "ledger.note: (type, notnull, default, pk) is None, declared ('TEXT', 0, None, 0)",
        "table notes is missing",
    ]

    store.connect(old).close()  # the next start
    new = str(tmp_path / "new.sqlite3")
    store.connect(new).close()
    for built in (old, new):
        assert tables.sqlite_differences(sqlite_utils.Database(built)) == []
        Store(built).insert("notes", {"id": "a", "body": "kept"})
        assert Store(built).select("SELECT id, body, n FROM notes") == [("a", "kept", 0)]
    _check(Store(old), store.SCHEMA_VERSION)


def test_a_table_declared_later_reaches_an_existing_postgres_database_and_a_new_one(
    pg_server: PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = pg_server.create_database()
    pg.connect(old).close()
    Store(old).insert("limits", {"scope": "user", "key": "slack:T1:U1", "daily_micros": U1_DAILY})
    _declare_more(monkeypatch)

    pg.connect(old).close()  # the next start
    new = pg_server.create_database()
    pg.connect(new).close()
    for built in (old, new):
        assert _pg_differences(built) == []
        Store(built).insert("notes", {"id": "a", "body": "kept"})
        assert Store(built).select("SELECT id, body, n FROM notes") == [("a", "kept", 0)]
    assert _pg_schema(old) == _pg_schema(new)
    assert Store(old).select("SELECT key, daily_micros FROM limits") == [("slack:T1:U1", U1_DAILY)]


def test_a_not_null_column_without_a_default_needs_a_versioned_step(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "old.sqlite3")
    store.connect(path).close()
    ledger = tables.table("ledger")
    strict = tables.Table("ledger", (*ledger.columns, tables.Column("x", "text", not_null=True)), ledger.pk)
    monkeypatch.setattr(tables, "TABLES", tuple(strict if t.name == "ledger" else t for t in tables.TABLES))
    with pytest.raises(tables.SchemaError, match="ledger.x is NOT NULL without a default"):
        store.connect(path)
