"""Benchmarks that print figures (last line JSON). Run them as modules from the repository root with the
repository's virtual environment, e.g. `.venv/bin/python -m benchmarks.core`, so they import the bot and the
fakes (tests/fakes) as packages. Run by path (`python benchmarks/core.py`) they would not find `bot`.

Importing this package checks that first: with a Python that lacks the bot's dependencies (the system one,
say) a benchmark stops at once with one line naming what is missing and how to run it, instead of a
subprocess's bare CalledProcessError minutes later."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What every benchmark imports (the bot's runtime and test dependencies), by import name.
NEEDED = ("aiohttp", "openai", "PIL", "slack_bolt", "discord", "sqlite_utils")


def missing() -> list[str]:
    """The needed modules this Python cannot import."""
    return [name for name in NEEDED if importlib.util.find_spec(name) is None]


def how_to_run() -> str:
    return (
        "run the benchmarks from the repository root with its virtual environment: "
        ".venv/bin/python -m benchmarks.core (create it with the Quickstart's test command: "
        "python3 -m venv .venv && .venv/bin/pip install -q --no-compile -r requirements-dev.lock "
        "&& .venv/bin/pip install -q --no-deps -e .)"
    )


def _check() -> None:
    absent = missing()
    if absent:
        sys.exit(f"benchmarks: {sys.executable} cannot import {', '.join(absent)}; {how_to_run()}")
    if importlib.util.find_spec("bot") is None or importlib.util.find_spec("tests") is None:
        sys.exit(f"benchmarks: cannot import the bot from {Path.cwd()}; {how_to_run()}")


_check()
