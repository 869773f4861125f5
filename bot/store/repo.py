"""What every repository shares: the database handle its functions take, and the runner that puts them on the
ledger's database thread inside one write transaction (`Ledger.run_db`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import sqlite_utils

T = TypeVar("T")

# The open database: a sqlite_utils.Database, or bot/store/pg.py's PgDatabase with the same surface.
Db = sqlite_utils.Database


class Runner(Protocol):
    """`Ledger.run_db`: run `fn(db)` on the database thread, in one write transaction."""

    def __call__(self, fn: Callable[[Db], T], /) -> Awaitable[T]: ...
