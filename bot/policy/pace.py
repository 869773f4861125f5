"""The pace rule: how often one user may start jobs in a tenant.

`cooldown`: seconds between one user's jobs; `max_jobs`: one user's jobs open (reserved, running or in a
batch) at once. The tenant's admins set both (`/imagine-admin settings`), else IMAGEBOT_USER_COOLDOWN and
IMAGEBOT_USER_MAX_JOBS apply (bot/policy/access.py `Access.pace`); the console and the CLI have none. The ledger
applies it inside the reservation's own transaction, so two commands at once cannot both slip under it: it
counts the user's open jobs and finds their latest start since `since(now)` (the atomic SQL is the store's),
and this module decides and words the refusal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

from bot.errors import PaceExceeded
from bot.i18n import lazy, msg, time_of_day


@dataclass(frozen=True, slots=True, kw_only=True)
class Pace:
    """How often one user may start jobs, checked by the ledger when it reserves (bot/store/ledger.py)."""

    cooldown: float  # seconds between one user's jobs
    max_jobs: int  # one user's jobs running or queued at once

    def since(self, now: datetime) -> datetime | None:
        """A job of the user's started after this holds the next one back (None: no cooldown)."""
        return now - timedelta(seconds=self.cooldown) if self.cooldown > 0 else None

    def check_open(self, open_jobs: int) -> None:
        """Refuse a user who already has `max_jobs` jobs open."""
        if open_jobs >= self.max_jobs:
            raise self.too_many(open_jobs)

    def check_recent(self, last: str | None, now: datetime, tz: tzinfo) -> None:
        """Refuse a user whose last job started at `last` (ISO), after `since(now)`; None: none did."""
        if last is not None:
            raise self.too_soon(last, now, tz)

    def too_many(self, open_jobs: int) -> PaceExceeded:
        """The max_jobs refusal: the user has `open_jobs` jobs open."""
        return PaceExceeded(msg("ledger.too_many_jobs", n=open_jobs, most=self.max_jobs))

    def seconds_left(self, last: str, now: datetime) -> int:
        """The seconds the refusal says are left of the cooldown of a job started at `last` (ISO): rounded up
        to a whole second and at least 1, so it never says sooner than is true (15.2 s left: "16 s")."""
        left = self.cooldown - (now - datetime.fromisoformat(last)).total_seconds()
        return max(math.ceil(left), 1)

    def too_soon(self, last: str, now: datetime, tz: tzinfo) -> PaceExceeded:
        """The cooldown's refusal: the user's last job started at `last` (ISO); it says the seconds left
        (`seconds_left`) and the time of day the cooldown ends."""
        left = self.cooldown - (now - datetime.fromisoformat(last)).total_seconds()
        again = now + timedelta(seconds=max(left, 0))
        return PaceExceeded(
            msg(
                "ledger.cooldown",
                wait=self.seconds_left(last, now),
                at=lazy(time_of_day, again.astimezone(tz)),
                cooldown=f"{self.cooldown:g}",
            )
        )
