"""Shared pools: max through every account transition, charges, recovery (SPEC §6)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from antigv.accounting.pools import cli_recover_quotas, recover_pools, user_pools
from antigv.appkeys import DB, TASKS
from antigv.store.db import Database
from antigv.store.quotas import QuotaRepository
from tests.conftest import bearer, create_user
from tests.quota_helpers import insert_account, insert_usage, insert_user, open_db, pool, set_pool, sql, value

# Recovery accrues continuously: a test that takes a second sees ~1e-4 of it.
EPS = 2e-3
GROUP = "claude_gpt"


async def charge(db: Database, user_id: int, amount: float, group: str = GROUP) -> float | None:
    return await value(db, "SELECT pool_charge(%(u)s, %(g)s, %(a)s)", u=user_id, g=group, a=amount)


async def expect_pool(db: Database, user_id: int, quota: float, max_quota: float, why: str) -> None:
    row = await pool(db, user_id, GROUP)
    assert row is not None, why
    assert row["max_quota"] == max_quota, f"{why}: max {row['max_quota']} != {max_quota}"
    assert row["quota"] == pytest.approx(quota, abs=EPS), f"{why}: quota {row['quota']} != {quota}"


# --- max through every account transition ----------------------------------------


async def test_max_follows_every_account_transition(db_dsn):
    async with open_db(db_dsn) as db:
        user = await insert_user(db, "u")
        other = await insert_user(db, "o")
        a1 = await insert_account(db, user, "a1@example.com")
        # No row yet: a full pool; the first charge creates the row from the current max.
        assert await pool(db, user, GROUP) is None
        assert await charge(db, user, 1.5) == pytest.approx(0.5)
        await expect_pool(db, user, 0.5, 2, "first charge")

        a2 = await insert_account(db, user, "a2@example.com")
        await expect_pool(db, user, 2.5, 4, "shared account added: balance rises by the increase")

        # Re-authorising (new tokens only) changes nothing, nor does adding the same e-mail again.
        await sql(
            db,
            "UPDATE accounts SET refresh_token = 'plain:new', access_token = 'plain:new', "
            "refresh_failures = 0, updated_at = now() WHERE account_id = %(a)s",
            a=a1,
        )
        await expect_pool(db, user, 2.5, 4, "re-authorised")
        await sql(
            db,
            "INSERT INTO accounts (user_id, email, is_shared, refresh_token) "
            "VALUES (%(u)s, 'a1@example.com', 1, 'plain:again') ON CONFLICT (email) DO NOTHING",
            u=user,
        )
        await sql(
            db,
            "INSERT INTO accounts (user_id, email, is_shared, status, refresh_token) "
            "VALUES (%(u)s, 'a1@example.com', 1, 1, 'plain:again') "
            "ON CONFLICT (email) DO UPDATE SET refresh_token = EXCLUDED.refresh_token, "
            "status = EXCLUDED.status, is_shared = EXCLUDED.is_shared",
            u=user,
        )
        await expect_pool(db, user, 2.5, 4, "added twice")

        await sql(db, "UPDATE accounts SET status = 0 WHERE account_id = %(a)s", a=a2)
        await expect_pool(db, user, 2, 2, "disabled by hand: capped at the new max")
        await charge(db, user, 1)
        await expect_pool(db, user, 1, 2, "charged")
        await sql(db, "UPDATE accounts SET status = 1 WHERE account_id = %(a)s", a=a2)
        await expect_pool(db, user, 3, 4, "enabled again")

        await sql(db, "UPDATE accounts SET is_shared = 0 WHERE account_id = %(a)s", a=a2)
        await expect_pool(db, user, 2, 2, "converted to dedicated")
        await sql(db, "UPDATE accounts SET is_shared = 1 WHERE account_id = %(a)s", a=a2)
        await expect_pool(db, user, 4, 4, "converted back to shared")

        # Disabled automatically (the request path's query), twice: the second changes nothing.
        assert await db.one("disable_account", account_id=a1, reason="invalid_grant") is not None
        await expect_pool(db, user, 2, 2, "disabled automatically")
        await sql(
            db, "UPDATE accounts SET status = 0, disabled_reason = 'again' WHERE account_id = %(a)s", a=a1
        )
        await expect_pool(db, user, 2, 2, "disabled twice")

        await insert_account(db, user, "dedicated@example.com", is_shared=0)
        await expect_pool(db, user, 2, 2, "a dedicated account is not part of the pool")

        # Moved to another user: both users' pools follow.
        await charge(db, other, 0)
        await expect_pool(db, other, 0, 0, "a user without shared accounts")
        await sql(db, "UPDATE accounts SET user_id = %(o)s WHERE account_id = %(a)s", o=other, a=a2)
        await expect_pool(db, user, 0, 0, "account moved away")
        await expect_pool(db, other, 2, 2, "account moved in")

        await sql(db, "DELETE FROM accounts WHERE account_id = %(a)s", a=a2)
        await expect_pool(db, other, 0, 0, "deleted")
        await sql(db, "UPDATE accounts SET status = 1 WHERE account_id = %(a)s", a=a1)
        await expect_pool(db, user, 2, 2, "re-enabled")


async def test_every_group_row_of_the_user_follows(db_dsn):
    async with open_db(db_dsn) as db:
        user = await insert_user(db)
        await insert_account(db, user)
        await insert_account(db, user)
        for group, amount in (("claude_gpt", 3.0), ("gemini", 0.5), ("own-model", 4.0)):
            await charge(db, user, amount, group)
        await insert_account(db, user)
        rows = {
            r["quota_group"]: r
            for r in await sql(db, "SELECT * FROM shared_pools WHERE user_id = %(u)s", u=user)
        }
        assert {g: r["max_quota"] for g, r in rows.items()} == {
            "claude_gpt": 6,
            "gemini": 6,
            "own-model": 6,
        }
        assert rows["claude_gpt"]["quota"] == pytest.approx(3, abs=EPS)
        assert rows["gemini"]["quota"] == pytest.approx(5.5, abs=EPS)
        assert rows["own-model"]["quota"] == pytest.approx(2, abs=EPS)


async def test_concurrent_account_additions_keep_max_right(db_dsn):
    async with open_db(db_dsn, size=20) as db:
        user = await insert_user(db)
        await insert_account(db, user)
        await charge(db, user, 2)  # row exists, balance 0 of 2
        await asyncio.gather(*(insert_account(db, user) for _ in range(12)))
        await expect_pool(db, user, 24, 26, "12 accounts added at once")
        await asyncio.gather(
            *(
                sql(db, "UPDATE accounts SET status = 0 WHERE account_id = %(a)s", a=a["account_id"])
                for a in await sql(db, "SELECT account_id FROM accounts WHERE user_id = %(u)s", u=user)
            )
        )
        await expect_pool(db, user, 0, 0, "all disabled at once")


async def test_user_deletion_removes_pools_and_keeps_usage(db_dsn):
    async with open_db(db_dsn) as db:
        user = await insert_user(db)
        account = await insert_account(db, user)
        await charge(db, user, 1)
        log_id = await insert_usage(db, user, account, total_tokens=5)
        await sql(db, "DELETE FROM users WHERE user_id = %(u)s", u=user)
        assert await value(db, "SELECT count(*) FROM shared_pools") == 0
        assert await value(db, "SELECT count(*) FROM accounts") == 0
        kept = await sql(
            db, "SELECT user_id, account_id, total_tokens FROM usage_log WHERE log_id = %(l)s", l=log_id
        )
        assert kept == [{"user_id": None, "account_id": None, "total_tokens": 5}]


# --- charges ----------------------------------------------------------------------


async def test_a_charge_never_takes_a_pool_below_zero(db_dsn):
    async with open_db(db_dsn, size=30) as db:
        user = await insert_user(db)
        await insert_account(db, user)
        assert await charge(db, user, 5) == 0
        await expect_pool(db, user, 0, 2, "over-charged new row")
        await set_pool(db, user, GROUP, 1.0, 2)
        results = await asyncio.gather(*(charge(db, user, 0.3) for _ in range(20)))
        assert min(results) == 0
        await expect_pool(db, user, 0, 2, "20 concurrent charges")
        assert await value(db, "SELECT count(*) FROM shared_pools WHERE quota < 0") == 0


async def test_concurrent_charges_are_all_applied(db_dsn):
    async with open_db(db_dsn, size=30) as db:
        user = await insert_user(db)
        for _ in range(5):
            await insert_account(db, user)  # max 10
        await asyncio.gather(*(charge(db, user, 0.05) for _ in range(100)))
        await expect_pool(db, user, 5, 10, "100 charges of 0.05 at once, none lost")


# --- recovery ---------------------------------------------------------------------


async def test_recovery_is_by_elapsed_time_and_capped(db_dsn):
    async with open_db(db_dsn) as db:
        user = await insert_user(db)
        await insert_account(db, user)
        await insert_account(db, user)  # max 4: 0.8 per hour
        await set_pool(db, user, GROUP, 0, 4, hours_ago=1)
        await set_pool(db, user, "capped", 3.5, 4, hours_ago=2)
        assert await recover_pools(db) == 2
        await expect_pool(db, user, 0.8, 4, "one hour")
        assert (await pool(db, user, "capped"))["quota"] == 4
        await set_pool(db, user, GROUP, 1, 4, hours_ago=0.5)
        await recover_pools(db)
        await expect_pool(db, user, 1.4, 4, "half an hour")


async def test_recovery_run_twice_recovers_once(db_dsn):
    async with open_db(db_dsn) as db:
        user = await insert_user(db)
        await insert_account(db, user)
        await insert_account(db, user)
        await set_pool(db, user, GROUP, 0, 4, hours_ago=1)
        await recover_pools(db)
        await recover_pools(db)
        await cli_recover_quotas(db)
        await expect_pool(db, user, 0.8, 4, "three runs")


async def test_recovery_on_two_instances_at_once_recovers_once(db_dsn):
    async with open_db(db_dsn) as first, open_db(db_dsn) as second:
        users = []
        for _ in range(3):
            user = await insert_user(first)
            await insert_account(first, user)
            await insert_account(first, user)
            await set_pool(first, user, GROUP, 0, 4, hours_ago=1)
            users.append(user)
        await asyncio.gather(*(recover_pools(db) for _ in range(5) for db in (first, second)))
        for user in users:
            await expect_pool(first, user, 0.8, 4, "ten concurrent runs on two pools")


async def test_a_recovery_that_started_earlier_adds_nothing(db_dsn):
    """A transaction whose now() is older than the last recovery neither adds nor moves the stamp back."""
    async with open_db(db_dsn) as db:
        user = await insert_user(db)
        await insert_account(db, user)
        await insert_account(db, user)
        await set_pool(db, user, GROUP, 0, 4, hours_ago=1)
        async with db.pool.acquire() as conn, conn.cursor() as late:
            await late.execute("BEGIN")
            await late.execute("SELECT now()")  # this transaction's clock starts here
            await asyncio.sleep(0.3)
            await recover_pools(db)
            after_first = await pool(db, user, GROUP)
            await late.execute(db.queries["pool_recover"])
            await late.execute("COMMIT")
        after_late = await pool(db, user, GROUP)
        assert after_late["last_recovered_at"] == after_first["last_recovered_at"]
        assert after_late["quota"] == after_first["quota"]
        await recover_pools(db)
        await expect_pool(db, user, 0.8, 4, "after a third run")


async def test_recovery_task_and_cli_function(client):
    app = client.server.app
    db = app[DB]
    user = await insert_user(db)
    await insert_account(db, user)
    await insert_account(db, user)
    await set_pool(db, user, GROUP, 0, 4, hours_ago=1)
    assert await app[TASKS].run_once("recover_pools") is True
    await expect_pool(db, user, 0.8, 4, "task")
    await set_pool(db, user, GROUP, 0, 4, hours_ago=2)
    assert await cli_recover_quotas(db) == {"recovered_pools": 1}
    await expect_pool(db, user, 1.6, 4, "cli")


# --- GET /api/quotas/user ---------------------------------------------------------


async def _ok(response: Any) -> Any:
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["success"] is True
    return body["data"]


async def test_user_pools_endpoint(client, admin):
    app = client.server.app
    db = app[DB]
    alice = await create_user(client, "alice")
    bob = await create_user(client, "bob")
    first = await insert_account(db, alice["user_id"])
    await insert_account(db, alice["user_id"])
    await charge(db, alice["user_id"], 1.25)
    await charge(db, alice["user_id"], 0.5, "unlisted-model")
    # Pools follow the family groups (PROTOCOL §13.6); their models are those upstream reported.
    await sql(
        db,
        "INSERT INTO model_quotas (account_id, model_name, quota_group, quota) "
        "VALUES (%(a)s, 'claude-sonnet-4-6', 'claude_gpt', 1), (%(a)s, 'gpt-oss-120b-medium', 'claude_gpt', 1)",
        a=first,
    )

    data = await _ok(await client.get("/api/quotas/user", headers=bearer(alice["api_key"])))
    by_group = {row["quota_group"]: row for row in data}
    assert {"claude_gpt", "gemini", "unlisted-model"} <= set(by_group)
    claude = by_group["claude_gpt"]
    assert set(claude) == {
        "user_id",
        "quota_group",
        "models",
        "patterns",
        "quota",
        "max_quota",
        "last_recovered_at",
        "recovery_per_hour",
    }
    assert claude["recovery_per_hour"] == pytest.approx(0.2 * 4)  # SPEC §6, migration 0011
    assert claude["user_id"] == alice["user_id"]
    assert claude["models"] == ["claude-sonnet-4-6", "gpt-oss-120b-medium"]
    assert claude["patterns"] == ["claude-*", "gpt-oss-*"]
    assert isinstance(claude["quota"], float) and isinstance(claude["max_quota"], float)
    assert claude["quota"] == pytest.approx(2.75, abs=EPS)
    assert claude["max_quota"] == 4
    assert claude["last_recovered_at"].endswith("Z")
    # A group without a row is full.
    assert by_group["gemini"]["quota"] == 4 and by_group["gemini"]["max_quota"] == 4
    assert by_group["gemini"]["models"] == []  # nothing reported yet
    assert by_group["unlisted-model"]["models"] == ["unlisted-model"]
    assert by_group["unlisted-model"]["quota"] == pytest.approx(3.5, abs=EPS)

    # Bob has no shared account: every pool is empty.
    bob_pools = await _ok(await client.get("/api/quotas/user", headers=bearer(bob["api_key"])))
    assert all(row["quota"] == 0 and row["max_quota"] == 0 for row in bob_pools)
    # Another user's pools are a 404 for a user, reachable for the admin.
    response = await client.get(
        f"/api/quotas/user?user_id={alice['user_id']}", headers=bearer(bob["api_key"])
    )
    assert response.status == 404
    as_admin = await _ok(await client.get(f"/api/quotas/user?user_id={alice['user_id']}", headers=admin))
    assert [(r["quota_group"], r["max_quota"]) for r in as_admin] == [
        (r["quota_group"], r["max_quota"]) for r in data
    ]
    response = await client.get("/api/quotas/user", headers=admin)
    assert response.status == 400
    assert (await response.json())["error"]["param"] == "user_id"
    response = await client.get("/api/quotas/user?user_id=999999", headers=admin)
    assert response.status == 404
    response = await client.get("/api/quotas/user")
    assert response.status == 401


async def test_user_pools_lists_groups_reported_by_shared_accounts(db_dsn, config):
    async with open_db(db_dsn) as db:
        user = await insert_user(db)
        account = await insert_account(db, user)
        await sql(
            db,
            "INSERT INTO model_quotas (account_id, model_name, quota_group, quota) "
            "VALUES (%(a)s, 'new-model', 'new-model', 0.5)",
            a=account,
        )
        pools = await user_pools(QuotaRepository(db), config.quotas, user)
        assert pools is not None
        assert [p.quota_group for p in pools][: len(config.quotas.groups)] == list(config.quotas.groups)
        assert "new-model" in {p.quota_group for p in pools}
        assert await user_pools(QuotaRepository(db), config.quotas, 424242) is None
