"""Reading the store in tests, whichever backend it is: a SQLite file or a PostgreSQL URL (bot/store/pg.py).

The SQL is the core's shared dialect (`?` placeholders). Tests see only what was committed, as a person
inspecting the database would: SQLite opens a connection per call (cheap); PostgreSQL keeps one autocommit
connection per database for the test (a connection costs a round of authentication; a property test reads
thousands of times), each statement reading the latest commits. tests/conftest.py closes them after each test.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from bot.store import pg

_open: dict[str, psycopg.Connection[Any]] = {}


def _pg(url: str) -> psycopg.Connection[Any]:
    """The test's autocommit connection to `url` (a new one if the last one broke, e.g. a restarted server)."""
    conn = _open.get(url)
    if conn is None or conn.closed or conn.broken:
        _open.pop(url, None)
        while len(_open) >= 4:  # a property test makes a database per example: keep the latest few open
            oldest = next(iter(_open))
            _open.pop(oldest).close()
        conn = _open[url] = psycopg.connect(url, autocommit=True, cursor_factory=psycopg.RawCursor)
    return conn


def close_all() -> None:
    """Close the PostgreSQL connections the tests opened (after each test: its database may be dropped)."""
    while _open:
        _, conn = _open.popitem()
        conn.close()


def _pg_rows(url: str, sql: str, params: tuple[Any, ...] | list[Any], *, as_dicts: bool) -> list[Any]:
    with _pg(url).cursor(row_factory=dict_row if as_dicts else psycopg.rows.tuple_row) as cur:
        cur.execute(pg.placeholders(sql), list(params) or None)  # type: ignore[arg-type]
        return list(cur.fetchall()) if cur.description is not None else []


def read(target: Path | str, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[dict[str, Any]]:
    """Rows of a query, as dicts by column name."""
    if pg.is_url(target):
        return [dict(r) for r in _pg_rows(str(target), sql, params, as_dicts=True)]
    with sqlite3.connect(target) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(sql, tuple(params))]


def tuples(target: Path | str, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows of a query, as tuples (columns may share a name)."""
    if pg.is_url(target):
        return [tuple(r) for r in _pg_rows(str(target), sql, params, as_dicts=False)]
    with sqlite3.connect(target) as conn:
        return [tuple(r) for r in conn.execute(sql, tuple(params))]


def write(target: Path | str, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> None:
    """One statement, committed (to move a row into the past, as time would)."""
    if pg.is_url(target):
        _pg_rows(str(target), sql, params, as_dicts=False)
        return
    with sqlite3.connect(target) as conn:
        conn.execute(sql, tuple(params))
