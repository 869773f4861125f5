"""What the store's code needs of a database connection, and the SQLite one.

`Database` is the small surface both backends give: `execute` (and `executemany`) with `?` placeholders,
`transaction()`, and two facts about the dialect. `SqliteDatabase` (here) and `PgDatabase` (bot/store/pg.py)
both satisfy it; the store's functions take a `Database` and never ask which one it is, except where the
dialects truly differ (`for_update`, and the few places that branch on `postgres`).

The SQL the store sends is the subset both dialects share, written once: `ON CONFLICT` (never `INSERT OR
...`), the column `"user"` quoted (a reserved word in PostgreSQL), `?` placeholders. A PostgreSQL connection
converts the placeholders and nothing else.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

import sqlite_utils


class Cursor(Protocol):
    """A statement's result: rows and the count of rows written."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Database(Protocol):
    """One connection to the store (SQLite file or PostgreSQL database), owned by one thread."""

    @property
    def postgres(self) -> bool:
        """True on PostgreSQL (where the server's clock and functions are used)."""
        ...

    @property
    def for_update(self) -> str:
        """Appended to a SELECT that locks the rows it reads: `" FOR UPDATE"`, or `""` on SQLite, where the
        write transaction (`BEGIN IMMEDIATE`) already makes its writer the only one."""
        ...

    @property
    def in_transaction(self) -> bool: ...

    @property
    def conn(self) -> Database:
        """This same object (callers written as `db.conn.execute(...)` keep working); new code: `db.execute`."""
        ...

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    def transaction(self) -> AbstractContextManager[None]:
        """A write transaction; it commits when the block ends, rolls back if it raises."""
        ...

    def close(self) -> None: ...


class SqliteDatabase:
    """A SQLite connection (autocommit; transactions explicit) with its sqlite-utils view (`utils`), which
    creates, migrates and introspects the schema (bot/store/schema.py)."""

    postgres = False
    for_update = ""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.utils = sqlite_utils.Database(conn)

    @property
    def conn(self) -> SqliteDatabase:
        return self

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._conn.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._conn.executemany(sql, rows)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """`BEGIN IMMEDIATE`: the write lock is taken at once, so of several processes one writer decides at a
        time (a check of a limit and the write it allows are never split by another writer)."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            conn.execute("COMMIT")
        except BaseException:
            # SQLite may already have rolled back (disk full, I/O error, RAISE(ROLLBACK)): a second ROLLBACK
            # would hide the real error. And a failed COMMIT must not keep the write lock for good.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._conn.close()
