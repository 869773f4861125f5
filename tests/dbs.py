"""Reading the store in tests, whichever backend it is: a SQLite file or a PostgreSQL URL (bot/store/pg.py).

The SQL is the core's shared dialect (`?` placeholders); each call opens its own connection, as a person
inspecting the database would, so tests see only what was committed."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from bot.store import pg


def read(target: Path | str, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[dict[str, Any]]:
    """Rows of a query, as dicts by column name."""
    if pg.is_url(target):
        with psycopg.connect(str(target), row_factory=dict_row, cursor_factory=psycopg.RawCursor) as conn:
            return [dict(r) for r in conn.execute(pg.placeholders(sql), list(params) or None)]  # type: ignore[arg-type]
    with sqlite3.connect(target) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(sql, tuple(params))]


def tuples(target: Path | str, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows of a query, as tuples (columns may share a name)."""
    if pg.is_url(target):
        with psycopg.connect(str(target), cursor_factory=psycopg.RawCursor) as conn:
            return [tuple(r) for r in conn.execute(pg.placeholders(sql), list(params) or None)]  # type: ignore[arg-type]
    with sqlite3.connect(target) as conn:
        return [tuple(r) for r in conn.execute(sql, tuple(params))]


def write(target: Path | str, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> None:
    """One statement, committed (to move a row into the past, as time would)."""
    if pg.is_url(target):
        with psycopg.connect(str(target), cursor_factory=psycopg.RawCursor) as conn:
            conn.execute(pg.placeholders(sql), list(params) or None)  # type: ignore[arg-type]
        return
    with sqlite3.connect(target) as conn:
        conn.execute(sql, tuple(params))
