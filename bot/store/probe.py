"""A health check's own connection to the database: opened apart from the ledger's (whose one queue may hold
thousands of jobs' queries), it tells whether the database answers at all."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

from bot.store import pg


class Probe:
    """One connection, opened on first use and again after a failure. Not thread-safe: one thread uses it."""

    def __init__(self, target: Path | str, *, timeout: float, connect_timeout: int) -> None:
        self.target = target
        self.timeout = timeout  # SQLite: how long to wait for a lock
        self.connect_timeout = connect_timeout  # PostgreSQL: how long to wait for the connection
        self._conn: Any = None

    def _open(self) -> Any:
        if pg.is_url(self.target):
            import psycopg

            return psycopg.connect(str(self.target), autocommit=True, connect_timeout=self.connect_timeout)
        # mode=rw: never create the file (the ledger does, with its schema); a missing file is not ready.
        uri = f"{Path(self.target).resolve().as_uri()}?mode=rw"
        return sqlite3.connect(uri, uri=True, timeout=self.timeout, check_same_thread=False)

    def ping(self) -> None:
        """Raise unless the database answers a trivial query."""
        if self._conn is None:
            self._conn = self._open()
        try:
            self._conn.execute("SELECT 1").fetchone()
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
