"""`imagebot` on the command line, as a user runs it: real processes, real files, the offline server."""

from __future__ import annotations

import ast
import contextlib
import csv
import functools
import json
import os
import re
import shlex
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from PIL import Image

from bot.model.pricing import Usage, batch_price, cost_micros, format_usd, load_prices
from tests.support.processes import ROOT, environment, start

TIMEOUT = 60
T = TypeVar("T")


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str


def finish(process: subprocess.Popen[str]) -> Run:
    stdout, stderr = process.communicate(timeout=TIMEOUT)
    return Run(process.returncode, stdout, stderr)


def imagebot(args: list[str], env: Mapping[str, str], cwd: Path) -> Run:
    return finish(start(args, env, cwd))


def image_of(path: Path) -> tuple[str | None, tuple[int, int]]:
    """The format and size of the image file at `path`, read whole."""
    with Image.open(path) as image:
        image.load()
        return image.format, image.size


def ledger(db: Path, sql: str = "SELECT * FROM ledger ORDER BY id") -> list[sqlite3.Row]:
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name='ledger'").fetchone():
            return []
        return list(conn.execute(sql))


def test_imagine_writes_the_image_and_prints_the_summary(tmp_path: Path) -> None:
    db, out = tmp_path / "bot.sqlite3", tmp_path / "fox.png"
    run = imagebot(
        ["imagine", "a red fox", "--size", "1536x1024", "--format", "png", "--out", str(out)],
        environment(db),
        tmp_path,
    )

    assert run.code == 0, run.stderr
    assert image_of(out) == ("PNG", (1536, 1024))
    [row] = ledger(db)
    assert (row["status"], row["platform"], row["size"], row["format"]) == (
        "delivered",
        "cli",
        "1536x1024",
        "png",
    )
    [request_id] = json.loads(row["request_ids"])
    assert re.fullmatch(r"req_[0-9a-f]{32}", request_id)
    assert "1536x1024" in run.stdout
    assert format_usd(row["actual_micros"]) in run.stdout and "$" in run.stdout
    assert request_id in run.stdout
    assert "offline" in run.stdout
    assert str(out) in run.stdout


def test_imagine_relax_exits_0_with_the_image_at_the_batch_price_and_its_batch_finished(
    tmp_path: Path,
) -> None:
    """`imagebot imagine --relax`: the terminal waits for its batch, writes the image, exits 0; the ledger row
    is settled at the batch price and the batch is finished (no later process polls it)."""
    db, out = tmp_path / "bot.sqlite3", tmp_path / "f.jpg"
    env = environment(
        db, IMAGEBOT_OFFLINE_BATCH_LATENCY="0.5", IMAGEBOT_BATCH_WINDOW="0.2", IMAGEBOT_BATCH_POLL="0.2"
    )
    run = imagebot(
        ["imagine", "a fox", "--relax", "--size", "1024x1536", "--quality", "low", "--out", str(out)],
        env,
        tmp_path,
    )

    assert run.code == 0, run.stderr
    assert image_of(out) == ("JPEG", (1024, 1536))
    [row] = ledger(db)
    prices = load_prices().model("gpt-image-2")
    usage = Usage(row["text_tokens"], row["image_tokens"], row["output_tokens"])
    assert (row["status"], row["mode"]) == ("delivered", "relax")
    assert row["actual_micros"] == batch_price(cost_micros(prices, usage), prices) > 0
    assert format_usd(row["actual_micros"]) in run.stdout
    [batch] = ledger(db, "SELECT * FROM batches")
    assert batch["status"] == "completed" and batch["finished_at"]


def test_an_invalid_size_names_the_rule_and_spends_nothing(tmp_path: Path) -> None:
    db, out = tmp_path / "bot.sqlite3", tmp_path / "wide.png"
    run = imagebot(
        ["imagine", "a red fox", "--size", "4000x1000", "--out", str(out)], environment(db), tmp_path
    )

    assert run.code == 2
    assert "4000 is over the 3840 limit" in run.stderr
    assert run.stdout.strip() == ""
    assert not out.exists()
    assert ledger(db) == []


@pytest.fixture(scope="module")
def quota_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], list[Run], Run]:
    """Three images for u1 (run at once: three processes on one file), then a fourth over the limit."""
    home = tmp_path_factory.mktemp("quota")
    db = home / "bot.sqlite3"
    env = environment(db, IMAGEBOT_USER_DAILY_IMAGES="3")
    runs = [
        finish(p)
        for p in [
            start(
                [
                    "imagine",
                    f"fox number {n}",
                    "--quality",
                    "low",
                    "--user",
                    "u1",
                    "--out",
                    str(home / f"fox{n}.jpg"),
                ],
                env,
                home,
            )
            for n in range(3)
        ]
    ]
    fourth = imagebot(
        ["imagine", "one fox too many", "--user", "u1", "--out", str(home / "fox4.jpg")], env, home
    )
    return db, env, runs, fourth


def test_the_daily_image_quota_refuses_the_fourth_image(
    quota_run: tuple[Path, dict[str, str], list[Run], Run],
) -> None:
    db, _, runs, fourth = quota_run
    assert [r.code for r in runs] == [0, 0, 0], [r.stderr for r in runs]
    assert fourth.code != 0
    assert "daily images" in fourth.stderr and "3 images" in fourth.stderr and "resets" in fourth.stderr
    assert not (db.parent / "fox4.jpg").exists()
    rows = ledger(db)
    assert (
        len(rows) == 3
        and {r["user"] for r in rows} == {"u1"}
        and {r["status"] for r in rows} == {"delivered"}
    )


def test_report_prints_the_sql_total_and_exports_the_rows(
    quota_run: tuple[Path, dict[str, str], list[Run], Run],
    tmp_path: Path,
) -> None:
    db, env, _, _ = quota_run
    out = tmp_path / "usage.csv"
    run = imagebot(["report", "--csv", str(out), "--days", "30"], env, tmp_path)

    assert run.code == 0, run.stderr
    [(total, count, images)] = ledger(
        db, "SELECT sum(actual_micros), count(*), sum(status='delivered') FROM ledger"
    )
    assert total > 0
    match = re.search(r"(\d+) images, (\$\d+\.\d{4}) spent", run.stdout)
    assert match, run.stdout
    assert (int(match[1]), match[2]) == (images, format_usd(total))
    assert f"Wrote {count} ledger rows" in run.stdout
    with out.open(newline="", encoding="utf-8") as handle:
        exported = list(csv.DictReader(handle))
    assert len(exported) == count
    assert sum(int(r["actual_micros"]) for r in exported) == total
    assert sorted(int(r["id"]) for r in exported) == [r["id"] for r in ledger(db)]


def test_quota_set_then_show(quota_run: tuple[Path, dict[str, str], list[Run], Run], tmp_path: Path) -> None:
    db, env, _, _ = quota_run
    before = imagebot(["quota", "show", "--user", "u1"], env, tmp_path)
    assert before.code == 0, before.stderr
    assert re.search(
        r"your daily images: 3 images used of 3 images, 0 images left, "
        r"resets \d{4}-\d\d-\d\d 00:00 UTC",
        before.stdout,
    ), before.stdout

    # No --tenant: u1 is only ever seen in one tenant (`imagebot imagine` runs as cli:local), so that is it.
    set_run = imagebot(["quota", "set", "--user", "u1", "daily_images=5"], env, tmp_path)
    assert set_run.code == 0, set_run.stderr
    assert "u1" in set_run.stdout and "daily_images" in set_run.stdout and "cli:local" in set_run.stdout

    after = imagebot(["quota", "show", "--user", "u1"], env, tmp_path)
    assert after.code == 0, after.stderr
    assert "your daily images: 3 images used of 5 images, 2 images left" in after.stdout, after.stdout
    with sqlite3.connect(db) as conn:
        assert conn.execute(
            "SELECT daily_images FROM limits WHERE scope='user' AND key='cli:local:u1'"
        ).fetchone() == (5,)

    # The limits may also come first; a bad value names the limit and changes nothing.
    bad = imagebot(["quota", "set", "daily_images=lots", "--user", "u1"], env, tmp_path)
    assert bad.code == 2 and "daily_images" in bad.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute(
            "SELECT daily_images FROM limits WHERE scope='user' AND key='cli:local:u1'"
        ).fetchone() == (5,)


@pytest.fixture(scope="module")
def two_tenants(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The same user id u1 in two tenants (workspaces `local` and `lab` of the `cli` platform)."""
    home = tmp_path_factory.mktemp("tenants")
    db = home / "bot.sqlite3"
    env = environment(db)
    runs = [
        finish(p)
        for p in [
            start(
                ["imagine", "fox", "--quality", "low", "--user", "u1", "--out", str(home / "a.jpg")],
                env,
                home,
            ),
            start(
                [
                    "imagine",
                    "fox",
                    "--quality",
                    "low",
                    "--user",
                    "u1",
                    "--workspace",
                    "lab",
                    "--channel",
                    "c9",
                    "--count",
                    "2",
                    "--out",
                    str(home / "b.jpg"),
                ],
                env,
                home,
            ),
        ]
    ]
    assert [r.code for r in runs] == [0, 0], [r.stderr for r in runs]
    return db, env


def test_quota_names_its_tenant_and_refuses_to_guess_between_two(
    two_tenants: tuple[Path, dict[str, str]],
    tmp_path: Path,
) -> None:
    db, env = two_tenants
    for args, missing in [
        (["quota", "set", "--user", "u1", "daily_images=5"], "--tenant"),  # u1 is in two tenants
        (["quota", "show", "--user", "u1"], "--tenant"),
        (["quota", "set", "--user", "u404", "daily_images=5"], "--tenant"),  # never seen, two tenants
        (["quota", "set", "daily_images=5"], "--tenant"),  # no target at all
        (["quota", "show"], "--tenant"),
        (["report", "--user", "u1"], "--tenant"),
        (["quota", "set", "--tenant", "lab", "monthly_usd=5"], "PLATFORM:WORKSPACE"),
        (["quota", "set", "--tenant", "cli:lab", "--workspace", "local", "monthly_usd=5"], "--workspace"),
    ]:
        run = imagebot(args, env, tmp_path)
        assert run.code == 2, (args, run.stdout, run.stderr)
        assert len(run.stderr.strip().splitlines()) == 1 and missing in run.stderr, (args, run.stderr)
        assert "Traceback" not in run.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM limits").fetchone() == (0,)

    # Named, it works, for one tenant only.
    done = imagebot(["quota", "set", "--tenant", "cli:lab", "--user", "u1", "daily_images=1"], env, tmp_path)
    assert done.code == 0, done.stderr
    lab = imagebot(["quota", "show", "--tenant", "cli:lab", "--user", "u1"], env, tmp_path)
    assert "your daily images: 2 images used of 1 image, 0 images left" in lab.stdout, lab.stdout
    local = imagebot(["quota", "show", "--tenant", "cli:local", "--user", "u1"], env, tmp_path)
    assert local.code == 0 and "no limits apply" in local.stdout, local.stdout

    # --tenant alone is the tenant's own limit (the CLI is the operator's tool: it may set it).
    own = imagebot(["quota", "set", "--tenant", "cli:lab", "monthly_usd=7"], env, tmp_path)
    assert own.code == 0, own.stderr
    # --workspace is still understood where it names one tenant.
    same = imagebot(["quota", "show", "--workspace", "lab"], env, tmp_path)
    assert same.code == 0, same.stderr
    assert re.search(r"this workspace's monthly spend: \$\d+\.\d{4} used of \$7\.0000", same.stdout), (
        same.stdout
    )
    assert "your " not in same.stdout
    with sqlite3.connect(db) as conn:
        assert set(conn.execute("SELECT scope, key, daily_images, monthly_micros FROM limits")) == {
            ("user", "cli:lab:u1", 1, None),
            ("workspace", "cli:lab", None, 7_000_000),
        }


def test_report_of_one_tenant_and_of_all(two_tenants: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    db, env = two_tenants
    out = tmp_path / "lab.csv"
    lab = imagebot(["report", "--tenant", "cli:lab", "--user", "u1", "--csv", str(out)], env, tmp_path)
    assert lab.code == 0, lab.stderr
    [(total,)] = ledger(db, "SELECT sum(actual_micros) FROM ledger WHERE workspace='lab'")
    assert f"2 images, {format_usd(total)} spent" in lab.stdout and "cli:lab" in lab.stdout, lab.stdout
    with out.open(newline="", encoding="utf-8") as handle:
        assert {(r["workspace"], r["user"]) for r in csv.DictReader(handle)} == {("lab", "u1")}
    # A channel only one tenant has needs no --tenant.
    channel = imagebot(["report", "--channel", "c9"], env, tmp_path)
    assert channel.code == 0 and "2 images" in channel.stdout and "cli:lab" in channel.stdout, channel.stdout
    everything = imagebot(["report"], env, tmp_path)
    [(all_total,)] = ledger(db, "SELECT sum(actual_micros) FROM ledger")
    assert f"3 images, {format_usd(all_total)} spent" in everything.stdout, everything.stdout
    assert "all tenants" in everything.stdout and "cli:lab:u1" in everything.stdout


def test_settings_sets_a_channels_price_check_and_refuses_nonsense(tmp_path: Path) -> None:
    db = tmp_path / "bot.sqlite3"
    env = environment(db)
    done = imagebot(["settings", "--tenant", "slack:T1", "--channel", "C1", "confirm=0.10"], env, tmp_path)
    assert done.code == 0 and "confirm=$0.1000" in done.stdout
    bad = imagebot(["settings", "--tenant", "slack:T1", "--channel", "C1", "confirm=lots"], env, tmp_path)
    assert bad.code == 2 and "not a USD amount" in bad.stderr and "off or default" in bad.stderr
    assert [tuple(r) for r in ledger(db, "SELECT tenant, channel, name, value FROM channel_settings")] == [
        ("slack:T1", "C1", "confirm", "100000")
    ]


# --- `imagebot run` with no chat platform -----------------------------------------------------------------


def test_run_without_tokens_and_without_a_terminal_exits_2_naming_the_variables(tmp_path: Path) -> None:
    """A container whose env file is mistyped must not look finished (exit 0): it exits 2 and says what to set."""
    run = finish(start(["run"], environment(tmp_path / "bot.sqlite3"), tmp_path, stdin=subprocess.DEVNULL))
    assert run.code == 2, run.stderr
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN", "DISCORD_TOKEN"):
        assert name in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "bot.sqlite3").exists()  # nothing was started


def test_run_without_tokens_at_a_terminal_is_the_console(tmp_path: Path) -> None:
    import pty

    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "adapters.cli", "run"],
        env=environment(tmp_path / "bot.sqlite3", IMAGEBOT_OFFLINE_LATENCY="0.05", TERM="dumb"),
        cwd=tmp_path,
        stdin=follower,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    seen = b""
    try:
        while b"imagine> " not in seen:
            chunk = os.read(leader, 4096)
            assert chunk, seen
            seen += chunk
        os.write(leader, b"/imagine-quota\n")
        os.write(leader, b"quit\n")
        assert process.wait(timeout=TIMEOUT) == 0, seen
    finally:
        with contextlib.suppress(OSError):
            while chunk := os.read(leader, 4096):
                seen += chunk
        os.close(leader)
        if process.poll() is None:
            process.kill()
    # The quota's answer, not the echo of the typed command (which names "quota" too).
    assert b"imagebot console" in seen and b"You have no quota limits." in seen, seen


# --- the console keeps going after a refusal -------------------------------------------------------------


def test_console_vary_of_a_deleted_image_is_a_clear_line_and_the_console_goes_on(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "adapters.cli", "console", "--out", str(tmp_path / "out")],
        env=environment(tmp_path / "bot.sqlite3", IMAGEBOT_OFFLINE_LATENCY="0.05"),
        cwd=tmp_path,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stdout, stderr = process.communicate(
        "a red fox --quality low\n/delete 1\n/vary 1\n/imagine-quota\nquit\n", timeout=TIMEOUT
    )
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr and "FileNotFoundError" not in stderr
    assert "Deleted." in stdout, (stdout, stderr)
    assert "image 1 of this job was deleted" in stdout + stderr
    assert "quota" in stdout.lower()  # the line after it ran
    assert [r["status"] for r in ledger(tmp_path / "bot.sqlite3")] == ["delivered"]  # the vary cost nothing


# --- every example in a help text and in README.md runs --------------------------------------------------

EXAMPLE = re.compile(r"^\s+(imagebot\s.+?)\s*(?:#.*)?$", re.MULTILINE)
# Placeholders in examples -> a value a user might type.
PLACEHOLDERS = {"<application id>": "123456789012345678", "<the same words>": "settings"}


def _argv(command: str) -> tuple[dict[str, str], list[str]]:
    """`VAR=1 .venv/bin/imagebot quota show ...` -> ({VAR: 1}, [quota, show, ...])."""
    for placeholder, value in PLACEHOLDERS.items():
        command = command.replace(placeholder, value)
    assert "<" not in command.replace("<#", "").replace("<@", ""), f"unknown placeholder in {command!r}"
    words = shlex.split(command)
    env: dict[str, str] = {}
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    assert words and words[0].rsplit("/", 1)[-1] == "imagebot", command
    return env, words[1:]


def _runs_as_documented(command: str, tmp_path: Path) -> None:
    extra, args = _argv(command)
    env = environment(tmp_path / "bot.sqlite3", IMAGEBOT_OFFLINE_LATENCY="0.05", **extra)
    run = finish(start(args, env, tmp_path, stdin=subprocess.DEVNULL))
    assert "Traceback" not in run.stderr, (command, run.stderr)
    if args[:1] == ["run"] and "--help" not in args:
        # No chat token in a test: the settings were accepted, and it says which tokens to set.
        assert run.code == 2 and "SLACK_BOT_TOKEN" in run.stderr, (command, run.stderr)
    elif args[:1] == ["info"] and "--help" not in args:
        # A fresh database holds no job: it says so in one line (tests/e2e/test_*_people.py show cards). A job
        # id (ids are lower-case hex) is looked up in the ledger first; a number N is the Nth of the history.
        job = args[1]
        said = f"No such job: '{job}'." if job.isdigit() else f"no job '{job.lower()}' in this ledger"
        assert run.code == 2 and said in run.stderr, (command, run.stderr)
    elif args[:1] == ["redeliver"] and "--help" not in args:
        # A fresh database holds no job: it says so in one line (tests/core/test_paid_work.py delivers one).
        assert run.code == 2 and "no image of it waits to be delivered" in run.stderr, (command, run.stderr)
    else:
        assert run.code == 0, (command, run.stdout, run.stderr)


def side_by_side(jobs: list[Callable[[], T]]) -> list[T]:
    """Run `jobs` (each one waits on its own `imagebot` process) a few at a time; their results in order.
    A CLI run mostly waits for its interpreter to start, so four at once take about a quarter of the time."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda job: job(), jobs))


def help_examples() -> list[str]:
    top = imagebot(["--help"], environment(Path("/nonexistent/db")), ROOT)
    commands = re.search(r"\{([a-z,-]+)\}", top.stdout)
    assert commands, top.stdout
    found = EXAMPLE.findall(top.stdout)
    helps = side_by_side(
        [
            functools.partial(imagebot, [command, "--help"], environment(Path("/nonexistent/db")), ROOT)
            for command in commands[1].split(",")
        ]
    )
    for run in helps:
        found += EXAMPLE.findall(run.stdout)
    return found


def written_examples() -> list[str]:
    """The example lines adapters/cli.py gives its help texts (`_examples(...)` and IMAGINE_EXAMPLES), read from
    its source, so that each can be its own test; test_every_help_text_prints_the_examples_written_for_it checks
    that these are what `--help` prints."""
    tree = ast.parse((ROOT / "adapters" / "cli.py").read_text(encoding="utf-8"))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "_examples":
            found += [arg.value for arg in node.args if isinstance(arg, ast.Constant)]
        elif isinstance(node, ast.Assign) and any(
            getattr(t, "id", None) == "IMAGINE_EXAMPLES" for t in node.targets
        ):
            assert isinstance(node.value, ast.Tuple), "IMAGINE_EXAMPLES is a tuple of lines"
            found += [item.value for item in node.value.elts if isinstance(item, ast.Constant)]
    return found


def test_every_help_text_prints_the_examples_written_for_it() -> None:
    printed = set(help_examples())
    assert any("settings" in e and "max_size=2k" in e for e in printed), printed
    assert any("block" in e for e in printed), printed
    assert printed == set(written_examples())


def readme_commands() -> list[str]:
    """Every `imagebot ...` command in README.md and in the docs it links (usage, operations, design, testing)."""
    readme = "\n".join(
        (ROOT / name).read_text(encoding="utf-8")
        for name in ("README.md", "docs/usage.md", "docs/operations.md", "docs/design.md", "docs/testing.md")
    )
    found: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", readme, re.DOTALL):
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip() if " #" in line else line.strip()
            command = line.rsplit("&&", 1)[-1].strip()
            if re.match(r"^(?:[A-Z_][A-Z0-9_]*=\S*\s+)*(?:\.venv/bin/)?imagebot\s", command + " "):
                found.append(command)
    for code in re.findall(r"`([^`]+)`", re.sub(r"```.*?```", "", readme, flags=re.DOTALL)):
        code = " ".join(code.split())
        if re.match(r"^(?:\.venv/bin/)?imagebot \S", code):
            found.append(code)
    return found


def documented_commands() -> list[str]:
    """Every example a help text gives and every `imagebot` command in the docs, once each; a command named in
    prose (`imagebot run`, `imagebot quota set`) as its `--help`: it exists."""
    commands = []
    for command in [*written_examples(), *readme_commands()]:
        _, args = _argv(command)
        if len(args) == 1 or args[:2] in (["quota", "set"], ["quota", "show"]) and len(args) == 2:
            command = f"{command} --help"
        commands.append(command)
    return list(dict.fromkeys(commands))


def test_the_docs_give_the_commands_people_start_with() -> None:
    commands = readme_commands()
    assert any("imagine" in c and "poster.jpg" in c for c in commands), commands  # the quickstart
    bare = [c.removeprefix(".venv/bin/") for c in commands]
    assert any(c.startswith("imagebot quota set") and "daily_usd" in c for c in bare), commands
    assert any(c.startswith("DISCORD_SHARD_COUNT=") and "imagebot run" in c for c in bare), commands  # docs/


@pytest.mark.parametrize("command", documented_commands())
def test_every_documented_command_runs(command: str, tmp_path: Path) -> None:
    """Each its own test (they spread over the xdist workers), in a folder of its own."""
    _runs_as_documented(command, tmp_path)


@pytest.mark.parametrize(
    ("args", "forbidden"),
    [
        (["--help"], ("bot.app", "aiohttp", "openai")),
        (["quota", "show", "--tenant", "cli:local"], ("bot.app", "aiohttp", "openai")),
        (["report", "--days", "1"], ("bot.app", "aiohttp", "openai")),
        (["history"], ("bot.app", "aiohttp", "openai")),
        (["settings", "--tenant", "slack:T1"], ("openai",)),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_a_command_imports_only_what_it_needs(
    args: list[str], forbidden: tuple[str, ...], tmp_path: Path
) -> None:
    """Each run of a one-shot command pays for its imports (docs/design.md, Start-up): the ledger's commands never
    import the core (the renderer, aiohttp, the SDK), and `settings` makes no SDK client (so never imports it;
    bot/lazy.py leaves a module in sys.modules that is imported only when first read: not counted)."""
    script = (
        "import sys, runpy\n"
        f"sys.argv = ['imagebot', *{args!r}]\n"
        "try:\n    runpy.run_module('adapters.cli', run_name='__main__')\n"
        "except SystemExit as exc:\n    code = exc.code\n"
        f"print('IMPORTED', sorted(m for m in sys.modules if m.split('.')[0] in {{'bot', 'aiohttp', 'openai'}}"
        f" and any(m == f or m.startswith(f + '.') for f in {forbidden!r})"
        " and type(sys.modules[m]).__name__ != '_LazyModule'))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=environment(tmp_path / "bot.sqlite3"),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert "Traceback" not in run.stderr, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "IMPORTED []", run.stdout[-500:]
