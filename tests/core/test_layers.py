"""The core's layers, read from its imports: model <- store <- policy <- jobs <- app, no circle in between."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ORDER = ["bot.model", "bot.store", "bot.policy", "bot.jobs", "bot.app"]


def imports() -> dict[str, set[str]]:
    """Each module of bot/ -> the bot modules it imports (anywhere in it, type-checking imports included)."""
    modules = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
        for p in (ROOT / "bot").rglob("*.py")
    }
    found: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                    for a in node.names
                ]
                if isinstance(node, ast.ImportFrom) and node.module
                else []
            )
            for target in names:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    targets.add(target)
        found[name] = targets
    return found


def layer(module: str) -> int | None:
    return next(
        (i for i, prefix in enumerate(ORDER) if module == prefix or module.startswith(prefix + ".")), None
    )


def test_no_module_of_a_layer_imports_one_of_a_layer_above() -> None:
    upward = [
        f"{module} -> {target}"
        for module, targets in imports().items()
        for target in targets
        if (low := layer(module)) is not None
        and (high := layer(target)) is not None
        and high > low
        # the ledger still keys and refuses quotas by bot/policy/quota.py (its SQL moves to the store)
        and not (module == "bot.store.ledger" and target == "bot.policy.quota")
    ]
    assert upward == []


def test_relax_and_the_runner_do_not_import_each_other() -> None:
    graph = imports()
    assert "bot.jobs.runner" not in graph["bot.jobs.relax"]
    assert {"bot.jobs.delivery", "bot.jobs.job"} <= graph["bot.jobs.relax"] & graph["bot.jobs.runner"]


def test_no_platform_name_is_written_in_the_core_outside_its_table() -> None:
    scan = subprocess.run(
        [sys.executable, ".ci/platform_names.py"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert scan.returncode == 0, scan.stderr
