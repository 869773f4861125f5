"""The dashboard's sign-in rules (bot/policy/signin.py) as a property: whatever happens to a link (opened, used, used
again, tried with the wrong secret, early or late), it opens at most one session, only within 15 minutes, only
for its own tenant; a session lives 8 hours; nothing stored reveals a secret."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.model.request import Requester
from bot.policy import signin
from bot.policy.quota import Tenant
from bot.policy.signin import SignInRefused
from bot.store.schema import connect, immediate

T0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
ADMIN = Requester("slack", "T1", "C1", "UADMIN")


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    database = connect(tmp_path_factory.mktemp("signin") / "bot.sqlite3")
    yield database
    database.conn.close()


# Each attempt: seconds after the link was made, and whether it brings the link's own secret.
ATTEMPTS = st.lists(st.tuples(st.integers(0, 3600), st.booleans()), min_size=1, max_size=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(attempts=ATTEMPTS)
def test_a_link_opens_at_most_one_session_within_fifteen_minutes(
    db: object, attempts: list[tuple[int, bool]]
) -> None:
    with immediate(db):  # type: ignore[arg-type]
        secret = signin.issue_link(db, ADMIN, operator=False, now=T0)
    opened = []
    for seconds, own in sorted(attempts):
        now = T0 + timedelta(seconds=seconds)
        given_secret = secret if own else secret[:-1] + ("0" if secret[-1] != "0" else "1")
        try:
            with immediate(db):  # type: ignore[arg-type]
                session = signin.redeem_link(db, given_secret, now)
        except SignInRefused as exc:
            assert "link" in str(exc) and secret not in str(exc)
            continue
        opened.append((seconds, session))
    valid = [s for s, own in sorted(attempts) if own and s < signin.LINK_TTL.total_seconds()]
    if valid:  # the first use within 15 minutes, and only it
        assert [s for s, _ in opened] == valid[:1]
        [(seconds, session)] = opened
        assert session.tenant == Tenant("slack", "T1") and session.user == "UADMIN" and not session.operator
        start = T0 + timedelta(seconds=seconds)
        assert signin.session(db, session.secret, start + timedelta(hours=8, seconds=-1)) == session
        assert signin.session(db, session.secret, start + timedelta(hours=8)) is None
        assert session.sees(Tenant("slack", "T1")) and not session.sees(Tenant("slack", "T2"))
        assert signin.session(db, secret, start) is None  # a link is no session
    else:
        assert opened == []
    stored = repr(db.conn.execute("SELECT * FROM dashboard_tokens").fetchall())  # type: ignore[attr-defined]
    assert secret not in stored and all(s.secret not in stored for _, s in opened)


def test_csrf_tokens_differ_per_session_and_never_equal_the_secret(tmp_path: Path) -> None:
    database = connect(tmp_path / "bot.sqlite3")
    with immediate(database):
        one = signin.open_session(database, None, signin.OPERATOR, operator=True, now=T0)
        two = signin.open_session(database, None, signin.OPERATOR, operator=True, now=T0)
    assert one.csrf != two.csrf and one.csrf != one.secret and one.sees(Tenant("discord", "9"))
    with immediate(database):
        signin.sign_out(database, one.secret)
    assert (
        signin.session(database, one.secret, T0) is None and signin.session(database, two.secret, T0) == two
    )
    database.conn.close()
