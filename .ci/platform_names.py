"""Fail if a chat platform's name is written as a string in the core outside its one table.

The core (bot/) learns about a platform only from bot/platforms.py; every other module asks that table. This
scan reads each module's syntax tree and reports every string constant that is exactly a platform's name.
Run from the repository root: python .ci/platform_names.py
"""

from __future__ import annotations

import ast
import pathlib
import sys

NAMES = {"slack", "discord"}
TABLE = pathlib.Path("bot/platforms.py")


def main() -> int:
    found = []
    for path in sorted(pathlib.Path("bot").rglob("*.py")):
        if path == TABLE:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.lower() in NAMES:
                found.append(f"{path}:{node.lineno}: {node.value!r}")
    if found:
        print(f"platform names outside {TABLE} (ask that table instead):", *found, sep="\n", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
