"""The repositories over the named SQL: what the API tests do not reach yet."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime, timedelta

import pytest

from antigv.accounting.pools import UserPool
from antigv.store.accounts import Account, AccountRepository, Cooldown
from antigv.store.quotas import LowQuota, ModelQuota, QuotaRepository, SharedTotal, StoredWindow
from antigv.store.usage import UsageRow, UsageStats
from antigv.store.users import User, UserPage, UserWithKey
from tests.quota_helpers import insert_account, insert_user, open_db, set_pool

CANDIDATES = "account_candidates"


async def test_the_request_path_writes_show_on_the_account_and_drop_cached_candidates(db_dsn):
    async with open_db(db_dsn) as db:
        accounts = AccountRepository(db)
        dropped: list[str] = []
        db.watch(CANDIDATES, lambda: dropped.append("dropped"))
        user = await insert_user(db)
        first, second = await insert_account(db, user), await insert_account(db, user)
        until = datetime.now(UTC) + timedelta(minutes=5)

        await accounts.set_cooldowns(first, ["m-a", "m-b"], until, "rate limited")
        await accounts.park_for_validation(first, until, "https://example.com/verify")
        await accounts.set_project(first, "other-project")
        account = await accounts.get(first, user_id=None)
        assert account is not None
        assert account.cooldowns == (
            Cooldown("m-a", until, "rate limited"),
            Cooldown("m-b", until, "rate limited"),
        )
        assert account.validation_url == "https://example.com/verify"
        assert account.project_id == "other-project"

        await accounts.park_for_validation(first, until, None)  # None keeps the URL
        assert (await accounts.get(first, user_id=None)).validation_url == "https://example.com/verify"
        await accounts.clear_validation(first)
        assert (await accounts.get(first, user_id=None)).validation_url is None

        await accounts.disable(second, "revoked")
        disabled = await accounts.get(second, user_id=None)
        assert (disabled.status, disabled.disabled_reason) == (0, "revoked")
        assert list(await accounts.enabled_kinds()) == [first]
        assert dropped == ["dropped"] * 6


async def test_a_users_pools_come_from_the_sql_in_the_order_it_lists_them(db_dsn):
    async with open_db(db_dsn) as db:
        quotas = QuotaRepository(db)
        user = await insert_user(db)
        await insert_account(db, user)  # one shared account: a full pool is 2
        for group in ("beta", "Alpha", "named"):
            await set_pool(db, user, group, 0.5, 2.0)
        pools = await quotas.pools_of_user(user, ["zeta", "named"])
        assert pools is not None
        # The groups named first, in order; then by code point, as Python sorts.
        assert [p.quota_group for p in pools] == ["zeta", "named", "Alpha", "beta"]
        zeta = pools[0]
        assert (zeta.quota, zeta.max_quota, zeta.last_recovered_at) == (2.0, 2.0, None)
        assert pools[1].quota == pytest.approx(0.5, abs=1e-3)
        assert pools[1].last_recovered_at is not None


async def test_a_user_without_any_pool_group_is_listed_empty_and_no_user_is_none(db_dsn):
    async with open_db(db_dsn) as db:
        quotas = QuotaRepository(db)
        user = await insert_user(db)
        assert await quotas.pools_of_user(user, []) == []
        assert await quotas.pools_of_user(424242, []) is None


# The API's JSON is these rows' fields, in this order: a public contract (SPEC §3, §9).
API_ROWS = {
    User: ["user_id", "name", "status", "prefer_shared", "key_prefix", "created_at", "updated_at"],
    UserPage: ["users", "total", "limit", "offset"],
    Account: [
        "account_id",
        "user_id",
        "email",
        "name",
        "is_shared",
        "status",
        "disabled_reason",
        "project_id",
        "tier",
        "access_token_expires_at",
        "last_used_at",
        "created_at",
        "updated_at",
        "validation_url",
        "cooldowns",
        "kind",
    ],
    Cooldown: ["model_name", "until", "reason"],
    ModelQuota: [
        "account_id",
        "model_name",
        "quota_group",
        "quota",
        "reset_time",
        "status",
        "last_fetched_at",
    ],
    StoredWindow: ["bucket", "bucket_id", "quota_group", "window", "quota", "reset_time", "last_fetched_at"],
    SharedTotal: [
        "model_name",
        "quota_group",
        "total_quota",
        "earliest_reset_time",
        "available_accounts",
        "total_accounts",
    ],
    UserPool: [
        "user_id",
        "quota_group",
        "models",
        "patterns",
        "quota",
        "max_quota",
        "last_recovered_at",
        "recovery_per_hour",
    ],
    UsageRow: [
        "log_id",
        "user_id",
        "account_id",
        "model_name",
        "quota_group",
        "is_shared",
        "prompt_tokens",
        "completion_tokens",
        "reasoning_tokens",
        "total_tokens",
        "quota_consumed",
        "status",
        "latency_ms",
        "consumed_at",
        "surface",
        "key_id",
    ],
    UsageStats: [
        "total_requests",
        "total_tokens",
        "total_quota_consumed",
        "avg_quota_consumed",
        "settled_requests",
        "last_used_at",
    ],
}


@pytest.mark.parametrize("row", list(API_ROWS), ids=lambda row: row.__name__)
def test_api_rows_keep_their_json_fields(row):
    assert [f.name for f in fields(row)] == API_ROWS[row]


def test_rows_with_more_fields_extend_the_api_rows():
    assert [f.name for f in fields(UserWithKey)] == [*API_ROWS[User], "api_key"]
    assert [f.name for f in fields(LowQuota)] == [*API_ROWS[ModelQuota], "user_id", "email", "is_shared"]
