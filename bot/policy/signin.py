"""Signing in to the web dashboard (docs/rules.md §14): one-time links for a tenant's admins, sessions, and
their CSRF tokens.

- A link is what `/imagine-admin dashboard` answers an admin, privately. It names the admin's tenant, works
  for LINK_TTL (15 minutes) and only once: redeeming it is one conditional update (unused and unexpired), so
  two browsers racing with the same link cannot both get a session.
- A session lasts SESSION_TTL (8 hours). A link's session sees its tenant only. Operators sign in with
  IMAGEBOT_DASHBOARD_TOKEN instead; their sessions name no tenant: they see every one.
- Only SHA-256 digests are stored (table `dashboard_tokens`, bot/store/signin.py): the secret of a link or a session exists only in
  the link itself and in the browser's cookie, so reading the database (or a backup of it) signs nobody in.
- A session's CSRF token is an HMAC of its secret: a page of another site, which cannot read the cookie,
  cannot produce it; nothing more is stored for it.

Times are the ledger's clock (`Ledger.clock`), as ISO strings in UTC, like every other timestamp in the store.
Rows are deleted a day after they expire, whenever a new one is made.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.model.request import Requester
from bot.policy.quota import Tenant
from bot.store import signin as tokens

LINK_TTL = timedelta(minutes=15)
SESSION_TTL = timedelta(hours=8)
KEPT = timedelta(days=1)  # an expired row stays this long (then the next new one deletes it)
OPERATOR = "operator"  # the user of an operator's session (IMAGEBOT_DASHBOARD_TOKEN names no person)


class SignInRefused(Exception):
    """A link or a token that signs nobody in: the message says why, plainly, and carries no secret."""


@dataclass(frozen=True, slots=True)
class Session:
    """Who is signed in: a tenant's admin (`tenant` set) or an operator (`tenant` None: every tenant).
    `operator`: may also set a tenant's own limit (as in chat: IMAGEBOT_ADMINS, or the dashboard token)."""

    secret: str = field(repr=False)
    tenant: Tenant | None
    user: str
    operator: bool
    expires: datetime

    @property
    def csrf(self) -> str:
        """The token every change must carry: derived from the session's secret, never stored."""
        return hmac.new(self.secret.encode(), b"imagebot dashboard csrf", hashlib.sha256).hexdigest()

    def sees(self, tenant: Tenant) -> bool:
        return self.tenant is None or self.tenant == tenant


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def _insert(
    db: Any, kind: str, tenant: Tenant | None, user: str, operator: bool, now: datetime, ttl: timedelta
) -> str:
    secret = secrets.token_hex(32)  # hex: no character any chat markup would escape inside the link
    tokens.add(
        db,
        digest=digest(secret),
        kind=kind,
        platform=tenant.platform if tenant else None,
        workspace=tenant.workspace if tenant else None,
        user=user,
        operator=operator,
        created_at=_iso(now),
        expires_at=_iso(now + ttl),
        forget_before=_iso(now - KEPT),
    )
    return secret


def issue_link(db: Any, who: Requester, *, operator: bool, now: datetime) -> str:
    """A new one-time link secret for `who` (an admin of their tenant; `operator`: also IMAGEBOT_ADMINS)."""
    return _insert(db, "link", Tenant.of(who), who.user, operator, now, LINK_TTL)


_REUSED = (
    "This sign-in link was already used. Links work once: ask for a new one with /imagine-admin dashboard."
)
_EXPIRED = "This sign-in link has expired (links work for 15 minutes). Ask for a new one with /imagine-admin dashboard."
_UNKNOWN = "This sign-in link is not valid. Ask for a new one with /imagine-admin dashboard."


def _link(db: Any, secret: str, now: datetime) -> tuple[Tenant, str, bool]:
    row = tokens.get(db, digest=digest(secret), kind="link")
    if row is None:
        raise SignInRefused(_UNKNOWN)
    if row.used_at is not None:
        raise SignInRefused(_REUSED)
    if row.expires_at <= _iso(now):
        raise SignInRefused(_EXPIRED)
    return Tenant(row.platform or "", row.workspace or ""), row.user, row.operator


def peek_link(db: Any, secret: str, now: datetime) -> tuple[Tenant, str]:
    """Whose link this is (the page that asks to confirm the sign-in); SignInRefused if it cannot be used.
    Opening it uses nothing up, so a chat's link preview cannot spend it."""
    tenant, user, _ = _link(db, secret, now)
    return tenant, user


def redeem_link(db: Any, secret: str, now: datetime) -> Session:
    """Use the link up (once: a conditional update) and open its tenant's session; SignInRefused otherwise."""
    tenant, user, operator = _link(db, secret, now)
    if not tokens.use_link(db, digest=digest(secret), now=_iso(now)):
        raise SignInRefused(_REUSED)  # another request used it between the read and here
    return open_session(db, tenant, user, operator=operator, now=now)


def open_session(db: Any, tenant: Tenant | None, user: str, *, operator: bool, now: datetime) -> Session:
    """A new session (`tenant` None: an operator's, every tenant)."""
    secret = _insert(db, "session", tenant, user, operator, now, SESSION_TTL)
    return Session(secret, tenant, user, operator, now + SESSION_TTL)


def session(db: Any, secret: str, now: datetime) -> Session | None:
    """The live session of a cookie's secret, or None (unknown, expired, signed out)."""
    row = tokens.get(db, digest=digest(secret), kind="session")
    if row is None or row.expires_at <= _iso(now):
        return None
    tenant = Tenant(row.platform, row.workspace or "") if row.platform is not None else None
    return Session(secret, tenant, row.user, row.operator, datetime.fromisoformat(row.expires_at))


def sign_out(db: Any, secret: str) -> None:
    tokens.remove_session(db, digest=digest(secret))


def token_matches(given: str, token: str) -> bool:
    """IMAGEBOT_DASHBOARD_TOKEN compared in constant time (as bytes: a header may carry anything)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode())
