"""Account changes made through the API are seen by the very next request (issue 11 item 1).

The candidate cache (``database.account_cache_ttl``, shipped at 1 s) is dropped by the
database layer after every query marked ``-- invalidates: account_candidates``. These
tests freeze the cache's clock, so a change that did not drop it would be missed for
good, not for a second: each one fails on code that forgets an invalidation.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from typing import Any

import psycopg2
import pytest

import antigv.gateway.selection
from antigv.app import create_app
from antigv.appkeys import CATALOGUE
from antigv.backends.antigravity import oauth as oauth_module
from antigv.config import Config
from antigv.core.principal import Principal
from antigv.gateway.selection import AccountRouter
from antigv.store.db import Database, Queries, create_pool
from tests.conftest import ADMIN_KEY, bearer, create_user, double_config
from tests.test_oauth import google_login
from tests.upstream_double import UpstreamDouble

GEMINI = "gemini-3-pro-high"
_emails = itertools.count(1)


class FrozenClock:
    """Stands in for the ``time`` module inside antigv.gateway.selection: the cache ages
    only when a test moves ``now``."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def cache_clock(monkeypatch: pytest.MonkeyPatch) -> FrozenClock:
    clock = FrozenClock()
    monkeypatch.setattr(antigv.gateway.selection, "time", clock)
    monkeypatch.setattr(oauth_module, "ONBOARD_POLL_DELAY", 0.0)
    return clock


@pytest.fixture
def config(db_dsn: str, double: UpstreamDouble) -> Config:
    config = double_config(db_dsn, double)
    assert config.database.account_cache_ttl > 0  # the shipped default, not a test override
    return config


@pytest.fixture
def model(client: Any) -> str:
    """The id GEMINI is sent upstream as (and stored under) today."""
    return client.app[CATALOGUE].resolve(GEMINI)


def add_account(
    db_dsn: str, double: UpstreamDouble, user: dict[str, Any], model: str, *, shared: bool = False
) -> int:
    """An account stored before the app has read anything (so no cache can hold it yet)."""
    upstream = double.add_account(f"change{next(_emails)}@example.com")
    conn = psycopg2.connect(db_dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO accounts (user_id, email, refresh_token, access_token, access_token_expires_at,"
                " project_id, is_shared) VALUES (%s, %s, %s, %s, now() + interval '1 hour', %s, %s)"
                " RETURNING account_id",
                (
                    user["user_id"],
                    upstream.email,
                    "plain:" + upstream.refresh_token,
                    "plain:" + upstream.access_token,
                    upstream.project,
                    int(shared),
                ),
            )
            account_id = cur.fetchone()[0]
            # A known quota row, so the model can be switched off and on.
            cur.execute(
                "INSERT INTO model_quotas (account_id, model_name, quota_group, quota) VALUES (%s, %s, %s, 1)",
                (account_id, model, model),
            )
    finally:
        conn.close()
    return account_id


async def chat(client: Any, user: dict[str, Any]) -> int:
    response = await client.post(
        "/v1/chat/completions",
        json={"model": GEMINI, "messages": [{"role": "user", "content": "hi"}]},
        headers=bearer(user["api_key"]),
    )
    await response.read()
    return response.status


async def put(client: Any, path: str, body: dict[str, Any], user: dict[str, Any]) -> None:
    response = await client.put(path, json=body, headers=bearer(user["api_key"]))
    assert response.status == 200, await response.text()


async def test_disabling_an_account_stops_it_serving_the_next_request(client, double, db_dsn, model):
    alice = await create_user(client, "alice")
    account = add_account(db_dsn, double, alice, model)
    assert await chat(client, alice) == 200
    await put(client, f"/api/accounts/{account}/status", {"status": 0}, alice)
    served = len(double.chat_requests)
    assert await chat(client, alice) == 403
    assert len(double.chat_requests) == served


async def test_re_enabling_an_account_serves_the_next_request(client, double, db_dsn, model):
    alice = await create_user(client, "alice")
    account = add_account(db_dsn, double, alice, model)
    await put(client, f"/api/accounts/{account}/status", {"status": 0}, alice)
    assert await chat(client, alice) == 403  # the empty list is what the cache now holds
    await put(client, f"/api/accounts/{account}/status", {"status": 1}, alice)
    assert await chat(client, alice) == 200


async def test_switching_a_model_off_and_on_is_seen_at_once(client, double, db_dsn, model):
    alice = await create_user(client, "alice")
    account = add_account(db_dsn, double, alice, model)
    assert await chat(client, alice) == 200
    await put(client, f"/api/accounts/{account}/quotas/{model}/status", {"status": 0}, alice)
    assert await chat(client, alice) == 403
    await put(client, f"/api/accounts/{account}/quotas/{model}/status", {"status": 1}, alice)
    assert await chat(client, alice) == 200


async def test_sharing_and_unsharing_an_account_is_seen_at_once(client, double, db_dsn, model):
    alice = await create_user(client, "alice")
    bob = await create_user(client, "bob")
    lent = add_account(db_dsn, double, alice, model)
    # Bob contributes one shared account (so he has a pool) that is switched off for the model.
    bobs = add_account(db_dsn, double, bob, model, shared=True)
    await put(client, f"/api/accounts/{bobs}/quotas/{model}/status", {"status": 0}, bob)
    assert await chat(client, bob) == 403
    await put(client, f"/api/accounts/{lent}/type", {"is_shared": 1}, alice)
    assert await chat(client, bob) == 200
    await put(client, f"/api/accounts/{lent}/type", {"is_shared": 0}, alice)
    assert await chat(client, bob) == 403


async def test_a_deleted_account_serves_no_further_request(client, double, db_dsn, model):
    alice = await create_user(client, "alice")
    account = add_account(db_dsn, double, alice, model)
    assert await chat(client, alice) == 200
    deleted = await client.delete(f"/api/accounts/{account}", headers=bearer(alice["api_key"]))
    assert deleted.status == 200
    served = len(double.chat_requests)
    assert await chat(client, alice) == 403
    assert len(double.chat_requests) == served


async def test_a_deleted_user_s_shared_accounts_serve_no_further_request(client, double, db_dsn, model):
    alice = await create_user(client, "alice")
    bob = await create_user(client, "bob")
    add_account(db_dsn, double, alice, model, shared=True)
    bobs = add_account(db_dsn, double, bob, model, shared=True)
    await put(client, f"/api/accounts/{bobs}/quotas/{model}/status", {"status": 0}, bob)
    assert await chat(client, bob) == 200  # served by Alice's shared account
    deleted = await client.delete(f"/api/users/{alice['user_id']}", headers=bearer(ADMIN_KEY))
    assert deleted.status == 200
    assert await chat(client, bob) == 403


async def test_an_account_added_by_oauth_serves_the_next_request(client, double):
    alice = await create_user(client, "alice")
    assert await chat(client, alice) == 403
    double.add_account("fresh@example.com")
    started = await client.post("/api/oauth/authorize", json={}, headers=bearer(alice["api_key"]))
    location = await google_login(double, (await started.json())["data"]["auth_url"], "fresh@example.com")
    finished = await client.post(
        "/api/oauth/callback/manual", json={"callback_url": location}, headers=bearer(alice["api_key"])
    )
    assert finished.status == 200, await finished.text()
    assert await chat(client, alice) == 200
    assert double.chat_requests[-1].account == "fresh@example.com"


async def test_another_instance_sees_a_change_within_the_cache_ttl(
    aiohttp_client, config, double, db_dsn, cache_clock
):
    first = await aiohttp_client(create_app(config))
    second = await aiohttp_client(create_app(config))
    alice = await create_user(first, "alice")
    account = add_account(db_dsn, double, alice, first.app[CATALOGUE].resolve(GEMINI))
    assert await chat(second, alice) == 200  # cached on the second instance
    await put(first, f"/api/accounts/{account}/status", {"status": 0}, alice)
    assert await chat(first, alice) == 403
    assert await chat(second, alice) == 200  # another process's change: not seen yet ...
    cache_clock.now += config.database.account_cache_ttl
    assert await chat(second, alice) == 403  # ... but within the TTL


# --- by construction ---------------------------------------------------------------------

# What account_candidates reads; deleting a user deletes its accounts.
_WRITE = re.compile(
    r"(?<!FOR )(?<!KEY )\b(?:UPDATE|INSERT\s+INTO|DELETE\s+FROM)\s+(accounts|model_quotas|cooldowns|shared_pools|quota_windows)\b"
    r"|\bDELETE\s+FROM\s+(users)\b|\b(pool_charge)\s*\(",
    re.IGNORECASE,
)
# Writes that may leave cached candidate rows as they are, and why.
EXEMPT = {
    "take_refresh_lease": "the refresh lease is not a candidate column",
    "release_refresh_lease": "the refresh lease is not a candidate column",
    "insert_usage_batch": "last_used_at only orders equal accounts; a drop per usage flush would void the cache",
    "quota_mark_read": "quota_fetched_at is not a candidate column",
    "pool_recover": "recovery only raises balances, and the candidate query accrues it by itself",
}


def test_every_query_that_changes_candidate_rows_drops_the_cache():
    queries = Queries.load()
    unmarked = [
        name
        for name in queries.names()
        if _WRITE.search(queries[name])
        and AccountRouter.TOPIC not in queries.invalidates(name)
        and name not in EXEMPT
    ]
    assert unmarked == [], "mark them '-- invalidates: account_candidates' (or exempt them here, with why)"
    assert all(AccountRouter.TOPIC not in queries.invalidates(name) for name in EXEMPT)


async def test_a_transaction_tells_watchers_after_commit_and_never_after_rollback(db_dsn):
    pool = await create_pool(db_dsn, minsize=0, maxsize=2)
    try:
        db = Database(pool, Queries.load())
        told: list[str] = []
        db.watch(AccountRouter.TOPIC, lambda: told.append("dropped"))
        with pytest.raises(RuntimeError):
            async with db.transaction() as tx:
                await tx.execute("set_account_name", account_id=1, user_id=None, name="x")
                raise RuntimeError("rolled back")
        assert told == []
        async with db.transaction() as tx:
            await tx.execute("set_account_name", account_id=1, user_id=None, name="x")
            assert told == []  # not before the commit: a reader could cache the old rows again
        assert told == ["dropped"]
        await db.all("list_accounts", user_id=None)  # a read drops nothing
        await db.execute("set_project", account_id=1, project_id="p")
        assert told == ["dropped", "dropped"]
    finally:
        pool.close()
        await pool.wait_closed()


async def test_requests_that_miss_together_share_one_candidate_read(db_dsn, monkeypatch):
    pool = await create_pool(db_dsn, minsize=0, maxsize=4)
    try:
        db = Database(pool, Queries.load())
        router = AccountRouter(db, cache_ttl=1.0)
        reads: list[str] = []
        second_read = asyncio.Event()
        original = Database.all

        async def counting(self: Database, query: str, /, **params: Any) -> Any:
            reads.append(query)
            if len(reads) == 2:
                second_read.set()
            return await original(self, query, **params)

        monkeypatch.setattr(Database, "all", counting)
        principal = Principal(user_id=None, is_admin=True, name="admin")
        together = await asyncio.gather(*(router.candidates(principal, GEMINI, "gemini") for _ in range(16)))
        assert reads == ["account_candidates"] and all(rows is together[0] for rows in together)
        # A change committed while a read runs: who asks after it reads again.
        router.invalidate()  # the 1 s cache is gone
        late = asyncio.ensure_future(router.candidates(principal, GEMINI, "gemini"))
        await asyncio.wait_for(second_read.wait(), timeout=5)
        router.invalidate()
        await asyncio.gather(late, router.candidates(principal, GEMINI, "gemini"))
        assert reads == ["account_candidates"] * 3
    finally:
        pool.close()
        await pool.wait_closed()
