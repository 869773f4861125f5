"""Opening IMAGEBOT_DB, apart from the rest of the core: the one-shot commands that need only the ledger
(`imagebot quota`, `report`, `history`, `info`) open it without importing the renderer, the SDK, the offline
server or aiohttp (bot/app.py's `Core.start` opens it the same way)."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.config import Settings
from bot.errors import ConfigError
from bot.store.ledger import Ledger


class DatabaseUnavailable(Exception):
    """The database does not answer (no such host yet, connection refused, timed out): worth trying again. The
    message is one line, names IMAGEBOT_DB and carries no password."""


# PostgreSQL answers these when the URL itself is wrong: trying again cannot help (a configuration error).
_PG_REFUSALS = ("authentication failed", "password", "does not exist", "pg_hba.conf", "permission denied")


def database_problem(exc: BaseException, settings: Settings) -> ConfigError | DatabaseUnavailable | None:
    """What opening IMAGEBOT_DB failed with, as one line: a ConfigError (the URL or path is wrong), a
    DatabaseUnavailable (try again later), or None (not a database problem: a bug, raised as it is)."""
    import sqlite3

    import psycopg

    where = str(settings.db_path)
    for secret in settings.secrets():
        where = where.replace(secret, "***")
    reason = " ".join(str(exc).split())
    for secret in settings.secrets():
        reason = reason.replace(secret, "***")
    if isinstance(exc, psycopg.OperationalError):
        if any(word in reason.lower() for word in _PG_REFUSALS):
            return ConfigError(f"IMAGEBOT_DB={where}: PostgreSQL refused it: {reason}")
        return DatabaseUnavailable(f"IMAGEBOT_DB={where} does not answer: {reason}")
    if isinstance(exc, psycopg.Error):
        return ConfigError(f"IMAGEBOT_DB={where}: {type(exc).__name__}: {reason}")
    if isinstance(exc, sqlite3.OperationalError) and "locked" in reason:
        return DatabaseUnavailable(f"IMAGEBOT_DB={where} is locked by another process: {reason}")
    if isinstance(exc, sqlite3.Error | OSError):
        return ConfigError(f"IMAGEBOT_DB={where} cannot be opened as a SQLite database: {reason}")
    return None


async def open_ledger(settings: Settings, **options: Any) -> Ledger:
    """Open (and migrate) the ledger of IMAGEBOT_DB. Raises ConfigError or DatabaseUnavailable (one line each,
    see `database_problem`) when the database cannot be opened."""
    try:
        return await asyncio.to_thread(
            lambda: Ledger(
                settings.db_path, settings.quotas, settings.timezone, settings.store_prompts, **options
            )
        )
    except Exception as exc:
        problem = database_problem(exc, settings)
        if problem is None:
            raise
        raise problem from None
