"""A job row's state machine, its lease fence and its outbox: the only code that writes `ledger.status`.

Every image of a job is one ledger row. It moves only along these arrows, each one conditional UPDATE
(`WHERE id=? AND status IN (the states it may come from)`, plus, for a row under a lease, "held by this
process's live lease"), and the number of rows it changed is checked:

    reserved -> running -> rendered -> delivered
        |          |           \\-> undelivered -> rendered (`imagebot redeliver`) -> delivered
        |          +-> failed | possibly_billed | cancelled | interrupted
        +-> batched (relax: under no lease) -> rendered | failed | possibly_billed
        +-> cancelled | interrupted | failed

- `rendered`, `delivered` and `undelivered` are paid images: the API made them and they are charged.
  `possibly_billed` is a failure that is charged (an attempt that may have cost money, and gave no image).
- Fencing: a row under a lease moves only while its owner's lease is live (docs/rules.md §5). A process whose lease
  lapsed (its database thread stalled, say) may find its rows already recovered as `interrupted` by another
  process; then `start` refuses, and no API call is made for them.
- The outbox: a `rendered` row keeps its image's bytes in `outbox` until the platform confirms the upload
  (`delivered`), so a crash or a platform outage never loses a paid image. After a restart any process that
  serves the platform claims the rendered rows of dead owners and delivers them.
- Lease expiry is judged by the database's clock on PostgreSQL (`now()`); a SQLite file lives on one host,
  whose clock is the ledger's.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from enum import StrEnum
from typing import Any

from bot.store.db import Database


class Status(StrEnum):
    """A ledger row's status (see the module docstring for its arrows)."""

    RESERVED = "reserved"
    RUNNING = "running"
    BATCHED = "batched"  # relax mode: in a Batch API batch, under no lease; settled when the batch ends
    RENDERED = "rendered"  # made and charged; its bytes wait in the outbox for the platform
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"  # made and charged, delivery gave up; kept for `imagebot redeliver`
    FAILED = "failed"
    POSSIBLY_BILLED = "possibly_billed"  # failed, and charged: an attempt may have cost money
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


OPEN = (Status.RESERVED.value, Status.RUNNING.value, Status.BATCHED.value)
LEASED = (Status.RESERVED.value, Status.RUNNING.value)  # rows that only their live owner may move
PAID = (Status.RENDERED.value, Status.DELIVERED.value, Status.UNDELIVERED.value)  # they count as images
SQL_PAID = "('rendered', 'delivered', 'undelivered')"

# Where each status may go; anything else is refused (a bug, or another process got there first).
ARROWS: dict[str, frozenset[str]] = {
    Status.RESERVED: frozenset(
        {Status.RUNNING, Status.BATCHED, Status.FAILED, Status.CANCELLED, Status.INTERRUPTED}
    ),
    Status.RUNNING: frozenset(
        {Status.RENDERED, Status.FAILED, Status.POSSIBLY_BILLED, Status.CANCELLED, Status.INTERRUPTED}
    ),
    Status.BATCHED: frozenset({Status.RENDERED, Status.FAILED, Status.POSSIBLY_BILLED, Status.CANCELLED}),
    Status.RENDERED: frozenset({Status.DELIVERED, Status.UNDELIVERED}),
    Status.UNDELIVERED: frozenset({Status.RENDERED, Status.DELIVERED}),
}


def sources(to: Status) -> tuple[str, ...]:
    """Every status a row may move to `to` from."""
    return tuple(sorted(str(s) for s, targets in ARROWS.items() if to in targets))


class Clock:
    """How a backend says "now" for leases: a parameter on SQLite, the server's `now()` on PostgreSQL."""

    def __init__(self, postgres: bool) -> None:
        self.postgres = postgres

    def live(self, owner_sql: str) -> str:
        """SQL that is true while the lease of the instance `owner_sql` names is live ("?" takes now)."""
        if self.postgres:
            return (
                f"EXISTS (SELECT 1 FROM instances WHERE id = {owner_sql} "
                "AND expires_at::timestamptz > now() AND CAST(? AS TEXT) IS NOT NULL)"
            )
        return f"EXISTS (SELECT 1 FROM instances WHERE id = {owner_sql} AND expires_at > ?)"

    def expired(self) -> str:
        """SQL true for an `instances` row whose lease ran out ("?" takes now)."""
        if self.postgres:
            return "(expires_at::timestamptz < now() AND CAST(? AS TEXT) IS NOT NULL)"
        return "expires_at < ?"


def move(
    db: Database,
    clock: Clock,
    row_id: int,
    to: Status,
    *,
    now: str,
    owner: str | None,
    sets: dict[str, Any] | None = None,
    only_from: Collection[str] | None = None,
) -> bool:
    """Move one row to `to` if it is in a state that may go there (`only_from`, a subset, narrows it) and,
    when `owner` is given and the row is under a lease, if that owner holds the row under a live lease.
    `sets` are further columns to write in the same UPDATE. True if the row moved."""
    allowed = [s for s in sources(to) if only_from is None or s in only_from]
    if not allowed:
        raise ValueError(f"no arrow into {to} from {sorted(only_from or ())}")
    columns = {"status": str(to), "updated_at": now, **(sets or {})}
    assignments = ", ".join(f"{name}=?" for name in columns)
    params: list[Any] = [*columns.values(), row_id, *allowed]
    where = f"id=? AND status IN ({','.join('?' * len(allowed))})"
    if owner is not None:
        leased = ",".join(f"'{s}'" for s in LEASED)
        where += f" AND (status NOT IN ({leased}) OR (owner=? AND {clock.live('owner')}))"
        params += [owner, now]
    cursor = db.execute(f"UPDATE ledger SET {assignments} WHERE {where}", params)
    return bool(cursor.rowcount == 1)


# -- the outbox ----------------------------------------------------------------------------------------


def keep(
    db: Database, row_id: int, job_id: str, seq: int, image: dict[str, Any], data: bytes, now: str
) -> None:
    """Keep a rendered image's bytes until its delivery is confirmed."""
    db.execute(
        "INSERT INTO outbox (row_id, job_id, seq, data, width, height, format, elapsed_ms, tries, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?) ON CONFLICT (row_id) DO NOTHING",
        [
            row_id,
            job_id,
            seq,
            data,
            image["width"],
            image["height"],
            image["format"],
            image["elapsed_ms"],
            now,
        ],
    )


def delivered(db: Database, clock: Clock, row_ids: Sequence[int], now: str) -> int:
    """The platform confirmed these images: their rows are delivered. Their bytes are no longer needed; they
    go with the next sweep (`forget_delivered`), off the job's path: a delete of an image costs as much as
    its insert."""
    return sum(move(db, clock, row_id, Status.DELIVERED, now=now, owner=None) for row_id in row_ids)


def forget_delivered(db: Database) -> int:
    """Delete the outbox bytes of delivered images (the periodic sweep)."""
    cursor = db.execute("DELETE FROM outbox WHERE row_id IN (SELECT id FROM ledger WHERE status='delivered')")
    return max(int(cursor.rowcount), 0)


def undelivered(db: Database, clock: Clock, row_ids: Sequence[int], now: str, why: str) -> int:
    """Delivery gave up: the rows say so; the bytes stay for `imagebot redeliver`."""
    moved = 0
    for row_id in row_ids:
        moved += move(db, clock, row_id, Status.UNDELIVERED, now=now, owner=None, sets={"error": why[:500]})
        db.execute("UPDATE outbox SET tries = tries + 1 WHERE row_id=?", [row_id])
    return moved


def requeue(db: Database, clock: Clock, job_id: str, now: str) -> list[int]:
    """`imagebot redeliver JOB`: its undelivered rows are rendered again and owned by nobody (one UPDATE each),
    so the next sweep of a process serving its platform delivers them. A rendered row is left alone: its live
    owner is delivering it, or, if its owner is gone, the sweep takes it anyway. Returns the rows requeued."""
    rows = db.execute(
        "SELECT l.id FROM ledger l JOIN outbox o ON o.row_id = l.id WHERE l.job_id=? AND l.status='undelivered' "
        "ORDER BY l.seq",
        [job_id],
    ).fetchall()
    return [
        int(row_id)
        for (row_id,) in rows
        if move(db, clock, int(row_id), Status.RENDERED, now=now, owner=None, sets={"owner": None})
    ]


def claim_orphans(db: Database, clock: Clock, platforms: Collection[str], owner: str, now: str) -> list[str]:
    """Jobs on `platforms` with rendered images in the outbox whose owner's lease is gone (a restart, a crash)
    or that nobody owns (requeued), each claimed whole for `owner` by one UPDATE, so that of several processes
    exactly one delivers it. A relax job still waiting for its batch's delivery claim (bot/jobs/relax.py) is not an
    orphan. Returns the job ids claimed."""
    if not platforms:
        return []
    marks = ",".join("?" * len(platforms))
    orphaned = f"(owner IS NULL OR NOT {clock.live('ledger.owner')})"
    candidates = db.execute(
        f"SELECT DISTINCT job_id FROM ledger WHERE status='rendered' AND platform IN ({marks}) AND {orphaned} "
        "AND id IN (SELECT row_id FROM outbox) "
        "AND job_id NOT IN (SELECT job_id FROM relax_jobs WHERE delivered_at IS NULL)",
        [*platforms, now],
    ).fetchall()
    jobs: list[str] = []
    for (job_id,) in candidates:
        cursor = db.execute(
            f"UPDATE ledger SET owner=?, updated_at=? WHERE job_id=? AND status='rendered' AND {orphaned}",
            [owner, now, job_id, now],
        )
        if cursor.rowcount:
            jobs.append(str(job_id))
    return jobs


def take(db: Database, clock: Clock, job_id: str, owner: str, now: str) -> bool:
    """Make a job's rendered rows `owner`'s unless another live process holds them (it is delivering them).
    True if `owner` now holds every rendered row of the job."""
    orphaned = f"(owner IS NULL OR owner=? OR NOT {clock.live('ledger.owner')})"
    db.execute(
        f"UPDATE ledger SET owner=?, updated_at=? WHERE job_id=? AND status='rendered' AND {orphaned}",
        [owner, now, job_id, owner, now],
    )
    (others,) = db.execute(
        "SELECT COUNT(*) FROM ledger WHERE job_id=? AND status='rendered' AND owner<>?", [job_id, owner]
    ).fetchone()
    return bool(others == 0)


def own(db: Database, job_id: str, owner: str, now: str) -> None:
    """A job's rendered rows are now `owner`'s to deliver (relax: the process that claimed its delivery)."""
    db.execute(
        "UPDATE ledger SET owner=?, updated_at=? WHERE job_id=? AND status='rendered'", [owner, now, job_id]
    )


def waiting(db: Database, job_id: str) -> list[tuple[Any, ...]]:
    """A job's images waiting in the outbox (not delivered): (row_id, seq, data, width, height, format,
    elapsed_ms, actual_micros, request_ids, status), in order."""
    return list(
        db.execute(
            "SELECT o.row_id, o.seq, o.data, o.width, o.height, o.format, o.elapsed_ms, l.actual_micros, "
            "l.request_ids, l.status FROM outbox o JOIN ledger l ON l.id = o.row_id WHERE o.job_id=? "
            "AND l.status IN ('rendered', 'undelivered') ORDER BY o.seq",
            [job_id],
        ).fetchall()
    )
