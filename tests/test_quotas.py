"""Model quotas, usage and the quota endpoints, end to end against the upstream double."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from antigv.accounting.quotas import QuotaService
from antigv.app import create_app
from antigv.appkeys import DB, GATEWAY, QUOTAS, TASKS, USAGE
from antigv.store.db import Database
from tests.conftest import bearer, create_user, make_config
from tests.quota_helpers import insert_account, insert_usage, pool, set_pool, sql, value
from tests.upstream_double import UpstreamDouble

MODEL = "gemini-3-flash"
GROUP = "gemini"  # its quota group in the default config (PROTOCOL §13.6 families)
IMAGE_MODEL = "gemini-3.1-flash-image"  # a quota group of its own
EPS = 2e-3
MODEL_QUOTA_FIELDS = {
    "account_id",
    "model_name",
    "quota_group",
    "quota",
    "reset_time",
    "status",
    "last_fetched_at",
}
USAGE_FIELDS = {
    "log_id",
    "user_id",
    "account_id",
    "model_name",
    "is_shared",
    "prompt_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "total_tokens",
    "quota_consumed",
    "status",
    "latency_ms",
    "consumed_at",
}


@dataclass
class Gateway:
    client: Any
    double: UpstreamDouble

    @property
    def app(self) -> Any:
        return self.client.server.app

    @property
    def db(self) -> Database:
        return self.app[DB]

    @property
    def quotas(self) -> QuotaService:
        return self.app[QUOTAS]

    async def user(self, name: str = "alice", **fields: Any) -> tuple[int, dict[str, str]]:
        created = await create_user(self.client, name, **fields)
        return created["user_id"], bearer(created["api_key"])

    async def account(self, user_id: int, email: str, *, is_shared: int = 1, read: bool = True) -> int:
        """An onboarded account: in the double and the database, its quotas read once."""
        upstream = self.double.add_account(email)
        account_id = await insert_account(
            self.db,
            user_id,
            email,
            is_shared=is_shared,
            project=upstream.project,
            access_token=upstream.access_token,
        )
        if read:
            assert await self.quotas.read(account_id) is not None
        return account_id

    async def chat(self, headers: dict[str, str], model: str = MODEL, **extra: Any) -> Any:
        return await self.client.post(
            "/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hi"}], **extra},
            headers=headers,
        )

    def fetches(self) -> int:
        return len(self.double.requests_for("fetchAvailableModels"))

    async def settle_everything(self, account_id: int) -> None:
        """Flush the usage queue, let scheduled reads finish, then read once more."""
        await self.app[USAGE].flush()
        for _ in range(200):
            if self.quotas.pending_reads == 0:
                break
            await asyncio.sleep(0.05)
        assert self.quotas.pending_reads == 0
        assert await self.quotas.read(account_id) is not None


@pytest.fixture
async def gateway(aiohttp_client: Any, db_dsn: str) -> AsyncIterator[Gateway]:
    double = UpstreamDouble()
    base = await double.start()
    try:
        config = make_config(db_dsn, upstream={"base_urls": [base]}, oauth={"token_url": base + "/token"})
        client = await aiohttp_client(create_app(config))
        # Reads after requests wait a minute unless a test says otherwise.
        client.server.app[QUOTAS].min_delay = 60.0
        yield Gateway(client, double)
    finally:
        await double.stop()


async def ok(response: Any) -> Any:
    text = await response.text()
    assert response.status == 200, text
    body = await response.json()
    assert body["success"] is True
    return body["data"]


async def error(response: Any, status: int) -> dict[str, Any]:
    text = await response.text()
    assert response.status == status, text
    return (await response.json())["error"]


async def wait_for(predicate: Any, limit: float = 5.0) -> None:
    deadline = time.monotonic() + limit
    while not await predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def whole_seconds_from_now(seconds: int) -> datetime:
    """A reset time the double reports exactly (it prints whole seconds)."""
    return datetime.fromtimestamp(math.ceil(time.time()) + seconds, UTC)


# --- reading quotas ---------------------------------------------------------------


async def test_account_quotas_are_read_when_stale(gateway: Gateway, admin):
    alice, alice_key = await gateway.user("alice")
    _, bob_key = await gateway.user("bob")
    account = await gateway.account(alice, "a@example.com", read=False)
    gateway.double.set_quota("a@example.com", "claude_gpt", 0.0, reset_time=3600)
    gateway.double.set_quota("a@example.com", "gemini", 0.25)

    rows = await ok(await gateway.client.get(f"/api/accounts/{account}/quotas", headers=alice_key))
    assert gateway.fetches() == 1
    by_model = {r["model_name"]: r for r in rows}
    assert all(set(r) == MODEL_QUOTA_FIELDS for r in rows)
    # An exhausted model reports only a reset time: that is 0, not 1.
    assert by_model["claude-sonnet-4-6"]["quota"] == 0
    assert by_model["claude-sonnet-4-6"]["quota_group"] == "claude_gpt"
    assert by_model["gemini-pro-agent"]["quota"] == 0.25
    image = by_model[IMAGE_MODEL]
    assert isinstance(image["quota"], float) and image["quota"] == 1.0 and image["quota_group"] == IMAGE_MODEL
    assert image["reset_time"].endswith("Z") and image["last_fetched_at"].endswith("Z")
    assert image["status"] == 1
    assert not any(name.startswith(("chat_", "tab_")) for name in by_model)

    # Fresh: answered from the database.
    await ok(await gateway.client.get(f"/api/accounts/{account}/quotas", headers=alice_key))
    assert gateway.fetches() == 1
    # Older than stale_after (30 s): read again.
    await sql(gateway.db, "UPDATE accounts SET quota_fetched_at = now() - interval '31 seconds'")
    gateway.double.set_quota("a@example.com", "gemini", 0.125)
    rows = await ok(await gateway.client.get(f"/api/accounts/{account}/quotas", headers=admin))
    assert gateway.fetches() == 2
    assert {r["model_name"]: r["quota"] for r in rows}["gemini-3.1-pro-low"] == 0.125

    # Upstream failing: the stored read, with a message.
    await sql(gateway.db, "UPDATE accounts SET quota_fetched_at = now() - interval '31 seconds'")
    gateway.double.fail("internal", rpc="fetchAvailableModels", times=5)
    response = await gateway.client.get(f"/api/accounts/{account}/quotas", headers=alice_key)
    body = await response.json()
    assert response.status == 200 and body["message"] and len(body["data"]) == len(rows)

    # Someone else's account, a missing one and a malformed id are all 404.
    for path, headers in (
        (f"/api/accounts/{account}/quotas", bob_key),
        ("/api/accounts/999999/quotas", alice_key),
        ("/api/accounts/abc/quotas", alice_key),
        ("/api/accounts/99999999999999999999/quotas", admin),
    ):
        await error(await gateway.client.get(path, headers=headers), 404)


async def test_a_model_switched_off_stays_off_until_switched_on(gateway: Gateway):
    alice, key = await gateway.user("alice")
    _, bob_key = await gateway.user("bob")
    account = await gateway.account(alice, "a@example.com", is_shared=0)
    path = f"/api/accounts/{account}/quotas/{MODEL}/status"

    row = await ok(await gateway.client.put(path, json={"status": 0}, headers=key))
    assert row["status"] == 0 and row["model_name"] == MODEL and set(row) == MODEL_QUOTA_FIELDS
    assert (await gateway.chat(key)).status == 403
    # A fresh read does not switch it back on.
    await gateway.quotas.read(account)
    assert (await gateway.chat(key)).status == 403
    assert (await ok(await gateway.client.put(path, json={"status": True}, headers=key)))["status"] == 1
    assert (await gateway.chat(key)).status == 200

    assert (await error(await gateway.client.put(path, json={"status": 2}, headers=key), 400))[
        "param"
    ] == "status"
    await error(await gateway.client.put(path, json={}, headers=key), 400)
    await error(await gateway.client.put(path, json={"status": 0}, headers=bob_key), 404)
    await error(
        await gateway.client.put(
            f"/api/accounts/{account}/quotas/no-such-model/status", json={"status": 0}, headers=key
        ),
        404,
    )


async def test_an_exhausted_model_comes_back_after_its_reset(gateway: Gateway):
    alice, key = await gateway.user("alice")
    account = await gateway.account(alice, "a@example.com", is_shared=0)
    reset = whole_seconds_from_now(2)
    gateway.double.set_quota("a@example.com", MODEL, 0.0, reset_time=reset)
    await gateway.quotas.read(account)
    chats_before = len(gateway.double.chat_requests)

    response = await gateway.chat(key)
    err = await error(response, 429)
    assert err["type"] == "rate_limit_error" and err["code"] == "accounts_exhausted"
    assert 1 <= int(response.headers["Retry-After"]) <= 3
    # Known to be exhausted: upstream was not even asked.
    assert len(gateway.double.chat_requests) == chats_before

    # Past the reset (no waiting: both clocks are moved) the model is back by itself.
    gateway.double.advance(3)
    await sql(gateway.db, "UPDATE model_quotas SET reset_time = now() - interval '1 second'")
    await sql(gateway.db, "UPDATE quota_windows SET reset_time = now() - interval '1 second'")  # 5h too
    gateway.app[GATEWAY].router.invalidate()  # changed behind the app's back
    assert (await gateway.chat(key)).status == 200


async def test_an_exhausted_model_comes_back_when_a_read_shows_quota(gateway: Gateway):
    alice, key = await gateway.user("alice")
    account = await gateway.account(alice, "a@example.com", is_shared=0)
    gateway.double.set_quota("a@example.com", MODEL, 0.0, reset_time=3600)
    await gateway.quotas.read(account)
    assert (await gateway.chat(key)).status == 429
    gateway.double.set_quota("a@example.com", MODEL, 0.5, reset_time=3600)
    await gateway.quotas.read(account)
    assert (await gateway.chat(key)).status == 200


# --- reads after requests ---------------------------------------------------------------


async def test_requests_are_settled_by_a_debounced_read_off_the_request_path(gateway: Gateway):
    gateway.quotas.min_delay = 0.05
    gateway.quotas.interval = 0.5
    gateway.double.quota_cost = 0.01
    alice, key = await gateway.user("alice")
    account = await gateway.account(alice, "a@example.com")
    assert gateway.fetches() == 1

    assert (await gateway.chat(key)).status == 200
    assert gateway.fetches() == 1, "the request did not wait on a quota read"

    async def settled() -> bool:
        return await value(gateway.db, "SELECT count(quota_consumed) FROM usage_log") == 1

    await wait_for(settled)
    assert await value(gateway.db, "SELECT quota_consumed FROM usage_log") == pytest.approx(0.01)
    assert (await pool(gateway.db, alice, GROUP))["quota"] == pytest.approx(1.99, abs=EPS)

    # A burst: reads are debounced to one per interval per account.
    started = time.monotonic()
    before = gateway.fetches()
    for _ in range(15):
        assert (await gateway.chat(key)).status == 200
        await asyncio.sleep(0.02)
    await gateway.app[USAGE].flush()
    await wait_for(lambda: _all_settled(gateway))
    reads = gateway.fetches() - before
    elapsed = time.monotonic() - started
    assert 1 <= reads <= elapsed / gateway.quotas.interval + 2
    total = await value(gateway.db, "SELECT sum(quota_consumed) FROM usage_log")
    assert total == pytest.approx(0.16, abs=1e-9)
    assert gateway.double.quota("a@example.com", MODEL) == pytest.approx(1 - 0.16)
    stored = await value(
        gateway.db,
        "SELECT quota FROM model_quotas WHERE account_id = %(a)s AND model_name = %(m)s",
        a=account,
        m=MODEL,
    )
    assert stored == pytest.approx(1 - 0.16)


async def _all_settled(gateway: Gateway) -> bool:
    return await value(gateway.db, "SELECT count(*) FROM usage_log WHERE quota_consumed IS NULL") == 0


async def test_pending_reads_are_cancelled_on_shutdown(aiohttp_client: Any, db_dsn: str):
    double = UpstreamDouble()
    base = await double.start()
    try:
        config = make_config(db_dsn, upstream={"base_urls": [base]})
        client = await aiohttp_client(create_app(config))
        app = client.server.app
        service = app[QUOTAS]
        service.min_delay = 60.0
        gateway = Gateway(client, double)
        alice, key = await gateway.user("alice")
        await gateway.account(alice, "a@example.com")
        assert (await gateway.chat(key)).status == 200
        await app[USAGE].flush()
        assert service.pending_reads == 1
        tasks = list(service._tasks)
        await client.close()
        assert all(task.done() for task in tasks)
        assert service.pending_reads == 0
        assert service.on_usage_batch not in app[USAGE].listeners
        service.schedule(1)  # after shutdown: ignored
        assert service.pending_reads == 0
    finally:
        await double.stop()


# --- pools and the chat path -----------------------------------------------------------


async def test_100_concurrent_requests_against_one_pool(gateway: Gateway):
    gateway.quotas.min_delay = 0.02
    gateway.quotas.interval = 0.1
    gateway.double.quota_cost = 0.004
    gateway.double.set_transport(frame_delay=0.01)
    alice, key = await gateway.user("alice", prefer_shared=1)
    account = await gateway.account(alice, "shared@example.com")

    async def one(i: int) -> int:
        await asyncio.sleep((i % 50) * 0.03)  # spread over 1.5 s, so reads and settlements interleave
        return (await gateway.chat(key)).status

    statuses = await asyncio.gather(*(one(i) for i in range(100)))
    assert statuses == [200] * 100
    assert gateway.fetches() - 1 >= 3, "quota reads ran while requests were in flight"
    await gateway.settle_everything(account)

    rows = await sql(gateway.db, "SELECT request_id, is_shared, quota_consumed FROM usage_log")
    assert len(rows) == 100
    assert len({r["request_id"] for r in rows}) == 100
    assert all(r["is_shared"] == 1 and r["quota_consumed"] is not None for r in rows)
    assert await value(gateway.db, "SELECT request_count FROM accounts") == 100
    drop = 1.0 - gateway.double.quota("shared@example.com", MODEL)
    assert drop == pytest.approx(0.4)
    charged = math.fsum(r["quota_consumed"] for r in rows)
    carried = await value(gateway.db, "SELECT coalesce(sum(amount), 0) FROM quota_carry")
    assert charged + carried == pytest.approx(drop, abs=1e-9)
    assert carried == 0
    balance = await pool(gateway.db, alice, GROUP)
    assert balance["max_quota"] == 2
    assert balance["quota"] == pytest.approx(2 - charged, abs=EPS)
    stored = await value(gateway.db, "SELECT quota FROM model_quotas WHERE model_name = %(m)s", m=MODEL)
    assert stored == pytest.approx(0.6)


async def test_dedicated_use_is_recorded_but_never_charged(gateway: Gateway):
    gateway.quotas.min_delay = 0.02
    gateway.double.quota_cost = 0.05
    alice, key = await gateway.user("alice", prefer_shared=0)
    dedicated = await gateway.account(alice, "own@example.com", is_shared=0)
    await gateway.account(alice, "shared@example.com", is_shared=1)
    for _ in range(3):
        assert (await gateway.chat(key)).status == 200
    await gateway.settle_everything(dedicated)
    rows = await sql(gateway.db, "SELECT account_id, is_shared, quota_consumed FROM usage_log")
    assert [r["account_id"] for r in rows] == [dedicated] * 3
    assert all(r["is_shared"] == 0 for r in rows)
    assert math.fsum(r["quota_consumed"] for r in rows) == pytest.approx(0.15)
    assert await value(gateway.db, "SELECT count(*) FROM shared_pools") == 0
    pools = await ok(await gateway.client.get("/api/quotas/user", headers=key))
    mine = next(p for p in pools if p["quota_group"] == GROUP)
    assert mine["quota"] == mine["max_quota"] == 2


async def test_an_empty_pool_refuses_shared_accounts_until_it_recovers(gateway: Gateway):
    owner, _ = await gateway.user("owner")
    alice, key = await gateway.user("alice")
    await gateway.account(owner, "shared@example.com")
    await gateway.account(alice, "alices-shared@example.com")
    await set_pool(gateway.db, alice, GROUP, 0.0, 2.0, hours_ago=0)
    response = await gateway.chat(key)
    err = await error(response, 429)
    assert err["code"] == "pool_exhausted"
    # Retry-After says when 1% of an account has accrued at 0.2 x max (0.4) per hour: 90 s.
    assert 80 <= int(response.headers["Retry-After"]) <= 91
    # An hour later the pool has recovered 0.4; admission counts what accrued, task or not.
    await set_pool(gateway.db, alice, GROUP, 0.0, 2.0, hours_ago=1)
    gateway.app[GATEWAY].router.invalidate()  # changed behind the app's back
    assert (await gateway.chat(key)).status == 200
    await gateway.app[TASKS].run_once("recover_pools")
    assert (await pool(gateway.db, alice, GROUP))["quota"] == pytest.approx(0.4, abs=EPS)


# --- background reads ---------------------------------------------------------------


async def test_stale_accounts_are_read_in_the_background(gateway: Gateway):
    alice, _ = await gateway.user("alice")
    fresh = await gateway.account(alice, "fresh@example.com")
    old = await gateway.account(alice, "old@example.com")
    unsettled = await gateway.account(alice, "unsettled@example.com")
    disabled = await gateway.account(alice, "disabled@example.com")
    never = await gateway.account(alice, "never@example.com", read=False)
    await sql(
        gateway.db,
        "UPDATE accounts SET quota_fetched_at = now() - interval '1 hour' WHERE account_id = ANY(%(a)s)",
        a=[old, disabled],
    )
    await sql(gateway.db, "UPDATE accounts SET status = 0 WHERE account_id = %(a)s", a=disabled)
    await sql(
        gateway.db,
        "UPDATE accounts SET quota_fetched_at = now() - interval '100 seconds' WHERE account_id = %(a)s",
        a=unsettled,
    )
    await insert_usage(
        gateway.db,
        alice,
        unsettled,
        quota_group=GROUP,
        model=MODEL,
        consumed_at=datetime.now(UTC) - timedelta(seconds=60),
    )
    gateway.double.clear_requests()

    assert await gateway.app[TASKS].run_once("read_stale_quotas") is True
    read = {r.bearer for r in gateway.double.requests_for("fetchAvailableModels")}
    tokens = {
        row["account_id"]: row["access_token"].removeprefix("plain:")
        for row in await sql(gateway.db, "SELECT account_id, access_token FROM accounts")
    }
    assert read == {tokens[old], tokens[unsettled], tokens[never]}
    assert tokens[fresh] not in read and tokens[disabled] not in read
    assert await value(gateway.db, "SELECT count(*) FROM usage_log WHERE quota_consumed IS NULL") == 0

    # A failing account is not retried every round.
    await sql(gateway.db, "UPDATE accounts SET quota_fetched_at = now() - interval '1 hour'")
    gateway.double.fail("internal", rpc="fetchAvailableModels", times=100, account="old@example.com")
    assert await gateway.quotas.read_stale() == 3
    gateway.double.clear_requests()
    await sql(gateway.db, "UPDATE accounts SET quota_fetched_at = now() - interval '1 hour'")
    assert await gateway.quotas.read_stale() == 3
    assert tokens[old] not in {r.bearer for r in gateway.double.requests_for("fetchAvailableModels")}


# --- usage endpoints -------------------------------------------------------------------


async def test_consumption_lists_own_usage_newest_first(gateway: Gateway, admin):
    alice, alice_key = await gateway.user("alice")
    bob, bob_key = await gateway.user("bob")
    account = await gateway.account(alice, "a@example.com", read=False)
    base = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
    for i in range(105):
        await insert_usage(
            gateway.db,
            alice,
            account,
            quota_group=GROUP,
            model=MODEL,
            total_tokens=i,
            consumed_at=base + timedelta(hours=i),
        )
    await insert_usage(
        gateway.db, bob, account, quota_group=GROUP, model=MODEL, total_tokens=7, consumed_at=base
    )

    rows = await ok(await gateway.client.get("/api/quotas/consumption", headers=alice_key))
    assert len(rows) == 100
    assert set(rows[0]) >= USAGE_FIELDS
    assert [r["total_tokens"] for r in rows[:3]] == [104, 103, 102]
    assert all(r["user_id"] == alice for r in rows)
    assert rows[0]["consumed_at"].endswith("Z") and rows[0]["quota_consumed"] is None
    assert (
        len(await ok(await gateway.client.get("/api/quotas/consumption?limit=1000", headers=alice_key)))
        == 105
    )
    assert len(await ok(await gateway.client.get("/api/quotas/consumption?limit=3", headers=alice_key))) == 3
    for bad in ("limit=0", "limit=1001", "limit=x"):
        err = await error(await gateway.client.get(f"/api/quotas/consumption?{bad}", headers=alice_key), 400)
        assert err["param"] == "limit"

    # Dates: a bare end date covers its whole day; datetimes with an offset are understood.
    rows = await ok(
        await gateway.client.get(
            "/api/quotas/consumption?start_date=2025-03-11&end_date=2025-03-11", headers=alice_key
        )
    )
    assert sorted(r["total_tokens"] for r in rows) == list(range(12, 36))
    rows = await ok(
        await gateway.client.get(
            "/api/quotas/consumption",
            params={"start_date": "2025-03-10T14:00:00Z", "end_date": "2025-03-10T17:00:00+01:00"},
            headers=alice_key,
        )
    )
    assert sorted(r["total_tokens"] for r in rows) == [2, 3]  # the end is exclusive
    for params, param in (
        ({"start_date": "yesterday"}, "start_date"),
        ({"end_date": "2025-13-01"}, "end_date"),
        ({"start_date": "2025-03-02", "end_date": "2025-03-01"}, "end_date"),
    ):
        err = await error(
            await gateway.client.get("/api/quotas/consumption", params=params, headers=alice_key), 400
        )
        assert err["param"] == param

    # Bob sees his own; the admin sees everyone's or one user's.
    assert [
        r["total_tokens"]
        for r in await ok(await gateway.client.get("/api/quotas/consumption", headers=bob_key))
    ] == [7]
    await error(await gateway.client.get(f"/api/quotas/consumption?user_id={alice}", headers=bob_key), 404)
    everyone = await ok(await gateway.client.get("/api/quotas/consumption?limit=1000", headers=admin))
    assert len(everyone) == 106
    only_bob = await ok(await gateway.client.get(f"/api/quotas/consumption?user_id={bob}", headers=admin))
    assert [r["user_id"] for r in only_bob] == [bob]

    # Usage history survives the account's deletion.
    await sql(gateway.db, "DELETE FROM accounts WHERE account_id = %(a)s", a=account)
    rows = await ok(await gateway.client.get("/api/quotas/consumption?limit=1000", headers=alice_key))
    assert len(rows) == 105 and all(r["account_id"] is None for r in rows)


async def test_consumption_pages_by_the_last_row_even_within_one_instant(gateway: Gateway, admin):
    alice, alice_key = await gateway.user("alice")
    account = await gateway.account(alice, "a@example.com", read=False)
    same = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
    for i in range(5):  # five rows of one instant: a page edge falls among them
        await insert_usage(
            gateway.db, alice, account, quota_group=GROUP, model=MODEL, total_tokens=i, consumed_at=same
        )
    pages, before = [], None
    while True:
        query = "limit=2" + (f"&before_id={before}" if before else "")
        rows = await ok(await gateway.client.get(f"/api/quotas/consumption?{query}", headers=alice_key))
        if not rows:
            break
        pages.append([r["total_tokens"] for r in rows])
        before = rows[-1]["log_id"]
    assert pages == [[4, 3], [2, 1], [0]]
    err = await error(await gateway.client.get("/api/quotas/consumption?before_id=x", headers=alice_key), 400)
    assert err["param"] == "before_id"


async def test_consumption_stats_per_model(gateway: Gateway, admin):
    SERVED = "gemini-pro-agent"  # what the retired gemini-3-pro-high is served as
    alice, key = await gateway.user("alice")
    _, bob_key = await gateway.user("bob")
    account = await gateway.account(alice, "a@example.com", read=False)
    last = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
    ids = [
        await insert_usage(
            gateway.db,
            alice,
            account,
            quota_group=GROUP,
            model=SERVED,
            total_tokens=t,
            consumed_at=last - timedelta(hours=t),
        )
        for t in (10, 20, 30)
    ]
    await insert_usage(gateway.db, alice, account, quota_group="other", total_tokens=1000)
    await sql(gateway.db, "UPDATE usage_log SET quota_consumed = 0.25 WHERE log_id = ANY(%(i)s)", i=ids[:2])

    stats = await ok(await gateway.client.get(f"/api/quotas/consumption/stats/{SERVED}", headers=key))
    assert stats["total_requests"] == 3
    assert stats["total_tokens"] == 60 and isinstance(stats["total_tokens"], int)
    assert stats["total_quota_consumed"] == 0.5 and isinstance(stats["total_quota_consumed"], float)
    assert stats["avg_quota_consumed"] == 0.25
    assert stats["last_used_at"] == "2025-03-10T02:00:00Z"
    # An alias of the model (PROTOCOL §13.4) is served by the same upstream model.
    alias = await ok(await gateway.client.get("/api/quotas/consumption/stats/gemini-3-pro-high", headers=key))
    assert alias["total_requests"] == 3
    dated = await ok(
        await gateway.client.get(
            f"/api/quotas/consumption/stats/{SERVED}?start_date=2025-03-09T23:00:00Z", headers=key
        )
    )
    assert dated["total_requests"] == 1
    empty = await ok(await gateway.client.get(f"/api/quotas/consumption/stats/{SERVED}", headers=bob_key))
    assert (
        empty["total_requests"] == 0 and empty["total_quota_consumed"] == 0 and empty["last_used_at"] is None
    )
    everyone = await ok(await gateway.client.get(f"/api/quotas/consumption/stats/{SERVED}", headers=admin))
    assert everyone["total_requests"] == 3
    await error(
        await gateway.client.get(f"/api/quotas/consumption/stats/{SERVED}?end_date=soon", headers=key), 400
    )


async def test_consumption_daily_sums_every_row_per_utc_day_and_model(gateway: Gateway, admin):
    alice, key = await gateway.user("alice")
    _, bob_key = await gateway.user("bob")
    account = await gateway.account(alice, "a@example.com", read=False)
    midnight = datetime(2025, 3, 11, tzinfo=UTC)
    # 1500 rows on the 10th, more than a page of the log can hold, the last a second before midnight.
    await sql(
        gateway.db,
        "INSERT INTO usage_log (request_id, user_id, account_id, model_name, quota_group, is_shared,"
        " prompt_tokens, completion_tokens, reasoning_tokens, total_tokens, status, latency_ms, consumed_at)"
        " SELECT 'd' || n, %(u)s, %(a)s, %(m)s, %(g)s, 1, 2, 3, 1, 5,"
        " CASE WHEN n %% 100 = 0 THEN 'error' ELSE 'ok' END, 10, %(at)s - n * interval '1 second'"
        " FROM generate_series(1, 1500) AS n",
        u=alice,
        a=account,
        m=MODEL,
        g=GROUP,
        at=midnight,
    )
    await insert_usage(
        gateway.db, alice, account, quota_group=GROUP, model=MODEL, total_tokens=7, consumed_at=midnight
    )
    other = await insert_usage(
        gateway.db,
        alice,
        account,
        quota_group="other",
        total_tokens=9,
        consumed_at=midnight + timedelta(hours=23),
    )
    await sql(
        gateway.db, "UPDATE usage_log SET quota_consumed = 0.5, latency_ms = 30 WHERE log_id = %(i)s", i=other
    )

    days = await ok(await gateway.client.get("/api/quotas/consumption/daily", headers=key))
    assert [(d["day"], d["model_name"], d["requests"]) for d in days] == [
        ("2025-03-10", MODEL, 1500),
        ("2025-03-11", MODEL, 1),
        ("2025-03-11", "other", 1),
    ]
    tenth = days[0]
    assert (tenth["errors"], tenth["prompt_tokens"], tenth["completion_tokens"]) == (15, 3000, 4500)
    assert (tenth["reasoning_tokens"], tenth["total_tokens"], tenth["latency_ms_total"]) == (
        1500,
        7500,
        15000,
    )
    assert tenth["settled_requests"] == 0 and tenth["quota_consumed"] == 0
    assert (days[2]["quota_consumed"], days[2]["settled_requests"], days[2]["latency_ms_total"]) == (
        0.5,
        1,
        30,
    )

    # The log's filters: a bare end date covers its day.
    only = await ok(
        await gateway.client.get(
            "/api/quotas/consumption/daily?start_date=2025-03-11&end_date=2025-03-11", headers=key
        )
    )
    assert [(d["model_name"], d["requests"]) for d in only] == [(MODEL, 1), ("other", 1)]
    assert await ok(await gateway.client.get("/api/quotas/consumption/daily", headers=bob_key)) == []
    await error(
        await gateway.client.get(f"/api/quotas/consumption/daily?user_id={alice}", headers=bob_key), 404
    )
    everyone = await ok(await gateway.client.get("/api/quotas/consumption/daily", headers=admin))
    assert sum(d["requests"] for d in everyone) == 1502
    err = await error(await gateway.client.get("/api/quotas/consumption/daily?key_id=x", headers=key), 400)
    assert err["param"] == "key_id"


# --- totals and low quotas ---------------------------------------------------------------


async def _quota_row(db: Database, account: int, model: str, quota: float, **extra: Any) -> None:
    await sql(
        db,
        "INSERT INTO model_quotas (account_id, model_name, quota_group, quota, reset_time, status) "
        "VALUES (%(a)s, %(m)s, %(m)s, %(q)s, %(r)s, %(s)s)",
        a=account,
        m=model,
        q=quota,
        r=extra.get("reset", datetime.now(UTC) + timedelta(hours=extra.get("hours", 1))),
        s=extra.get("status", 1),
    )


async def test_shared_pool_totals_and_low_quotas(gateway: Gateway, admin):
    alice, key = await gateway.user("alice")
    s1 = await insert_account(gateway.db, alice, "s1@example.com")
    s2 = await insert_account(gateway.db, alice, "s2@example.com")
    off = await insert_account(gateway.db, alice, "off@example.com", status=0)
    own = await insert_account(gateway.db, alice, "own@example.com", is_shared=0)
    await _quota_row(gateway.db, s1, "m", 0.75, hours=2)
    await _quota_row(gateway.db, s2, "m", 0.0, hours=1)
    await _quota_row(gateway.db, s2, "n", 0.05, status=0)
    await _quota_row(gateway.db, off, "m", 0.5)
    await _quota_row(gateway.db, own, "m", 0.01)

    totals = await ok(await gateway.client.get("/api/quotas/shared-pool", headers=key))
    assert [t["model_name"] for t in totals] == ["m"]
    (m,) = totals
    assert {"model_name", "total_quota", "earliest_reset_time", "available_accounts"} <= set(m)
    assert m["total_quota"] == 0.75 and isinstance(m["total_quota"], float)
    assert m["available_accounts"] == 1
    expected_reset = await value(
        gateway.db, "SELECT reset_time FROM model_quotas WHERE account_id = %(a)s", a=s2
    )
    assert m["earliest_reset_time"] == expected_reset.isoformat().replace("+00:00", "Z")

    await error(await gateway.client.get("/api/quotas/low", headers=key), 403)
    low = await ok(await gateway.client.get("/api/quotas/low", headers=admin))
    assert sorted((r["account_id"], r["model_name"]) for r in low) == [(s2, "m"), (own, "m")]
    assert all(isinstance(r["quota"], float) for r in low)
    low = await ok(await gateway.client.get("/api/quotas/low?threshold=0.8", headers=admin))
    assert sorted((r["account_id"], r["model_name"]) for r in low) == [(s1, "m"), (s2, "m"), (own, "m")]
    for bad in ("abc", "2", "-0.1", "nan"):
        err = await error(await gateway.client.get(f"/api/quotas/low?threshold={bad}", headers=admin), 400)
        assert err["param"] == "threshold"
