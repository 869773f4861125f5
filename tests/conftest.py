"""Fixtures for every test: a throwaway PostgreSQL server (tests/pg.py), started on first use."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pg import PgServer


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One real PostgreSQL server for the whole session; raises (never skips) when it cannot start."""
    server = PgServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """A fresh, empty database for this test: `postgresql://imagebot@127.0.0.1:PORT/test_N`."""
    return pg_server.create_database()
