"""Tenant and channel settings, the rows behind the access rules (bot/policy/access.py decides what they mean).

A channel's settings are `channel_settings` rows (tenant, channel, name) -> value; a tenant's own (who may
render, who is blocked, its pace) are `tenant_settings` rows (tenant, name) -> value. A setting set to None is
deleted: it falls back to its default. The bot's own state that must outlive a process (the hash of the
Discord commands last synced) is kept as the settings of a tenant no real tenant key can spell (`SYSTEM`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.store.repo import Db, Runner

# No tenant key has an `@` (bot/policy/quota.py escapes nothing into one): the bot's own rows.
SYSTEM = "imagebot:@system"

Changes = Sequence[tuple[str, str | None]]


@dataclass(frozen=True, slots=True)
class Place:
    """The settings of one channel and of its tenant, read in one go."""

    channel: dict[str, str]
    tenant: dict[str, str]


@dataclass(frozen=True, slots=True)
class TenantSettings:
    """A tenant's own settings and those of every channel it set something for."""

    channels: dict[str, dict[str, str]]
    own: dict[str, str]


def place(db: Db, *, tenant: str, channel: str) -> Place:
    rows = db.conn.execute(
        "SELECT name, value FROM channel_settings WHERE tenant=? AND channel=?", [tenant, channel]
    ).fetchall()
    return Place(dict(rows), _own(db, tenant))


def of_tenant(db: Db, *, tenant: str) -> TenantSettings:
    channels: dict[str, dict[str, str]] = {}
    for channel, name, value in db.conn.execute(
        "SELECT channel, name, value FROM channel_settings WHERE tenant=?", [tenant]
    ).fetchall():
        channels.setdefault(channel, {})[name] = value
    return TenantSettings(channels, _own(db, tenant))


def _own(db: Db, tenant: str) -> dict[str, str]:
    return dict(
        db.conn.execute("SELECT name, value FROM tenant_settings WHERE tenant=?", [tenant]).fetchall()
    )


def set_channel(db: Db, *, tenant: str, channel: str, changes: Changes) -> None:
    """Set (a value) or clear (None) settings of one channel of a tenant."""
    for name, value in changes:
        if value is None:
            db.conn.execute(
                "DELETE FROM channel_settings WHERE tenant=? AND channel=? AND name=?",
                [tenant, channel, name],
            )
        else:
            db.conn.execute(
                "INSERT INTO channel_settings (tenant, channel, name, value) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (tenant, channel, name) DO UPDATE SET value=excluded.value",
                [tenant, channel, name, value],
            )


def set_tenant(db: Db, *, tenant: str, changes: Changes) -> None:
    """Set (a value) or clear (None) a tenant's own settings."""
    for name, value in changes:
        if value is None:
            db.conn.execute("DELETE FROM tenant_settings WHERE tenant=? AND name=?", [tenant, name])
        else:
            db.conn.execute(
                "INSERT INTO tenant_settings (tenant, name, value) VALUES (?, ?, ?) "
                "ON CONFLICT (tenant, name) DO UPDATE SET value=excluded.value",
                [tenant, name, value],
            )


def system(db: Db, *, name: str) -> str | None:
    row = db.conn.execute(
        "SELECT value FROM tenant_settings WHERE tenant=? AND name=?", [SYSTEM, name]
    ).fetchone()
    return None if row is None else str(row[0])


def set_system(db: Db, *, name: str, value: str | None) -> None:
    set_tenant(db, tenant=SYSTEM, changes=[(name, value)])


class Settings:
    """The functions above on the ledger's database thread (`Ledger.settings`)."""

    def __init__(self, run: Runner) -> None:
        self._run = run

    async def place(self, *, tenant: str, channel: str) -> Place:
        return await self._run(lambda db: place(db, tenant=tenant, channel=channel))

    async def of_tenant(self, *, tenant: str) -> TenantSettings:
        return await self._run(lambda db: of_tenant(db, tenant=tenant))

    async def set_channel(self, *, tenant: str, channel: str, changes: Changes) -> None:
        await self._run(lambda db: set_channel(db, tenant=tenant, channel=channel, changes=changes))

    async def set_tenant(self, *, tenant: str, changes: Changes) -> None:
        await self._run(lambda db: set_tenant(db, tenant=tenant, changes=changes))

    async def system(self, *, name: str) -> str | None:
        return await self._run(lambda db: system(db, name=name))

    async def set_system(self, *, name: str, value: str | None) -> None:
        await self._run(lambda db: set_system(db, name=name, value=value))
