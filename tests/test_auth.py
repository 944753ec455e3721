"""The API-key cache: changes are seen at once here and within CACHE_TTL elsewhere.

Instead of sleeping through the TTL, the tests swap the clock ``antigv.protocols.auth``
reads (its ``time`` module) for one they move by hand; asyncio's own clock is
left alone.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

import antigv.protocols.auth
import antigv.store.keys
from antigv.app import create_app
from antigv.core.principal import Principal
from antigv.protocols.auth import CACHE_TTL, KeyCache
from antigv.store.db import Database
from antigv.store.keys import is_admin_key, key_digest
from tests.conftest import ADMIN_KEY, bearer, create_user, make_config


class FakeClock:
    """Stands in for the ``time`` module inside ``antigv.protocols.auth``."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(antigv.protocols.auth, "time", fake)
    return fake


@pytest.fixture
async def second(aiohttp_client: Any, db_dsn: str) -> Any:
    """Another instance of the gateway on the same database."""
    return await aiohttp_client(create_app(make_config(db_dsn)))


@pytest.fixture
def key_lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the key lookups that reached the database."""
    calls: list[str] = []
    original = Database.one

    async def counting(self: Database, query: str, /, **params: Any) -> Any:
        if query == "key_by_hash":
            calls.append(query)
        return await original(self, query, **params)

    monkeypatch.setattr(Database, "one", counting)
    return calls


async def status_of(client: Any, key: str) -> int:
    response = await client.get("/api/user/me", headers=bearer(key))
    await response.read()
    return response.status


# --- across instances -----------------------------------------------------------------------


async def test_regenerated_key_lives_at_most_the_ttl_on_another_instance(client, second, clock):
    user = await create_user(client)
    old = user["api_key"]
    assert await status_of(client, old) == 200
    assert await status_of(second, old) == 200  # now cached on the second instance

    response = await client.post(f"/api/users/{user['user_id']}/regenerate-key", headers=bearer(ADMIN_KEY))
    new = (await response.json())["data"]["api_key"]

    # The instance that made the change refuses at once.
    assert await status_of(client, old) == 401
    # The other one may still accept it, but not past the TTL.
    clock.advance(CACHE_TTL - 0.5)
    assert await status_of(second, old) == 200
    clock.advance(0.6)
    assert await status_of(second, old) == 401
    # The new key works everywhere, at once.
    assert await status_of(client, new) == 200
    assert await status_of(second, new) == 200


async def test_disabled_user_lives_at_most_the_ttl_on_another_instance(client, second, clock):
    user = await create_user(client)
    key = user["api_key"]
    assert await status_of(client, key) == 200
    assert await status_of(second, key) == 200

    response = await client.put(
        f"/api/users/{user['user_id']}/status", json={"status": 0}, headers=bearer(ADMIN_KEY)
    )
    assert response.status == 200

    assert await status_of(client, key) == 403
    clock.advance(CACHE_TTL - 0.5)
    assert await status_of(second, key) == 200
    clock.advance(0.6)
    assert await status_of(second, key) == 403


async def test_a_disabled_users_key_is_a_403_naming_that_not_a_wrong_key(client, clock, key_lookups):
    user = await create_user(client)
    key, user_id = user["api_key"], user["user_id"]
    response = await client.put(f"/api/users/{user_id}/status", json={"status": 0}, headers=bearer(ADMIN_KEY))
    assert response.status == 200
    for _ in range(3):  # from the cache after the first lookup, with the same answer
        response = await client.get("/v1/models", headers=bearer(key))
        assert response.status == 403
        error = (await response.json())["error"]
        assert (error["type"], error["code"]) == ("permission_error", "user_disabled")
        assert error["message"] == "this key's user is disabled"
    assert len(key_lookups) == 1
    response = await client.put(f"/api/users/{user_id}/status", json={"status": 1}, headers=bearer(ADMIN_KEY))
    assert response.status == 200
    assert await status_of(client, key) == 200


@pytest.mark.parametrize(
    "path", ["/v1/models", "/v1/chat/completions", "/api/user/me", "/api/users", "/metrics"]
)
async def test_an_authorization_header_that_is_not_utf8_is_a_401(client, path):
    host, port = client.server.host, client.server.port
    reader, writer = await asyncio.open_connection(host, port)
    method = b"POST" if path == "/v1/chat/completions" else b"GET"
    writer.write(
        method + b" " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
        b"Connection: close\r\nAuthorization: Bearer sk-\xff\xfe\xc3\x28abc\r\n\r\n"
    )
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401"), raw[:300]
    error = json.loads(body)["error"]
    assert (error["type"], error["code"]) == ("authentication_error", "invalid_api_key")


async def test_deleted_user_lives_at_most_the_ttl_on_another_instance(client, second, clock):
    user = await create_user(client)
    key = user["api_key"]
    assert await status_of(second, key) == 200
    response = await client.delete(f"/api/users/{user['user_id']}", headers=bearer(ADMIN_KEY))
    assert response.status == 200
    assert await status_of(client, key) == 401
    clock.advance(CACHE_TTL + 0.1)
    assert await status_of(second, key) == 401


async def test_change_made_on_the_second_instance_is_seen_there_at_once(client, second, clock):
    user = await create_user(second)
    key = user["api_key"]
    assert await status_of(second, key) == 200
    response = await second.post(f"/api/users/{user['user_id']}/regenerate-key", headers=bearer(ADMIN_KEY))
    assert response.status == 200
    assert await status_of(second, key) == 401
    # The first instance never cached the old key, so it asks the database.
    assert await status_of(client, key) == 401


async def test_preference_reaches_the_cached_principal(client, clock):
    """set_preference evicts this instance's entry, so the next request sees the new value."""
    user = await create_user(client)
    key = user["api_key"]
    assert await status_of(client, key) == 200
    cache = client.app[antigv.protocols.auth.KEY_CACHE]
    assert cache.get(key_digest(key))[1].prefer_shared == 0
    response = await client.put(
        f"/api/users/{user['user_id']}/preference", json={"prefer_shared": 1}, headers=bearer(key)
    )
    assert response.status == 200
    assert cache.get(key_digest(key)) == (False, None)
    assert await status_of(client, key) == 200
    assert cache.get(key_digest(key))[1].prefer_shared == 1


# --- the hot path ------------------------------------------------------------------------------


async def test_cached_key_does_not_query_the_database(client, clock, key_lookups):
    user = await create_user(client)
    key = user["api_key"]
    for _ in range(5):
        assert await status_of(client, key) == 200
    assert len(key_lookups) == 1
    # Once the entry expires, one more lookup refreshes it.
    clock.advance(CACHE_TTL + 0.1)
    for _ in range(3):
        assert await status_of(client, key) == 200
    assert len(key_lookups) == 2


async def test_requests_that_miss_together_share_one_lookup(client, clock, key_lookups):
    user = await create_user(client)
    clock.advance(CACHE_TTL + 0.1)  # the key its creation cached has expired
    statuses = await asyncio.gather(*(status_of(client, user["api_key"]) for _ in range(20)))
    assert statuses == [200] * 20
    assert len(key_lookups) == 1


async def test_a_key_changed_during_a_lookup_is_read_again(client, clock, monkeypatch):
    user = await create_user(client)
    clock.advance(CACHE_TTL + 0.1)
    lookups = 0
    entered, release = asyncio.Event(), asyncio.Event()
    original = Database.one

    async def held(self: Database, query: str, /, **params: Any) -> Any:
        nonlocal lookups
        if query == "key_by_hash":
            lookups += 1
            if lookups == 1:  # the first read waits for the change below
                entered.set()
                await release.wait()
        return await original(self, query, **params)

    monkeypatch.setattr(Database, "one", held)
    first = asyncio.ensure_future(status_of(client, user["api_key"]))
    await asyncio.wait_for(entered.wait(), timeout=5)
    # As a change on this instance does, while the first read runs: who asks next reads anew.
    client.app[antigv.protocols.auth.KEY_CACHE].evict(key_digest(user["api_key"]))
    assert await asyncio.wait_for(status_of(client, user["api_key"]), timeout=5) == 200
    release.set()
    assert await first == 200
    assert lookups == 2


async def test_unknown_keys_are_cached_too(client, clock, key_lookups):
    for _ in range(4):
        assert await status_of(client, "sk-" + "B" * 48) == 401
    assert len(key_lookups) == 1
    clock.advance(CACHE_TTL + 0.1)
    assert await status_of(client, "sk-" + "B" * 48) == 401
    assert len(key_lookups) == 2


async def test_admin_key_never_queries_the_database(client, key_lookups):
    for _ in range(3):
        assert await status_of(client, ADMIN_KEY) == 200
    assert key_lookups == []


async def test_missing_key_never_queries_the_database(client, key_lookups):
    response = await client.get("/api/user/me")
    assert response.status == 401
    assert key_lookups == []


# --- the admin key -----------------------------------------------------------------------------


async def test_wrong_admin_key_of_equal_length_is_rejected(client):
    wrong = ADMIN_KEY[:-1] + ("0" if ADMIN_KEY[-1] != "0" else "1")
    assert len(wrong) == len(ADMIN_KEY)
    assert wrong != ADMIN_KEY
    response = await client.get("/api/users", headers=bearer(wrong))
    assert response.status == 401
    assert (await response.json())["error"]["type"] == "authentication_error"
    response = await client.get("/api/users", headers=bearer(ADMIN_KEY))
    assert response.status == 200


def test_is_admin_key():
    assert is_admin_key(ADMIN_KEY, ADMIN_KEY)
    assert not is_admin_key(ADMIN_KEY.upper(), ADMIN_KEY)
    assert not is_admin_key(ADMIN_KEY + " ", ADMIN_KEY)
    assert not is_admin_key("", ADMIN_KEY)
    assert not is_admin_key("ключ-" + ADMIN_KEY, ADMIN_KEY)


def test_admin_key_check_is_constant_time(monkeypatch):
    seen: list[tuple[bytes, bytes]] = []

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return a == b

    monkeypatch.setattr(antigv.store.keys.hmac, "compare_digest", spy)
    assert is_admin_key(ADMIN_KEY, ADMIN_KEY)
    assert seen == [(ADMIN_KEY.encode(), ADMIN_KEY.encode())]


# --- KeyCache on its own ------------------------------------------------------------------------


def principal(user_id: int) -> Principal:
    return Principal(user_id=user_id, is_admin=False, name=f"u{user_id}")


def test_cache_entries_expire(clock):
    cache = KeyCache(ttl=2.0)
    cache.put(b"a", principal(1))
    cache.put(b"b", None)
    assert cache.get(b"a") == (True, principal(1))
    assert cache.get(b"b") == (True, None)
    assert cache.get(b"c") == (False, None)
    clock.advance(2.1)
    assert cache.get(b"a") == (False, None)
    assert cache.get(b"b") == (False, None)


def test_cache_is_bounded_least_recently_stored_first(clock):
    cache = KeyCache(ttl=60, size=3)
    for i in range(3):
        cache.put(bytes([i]), principal(i))
    cache.put(bytes([0]), principal(0))  # stored again: now the newest
    cache.put(bytes([9]), principal(9))
    assert cache.get(bytes([1])) == (False, None)
    assert cache.get(bytes([0]))[0]
    assert cache.get(bytes([2]))[0]
    assert cache.get(bytes([9]))[0]


def test_evict_user_drops_that_users_entries_and_refusals(clock):
    cache = KeyCache()
    cache.put(b"one-a", principal(1))
    cache.put(b"one-b", principal(1))
    cache.put(b"two", principal(2))
    cache.put(b"unknown", None)
    cache.evict_user(1)
    assert cache.get(b"one-a") == (False, None)
    assert cache.get(b"one-b") == (False, None)
    assert cache.get(b"two") == (True, principal(2))
    # A refusal may be this user's disabled key: it must not outlive an enable.
    assert cache.get(b"unknown") == (False, None)
