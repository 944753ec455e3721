"""Helpers of the quota, settlement and pool tests: raw SQL, accounts, usage rows."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from antigv.accounting.usage import UsageRecord
from antigv.store.db import Database, Queries, close_pool, create_pool
from antigv.store.keys import key_digest


@asynccontextmanager
async def open_db(dsn: str, size: int = 10) -> AsyncIterator[Database]:
    pool = await create_pool(dsn, minsize=0, maxsize=size)
    try:
        yield Database(pool, Queries.load())
    finally:
        await close_pool(pool)


async def sql(db: Database, statement: str, **params: Any) -> list[dict[str, Any]]:
    """Run one statement of test SQL; rows as dicts (empty for statements without rows)."""
    async with db.pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(statement, params)
        if cur.description is None:
            return []
        columns = [d.name for d in cur.description]
        return [dict(zip(columns, row, strict=True)) for row in await cur.fetchall()]


async def value(db: Database, statement: str, **params: Any) -> Any:
    rows = await sql(db, statement, **params)
    return next(iter(rows[0].values())) if rows else None


async def insert_user(db: Database, name: str = "user") -> int:
    key = "sk-" + secrets.token_urlsafe(36)
    return await value(
        db,
        "WITH u AS (INSERT INTO users (name) VALUES (%(n)s) RETURNING user_id), "
        "k AS (INSERT INTO api_keys (user_id, name, key_hash, key_prefix, is_primary) "
        "SELECT user_id, 'default', %(h)s, %(p)s, true FROM u) SELECT user_id FROM u",
        n=name,
        h=key_digest(key),
        p=key[:8],
    )


async def insert_account(
    db: Database,
    user_id: int,
    email: str | None = None,
    *,
    is_shared: int = 1,
    status: int = 1,
    project: str = "test-project",
    access_token: str = "test-token",
    quota_fetched_at: datetime | None = None,
) -> int:
    """An account as OAuth onboarding stores it (tokens in clear, as ``plain:``)."""
    return await value(
        db,
        """INSERT INTO accounts (user_id, email, name, is_shared, status, project_id, refresh_token,
                                 access_token, access_token_expires_at, quota_fetched_at)
           VALUES (%(u)s, %(e)s, %(e)s, %(s)s, %(st)s, %(p)s, 'plain:refresh-' || %(e)s,
                   'plain:' || %(t)s, now() + interval '1 hour', %(f)s)
           RETURNING account_id""",
        u=user_id,
        e=email or f"{secrets.token_hex(6)}@example.com",
        s=is_shared,
        st=status,
        p=project,
        t=access_token,
        f=quota_fetched_at,
    )


async def insert_usage(
    db: Database,
    user_id: int | None,
    account_id: int,
    *,
    quota_group: str = "g",
    model: str | None = None,
    is_shared: int = 1,
    total_tokens: int = 0,
    consumed_at: datetime | None = None,
    status: str = "ok",
) -> int:
    return await value(
        db,
        """INSERT INTO usage_log (request_id, user_id, account_id, model_name, quota_group, is_shared,
                                  total_tokens, prompt_tokens, status, consumed_at)
           VALUES (%(r)s, %(u)s, %(a)s, %(m)s, %(g)s, %(s)s, %(t)s, %(t)s, %(st)s, %(c)s)
           RETURNING log_id""",
        r=secrets.token_hex(8),
        u=user_id,
        a=account_id,
        m=model or quota_group,
        g=quota_group,
        s=is_shared,
        t=total_tokens,
        st=status,
        c=consumed_at or datetime.now(UTC) - timedelta(seconds=1),
    )


async def pool(db: Database, user_id: int, group: str = "g") -> dict[str, Any] | None:
    rows = await sql(
        db,
        "SELECT quota, max_quota, last_recovered_at FROM shared_pools WHERE user_id = %(u)s AND quota_group = %(g)s",
        u=user_id,
        g=group,
    )
    return rows[0] if rows else None


async def set_pool(
    db: Database, user_id: int, group: str, quota: float, max_quota: float, hours_ago: float = 0.0
) -> None:
    await sql(
        db,
        """INSERT INTO shared_pools (user_id, quota_group, quota, max_quota, last_recovered_at)
           VALUES (%(u)s, %(g)s, %(q)s, %(m)s, now() - make_interval(secs => %(s)s))
           ON CONFLICT (user_id, quota_group) DO UPDATE
           SET quota = EXCLUDED.quota, max_quota = EXCLUDED.max_quota,
               last_recovered_at = EXCLUDED.last_recovered_at""",
        u=user_id,
        g=group,
        q=quota,
        m=max_quota,
        s=hours_ago * 3600,
    )


def usage_record(n: int, prompt_tokens: int = 10) -> UsageRecord:
    """A finished request's usage row, ``req-<n>``, of no user or account."""
    return UsageRecord(
        request_id=f"req-{n}",
        user_id=None,
        account_id=None,
        model_name="gemini-3-flash",
        quota_group="gemini-flash",
        is_shared=0,
        status="ok",
        latency_ms=1,
        prompt_tokens=prompt_tokens,
        total_tokens=prompt_tokens,
    )
