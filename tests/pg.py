"""A throwaway PostgreSQL server for the tests: initdb + pg_ctl in a temp directory on a free port.

No mock stands in for PostgreSQL. The server binaries come from the Debian `postgresql` package (.ci/run
installs it when missing); when they cannot be found, `PgServer.start()` raises `PgServerError` (never a
skip: CI must not pass without PostgreSQL). Run as root, the server runs as the `postgres` OS user
(PostgreSQL refuses to run as root), via `runuser -u postgres --` (or `su postgres -c`).

    server = PgServer()
    server.start()
    url = server.create_database("t1")   # postgresql://imagebot@127.0.0.1:PORT/t1
    ...
    server.stop()

The cluster trusts every connection; it listens on 127.0.0.1 and on a Unix socket in its own temp
directory only. Durability is off (fsync, synchronous_commit, full_page_writes): it is thrown away.
"""

from __future__ import annotations

import atexit
import os
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg
from psycopg import sql

USER = "imagebot"
OS_USER = "postgres"  # who runs the server when we are root
BIN_ENV = "IMAGEBOT_TEST_PG_BIN"  # optional: a directory holding initdb and pg_ctl
START_ATTEMPTS = 3  # a free port may be taken between finding it and binding it
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PgServerError(RuntimeError):
    """The test server could not be found, started or used."""


def _version_key(path: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/15/bin -> (15,); "9.6" -> (9, 6); anything else sorts last.
    try:
        return tuple(int(part) for part in path.parent.name.split("."))
    except ValueError:
        return (-1,)


def find_bindir() -> Path:
    """The directory with initdb and pg_ctl: $IMAGEBOT_TEST_PG_BIN, PATH, then /usr/lib/postgresql/*/bin
    (highest version first)."""
    candidates: list[Path] = []
    if os.environ.get(BIN_ENV):
        candidates.append(Path(os.environ[BIN_ENV]))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
        candidates.append(Path(on_path).parent)
    candidates.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True))
    for directory in candidates:
        if all(os.access(directory / tool, os.X_OK) for tool in ("initdb", "pg_ctl")):
            return directory
    raise PgServerError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or under /usr/lib/postgresql/*/bin; "
        "install them (Debian: apt-get install -y postgresql; .ci/run does this) or set "
        f"{BIN_ENV} to their directory"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgServer:
    """One PostgreSQL cluster in a temp directory. `start()`, then `url` / `create_database()`; `stop()`."""

    def __init__(self) -> None:
        self.port: int | None = None
        self.bindir: Path | None = None
        self.tmpdir: Path | None = None
        self._as_postgres = os.geteuid() == 0
        self._databases = 0

    # -- paths -------------------------------------------------------------------------------------

    @property
    def datadir(self) -> Path:
        assert self.tmpdir is not None, "PgServer not started"
        return self.tmpdir / "data"

    @property
    def logfile(self) -> Path:
        assert self.tmpdir is not None, "PgServer not started"
        return self.tmpdir / "server.log"

    @property
    def url(self) -> str:
        """The maintenance database: `postgresql://imagebot@127.0.0.1:PORT/postgres`."""
        return self.url_for("postgres")

    def url_for(self, dbname: str) -> str:
        if self.port is None:
            raise PgServerError("PgServer not started")
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{dbname}"

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> PgServer:
        if self.port is not None:
            return self
        self.bindir = find_bindir()
        self.tmpdir = Path(self._make_tmpdir())
        try:
            self._run(
                str(self.bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-A",
                "trust",
                "-U",
                USER,
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                what="initdb",
            )
            for attempt in range(1, START_ATTEMPTS + 1):
                port = free_port()
                try:
                    self._pg_ctl_start(port)
                except PgServerError:
                    if attempt == START_ATTEMPTS or "already in use" not in self._log_tail():
                        raise
                    continue
                self.port = port
                break
        except BaseException:
            self._remove_tmpdir()
            raise
        atexit.register(self.stop)
        return self

    def stop(self) -> None:
        """`pg_ctl -m immediate stop`, then remove the directory. Safe to call twice."""
        if self.tmpdir is None:
            return
        try:
            if self.port is not None and self.bindir is not None:
                self._run(
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(self.datadir),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                    what="pg_ctl stop",
                    check=False,
                )
        finally:
            self.port = None
            self._remove_tmpdir()
            atexit.unregister(self.stop)

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- databases ---------------------------------------------------------------------------------

    def create_database(self, name: str | None = None) -> str:
        """CREATE DATABASE `name` (default: `test_N`, N counting up) and return its URL."""
        if name is None:
            self._databases += 1
            name = f"test_{self._databases}"
        if not _DB_NAME.match(name):
            raise ValueError(f"database name {name!r}: lower-case letters, digits and _ only (max 63)")
        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    # -- internals ---------------------------------------------------------------------------------

    def _make_tmpdir(self) -> str:
        if not self._as_postgres:
            return tempfile.mkdtemp(prefix="imagebot-pg-")
        try:
            import pwd

            entry = pwd.getpwnam(OS_USER)
        except KeyError:
            raise PgServerError(
                f"running as root, but there is no {OS_USER!r} OS user to run PostgreSQL as "
                "(the Debian postgresql package creates it)"
            ) from None
        # /tmp rather than $TMPDIR: the postgres user must be able to reach the directory, and the Unix
        # socket path (SOCKDIR/.s.PGSQL.PORT) must stay under ~100 characters.
        path = tempfile.mkdtemp(prefix="imagebot-pg-", dir="/tmp" if os.path.isdir("/tmp") else None)
        os.chown(path, entry.pw_uid, entry.pw_gid)
        return path

    def _pg_ctl_start(self, port: int) -> None:
        assert self.bindir is not None and self.tmpdir is not None
        options = " ".join(
            [
                f"-p {port}",
                f"-k {shlex.quote(str(self.tmpdir))}",
                "-c listen_addresses=127.0.0.1",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=200",
            ]
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-o",
            options,
            "-l",
            str(self.logfile),
            "-t",
            "60",
            "-w",
            "start",
            what="pg_ctl start",
        )

    def _run(self, *argv: str, what: str, check: bool = True) -> None:
        command = list(argv)
        if self._as_postgres:
            if shutil.which("runuser"):
                command = ["runuser", "-u", OS_USER, "--", *command]
            else:
                command = ["su", OS_USER, "-s", "/bin/sh", "-c", shlex.join(command)]
        # cwd: the postgres user may not be allowed into the caller's working directory.
        done = subprocess.run(
            command, cwd=self.tmpdir, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
        )
        if check and done.returncode != 0:
            raise PgServerError(
                f"{what} failed (exit {done.returncode}): {shlex.join(command)}\n"
                f"{done.stdout}{done.stderr}{self._log_tail()}"
            )

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.logfile.read_text(errors="replace")
        except (OSError, AssertionError):
            return ""
        return "server log:\n" + "\n".join(text.splitlines()[-lines:])

    def _remove_tmpdir(self) -> None:
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None
