"""The store's tables, declared once: both backends' schemas come from `TABLES`.

A table is its columns (name, type, NOT NULL, default), its primary key and its indexes. From this:

- SQLite (bot/store/schema.py): a new file is created with sqlite-utils (`Table.create`, `create_index`);
  an existing file is brought up to it by `sqlite_sync` (missing tables created, missing columns added with
  `add_column`, missing indexes created), after the versioned steps that change existing rows.
- PostgreSQL (bot/store/pg.py): `postgres_ddl` writes the CREATE statements; `postgres_sync` does what
  `sqlite_sync` does.
- Both: `sqlite_differences` / `postgres_differences` compare what the database has (introspected) with
  this definition; the migration tests require no difference after every upgrade path.

Types: `text`, `int` (INTEGER on both), `bigint` (money, tokens and row ids: BIGINT on PostgreSQL, INTEGER
on SQLite, whose integers are all 64-bit), `serial` (an integer key the database assigns: SQLite's rowid,
PostgreSQL's BIGSERIAL) and `blob` (BLOB / BYTEA). A primary key column is NOT NULL on PostgreSQL whatever
its declaration says.

To add a table: add one `Table(...)` to `TABLES`. New databases create it; existing ones get it at their
next start (the sync). A versioned step (bot/store/schema.py `MIGRATIONS`, bot/store/pg.py `MIGRATIONS`) is
needed only for what a sync cannot do: change existing rows, rename, drop or retype a column, or add a NOT
NULL column without a default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlite_utils

from bot.store.db import Database


class SchemaError(RuntimeError):
    """The database cannot be brought to the declared schema without a versioned step."""


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str  # text | int | bigint | serial | blob
    not_null: bool = False
    default: int | str | None = None


@dataclass(frozen=True, slots=True)
class Index:
    columns: tuple[str, ...]
    unique: bool = False
    where: str | None = None  # a partial index: the condition, in SQL both dialects read alike
    name: str = ""  # default: idx_<table>_<columns> (sqlite-utils' own naming)


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    pk: tuple[str, ...]
    indexes: tuple[Index, ...] = ()
    without_rowid: bool = False  # SQLite: one b-tree keyed by the primary key (small, hot tables)

    def index_name(self, index: Index) -> str:
        return index.name or f"idx_{self.name}_{'_'.join(index.columns)}"

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


def _text(name: str, *, not_null: bool = False, default: str | None = None) -> Column:
    return Column(name, "text", not_null, default)


def _int(name: str, *, not_null: bool = False, default: int | None = None) -> Column:
    return Column(name, "int", not_null, default)


def _big(name: str, *, not_null: bool = False, default: int | None = None) -> Column:
    return Column(name, "bigint", not_null, default)


def _texts(*names: str) -> tuple[Column, ...]:
    return tuple(Column(n, "text") for n in names)


TABLES: tuple[Table, ...] = (
    # One row per image call, from reservation to settlement (bot/store/ledger.py, bot/store/jobstate.py).
    Table(
        "ledger",
        (
            Column("id", "serial"),
            _text("job_id", not_null=True),
            _int("seq"),
            *_texts(
                "platform", "workspace", "channel", "user", "model", "size", "quality", "format", "prompt"
            ),
            _text("status", not_null=True),
            _big("reserved_micros", not_null=True),
            _big("actual_micros", not_null=True, default=0),
            _big("text_tokens"),
            _big("image_tokens"),
            _big("output_tokens"),
            _text("request_ids"),
            _int("attempts", default=0),
            _big("latency_ms"),
            *_texts("error", "owner", "day", "month", "created_at", "updated_at", "finished_at"),
            _text("context"),  # where the adapter shows the job (to tell its user after a crash)
            _text("notice"),  # pending -> sent: the notice owed for an interrupted job
            _text("mode", not_null=True, default="fast"),  # fast | relax
            _int("overage", not_null=True, default=0),  # settled above its reservation
        ),
        pk=("id",),
        indexes=(
            Index(("job_id",)),
            Index(("channel", "created_at")),
            Index(("user", "created_at")),
            Index(("status",), where="status IN ('reserved', 'running')", name="idx_ledger_open"),
            Index(("status",), where="status='rendered'", name="idx_ledger_rendered"),
        ),
    ),
    # Limit overrides of a user, channel or tenant (bot/policy/quota.py); NULL: the default, -1: none.
    Table(
        "limits",
        (
            *_texts("scope", "key"),
            *(_big(n) for n in ("daily_micros", "daily_images", "monthly_micros", "monthly_images")),
            _text("updated_at"),
        ),
        pk=("scope", "key"),
    ),
    # What each quota period has used, kept with every ledger write.
    Table(
        "counters",
        (
            *(_text(n, not_null=True) for n in ("scope", "key", "period")),
            _big("micros", not_null=True),
            _big("images", not_null=True),
        ),
        pk=("scope", "key", "period"),
        without_rowid=True,
    ),
    # Live processes and their leases.
    Table(
        "instances",
        (_text("id"), _text("host"), _int("pid"), *_texts("started_at", "heartbeat_at", "expires_at")),
        pk=("id",),
    ),
    # Platform events already handled (a retried delivery is ignored).
    Table("seen_events", _texts("key", "at"), pk=("key",), indexes=(Index(("at",)),)),
    # Each person's own defaults in a tenant, name/value (bot/store/people.py, /imagine-settings).
    Table(
        "user_settings",
        (*_texts("tenant", "user", "name"), _text("value", not_null=True)),
        pk=("tenant", "user", "name"),
    ),
    # Each job's request and where its images live: its result buttons' state (bot/jobs/actions.py).
    Table(
        "results",
        (
            *_texts("job_id", "platform", "workspace", "channel", "user"),
            *(_text(n, not_null=True) for n in ("request", "images", "created_at")),
        ),
        pk=("job_id",),
        indexes=(Index(("created_at",)),),
    ),
    # Input images of stored requests, by content.
    Table("blobs", (_text("sha256"), Column("data", "blob", not_null=True)), pk=("sha256",)),
    # Who holds each blob: `r:<job_id>` (a result) or `c:<token>` (a price check).
    Table("blob_refs", _texts("sha256", "holder"), pk=("holder", "sha256"), indexes=(Index(("sha256",)),)),
    # Pending price checks.
    Table(
        "confirmations",
        (
            *_texts("token", "platform", "workspace", "channel", "user"),
            *(_text(n, not_null=True) for n in ("request", "created_at", "state")),
        ),
        pk=("token",),
        indexes=(Index(("user", "created_at")),),
    ),
    # Settings of a channel and of a tenant (bot/policy/access.py).
    Table(
        "channel_settings",
        (*_texts("tenant", "channel", "name"), _text("value", not_null=True)),
        pk=("tenant", "channel", "name"),
    ),
    Table(
        "tenant_settings", (*_texts("tenant", "name"), _text("value", not_null=True)), pk=("tenant", "name")
    ),
    # Batch API batches (relax mode, bot/jobs/relax.py), keyed before the API names them.
    Table(
        "batches",
        (
            _text("key", not_null=True),
            _text("id"),
            _text("endpoint", not_null=True),
            _text("input_file_id"),
            _text("status", not_null=True),
            _text("created_at", not_null=True),
            *_texts("checked_at", "finished_at", "owner", "output_file_id", "error_file_id"),
        ),
        pk=("key",),
        indexes=(Index(("status",)), Index(("id",), unique=True)),
    ),
    Table(
        "batch_lines",
        (
            _text("custom_id"),
            _text("batch_key", not_null=True),
            _text("job_id", not_null=True),
            _big("row_id", not_null=True),
            _text("state", not_null=True),
        ),
        pk=("custom_id",),
        indexes=(Index(("batch_key",)),),
    ),
    Table(
        "relax_jobs",
        (
            _text("job_id"),
            _text("platform", not_null=True),
            *_texts("workspace", "channel", "user"),
            _text("submitted_at", not_null=True),
            _int("discard", default=0),
            _text("delivered_at"),
        ),
        pk=("job_id",),
    ),
    # Rendered images' bytes until the platform confirms them (bot/store/jobstate.py).
    Table(
        "outbox",
        (
            _big("row_id"),
            _text("job_id", not_null=True),
            _int("seq"),
            Column("data", "blob", not_null=True),
            _int("width"),
            _int("height"),
            _text("format"),
            _big("elapsed_ms"),
            _int("tries"),
            _text("created_at", not_null=True),
        ),
        pk=("row_id",),
        indexes=(Index(("job_id",)),),
    ),
    # The web dashboard's one-time sign-in links and sessions, by the SHA-256 digest of each secret
    # (bot/store/signin.py; the secrets themselves are never stored).
    Table(
        "dashboard_tokens",
        (
            _text("digest"),
            _text("kind", not_null=True),  # link | session
            *_texts("platform", "workspace", "user_id"),  # no platform: an operator's session
            _int("operator", not_null=True, default=0),
            _text("created_at", not_null=True),
            _text("expires_at", not_null=True),
            _text("used_at"),
        ),
        pk=("digest",),
        indexes=(Index(("expires_at",)),),
    ),
)
INTERNAL = ("schema_version",)  # the migrations' own table, outside the definition


def table(name: str) -> Table:
    return next(t for t in TABLES if t.name == name)


def _literal(value: int | str) -> str:
    return str(value) if isinstance(value, int) else "'" + value.replace("'", "''") + "'"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _columns_sql(index: Index) -> str:
    return ", ".join(_quote(c) for c in index.columns)


def _not_addable(t: Table, c: Column) -> SchemaError:
    return SchemaError(
        f"{t.name}.{c.name} is NOT NULL without a default: existing rows need a versioned step to fill it"
    )


# --- SQLite (sqlite-utils) --------------------------------------------------------------------------

_SQLITE_TYPES: dict[str, type] = {"text": str, "int": int, "bigint": int, "serial": int, "blob": bytes}
_SQLITE_DECLARED = {
    "text": "TEXT",
    "int": "INTEGER",
    "bigint": "INTEGER",
    "serial": "INTEGER",
    "blob": "BLOB",
}


def sqlite_create(db: sqlite_utils.Database, t: Table) -> None:
    """Create one table and its indexes."""
    columns = {c.name: _SQLITE_TYPES[c.type] for c in t.columns}
    pk: str | tuple[str, ...] = t.pk[0] if len(t.pk) == 1 else t.pk
    not_null = {c.name for c in t.columns if c.not_null}
    defaults = {c.name: c.default for c in t.columns if c.default is not None}
    if t.without_rowid:  # sqlite-utils writes the statement; the clause is SQLite's own
        sql = db.create_table_sql(t.name, columns, pk=pk, not_null=not_null, defaults=defaults)
        db.execute(sql.strip().rstrip(";") + " WITHOUT ROWID")
    else:
        db.table(t.name).create(columns, pk=pk, not_null=not_null, defaults=defaults)
    for index in t.indexes:
        _sqlite_index(db, t, index)


def _sqlite_index(db: sqlite_utils.Database, t: Table, index: Index) -> None:
    name = t.index_name(index)
    if index.where is None:
        db.table(t.name).create_index(
            list(index.columns), index_name=name, unique=index.unique, if_not_exists=True
        )
        return
    unique = "UNIQUE " if index.unique else ""
    db.execute(
        f"CREATE {unique}INDEX IF NOT EXISTS {_quote(name)} ON {_quote(t.name)} ({_columns_sql(index)}) "
        f"WHERE {index.where}"
    )


def sqlite_sync(db: sqlite_utils.Database) -> list[str]:
    """Create what the file lacks of `TABLES` (tables, columns, indexes); returns what was done."""
    done: list[str] = []
    existing = set(db.table_names())
    for t in TABLES:
        if t.name not in existing:
            sqlite_create(db, t)
            done.append(f"created table {t.name}")
            continue
        have = db.table(t.name).columns_dict
        for c in t.columns:
            if c.name in have:
                continue
            if c.not_null and c.default is None:
                raise _not_addable(t, c)
            if c.not_null or c.default is None:
                db.table(t.name).add_column(c.name, _SQLITE_TYPES[c.type], not_null_default=c.default)
            else:  # nullable with a default: sqlite-utils adds only NOT NULL ones with a default
                db.execute(
                    f"ALTER TABLE {_quote(t.name)} ADD COLUMN {_quote(c.name)} {_SQLITE_DECLARED[c.type]} "
                    f"DEFAULT {_literal(c.default)}"
                )
            done.append(f"added column {t.name}.{c.name}")
        indexes = {i.name for i in db.table(t.name).indexes}
        for index in t.indexes:
            if t.index_name(index) not in indexes:
                _sqlite_index(db, t, index)
                done.append(f"created index {t.index_name(index)}")
    return done


def sqlite_differences(db: sqlite_utils.Database) -> list[str]:
    """How the file's schema differs from `TABLES` (introspected): [] when it is the declared one."""
    found: list[str] = []
    names = set(db.table_names())
    for extra in sorted(names - {t.name for t in TABLES} - set(INTERNAL)):
        found.append(f"table {extra} is not declared")
    for t in TABLES:
        if t.name not in names:
            found.append(f"table {t.name} is missing")
            continue
        info = {r[1]: r for r in db.execute(f"PRAGMA table_info({_quote(t.name)})").fetchall()}
        for c in t.columns:
            pk = t.pk.index(c.name) + 1 if c.name in t.pk else 0
            want = (
                _SQLITE_DECLARED[c.type],
                int(c.not_null),
                None if c.default is None else _literal(c.default),
                pk,
            )
            row = info.pop(c.name, None)
            have = None if row is None else (row[2], row[3], row[4], row[5])
            if have != want:
                found.append(f"{t.name}.{c.name}: (type, notnull, default, pk) is {have}, declared {want}")
        found += [f"{t.name}.{extra} is not declared" for extra in info]
        sql = db.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name=?", [t.name]).fetchone()[
            0
        ]
        if ("WITHOUT ROWID" in sql.upper()) != t.without_rowid:
            found.append(f"{t.name}: WITHOUT ROWID is {not t.without_rowid}, declared {t.without_rowid}")
        have_indexes = {
            i.name: i for i in db.table(t.name).indexes if not i.name.startswith("sqlite_autoindex")
        }
        for index in t.indexes:
            name = t.index_name(index)
            got = have_indexes.pop(name, None)
            if got is None:
                found.append(f"index {name} is missing")
            elif (tuple(got.columns), bool(got.unique)) != (index.columns, index.unique):
                found.append(f"index {name} is {got.columns} unique={got.unique}, declared {index}")
        found += [f"index {extra} is not declared" for extra in have_indexes]
    return found


# --- PostgreSQL ---------------------------------------------------------------------------------------

_PG_TYPES = {"text": "TEXT", "int": "INTEGER", "bigint": "BIGINT", "serial": "BIGSERIAL", "blob": "BYTEA"}
_PG_INFO_TYPES = {"text": "text", "int": "integer", "bigint": "bigint", "serial": "bigint", "blob": "bytea"}


def _pg_column(c: Column) -> str:
    default = "" if c.default is None else f" DEFAULT {_literal(c.default)}"
    return f"{_quote(c.name)} {_PG_TYPES[c.type]}{' NOT NULL' if c.not_null else ''}{default}"


def _pg_index(t: Table, index: Index) -> str:
    unique = "UNIQUE " if index.unique else ""
    where = f" WHERE {index.where}" if index.where else ""
    return (
        f"CREATE {unique}INDEX IF NOT EXISTS {_quote(t.index_name(index))} ON {_quote(t.name)} "
        f"({_columns_sql(index)}){where}"
    )


def postgres_ddl(t: Table) -> list[str]:
    """The statements that create one table and its indexes on PostgreSQL."""
    parts = [_pg_column(c) for c in t.columns] + [f"PRIMARY KEY ({', '.join(_quote(c) for c in t.pk)})"]
    return [f"CREATE TABLE IF NOT EXISTS {_quote(t.name)} ({', '.join(parts)})"] + [
        _pg_index(t, index) for index in t.indexes
    ]


def _pg_columns(db: Database) -> dict[str, dict[str, tuple[Any, ...]]]:
    tables: dict[str, dict[str, tuple[Any, ...]]] = {}
    for name, column, data_type, nullable, default in db.execute(
        "SELECT table_name, column_name, data_type, is_nullable, column_default FROM information_schema.columns "
        "WHERE table_schema = current_schema()"
    ).fetchall():
        tables.setdefault(name, {})[column] = (data_type, nullable, default)
    return tables


def _pg_indexes(db: Database) -> dict[str, tuple[str, str]]:
    """Index name -> (table, definition), primary keys left out."""
    return {
        name: (table_name, definition)
        for table_name, name, definition in db.execute(
            "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
        ).fetchall()
        if not name.endswith("_pkey")
    }


def postgres_sync(db: Database) -> list[str]:
    """`sqlite_sync` on PostgreSQL (inside the caller's transaction)."""
    done: list[str] = []
    have = _pg_columns(db)
    indexes = _pg_indexes(db)
    for t in TABLES:
        if t.name not in have:
            for statement in postgres_ddl(t):
                db.execute(statement)
            done.append(f"created table {t.name}")
            continue
        for c in t.columns:
            if c.name not in have[t.name]:
                if c.not_null and c.default is None:
                    raise _not_addable(t, c)
                db.execute(f"ALTER TABLE {_quote(t.name)} ADD COLUMN IF NOT EXISTS {_pg_column(c)}")
                done.append(f"added column {t.name}.{c.name}")
        for index in t.indexes:
            if t.index_name(index) not in indexes:
                db.execute(_pg_index(t, index))
                done.append(f"created index {t.index_name(index)}")
    return done


def _pg_default_is(c: Column, default: Any) -> bool:
    """Whether information_schema's `column_default` is the declared one (`'fast'::text` is 'fast')."""
    if c.type == "serial":
        return str(default or "").startswith("nextval(")
    if c.default is None:
        return default is None
    return default is not None and str(default).split("::")[0] == _literal(c.default)


def postgres_differences(db: Database) -> list[str]:
    """`sqlite_differences` on PostgreSQL."""
    found: list[str] = []
    have = _pg_columns(db)
    for extra in sorted(set(have) - {t.name for t in TABLES} - set(INTERNAL)):
        found.append(f"table {extra} is not declared")
    keys: dict[str, list[str]] = {}
    for table_name, column in db.execute(
        "SELECT k.table_name, k.column_name FROM information_schema.table_constraints c "
        "JOIN information_schema.key_column_usage k ON k.constraint_name = c.constraint_name "
        "AND k.table_schema = c.table_schema WHERE c.constraint_type = 'PRIMARY KEY' "
        "AND c.table_schema = current_schema() ORDER BY k.table_name, k.ordinal_position"
    ).fetchall():
        keys.setdefault(table_name, []).append(column)
    indexes = _pg_indexes(db)
    for t in TABLES:
        columns = dict(have.get(t.name, {}))
        if not columns:
            found.append(f"table {t.name} is missing")
            continue
        for c in t.columns:
            nullable = "NO" if c.not_null or c.name in t.pk else "YES"
            got = columns.pop(c.name, None)
            if (
                got is None
                or got[0] != _PG_INFO_TYPES[c.type]
                or got[1] != nullable
                or not _pg_default_is(c, got[2])
            ):
                found.append(f"{t.name}.{c.name}: (type, nullable, default) is {got}, declared {c}")
        found += [f"{t.name}.{extra} is not declared" for extra in columns]
        if tuple(keys.get(t.name, ())) != t.pk:
            found.append(f"{t.name}: primary key is {keys.get(t.name)}, declared {t.pk}")
        for index in t.indexes:
            name = t.index_name(index)
            got_index = indexes.pop(name, None)
            if got_index is None or got_index[0] != t.name:
                found.append(f"index {name} is missing")
            elif ("UNIQUE" in got_index[1].upper().split(" ON ")[0]) != index.unique:
                found.append(f"index {name}: {got_index[1]}, declared {index}")
    found += [f"index {extra} is not declared" for extra in indexes]
    return found
