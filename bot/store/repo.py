"""What every repository shares: the database handle its functions take, and the runner that puts them on the
ledger's database thread inside one write transaction (`Ledger.run_db`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from bot.store.db import Database

T = TypeVar("T")

# The open database (bot/store/db.py): SQLite's or PostgreSQL's, both the same Protocol.
Db = Database


class Runner(Protocol):
    """`Ledger.run_db`: run `fn(db)` on the database thread, in one write transaction."""

    def __call__(self, fn: Callable[[Db], T], /) -> Awaitable[T]: ...
