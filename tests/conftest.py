"""Shared fixtures: a real PostgreSQL per test session, a fresh database per test.

The session starts an ephemeral cluster with the server binaries found on the
machine (or uses ``ANTIGV_TEST_DSN``, which must allow CREATE DATABASE). A
template database is migrated once; each test gets its own copy of it.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest
from hypothesis import settings
from psycopg2 import sql

from antigv.app import create_app
from antigv.config import Config, build_config
from antigv.ops.embedded_pg import Cluster
from antigv.store.db import migrate
from tests.gemini_double import GeminiApiDouble
from tests.upstream_double import UpstreamDouble

pytest_plugins = ["tests.hang_guard"]

# End-to-end and operations tests (real SDK clients, `antigv serve` processes): `slow`, so
# `make test-fast` can leave them out. `make test` runs everything.
_SLOW = ("e2e", "test_ops.py", "test_instances.py", "test_cli.py", "test_fuzz_endpoints.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(part in _SLOW for part in item.path.relative_to(item.config.rootpath).parts):
            item.add_marker(pytest.mark.slow)


# The machines are shared and noisy: a property test judged by wall time would flake.
settings.register_profile("antigv", deadline=None)
settings.load_profile("antigv")

ADMIN_KEY = "sk-admin-test-0123456789abcdef"
_counter = itertools.count()


def dsn_for(base_dsn: str, database: str) -> str:
    return psycopg2.extensions.make_dsn(base_dsn, dbname=database)


def _admin_execute(base_dsn: str, statement: sql.Composable) -> None:
    _execute(dsn_for(base_dsn, "postgres"), statement)


def _execute(dsn: str, statement: sql.Composable | str) -> None:
    # Bounded: a blocking libpq call would not even let the hang guard fire.
    conn = psycopg2.connect(dsn, connect_timeout=10, options="-c statement_timeout=60s")
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A DSN of a server on which the tests may create databases."""
    external = os.environ.get("ANTIGV_TEST_DSN")
    if external:
        yield external
        return
    root = Path(tempfile.mkdtemp(prefix="antigv-test-pg-", dir="/tmp"))
    root.chmod(0o755)  # the server may run as another user and must reach its directory
    cluster = Cluster(root / "pg")
    cluster.start(fast_unsafe=True)
    try:
        yield cluster.dsn("postgres")
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(pg_server: str) -> str:
    name = f"antigv_template_{os.getpid()}"
    _admin_execute(pg_server, sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
    _admin_execute(pg_server, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    asyncio.run(migrate(dsn_for(pg_server, name)))
    return name


@pytest.fixture
def fresh_database(pg_server: str) -> Iterator[str]:
    """An empty database (no migrations), dropped after the test."""
    name = f"antigv_empty_{os.getpid()}_{next(_counter)}"
    _admin_execute(pg_server, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield dsn_for(pg_server, name)
    _admin_execute(pg_server, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def shared_db(pg_server: str, template_db: str) -> str:
    """One migrated database the tests take turns on (issue 12 item 8): emptied before each
    test instead of created and dropped per test, which took most of the suite's time."""
    name = f"antigv_test_{os.getpid()}"
    _admin_execute(pg_server, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    _admin_execute(
        pg_server,
        sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template_db)),
    )
    return dsn_for(pg_server, name)


# Every table but the migration ledger, sequences restarted: as a fresh copy of the template.
_EMPTY_DATABASE = """
DO $$
DECLARE tables text;
BEGIN
    PERFORM pg_terminate_backend(pid) FROM pg_stat_activity
     WHERE datname = current_database() AND pid <> pg_backend_pid();
    SELECT string_agg(format('%I.%I', schemaname, tablename), ', ') INTO tables
      FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_migrations';
    EXECUTE 'TRUNCATE ' || tables || ' RESTART IDENTITY CASCADE';
END $$
"""


@pytest.fixture
def db_dsn(shared_db: str) -> str:
    """A migrated, empty database for this test. Connections a previous test left open are
    ended first, as dropping its database used to."""
    _execute(shared_db, _EMPTY_DATABASE)
    return shared_db


def make_config(dsn: str, **sections: dict[str, Any]) -> Config:
    raw: dict[str, Any] = {
        # The shipped account_cache_ttl: a change the app makes must be seen at once anyway.
        "database": {"dsn": dsn, "pool_min": 0, "pool_max": 10},
        # Tests that are about sealing tokens set a key; the rest store them in clear.
        "security": {"admin_api_key": ADMIN_KEY, "allow_plaintext_tokens": True},
        "logging": {"level": "warning", "format": "json"},
        "tasks": {"enabled": False},
    }
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return build_config(raw, env={})


def double_config(dsn: str, double: UpstreamDouble, **sections: dict[str, Any]) -> Config:
    """A config whose upstream and Google OAuth endpoints are the double's; ``sections`` add to it."""
    base = double.base_url
    upstream = {"base_urls": [base], **sections.pop("upstream", {})}
    oauth = {
        "token_url": base + "/token",
        "userinfo_url": base + "/oauth2/v2/userinfo",
        "authorize_url": base + "/o/oauth2/v2/auth",
        **sections.pop("oauth", {}),
    }
    return make_config(dsn, upstream=upstream, oauth=oauth, **sections)


@pytest.fixture
def config(db_dsn: str) -> Config:
    return make_config(db_dsn)


@pytest.fixture
async def client(aiohttp_client: Any, config: Config) -> AsyncIterator[Any]:
    yield await aiohttp_client(create_app(config))


@pytest.fixture
def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def create_user(client: Any, name: str = "alice", **fields: Any) -> dict[str, Any]:
    response = await client.post("/api/users", json={"name": name, **fields}, headers=bearer(ADMIN_KEY))
    assert response.status == 200, await response.text()
    return (await response.json())["data"]


@pytest.fixture
async def double() -> AsyncIterator[UpstreamDouble]:
    """The upstream (Cloud Code, Google's OAuth) played by the test double, on a port of its own."""
    google = UpstreamDouble()
    await google.start()
    yield google
    await google.stop()


@pytest.fixture
async def gemini() -> AsyncIterator[GeminiApiDouble]:
    """The Gemini API's double (issue 15), for the gateway of a test that adds keys."""
    double = GeminiApiDouble()
    await double.start()
    yield double
    await double.stop()
