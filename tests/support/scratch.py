"""Where the tests' temporary files go: in memory (/dev/shm) when it has room, else the system's temp folder.

A test writes real files: SQLite databases in WAL mode (which fsync on every checkpoint), images, the
PostgreSQL test cluster (a database per test, thousands of files to create and remove). On a disk, those
syncs and unlinks, not the code under test, were half the suite's time (tests/core's ledger, money and relax
tests: 131 s on the disk, 70 s in /dev/shm, same machine). In memory they cost nothing, and nothing of it
needs to survive the run. The files are the same files; only the folder they live in changes.

`IMAGEBOT_TEST_TMP=disk` keeps the system's temp folder (e.g. to inspect files after a run); a /dev/shm
smaller than MIN_FREE (a container's default is 64 MiB) is not used."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

SHM = Path("/dev/shm")
MIN_FREE = 2 << 30  # bytes free in /dev/shm before the tests use it


def use_memory_for_temp_files() -> Path | None:
    """Point `tempfile` (pytest's tmp_path included) and every child process (TMPDIR) at a folder in /dev/shm,
    and return it; None (nothing changed) when it cannot be used."""
    if os.environ.get("IMAGEBOT_TEST_TMP") == "disk":
        return None
    try:
        free = os.statvfs(SHM)
    except OSError:
        return None
    if not os.access(SHM, os.W_OK | os.X_OK) or free.f_bavail * free.f_frsize < MIN_FREE:
        return None
    folder = SHM / f"imagebot-tests-{os.getuid()}"
    folder.mkdir(exist_ok=True)
    folder.chmod(0o755)  # the PostgreSQL server's OS user (tests/pg.py, as root) reaches its folder in it
    os.environ["TMPDIR"] = str(folder)
    tempfile.tempdir = str(folder)
    return folder
