"""Token refresh never holds a database connection while Google answers (issue 11 item 16).

The token endpoint here is a gate the test opens: refreshes stay in flight exactly as
long as the test wants, with no wall-clock delay deciding anything.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import psycopg2
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from antigv.app import create_app
from antigv.appkeys import TOKENS
from antigv.config import Config
from tests.conftest import bearer, create_user, make_config
from tests.upstream_double import UpstreamDouble

GEMINI = "gemini-3-pro-high"
POOL = 2
# Only a guard against a hang: on the old code these waits are where it fails.
GUARD = 4.0
_emails = itertools.count(1)


class TokenGate:
    """A token endpoint that answers only once opened; counts calls per refresh token."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.opened = asyncio.Event()
        self._arrived = asyncio.Condition()

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        async with self._arrived:
            self.calls.append(str(form.get("refresh_token")))
            self._arrived.notify_all()
        await self.opened.wait()
        n = len(self.calls)
        return web.json_response({"access_token": f"fresh-{n}", "expires_in": 3600, "token_type": "Bearer"})

    async def arrived(self, count: int) -> None:
        async with self._arrived:
            await self._arrived.wait_for(lambda: len(self.calls) >= count)


@pytest.fixture
async def gate() -> AsyncIterator[tuple[TokenGate, str]]:
    gate = TokenGate()
    app = web.Application()
    app.router.add_post("/token", gate.token)
    server = TestServer(app)
    await server.start_server()
    yield gate, str(server.make_url("/token"))
    gate.opened.set()
    await server.close()


@pytest.fixture
def config(db_dsn: str, double: UpstreamDouble, gate: tuple[TokenGate, str]) -> Config:
    return make_config(
        db_dsn,
        database={"pool_max": POOL, "pool_min": 0},
        upstream={"base_urls": [double.base_url]},
        oauth={"token_url": gate[1]},
    )


def add_account(db_dsn: str, double: UpstreamDouble, user_id: int, *, expired: bool) -> int:
    upstream = double.add_account(f"refresh{next(_emails)}@example.com")
    conn = psycopg2.connect(db_dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO accounts (user_id, email, refresh_token, access_token, access_token_expires_at,"
                " project_id) VALUES (%s, %s, %s, %s, now() + %s * interval '1 hour', %s) RETURNING account_id",
                (
                    user_id,
                    upstream.email,
                    "plain:" + upstream.refresh_token,
                    "plain:" + upstream.access_token,
                    -1 if expired else 1,
                    upstream.project,
                ),
            )
            return cur.fetchone()[0]
    finally:
        conn.close()


def leases(db_dsn: str) -> list[Any]:
    conn = psycopg2.connect(db_dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT refresh_lease_until FROM accounts WHERE refresh_lease_until IS NOT NULL")
            return cur.fetchall()
    finally:
        conn.close()


async def test_slow_refreshes_leave_the_pool_to_readiness_and_other_users(client, gate, double, db_dsn):
    tokens_gate, _ = gate
    alice = await create_user(client, "alice")
    bob = await create_user(client, "bob")
    expiring = [add_account(db_dsn, double, alice["user_id"], expired=True) for _ in range(2 * POOL)]
    add_account(db_dsn, double, bob["user_id"], expired=False)
    tokens = client.app[TOKENS]
    refreshes = [asyncio.create_task(tokens.refresh(account_id)) for account_id in expiring]
    # As many refreshes as the pool has connections are now waiting on Google ...
    await asyncio.wait_for(tokens_gate.arrived(POOL), GUARD)
    # ... and none of them holds one: readiness and another user are served meanwhile.
    ready = await asyncio.wait_for(client.get("/readyz"), GUARD)
    assert ready.status == 200
    chat = await asyncio.wait_for(
        client.post(
            "/v1/chat/completions",
            json={"model": GEMINI, "messages": [{"role": "user", "content": "hi"}]},
            headers=bearer(bob["api_key"]),
        ),
        GUARD,
    )
    assert chat.status == 200, await chat.text()
    # Every refresh reached Google at once: none queued behind a connection.
    await asyncio.wait_for(tokens_gate.arrived(len(expiring)), GUARD)
    assert not any(task.done() for task in refreshes)
    tokens_gate.opened.set()
    assert sorted(await asyncio.gather(*refreshes)) == sorted(f"fresh-{len(expiring)}" for _ in expiring)
    assert leases(db_dsn) == []


async def test_two_instances_refresh_an_account_once(aiohttp_client, config, gate, double, db_dsn):
    tokens_gate, _ = gate
    first = await aiohttp_client(create_app(config))
    second = await aiohttp_client(create_app(config))
    alice = await create_user(first, "alice")
    account_id = add_account(db_dsn, double, alice["user_id"], expired=True)
    both = [asyncio.create_task(c.app[TOKENS].refresh(account_id, stale="stale")) for c in (first, second)]
    await asyncio.wait_for(tokens_gate.arrived(1), GUARD)
    tokens_gate.opened.set()
    assert await asyncio.gather(*both) == ["fresh-1", "fresh-1"]
    assert len(tokens_gate.calls) == 1
    assert leases(db_dsn) == []


async def test_a_refresh_cut_short_frees_the_account_for_the_next_caller(client, gate, double, db_dsn):
    tokens_gate, _ = gate
    alice = await create_user(client, "alice")
    account_id = add_account(db_dsn, double, alice["user_id"], expired=True)
    tokens = client.app[TOKENS]
    cut = asyncio.create_task(tokens.refresh(account_id))
    await asyncio.wait_for(tokens_gate.arrived(1), GUARD)
    assert len(leases(db_dsn)) == 1
    cut.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cut
    assert leases(db_dsn) == []
    tokens_gate.opened.set()
    assert await asyncio.wait_for(tokens.refresh(account_id), GUARD) == "fresh-2"
