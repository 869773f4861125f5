"""The store's one dialect of SQL: what both backends run alike, and what the PostgreSQL connection changes
(the placeholders, nothing else)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from bot.store import pg
from bot.store import schema as store
from bot.store.db import Database

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("sql", "sent"),
    [
        ("SELECT ? , ?", "SELECT $1 , $2"),
        ("SELECT 'why?', ?", "SELECT 'why?', $1"),
        ("SELECT 'it''s ?', ?", "SELECT 'it''s ?', $1"),
        ('SELECT "odd?name", ?', 'SELECT "odd?name", $1'),
        ("SELECT ? -- who? \n, ?", "SELECT $1 -- who? \n, $2"),
        ("SELECT /* ? */ ?", "SELECT /* ? */ $1"),
        ("SELECT $$ ? $$, $q$ ?'? $q$, ?", "SELECT $$ ? $$, $q$ ?'? $q$, $1"),
        ("SELECT '100%', ?", "SELECT '100%', $1"),
        ("SELECT CAST(? AS bigint[]), x::text", "SELECT CAST($1 AS bigint[]), x::text"),
    ],
)
def test_postgres_gets_the_statement_with_only_its_placeholders_converted(sql: str, sent: str) -> None:
    assert pg.placeholders(sql) == sent


def _both(tmp_path: Path, pg_url: str) -> list[Database]:
    return [store.connect(tmp_path / "dialect.sqlite3"), store.connect(pg_url)]


def test_a_question_mark_or_percent_sign_inside_a_literal_reaches_both_databases_as_written(
    tmp_path: Path, pg_url: str
) -> None:
    for db in _both(tmp_path, pg_url):
        try:
            assert tuple(db.execute("SELECT 'why?', ?, '100%'", ["x"]).fetchone()) == ("why?", "x", "100%")
            assert tuple(db.execute("SELECT 'why?'").fetchone()) == ("why?",)
            db.execute(
                "INSERT INTO seen_events (key, at) VALUES (?, 'a \"?\" mark') ON CONFLICT DO NOTHING", ["k?"]
            )
            db.execute("INSERT INTO seen_events (key, at) VALUES (?, 'again') ON CONFLICT DO NOTHING", ["k?"])
            assert [tuple(r) for r in db.execute("SELECT key, at FROM seen_events")] == [("k?", 'a "?" mark')]
        finally:
            db.close()


def test_a_transaction_commits_or_rolls_back_alike_on_both(tmp_path: Path, pg_url: str) -> None:
    for db in _both(tmp_path, pg_url):
        try:
            with db.transaction():
                db.executemany("INSERT INTO seen_events (key, at) VALUES (?, ?)", [("a", "1"), ("b", "2")])
            with pytest.raises(RuntimeError, match="no"), db.transaction():
                db.execute("DELETE FROM seen_events")
                raise RuntimeError("no")
            assert not db.in_transaction
            assert sorted(
                tuple(r) for r in db.execute('SELECT key, at FROM seen_events WHERE "key" <> ?', ["z"])
            ) == [
                ("a", "1"),
                ("b", "2"),
            ]
        finally:
            db.close()


def _sql_strings() -> list[tuple[str, int, str]]:
    """Every string constant in bot/ that reads as SQL (concatenated parts joined), with its place."""
    found = []
    for path in sorted((ROOT / "bot").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if re.search(r"\b(SELECT|INSERT|UPDATE|DELETE)\b", node.value) or re.match(
                    r"\s*(AND|OR|WHERE)\b", node.value
                ):
                    found.append((str(path.relative_to(ROOT)), node.lineno, node.value))
    return found


def test_the_sql_in_the_code_is_the_portable_dialect() -> None:
    """ON CONFLICT, never INSERT OR IGNORE/REPLACE (SQLite's own); the column "user" quoted (PostgreSQL
    reads a bare `user` as CURRENT_USER); no marker for a connection to rewrite."""
    wrong = []
    for where, line, sql in _sql_strings():
        bare = re.sub(r"'(?:[^']|'')*'|\"[^\"]*\"|\$\$.*?\$\$", "", sql, flags=re.S)
        if re.search(r"INSERT\s+OR\s+(IGNORE|REPLACE)", bare, re.I) or "/*lock*/" in sql:
            wrong.append((where, line, sql[:80]))
        elif re.search(r"(?<![\w.])user(?![\w])", bare, re.I) and "FUNCTION" not in sql:
            wrong.append((where, line, sql[:80]))
    assert wrong == []
