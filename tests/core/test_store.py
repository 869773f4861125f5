"""The repositories' own rules (bot/store/), on SQLite and PostgreSQL: a cleared setting is gone (its default
applies again), a limit set column by column keeps the others, an event id is acted on once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from bot.store import counters, dedupe, settings
from bot.store.admission import UNLIMITED, LimitRow
from bot.store.ledger import Ledger

TENANT = "slack:T1"


class Tenant:
    workspace = "T1"
    key = TENANT


@pytest.fixture
def ledger(db_target: str) -> Iterator[Ledger]:
    opened = Ledger(db_target)
    yield opened
    opened.close()


async def test_a_setting_is_set_replaced_and_cleared_per_channel_and_tenant(ledger: Ledger) -> None:
    await ledger.settings.set_channel(tenant=TENANT, channel="C1", changes=[("max_size", "2048x2048")])
    await ledger.settings.set_channel(tenant=TENANT, channel="C1", changes=[("max_size", "1024x1024")])
    await ledger.settings.set_channel(tenant=TENANT, channel="C2", changes=[("enabled", "off")])
    await ledger.settings.set_tenant(tenant=TENANT, changes=[("cooldown", "30"), ("block:U9", "1")])
    await ledger.settings.set_tenant(tenant="slack:T2", changes=[("cooldown", "5")])
    await ledger.settings.set_system(name="discord_commands:1:global", value="abc")

    place = await ledger.settings.place(tenant=TENANT, channel="C1")
    assert place == settings.Place({"max_size": "1024x1024"}, {"cooldown": "30", "block:U9": "1"})
    whole = await ledger.settings.of_tenant(tenant=TENANT)
    assert whole.channels == {"C1": {"max_size": "1024x1024"}, "C2": {"enabled": "off"}}
    assert whole.own == {"cooldown": "30", "block:U9": "1"}  # not T2's, not the bot's own rows

    await ledger.settings.set_tenant(tenant=TENANT, changes=[("block:U9", None)])
    await ledger.settings.set_channel(tenant=TENANT, channel="C1", changes=[("max_size", None)])
    assert await ledger.settings.place(tenant=TENANT, channel="C1") == settings.Place({}, {"cooldown": "30"})
    assert await ledger.settings.system(name="discord_commands:1:global") == "abc"
    assert await ledger.settings.system(name="discord_commands:1:other") is None


async def test_a_limit_set_column_by_column_keeps_the_others(ledger: Ledger) -> None:
    await ledger.set_limits("user", "U1", {"daily_micros": 5_000_000}, tenant=Tenant())
    await ledger.set_limits("user", "U1", {"monthly_images": UNLIMITED}, tenant=Tenant())
    keys = [("user", f"{TENANT}:U1"), ("user", f"{TENANT}:U2")]
    rows = await ledger.run_db(lambda db: counters.limit_rows(db, keys=keys))
    assert rows == {keys[0]: LimitRow(daily_micros=5_000_000, monthly_images=UNLIMITED)}

    await ledger.set_limits("user", "U1", {"daily_micros": None}, tenant=Tenant())  # back to the default
    rows = await ledger.run_db(lambda db: counters.limit_rows(db, keys=keys))
    assert rows == {keys[0]: LimitRow(monthly_images=UNLIMITED)}


async def test_counters_add_up_and_release(ledger: Ledger) -> None:
    keys = [("user_day", f"{TENANT}:U1", "2026-04-15"), ("workspace_month", TENANT, "2026-04")]
    await ledger.run_db(lambda db: counters.bump(db, keys=keys, micros=300, images=2))
    await ledger.run_db(lambda db: counters.bump(db, keys=keys[:1], micros=-100, images=-1))
    used = await ledger.run_db(lambda db: counters.used(db, keys=[*keys, ("user_day", "x", "y")]))
    assert used == {keys[0]: (200, 1), keys[1]: (300, 2)}


async def test_an_event_id_is_new_once_and_forgotten_after_a_day(ledger: Ledger) -> None:
    now = datetime(2026, 4, 15, 12, tzinfo=UTC)

    def seen(key: str, at: datetime) -> bool:
        return dedupe.first_time(
            ledger.db, key=key, now=at.isoformat(), forget_before=(at - timedelta(days=1)).isoformat()
        )

    assert await ledger.run_db(lambda db: seen("slack:Ev1", now)) is True
    assert await ledger.run_db(lambda db: seen("slack:Ev1", now + timedelta(hours=1))) is False
    later = now + timedelta(days=2)
    assert await ledger.run_db(lambda db: seen("slack:Ev2", later)) is True  # and Ev1, a day old, goes
    assert await ledger.run_db(lambda db: seen("slack:Ev1", later)) is True
