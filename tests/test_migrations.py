"""Migrations (in order, once, safe when two run at once) and the named-query loader."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import psycopg2
import pytest

from antigv.store.db import (
    Migration,
    Queries,
    QueryError,
    load_migrations,
    migrate,
    parse_queries,
    sql_dir,
)

PACKAGE = Path(__file__).resolve().parent.parent / "antigv"


def fetch(dsn: str, statement: str, params: tuple = ()) -> list[tuple]:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall()
    finally:
        conn.close()


def tables(dsn: str) -> set[str]:
    rows = fetch(dsn, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
    return {r[0] for r in rows}


def recorded(dsn: str) -> list[tuple[int, str]]:
    return [
        (v, n)
        for v, n in fetch(dsn, "SELECT version, name FROM schema_migrations ORDER BY applied_at, version")
    ]


# --- migrate ----------------------------------------------------------------------


def test_migration_files_are_numbered_in_order():
    migrations = load_migrations()
    versions = [m.version for m in migrations]
    assert versions, "no migrations found"
    assert versions == sorted(versions)
    assert len(set(versions)) == len(versions)
    assert versions[0] == 1
    files = sorted(p.name for p in (sql_dir() / "migrations").glob("*.sql"))
    assert [f"{m.version:04d}_{m.name}.sql" for m in migrations] == files


async def test_migrate_empty_database_applies_everything_in_order(fresh_database):
    expected = load_migrations()
    assert tables(fresh_database) == set()
    applied = await migrate(fresh_database)
    assert [(m.version, m.name) for m in applied] == [(m.version, m.name) for m in expected]
    # Recorded one row per file, in the order they ran.
    assert recorded(fresh_database) == [(m.version, m.name) for m in expected]
    assert {"schema_migrations", "users", "accounts", "model_quotas", "shared_pools", "usage_log"} <= tables(
        fresh_database
    )


async def test_migrate_twice_applies_nothing_the_second_time(fresh_database):
    first = await migrate(fresh_database)
    before = recorded(fresh_database)
    second = await migrate(fresh_database)
    assert first
    assert second == []
    assert recorded(fresh_database) == before


async def test_migrate_on_the_migrated_template_applies_nothing(db_dsn):
    assert await migrate(db_dsn) == []


async def test_two_migrations_at_once_apply_the_schema_exactly_once(fresh_database):
    expected = load_migrations()
    first, second = await asyncio.gather(migrate(fresh_database), migrate(fresh_database))
    # One of them did all the work, the other found nothing left to do.
    assert sorted([len(first), len(second)]) == [0, len(expected)]
    versions = [r[0] for r in fetch(fresh_database, "SELECT version FROM schema_migrations")]
    assert sorted(versions) == [m.version for m in expected]
    # The lock is released: a third run still works and does nothing.
    assert await migrate(fresh_database) == []


async def test_many_migrations_at_once(fresh_database):
    results = await asyncio.gather(*(migrate(fresh_database) for _ in range(4)))
    assert sorted(len(r) for r in results) == [0, 0, 0, len(load_migrations())]


async def test_a_new_migration_is_applied_on_top(fresh_database):
    base = load_migrations()
    await migrate(fresh_database, base)
    extra = Migration(base[-1].version + 1, "extra", "CREATE TABLE extra_table (id integer)")
    applied = await migrate(fresh_database, [*base, extra])
    assert applied == [extra]
    assert "extra_table" in tables(fresh_database)
    assert recorded(fresh_database)[-1] == (extra.version, "extra")


async def test_a_failing_migration_is_rolled_back_and_reported(fresh_database):
    good = Migration(1, "good", "CREATE TABLE good_table (id integer)")
    bad = Migration(2, "bad", "CREATE TABLE half_done (id integer); SELECT no_such_column FROM good_table")
    with pytest.raises(QueryError, match="migration failed"):
        await migrate(fresh_database, [good, bad])
    # The good one stays, the bad one left nothing behind.
    assert recorded(fresh_database) == [(1, "good")]
    assert "half_done" not in tables(fresh_database)
    # The advisory lock was released: a corrected run proceeds.
    fixed = Migration(2, "bad", "CREATE TABLE half_done (id integer)")
    assert await migrate(fresh_database, [good, fixed]) == [fixed]


async def test_migrate_on_an_unreachable_database_is_a_query_error(fresh_database):
    bad_dsn = fresh_database.replace("dbname=", "dbname=does_not_exist_")
    assert bad_dsn != fresh_database
    with pytest.raises(QueryError, match="migration failed"):
        await migrate(bad_dsn, [])


def test_load_migrations_rejects_bad_names(tmp_path):
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "0001_ok.sql").write_text("SELECT 1")
    (tmp_path / "migrations" / "2_bad-name.sql").write_text("SELECT 1")
    with pytest.raises(QueryError, match="NNNN_name"):
        load_migrations(tmp_path)


def test_load_migrations_rejects_two_with_one_number(tmp_path):
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "0001_one.sql").write_text("SELECT 1")
    (tmp_path / "migrations" / "0001_other.sql").write_text("SELECT 1")
    with pytest.raises(QueryError, match="share a number"):
        load_migrations(tmp_path)


# --- parse_queries ---------------------------------------------------------------------


def test_parse_queries_splits_named_blocks():
    text = (
        "-- A file comment is fine before the first block.\n\n"
        "-- name: first\nSELECT 1\n\n"
        "-- name: second\nSELECT 2\nFROM t;\n"
        "--name:third\nSELECT 3\n"
    )
    assert parse_queries(text) == {"first": "SELECT 1", "second": "SELECT 2\nFROM t", "third": "SELECT 3"}


def test_parse_queries_rejects_duplicates():
    with pytest.raises(QueryError, match="twice") as info:
        parse_queries("-- name: a\nSELECT 1\n-- name: a\nSELECT 2\n", "dup.sql")
    assert "dup.sql" in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "-- name: a\n",
        "-- name: a\n   \n\n",
        "-- name: a\n;\n",
        "-- name: a\n-- name: b\nSELECT 1\n",
    ],
)
def test_parse_queries_rejects_empty_blocks(text):
    with pytest.raises(QueryError, match="query a is empty"):
        parse_queries(text, "empty.sql")


def test_parse_queries_rejects_blocks_of_only_comments():
    with pytest.raises(QueryError):
        parse_queries("-- name: a\n-- TODO write me\n-- name: b\nSELECT 1\n", "comment.sql")


@pytest.mark.parametrize(
    "text",
    [
        "SELECT 1\n-- name: a\nSELECT 2\n",
        "-- header\nDELETE FROM users;\n-- name: a\nSELECT 1\n",
        "SELECT 1\n",
    ],
)
def test_parse_queries_rejects_sql_outside_blocks(text):
    with pytest.raises(QueryError, match="outside"):
        parse_queries(text, "outside.sql")


def test_parse_queries_accepts_a_file_of_only_comments():
    assert parse_queries("-- nothing here yet\n\n") == {}


# --- Queries -------------------------------------------------------------------------------


def test_require_fails_for_an_unknown_name():
    queries = Queries({"known": "SELECT 1"})
    queries.require(["known"])
    with pytest.raises(QueryError, match="no_such_query"):
        queries.require(["known", "no_such_query"])


def test_unknown_query_by_name_is_a_query_error():
    queries = Queries({"known": "SELECT 1"})
    assert queries["known"] == "SELECT 1"
    assert "known" in queries
    assert "other" not in queries
    with pytest.raises(QueryError, match="other"):
        queries["other"]


def test_every_query_file_loads_and_every_name_is_unique():
    files = sorted((sql_dir() / "queries").glob("*.sql"))
    assert files
    names: list[str] = []
    for file in files:
        parsed = parse_queries(file.read_text(encoding="utf-8"), str(file))
        assert parsed, f"{file.name} holds no query"
        names += parsed
    assert len(names) == len(set(names))
    queries = Queries.load()
    queries.require(names)
    assert "ping" in queries
    assert "key_by_hash" in queries


def test_queries_load_rejects_one_name_in_two_files(tmp_path):
    (tmp_path / "queries").mkdir()
    (tmp_path / "queries" / "a.sql").write_text("-- name: same\nSELECT 1\n")
    (tmp_path / "queries" / "b.sql").write_text("-- name: same\nSELECT 2\n")
    with pytest.raises(QueryError, match="two files"):
        Queries.load(tmp_path)


def test_every_query_named_in_the_code_exists():
    pattern = re.compile(r"""\.(?:one|all|execute)\(\s*["']([a-z_][a-z0-9_]*)["']""")
    used = {name for file in PACKAGE.rglob("*.py") for name in pattern.findall(file.read_text("utf-8"))}
    assert "key_by_hash" in used, "the pattern no longer finds query names in the code"
    Queries.load().require(sorted(used))


def test_every_query_parses_against_the_schema(db_dsn):
    """PREPARE each query (placeholders become $n) so a typo fails here, not at first use."""
    queries = Queries.load()
    conn = psycopg2.connect(db_dsn)
    try:
        with conn.cursor() as cur:
            for name in sorted(queries._queries):
                params: dict[str, str] = {}

                def placeholder(match: re.Match[str], params: dict[str, str] = params) -> str:
                    return params.setdefault(match.group(1), f"${len(params) + 1}")

                text = re.sub(r"%\((\w+)\)s", placeholder, queries[name]).replace("%%", "%")
                cur.execute(f"PREPARE check_{name} AS {text}")
                cur.execute(f"DEALLOCATE check_{name}")
    finally:
        conn.rollback()
        conn.close()
