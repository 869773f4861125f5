"""Dedupe keys: the platform event ids already handled (Slack retries an event it thinks was missed), kept for
a day, so that of two deliveries of one event, or of two replicas receiving it, exactly one acts."""

from __future__ import annotations

from bot.store.repo import Db


def first_time(db: Db, *, key: str, now: str, forget_before: str) -> bool:
    """Remember `key` (seen at `now`, ISO 8601); True if it was new. Keys seen before `forget_before` are
    dropped. Inside the caller's write transaction."""
    cursor = db.execute(
        "INSERT INTO seen_events (key, at) VALUES (?, ?) ON CONFLICT (key) DO NOTHING", [key, now]
    )
    db.execute("DELETE FROM seen_events WHERE at < ?", [forget_before])
    return cursor.rowcount == 1
