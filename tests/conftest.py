"""Fixtures for every test: a throwaway PostgreSQL server (tests/pg.py), started on first use."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pg import PgServer

_started: list[str] = []  # one line per server this session started, for the summary


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One real PostgreSQL server for the whole session; raises (never skips) when it cannot start."""
    server = PgServer()
    server.start()
    _started.append(
        f"PostgreSQL test server: {server.bindir} ({'copied, ' if server.copied else ''}"
        f"started in {server.start_seconds:.2f} s)"
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """A fresh, empty database for this test: `postgresql://imagebot@127.0.0.1:PORT/test_N`."""
    return pg_server.create_database()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # Which binaries the PostgreSQL tests ran on, and what the server cost (CI logs show it).
    for line in _started:
        terminalreporter.write_line(line)
