"""Fixtures for every test: a throwaway PostgreSQL server (tests/pg.py), started on first use.

The suite runs under pytest-xdist (pyproject's addopts: `-n auto --dist loadgroup`). Each worker is its own
process with its own session, so `pg_server` is one server per worker (its own temp directory and free
port: tests/pg.py), started only by a worker that runs a PostgreSQL test. The tests that use a module-scoped
fixture are kept on one worker (`xdist_group`, named after the module), so that the fixture is built once,
as it is without xdist. `-n 0` runs everything in this process (`-p no:xdist` would refuse addopts' `-n`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest
from hypothesis import settings as hypothesis_settings

from tests import dbs
from tests.pg import PgServer
from tests.support.scratch import use_memory_for_temp_files

use_memory_for_temp_files()  # before pytest picks its tmp_path root, and before xdist starts its workers
# Tests assert no wall-clock time (benchmarks/ measures speed): hypothesis's 200 ms deadline per example would,
# and a busy machine (four workers on two cores) exceeds it with nothing wrong.
hypothesis_settings.register_profile("imagebot", deadline=None)
hypothesis_settings.load_profile("imagebot")
# Let Python keep compiled bytecode (and pytest its rewritten test modules) even where the environment says
# not to (PYTHONDONTWRITEBYTECODE, as some images set): each of the suite's ~250 `imagebot` processes and each
# xdist worker would otherwise compile bot/, adapters/ and tests/ again, about 0.15 s of CPU a process.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (pyproject's addopts): three workers per CPU core this process may use, at most 16. Most of a
    test's time is spent waiting (on loopback HTTP, a subprocess, a render's latency, a backoff), so more workers
    than cores fill it. On 2 cores (same tree, tests interleaved by `_interleaved`): 4 workers 159 s, 6 workers
    142 s, 8 workers 153 s (more CPU: each worker imports the libraries and starts a PostgreSQL server).
    PYTEST_XDIST_AUTO_NUM_WORKERS still sets the count."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return int(os.environ["PYTEST_XDIST_AUTO_NUM_WORKERS"])
    return min(16, 3 * len(os.sched_getaffinity(0)))


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


@pytest.fixture(autouse=True)
def _close_test_connections() -> Iterator[None]:
    """tests/dbs.py keeps one PostgreSQL connection per database during a test; none outlives it."""
    yield
    dbs.close_all()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh, empty database for this test: `postgresql://imagebot@127.0.0.1:PORT/test_N`; dropped after it,
    so a worker's cluster holds only the databases of the tests it is running."""
    url = pg_server.create_database()
    yield url
    dbs.close_all()
    pg_server.drop_database(url.rsplit("/", 1)[1].split("?", 1)[0])


def _group(item: pytest.Item) -> str | None:
    """The `xdist_group` of `item`: its own mark, else its module's name when it uses a module-scoped fixture
    (e.g. tests/e2e/test_cli.py's CLI runs), which is set up once per worker that runs one of its users: kept
    together, it is set up once in all."""
    for mark in item.iter_markers("xdist_group"):
        return str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
    info = getattr(item, "_fixtureinfo", None)
    module = getattr(item, "module", None)
    if info is None or module is None:
        return None
    for name in info.names_closure:
        if any(d.scope == "module" for d in info.name2fixturedefs.get(name, ())):
            return str(module.__name__)
    return None


@pytest.hookimpl(trylast=True)  # after xdist's own hook, which should have done this
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # --dist loadgroup sends the tests whose node ids end in the same `@group` to one worker. xdist 3.8 writes
    # that suffix to `item._nodeid`, which pytest 9.2's structured node ids no longer read (pytest-xdist#1386:
    # the groups are silently ignored), so write it where this pytest keeps the id.
    if not config.getoption("loadgroup", default=False):
        return
    for item in items:
        group = _group(item)
        if group is None or item.nodeid.endswith(f"@{group}"):
            continue
        item.add_marker(pytest.mark.xdist_group(group))
        if hasattr(item, "_id"):
            from _pytest.nodeid import coerce_node_id  # pytest >= 9.2

            item._id = coerce_node_id(f"{item.nodeid}@{group}")
        else:
            item._nodeid = f"{item.nodeid}@{group}"
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items[:] = _interleaved(items)


def _interleaved(items: list[pytest.Item]) -> list[pytest.Item]:
    """The order xdist hands tests out in (each worker collects in this order; `-n 0` keeps the files' order):
    one test of each module in turn, a group (`_group`) as one unit at its first test's place. In file order
    the workers run neighbours, and a file's tests are alike: four workers all waiting out start-up backoffs
    (test_operations) while the CPUs idle, then all starting `imagebot` processes at once (test_cli). Mixed,
    a waiting test shares the CPUs with a busy one: with 6 workers on 2 cores 142 s against 167 s in file order,
    same tree, back to back."""
    queues: dict[str, list[list[pytest.Item]]] = {}
    grouped: dict[str, list[pytest.Item]] = {}
    for item in items:
        units = queues.setdefault(item.nodeid.split("::", 1)[0], [])
        group = _group(item)
        if group is None:
            units.append([item])
        elif group in grouped:
            grouped[group].append(item)
        else:
            grouped[group] = [item]
            units.append(grouped[group])
    out: list[pytest.Item] = []
    pending = list(queues.values())
    while pending:
        for units in pending:
            out.extend(units.pop(0))
        pending = [units for units in pending if units]
    return out


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
