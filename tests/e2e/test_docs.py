"""What an operator copies from the repository works as the README says: `.env.example` is a file Docker's
`--env-file` and the bot both read, naming only documented settings; the benchmarks, run with a Python that
lacks the bot's dependencies, say what is missing and how to run them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from bot.config import Settings

ROOT = Path(__file__).resolve().parents[2]
ASSIGNMENT = re.compile(r"[A-Z][A-Z0-9_]*=\S*")


def configuration_table() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("\n## Configuration")
    return readme[start : readme.index("\n## ", start + 1)]


def test_the_env_example_has_one_documented_name_value_a_line(tmp_path: Path) -> None:
    lines = (ROOT / ".env.example").read_text(encoding="utf-8").splitlines()
    settings = [line.removeprefix("# ") for line in lines if ASSIGNMENT.fullmatch(line.removeprefix("# "))]
    assert len(settings) >= 10, settings
    # Docker's --env-file: NAME=value, no quotes, no spaces, no comment after a value; comments on their own.
    for line in lines:
        assert line == "" or line.startswith("#") or ASSIGNMENT.fullmatch(line), line
    table = configuration_table()
    names = [setting.split("=", 1)[0] for setting in settings]
    assert [name for name in names if f"`{name}`" not in table] == []
    assert {"SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET", "DISCORD_TOKEN"} <= set(names)
    # Copied as it is, the bot starts from it (everything commented: the defaults).
    (tmp_path / ".env").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert Settings.load({}, env_file=tmp_path / ".env").slack_enabled is False
    # Uncommented, the values are read as written (the limits, say).
    uncommented = [
        line.removeprefix("# ") if ASSIGNMENT.fullmatch(line.removeprefix("# ")) else line for line in lines
    ]
    limits = "\n".join(line for line in uncommented if line.startswith("IMAGEBOT_USER_DAILY_USD="))
    (tmp_path / ".env").write_text(limits + "\n", encoding="utf-8")
    assert limits == "IMAGEBOT_USER_DAILY_USD=2"
    assert Settings.load({}, env_file=tmp_path / ".env").quotas.user_daily_micros == 2_000_000


def test_a_benchmark_without_the_dependencies_says_what_is_missing_and_how_to_run_it() -> None:
    # A Python that cannot import openai (the system one, say): sys.modules[name] = None hides it.
    hide_openai = "import runpy, sys; sys.modules['openai'] = None; runpy.run_module('benchmarks.core', run_name='__main__')"
    run = subprocess.run(
        [sys.executable, "-c", hide_openai], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert run.returncode != 0
    assert "Traceback" not in run.stderr and "CalledProcessError" not in run.stderr, run.stderr
    [line] = run.stderr.strip().splitlines()
    assert "cannot import openai" in line and ".venv/bin/python -m benchmarks.core" in line, line


def test_where_things_live_names_files_that_exist_and_the_code_tree_every_folder() -> None:
    """README's "Where things live": each file it points to is there (a newcomer's guess lands), and the tree in
    docs/design.md names every package of bot/ and adapters/."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("\n## Where things live")
    table = readme[start : readme.index("\n## ", start + 1)]
    paths = re.findall(r"`((?:bot|adapters)/[^`]+)`", table)
    assert len(paths) >= 6, table
    assert [p for p in paths if not (ROOT / p.removesuffix("...")).exists()] == []
    tree = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    tree = tree[tree.index("## The code tree") :]
    packages = [
        p.parent.relative_to(ROOT / top).parts[-1]
        for top in ("bot", "adapters")
        for p in (ROOT / top).glob("*/__init__.py")
    ]
    assert [name for name in packages if f"{name}/" not in tree] == []
