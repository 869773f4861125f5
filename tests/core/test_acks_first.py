"""Acks come before job work: a job waits while any command is still waiting for its ack."""

from __future__ import annotations

import asyncio

from bot.concurrency import AcksFirst


async def test_jobs_start_only_after_every_pending_ack() -> None:
    acks = AcksFirst(quiet=0.001, patience=30)
    order: list[str] = []
    release = asyncio.Event()

    async def command(name: str) -> None:
        async with acks.acking():
            await release.wait()  # the ack's HTTP round trip
            order.append(f"ack {name}")

    async def job() -> None:
        await acks.calm()
        order.append("job")

    commands = [asyncio.create_task(command(n)) for n in ("a", "b")]
    await asyncio.sleep(0)
    started = asyncio.create_task(job())
    await asyncio.sleep(0.01)
    assert order == []  # both acks pending: the job has not started
    release.set()
    await asyncio.gather(*commands, started)
    assert order == ["ack a", "ack b", "job"]


async def test_a_job_never_waits_past_patience() -> None:
    acks = AcksFirst(quiet=0.001, patience=0.05)
    stuck = asyncio.Event()

    async def command() -> None:
        async with acks.acking():
            await stuck.wait()  # an ack that never completes

    pending = asyncio.create_task(command())
    await asyncio.sleep(0)
    await asyncio.wait_for(acks.calm(), 5)  # released by patience, not by the ack
    assert acks.pending == 1
    pending.cancel()


async def test_without_commands_a_job_starts_at_once() -> None:
    acks = AcksFirst()
    await asyncio.wait_for(acks.calm(), 1)
