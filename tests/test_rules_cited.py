"""The rules the code cites live in the repository: every `docs/rules.md §N` named in code, tests or docs is a
section of docs/rules.md, and nothing points at a spec outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _sources() -> list[Path]:
    found = [*ROOT.glob("bot/**/*.py"), *ROOT.glob("adapters/**/*.py"), *ROOT.glob("tests/**/*.py")]
    return [*found, *ROOT.glob("docs/*.md"), ROOT / "README.md"]


def test_every_cited_rule_is_a_section_of_docs_rules() -> None:
    sections = set(
        re.findall(r"^## (§\d+)\b", (ROOT / "docs" / "rules.md").read_text(encoding="utf-8"), re.M)
    )
    cited: dict[str, list[str]] = {}
    for path in _sources():
        for ref in re.findall(r"docs/rules\.md (§\d+)", path.read_text(encoding="utf-8")):
            cited.setdefault(ref, []).append(str(path.relative_to(ROOT)))
    assert len(cited) >= 10
    assert not {ref: where for ref, where in cited.items() if ref not in sections}


def test_nothing_cites_a_spec_outside_the_repository() -> None:
    this = Path(__file__).resolve()
    outside = [
        str(p.relative_to(ROOT))
        for p in _sources()
        if p != this and "SPEC §" in p.read_text(encoding="utf-8")
    ]
    assert outside == []
