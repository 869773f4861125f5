"""Fixtures shared by the core tests: `make_core` (a Core against the offline server) on a store chosen by
`db_target`; `server`, `make_client` and `client` (tests/support/offline.py). The modules in BOTH_BACKENDS run twice, on SQLite and on a real PostgreSQL server (docs/rules.md §12)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bot.store import pg
from tests.support.core import make_core  # noqa: F401  (a fixture: a Core against the offline server)
from tests.support.offline import client, make_client, server, server_options  # noqa: F401  (fixtures)

BOTH_BACKENDS = {
    "tests.core.test_jobs_money",
    "tests.core.test_money_properties",
    "tests.core.test_access",
    "tests.core.test_relax",
    "tests.core.test_quota_race",
    "tests.core.test_ledger",
    "tests.core.test_actions",
    "tests.core.test_store",
    "tests.core.test_people",
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "db_target" in metafunc.fixturenames:
        # A test about SQLite itself (its file size, a trigger as a fault) says so: @pytest.mark.sqlite_only.
        both = metafunc.module.__name__ in BOTH_BACKENDS and not metafunc.definition.get_closest_marker(
            "sqlite_only"
        )
        metafunc.parametrize("db_target", ["sqlite", "postgres"] if both else ["sqlite"], indirect=True)


@pytest.fixture
def fresh_store(
    db_target: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[], str]:
    """A new, empty store of `db_target`'s kind on every call (a property test's examples each get one)."""
    if pg.is_url(db_target):
        return request.getfixturevalue("pg_server").create_database  # type: ignore[no-any-return]
    return lambda: str(tmp_path_factory.mktemp("store") / "bot.sqlite3")


@pytest.fixture
def db_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the store lives: a SQLite file in tmp_path, or a fresh database on the test PostgreSQL server."""
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return str(tmp_path / "bot.sqlite3")
