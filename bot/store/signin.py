"""The dashboard's sign-in tokens (bot/policy/signin.py decides what they mean): one-time links and sessions in
`dashboard_tokens`, each row keyed by the SHA-256 digest of its secret (the secret itself is never stored), with
its tenant (none: an operator's session), person, expiry and, for a link, when it was used."""

from __future__ import annotations

from dataclasses import dataclass

from bot.store.repo import Db


@dataclass(frozen=True, slots=True)
class TokenRow:
    platform: str | None
    workspace: str | None
    user: str
    operator: bool
    expires_at: str
    used_at: str | None


def add(
    db: Db,
    *,
    digest: str,
    kind: str,
    platform: str | None,
    workspace: str | None,
    user: str,
    operator: bool,
    created_at: str,
    expires_at: str,
    forget_before: str,
) -> None:
    """A new link or session; rows that expired before `forget_before` go."""
    db.conn.execute("DELETE FROM dashboard_tokens WHERE expires_at < ?", [forget_before])
    db.conn.execute(
        "INSERT INTO dashboard_tokens (digest, kind, platform, workspace, user_id, operator, created_at, "
        "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [digest, kind, platform, workspace, user, int(operator), created_at, expires_at],
    )


def get(db: Db, *, digest: str, kind: str) -> TokenRow | None:
    row = db.conn.execute(
        "SELECT platform, workspace, user_id, operator, expires_at, used_at FROM dashboard_tokens "
        "WHERE digest=? AND kind=?",
        [digest, kind],
    ).fetchone()
    if row is None:
        return None
    return TokenRow(row[0], row[1], str(row[2]), bool(row[3]), str(row[4]), row[5])


def use_link(db: Db, *, digest: str, now: str) -> bool:
    """Mark a link used, if it is unused and unexpired at `now`: one conditional UPDATE, so of two requests
    racing with the same link only one gets True."""
    used = db.conn.execute(
        "UPDATE dashboard_tokens SET used_at=? WHERE digest=? AND kind='link' AND used_at IS NULL "
        "AND expires_at > ?",
        [now, digest, now],
    )
    return bool(used.rowcount == 1)


def remove_session(db: Db, *, digest: str) -> None:
    db.conn.execute("DELETE FROM dashboard_tokens WHERE digest=? AND kind='session'", [digest])
