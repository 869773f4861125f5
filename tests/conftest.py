"""Fixtures for every test: a throwaway PostgreSQL server (tests/pg.py), started on first use.

The suite runs under pytest-xdist (pyproject's addopts: `-n auto --dist loadgroup`). Each worker is its own
process with its own session, so `pg_server` is one server per worker (its own temp directory and free
port: tests/pg.py), started only by a worker that runs a PostgreSQL test. A test that uses a module-scoped
fixture is kept on one worker with the rest of its module's users (`xdist_group`), so that the fixture is
built once, as it is without xdist.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.pg import PgServer

_started: list[str] = []  # one line per server this process started, for the summary
_WORKER_KEY = "imagebot_pg_started"  # the lines a worker hands to the controller (config.workeroutput)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One real PostgreSQL server per session (per xdist worker); raises (never skips) when it cannot
    start."""
    server = PgServer()
    server.start()
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")  # gw0, gw1, ... under xdist
    _started.append(
        f"PostgreSQL test server ({worker}): {server.bindir} ({'copied, ' if server.copied else ''}"
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


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the marks (--dist loadgroup)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A module-scoped fixture (e.g. tests/e2e/test_cli.py's CLI runs) is set up once per worker that runs one
    # of its users: keep its users together so that it is set up once in all.
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        scoped = sorted(
            name
            for name in info.names_closure
            if any(d.scope == "module" for d in info.name2fixturedefs.get(name, ()))
        )
        if scoped and not any(True for _ in item.iter_markers("xdist_group")):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: the controller prints the summary
        workeroutput[_WORKER_KEY] = list(_started)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    # The controller collects each worker's lines (xdist hook; absent without xdist).
    _started.extend(getattr(node, "workeroutput", {}).get(_WORKER_KEY, []))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # Which binaries the PostgreSQL tests ran on, and what the server cost (CI logs show it).
    for line in _started:
        terminalreporter.write_line(line)
