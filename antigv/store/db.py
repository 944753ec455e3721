"""PostgreSQL access: named SQL queries, one aiopg pool, migrations.

SQL lives in ``sql/queries/*.sql`` as blocks introduced by ``-- name: <name>``
and in ``sql/migrations/NNNN_name.sql``. Python never builds SQL text: every
query takes ``%(param)s`` parameters.

A query that changes what an in-process cache holds says so in its block with
``-- invalidates: <topic>``; the database layer tells the topic's watchers once
the change is committed. So every write this process makes drops the caches it
touches, whichever code runs it: no caller has to remember.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import aiopg
import psycopg2
import psycopg2.errors
import structlog

from antigv.core.errors import InvalidRequest, ServiceUnavailable

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

log = structlog.get_logger(__name__)

# Any constant works; it only has to be the same for every instance.
MIGRATION_LOCK_ID = 0x616E7469_6776  # "antigv"
_NAME_RE = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)
_MIGRATION_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_INVALIDATES_RE = re.compile(r"^--\s*invalidates:\s*([a-z_][a-z0-9_]*(?:\s*,\s*[a-z_][a-z0-9_]*)*)\s*$", re.M)


class QueryError(Exception):
    """A problem with the SQL files themselves (found at startup)."""


Row = TypeVar("Row", bound="DataclassInstance")


def row_as(cls: type[Row], row: Mapping[str, Any]) -> Row:
    """A query's row as the dataclass ``cls``: the columns its fields name, nothing else."""
    return cls(**{field.name: row[field.name] for field in fields(cls)})


def sql_dir() -> Path:
    """Where the ``sql/`` tree is: next to the package in a checkout, or installed data."""
    override = os.environ.get("ANTIGV_SQL_DIR")
    candidates = [Path(override)] if override else []
    candidates += [
        Path(__file__).resolve().parents[2] / "sql",
        Path(sys.prefix) / "share" / "antigv" / "sql",
    ]
    for candidate in candidates:
        if (candidate / "queries").is_dir():
            return candidate
    raise QueryError(f"sql directory not found (looked in {', '.join(map(str, candidates))})")


def parse_queries(text: str, source: str = "<sql>") -> dict[str, str]:
    """Split a file into ``{name: sql}`` blocks; duplicate or empty blocks are errors."""
    queries: dict[str, str] = {}
    matches = list(_NAME_RE.finditer(text))
    # Only comments may stand before the first named block.
    head = text[: matches[0].start()] if matches else text
    if any(line.strip() and not line.strip().startswith("--") for line in head.splitlines()):
        raise QueryError(f"{source}: SQL outside a '-- name:' block")
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[match.end() : end].strip().rstrip(";").strip()
        name = match.group(1)
        if not any(line.strip() and not line.strip().startswith("--") for line in body.splitlines()):
            raise QueryError(f"{source}: query {name} is empty")
        if name in queries:
            raise QueryError(f"{source}: query {name} is defined twice")
        queries[name] = body
    return queries


class Queries:
    """All named queries, loaded once at startup."""

    def __init__(self, queries: Mapping[str, str]) -> None:
        self._queries = dict(queries)
        self._invalidates = {
            name: frozenset(
                topic.strip()
                for match in _INVALIDATES_RE.finditer(sql)
                for topic in match.group(1).split(",")
            )
            for name, sql in self._queries.items()
        }

    @classmethod
    def load(cls, directory: Path | None = None) -> Queries:
        directory = (directory or sql_dir()) / "queries"
        merged: dict[str, str] = {}
        for file in sorted(directory.glob("*.sql")):
            for name, sql in parse_queries(file.read_text(encoding="utf-8"), str(file)).items():
                if name in merged:
                    raise QueryError(f"{file}: query {name} is defined in two files")
                merged[name] = sql
        return cls(merged)

    def __getitem__(self, name: str) -> str:
        try:
            return self._queries[name]
        except KeyError:
            raise QueryError(f"unknown query {name}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._queries

    def names(self) -> list[str]:
        return sorted(self._queries)

    def invalidates(self, name: str) -> frozenset[str]:
        """The cache topics a query changes (its ``-- invalidates:`` lines)."""
        return self._invalidates.get(name, frozenset())

    def require(self, names: list[str]) -> None:
        """Fail at startup, not at first use, when code names a missing query."""
        missing = [n for n in names if n not in self._queries]
        if missing:
            raise QueryError(f"unknown queries: {', '.join(missing)}")


_DB_DOWN = (psycopg2.OperationalError, psycopg2.InterfaceError, TimeoutError)


class _Runner:
    """Runs named queries on a cursor."""

    def __init__(self, queries: Queries) -> None:
        self.queries = queries

    async def _cursor_execute(self, cur: Any, name: str, params: Mapping[str, Any]) -> None:
        try:
            await cur.execute(self.queries[name], params)
        except ValueError as exc:
            # psycopg2 refuses NUL characters in strings before sending anything.
            if "NUL" not in str(exc):
                raise
            raise InvalidRequest("text must not contain NUL (0x00) characters") from None

    @staticmethod
    def _rows(cur: Any, rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
        columns = [d.name for d in cur.description]
        return [dict(zip(columns, row, strict=True)) for row in rows]


class Transaction(_Runner):
    """Named queries inside one database transaction."""

    def __init__(self, queries: Queries, cursor: Any) -> None:
        super().__init__(queries)
        self._cur = cursor
        # Cache topics this transaction's statements change, told once it commits.
        self.changed: set[str] = set()

    async def _cursor_execute(self, cur: Any, name: str, params: Mapping[str, Any]) -> None:
        await super()._cursor_execute(cur, name, params)
        self.changed |= self.queries.invalidates(name)

    async def one(self, query: str, /, **params: Any) -> dict[str, Any] | None:
        await self._cursor_execute(self._cur, query, params)
        row = await self._cur.fetchone()
        return None if row is None else self._rows(self._cur, [row])[0]

    async def all(self, query: str, /, **params: Any) -> list[dict[str, Any]]:
        await self._cursor_execute(self._cur, query, params)
        return self._rows(self._cur, await self._cur.fetchall())

    async def execute(self, query: str, /, **params: Any) -> int:
        await self._cursor_execute(self._cur, query, params)
        count: int = self._cur.rowcount
        return count


class Database(_Runner):
    """The repository's entry point: named queries over one aiopg pool.

    Connection failures become :class:`ServiceUnavailable` (503) so a database
    outage fails requests fast instead of surfacing as 500s.
    """

    def __init__(self, pool: aiopg.Pool, queries: Queries) -> None:
        super().__init__(queries)
        self.pool = pool
        self._watchers: dict[str, list[Callable[[], None]]] = {}

    def watch(self, topic: str, drop: Callable[[], None]) -> None:
        """Call ``drop`` after every committed statement that invalidates ``topic``."""
        self._watchers.setdefault(topic, []).append(drop)

    def _changed(self, topics: Iterable[str]) -> None:
        for topic in topics:
            for drop in self._watchers.get(topic, ()):
                drop()

    @asynccontextmanager
    async def cursor(self) -> AsyncIterator[Any]:
        """A raw cursor on one pooled connection, held for the block (the statements below use it)."""
        try:
            async with self.pool.acquire() as conn, conn.cursor() as cur:
                yield cur
        except _DB_DOWN as exc:
            raise ServiceUnavailable("the database is unavailable, try again shortly") from exc

    # Outside a transaction every statement commits by itself (autocommit).

    async def one(self, query: str, /, **params: Any) -> dict[str, Any] | None:
        async with self.cursor() as cur:
            await self._cursor_execute(cur, query, params)
            row = await cur.fetchone()
            result = None if row is None else self._rows(cur, [row])[0]
        self._changed(self.queries.invalidates(query))
        return result

    async def all(self, query: str, /, **params: Any) -> list[dict[str, Any]]:
        async with self.cursor() as cur:
            await self._cursor_execute(cur, query, params)
            rows = self._rows(cur, await cur.fetchall())
        self._changed(self.queries.invalidates(query))
        return rows

    async def execute(self, query: str, /, **params: Any) -> int:
        async with self.cursor() as cur:
            await self._cursor_execute(cur, query, params)
            count: int = cur.rowcount
        self._changed(self.queries.invalidates(query))
        return count

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """Named queries in one transaction; the caches they invalidate are told after the commit
        (a rollback changed nothing)."""
        async with self.cursor() as cur:
            async with cur.begin():
                tx = Transaction(self.queries, cur)
                yield tx
            self._changed(tx.changed)

    async def ping(self) -> bool:
        try:
            return (await self.one("ping")) is not None
        except ServiceUnavailable:
            return False


async def create_pool(dsn: str, *, minsize: int, maxsize: int, acquire_timeout: float = 5.0) -> aiopg.Pool:
    # UTC session so every timestamp leaves the database with a zero offset.
    return await aiopg.create_pool(
        dsn,
        minsize=minsize,
        maxsize=maxsize,
        timeout=acquire_timeout,
        enable_hstore=False,
        enable_uuid=False,
        options="-c timezone=UTC",
        connect_timeout=max(1, int(acquire_timeout)),
    )


async def close_pool(pool: aiopg.Pool, grace: float = 5.0) -> None:
    """Close the pool, waiting ``grace`` seconds for connections still in use.

    By now the server has finished or cancelled its handlers, so a connection
    still out is a leak; waiting for it would hang the shutdown for good.
    """
    pool.close()
    try:
        await asyncio.wait_for(pool.wait_closed(), grace)
    except TimeoutError:
        log.warning("db_pool_close_forced", in_use=pool.size - pool.freesize)
        pool.terminate()
        await pool.wait_closed()


# --- migrations ---------------------------------------------------------------


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(directory: Path | None = None) -> list[Migration]:
    directory = (directory or sql_dir()) / "migrations"
    migrations = []
    for file in sorted(directory.glob("*.sql")):
        match = _MIGRATION_RE.match(file.name)
        if not match:
            raise QueryError(f"{file}: migration files are named NNNN_name.sql")
        migrations.append(Migration(int(match.group(1)), match.group(2), file.read_text(encoding="utf-8")))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise QueryError("two migrations share a number")
    return migrations


_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


async def migrate(dsn: str, migrations: list[Migration] | None = None) -> list[Migration]:
    """Apply pending migrations in order, each in its own transaction.

    A session-level advisory lock serialises instances that start together;
    the second one finds nothing left to do. Returns what was applied.
    """
    migrations = load_migrations() if migrations is None else migrations
    applied: list[Migration] = []
    try:
        conn_cm = aiopg.connect(dsn, enable_hstore=False, enable_uuid=False, options="-c timezone=UTC")
        async with conn_cm as conn, conn.cursor() as cur:
            await cur.execute("SELECT pg_advisory_lock(%(id)s)", {"id": MIGRATION_LOCK_ID})
            try:
                await cur.execute(_MIGRATIONS_TABLE)
                await cur.execute("SELECT version FROM schema_migrations")
                done = {row[0] for row in await cur.fetchall()}
                for migration in migrations:
                    if migration.version in done:
                        continue
                    async with cur.begin():
                        await cur.execute(migration.sql)
                        await cur.execute(
                            "INSERT INTO schema_migrations (version, name) VALUES (%(v)s, %(n)s)",
                            {"v": migration.version, "n": migration.name},
                        )
                    applied.append(migration)
                    log.info("migration_applied", version=migration.version, name=migration.name)
            finally:
                await cur.execute("SELECT pg_advisory_unlock(%(id)s)", {"id": MIGRATION_LOCK_ID})
    except psycopg2.Error as exc:
        raise QueryError(f"migration failed: {exc}".strip()) from exc
    return applied
