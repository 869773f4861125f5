"""Each adapter package reads top-down: its `adapter.py` builds the parts (client, commands, listeners,
views, ...) and hands itself in; the parts know it only by the protocol in `parts.py`, so none imports
`adapter.py` (type-checking imports included) and no modules of the package import each other in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["adapters/discord", "adapters/slack"]


def relative_imports(package: str) -> dict[str, set[str]]:
    """Each module of `package` -> the modules of the same package it imports (`from .x import ...`)."""
    modules = {path.stem: path for path in (ROOT / package).glob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    targets.add(node.module.split(".")[0])
                else:
                    targets.update(alias.name for alias in node.names)
        graph[name] = (targets & modules.keys()) - {name}
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(graph[start])
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(graph[module])
    return seen


@pytest.mark.parametrize("package", PACKAGES)
def test_no_part_of_an_adapter_package_imports_its_adapter_module(package: str) -> None:
    graph = relative_imports(package)
    assert sorted(name for name, targets in graph.items() if "adapter" in targets) == ["__init__"]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_modules_of_an_adapter_package_import_each_other_in_a_circle(package: str) -> None:
    graph = relative_imports(package)
    assert sorted(name for name in graph if name in reachable(graph, name)) == []
