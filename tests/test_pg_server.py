"""The throwaway PostgreSQL server the tests use is real and gives each test its own database."""

from __future__ import annotations

import psycopg

from tests.pg import PgServer


def test_select_one(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_each_pg_url_is_a_fresh_database(pg_server: PgServer) -> None:
    first, second = pg_server.create_database(), pg_server.create_database()
    assert first != second
    with psycopg.connect(first, autocommit=True) as conn:
        conn.execute("CREATE TABLE marker (x int)")
        assert conn.execute("SELECT current_database()").fetchone() == (first.rsplit("/", 1)[1],)
    with psycopg.connect(second, autocommit=True) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (second.rsplit("/", 1)[1],)
        assert conn.execute("SELECT to_regclass('marker')").fetchone() == (None,)


def test_pg_url_fixture_is_per_test(pg_url: str, pg_server: PgServer) -> None:
    # test_select_one got a database of its own; this test gets another one.
    assert pg_url != pg_server.url
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_class WHERE relname = 'marker'").fetchone() == (0,)
