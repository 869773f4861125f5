"""The core's layers, read from its imports: model <- store <- policy <- jobs <- app (with the commands and the
report it serves), no circle in between.

The offline image server (bot/offline/) is a leaf service: none of the core's layers imports it except the
app that starts it, and it takes nothing from them above the model (its price table)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ORDER = ["bot.model", "bot.store", "bot.policy", "bot.jobs", ("bot.app", "bot.commands", "bot.report")]


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
        (
            i
            for i, prefixes in enumerate(ORDER)
            for prefix in ([prefixes] if isinstance(prefixes, str) else prefixes)
            if module == prefix or module.startswith(prefix + ".")
        ),
        None,
    )


def test_no_module_of_a_layer_imports_one_of_a_layer_above() -> None:
    upward = [
        f"{module} -> {target}"
        for module, targets in imports().items()
        for target in targets
        if (low := layer(module)) is not None and (high := layer(target)) is not None and high > low
    ]
    assert upward == []


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan), each sorted; a module that imports
    itself does not count (`imports` leaves it out)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in graph.get(module, set()):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(found)


def test_circles_finds_a_loop_of_imports_and_nothing_else() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_modules_of_bot_import_each_other_in_a_circle() -> None:
    assert circles(imports()) == []


def test_the_offline_server_is_a_leaf_the_core_does_not_build_on() -> None:
    graph = imports()
    offline = {module for module in graph if module.startswith("bot.offline")}
    users = {module for module, targets in graph.items() if targets & offline} - offline
    assert users <= {"bot.app"}
    core = {target for module in offline for target in graph[module]} - offline
    assert {target for target in core if layer(target) is not None and layer(target) > 0} == set()


def test_relax_and_the_runner_do_not_import_each_other() -> None:
    graph = imports()
    assert "bot.jobs.runner" not in graph["bot.jobs.relax"]
    assert {"bot.jobs.delivery", "bot.jobs.job"} <= graph["bot.jobs.relax"] & graph["bot.jobs.runner"]


def test_no_platform_name_is_written_in_the_core_outside_its_table() -> None:
    scan = subprocess.run(
        [sys.executable, ".ci/platform_names.py"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert scan.returncode == 0, scan.stderr


def test_no_layer_reaches_a_layer_above_through_a_module_of_none() -> None:
    """A module outside the layers (config, i18n, errors, ...) is a path too: policy -> texts -> jobs was an
    arrow up that the direct check did not see while texts sat at the top of bot/."""
    graph = imports()
    upward = []
    for module, targets in graph.items():
        low = layer(module)
        if low is None:
            continue
        seen, todo = set(), [t for t in targets if layer(t) is None]
        while todo:
            via = todo.pop()
            if via in seen:
                continue
            seen.add(via)
            for target in graph.get(via, set()):
                if (high := layer(target)) is None:
                    todo.append(target)
                elif high > low:
                    upward.append(f"{module} -> {via} -> ... {target}")
    assert upward == []
