"""Settlement: quota drops split over the requests that caused them (SPEC §6)."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from antigv.accounting.quota_reads import QuotaReading
from antigv.accounting.settlement import group_drops, settle_read, split_drop
from antigv.store.db import Database
from tests.quota_helpers import insert_account, insert_usage, insert_user, open_db, pool, set_pool, sql, value

EPS = 2e-3  # pool balances recover a little while a test runs
FUTURE = datetime.now(UTC) + timedelta(hours=4)


def reading(quota: float, group: str = "g", model: str | None = None, reset: datetime | None = FUTURE):
    return QuotaReading(model or group, group, quota, reset)


def now() -> datetime:
    return datetime.now(UTC)


async def charges(db: Database, account_id: int | None = None) -> dict[int, float | None]:
    rows = await sql(
        db,
        "SELECT log_id, quota_consumed FROM usage_log "
        "WHERE %(a)s::bigint IS NULL OR account_id = %(a)s ORDER BY log_id",
        a=account_id,
    )
    return {r["log_id"]: r["quota_consumed"] for r in rows}


# --- splitting ----------------------------------------------------------------------


def test_split_is_proportional_to_tokens():
    assert split_drop(0.4, [100, 300]) == pytest.approx([0.1, 0.3])
    assert split_drop(0.3, [0, 100, 200]) == pytest.approx([0.0, 0.1, 0.2])


def test_split_is_equal_when_no_request_has_tokens():
    assert split_drop(0.3, [0, 0, 0]) == pytest.approx([0.1, 0.1, 0.1])


def test_split_of_nothing():
    assert split_drop(0.0, [10, 20]) == [0.0, 0.0]
    assert split_drop(0.5, []) == []


def test_the_last_request_takes_the_remainder():
    parts = split_drop(0.1, [1, 1, 1])
    assert parts[:2] == [0.1 / 3, 0.1 / 3]
    assert parts[2] == 0.1 - 2 * (0.1 / 3)


@given(
    drop=st.floats(min_value=0, max_value=1, allow_nan=False),
    tokens=st.lists(st.integers(min_value=0, max_value=10**7), min_size=1, max_size=60),
)
def test_parts_add_up_to_the_drop(drop, tokens):
    parts = split_drop(drop, tokens)
    assert len(parts) == len(tokens)
    assert all(p >= 0 for p in parts)
    assert math.fsum(parts) == pytest.approx(drop, abs=1e-12)


def test_group_drops_rise_reset_and_first_read():
    read_at = now()
    previous = {
        "fell": {"quota": 0.9, "reset_time": FUTURE},
        "rose": {"quota": 0.2, "reset_time": FUTURE},
        "was_reset": {"quota": 0.9, "reset_time": read_at - timedelta(seconds=1)},
        "no_reset_time": {"quota": 0.5, "reset_time": None},
    }
    drops = group_drops(
        previous,
        [
            reading(0.6, "fell", "a"),
            reading(0.6, "fell", "b"),
            reading(0.8, "rose"),
            reading(0.1, "was_reset"),
            reading(0.25, "no_reset_time"),
            reading(0.5, "first"),
        ],
        read_at,
    )
    assert drops == pytest.approx({"fell": 0.3, "rose": 0, "was_reset": 0, "no_reset_time": 0.25, "first": 0})


# --- settling against the database ----------------------------------------------------


async def setup_account(db: Database, *, is_shared: int = 1, initial: float | None = 1.0):
    owner = await insert_user(db, "owner")
    account = await insert_account(db, owner, is_shared=is_shared)
    if initial is not None:
        result = await settle_read(db, account, [reading(initial)], now())
        assert not result.stale
    return owner, account


async def test_overlapping_requests_share_the_drop_by_tokens(db_dsn):
    async with open_db(db_dsn) as db:
        owner, account = await setup_account(db)
        alice = await insert_user(db, "alice")
        bob = await insert_user(db, "bob")
        for user in (owner, alice, bob):
            await insert_account(db, user)  # each contributes one shared account: max 2
        a1 = await insert_usage(db, alice, account, total_tokens=100)
        b1 = await insert_usage(db, bob, account, total_tokens=300)
        a2 = await insert_usage(db, alice, account, total_tokens=0)
        other_group = await insert_usage(db, alice, account, quota_group="other", total_tokens=50)
        read_at = now()
        later = await insert_usage(
            db, bob, account, total_tokens=999, consumed_at=read_at + timedelta(seconds=1)
        )

        result = await settle_read(db, account, [reading(0.6)], read_at)

        assert result.drops == pytest.approx({"g": 0.4})
        assert result.settled_rows == 3
        got = await charges(db, account)
        assert got[a1] == pytest.approx(0.1) and got[b1] == pytest.approx(0.3) and got[a2] == 0
        assert math.fsum([got[a1], got[b1], got[a2]]) == pytest.approx(0.4, abs=1e-12)
        # Not measured by this read: another group, and a request that finished after it.
        assert got[other_group] is None and got[later] is None
        assert (await pool(db, alice))["quota"] == pytest.approx(1.9, abs=EPS)
        assert (await pool(db, bob))["quota"] == pytest.approx(1.7, abs=EPS)
        assert await pool(db, owner) is None  # nothing of the owner's was served
        stored = await sql(
            db, "SELECT quota, last_fetched_at FROM model_quotas WHERE account_id = %(a)s", a=account
        )
        assert stored == [{"quota": 0.6, "last_fetched_at": read_at}]
        assert (
            await value(db, "SELECT quota_fetched_at FROM accounts WHERE account_id = %(a)s", a=account)
            == read_at
        )

        # The next read settles the later request with the next drop.
        await settle_read(db, account, [reading(0.5)], read_at + timedelta(seconds=2))
        got = await charges(db, account)
        assert got[later] == pytest.approx(0.1)
        assert (await pool(db, bob))["quota"] == pytest.approx(1.6, abs=EPS)


async def test_a_rise_or_a_reset_charges_nothing(db_dsn):
    async with open_db(db_dsn) as db:
        user, account = await setup_account(db, initial=0.5)
        first = await insert_usage(db, user, account, total_tokens=10)
        await settle_read(db, account, [reading(0.9)], now())
        assert (await charges(db))[first] == 0
        # The stored reset time passes: a lower fraction after it is a new window, not a drop.
        await sql(
            db,
            "UPDATE model_quotas SET reset_time = now() - interval '1 minute' WHERE account_id = %(a)s",
            a=account,
        )
        second = await insert_usage(db, user, account, total_tokens=10)
        result = await settle_read(db, account, [reading(0.7)], now())
        assert result.drops == {"g": 0.0}
        assert (await charges(db))[second] == 0
        assert await pool(db, user) is None


async def test_dedicated_use_is_recorded_but_never_charged(db_dsn):
    async with open_db(db_dsn) as db:
        owner, account = await setup_account(db, is_shared=0)
        await insert_account(db, owner)  # a shared one too, so the owner has a pool
        row = await insert_usage(db, owner, account, is_shared=0, total_tokens=10)
        await settle_read(db, account, [reading(0.7)], now())
        assert (await charges(db))[row] == pytest.approx(0.3)
        assert await pool(db, owner) is None
        assert await value(db, "SELECT count(*) FROM shared_pools") == 0


async def test_a_read_is_never_settled_twice(db_dsn):
    async with open_db(db_dsn) as db:
        user, account = await setup_account(db)
        row = await insert_usage(db, user, account, total_tokens=10)
        read_at = now()
        first = await settle_read(db, account, [reading(0.8)], read_at)
        again = await settle_read(db, account, [reading(0.8)], read_at)
        older = await settle_read(db, account, [reading(0.9)], read_at - timedelta(seconds=5))
        assert not first.stale and again.stale and older.stale
        assert (await charges(db))[row] == pytest.approx(0.2)
        assert (await pool(db, user))["quota"] == pytest.approx(1.8, abs=EPS)
        # A stale read did not overwrite the newer stored fraction either, so the
        # fall it would have hidden is not charged again by the next read.
        assert await value(db, "SELECT quota FROM model_quotas WHERE account_id = %(a)s", a=account) == 0.8
        second = await insert_usage(db, user, account, total_tokens=10)
        await settle_read(db, account, [reading(0.8)], now())
        assert (await charges(db))[second] == 0
        assert (await pool(db, user))["quota"] == pytest.approx(1.8, abs=EPS)


async def test_concurrent_reads_of_one_account_charge_the_drop_once(db_dsn):
    async with open_db(db_dsn, size=20) as db:
        user, account = await setup_account(db)
        await insert_account(db, user)
        await insert_account(db, user)  # max 6, so the pool does not floor
        rows = [await insert_usage(db, user, account, total_tokens=t) for t in range(1, 31)]
        base = now()
        # Ten reads of the same fall, taken one after another, committing in any order.
        results = await asyncio.gather(
            *(settle_read(db, account, [reading(0.5)], base + timedelta(milliseconds=i)) for i in range(10))
        )
        got = await charges(db, account)
        assert all(got[r] is not None for r in rows)
        assert math.fsum(got.values()) == pytest.approx(0.5, abs=1e-9)
        assert math.fsum(sum(r.pool_charges.values()) for r in results) == pytest.approx(0.5, abs=1e-9)
        assert sum(r.settled_rows for r in results) == len(rows)
        assert [r.carried for r in results] == [{}] * len(results)
        assert await value(db, "SELECT count(*) FROM quota_carry") == 0
        assert (await pool(db, user))["quota"] == pytest.approx(5.5, abs=EPS)
        # The next fall is charged to the next requests only.
        new_row = await insert_usage(db, user, account, total_tokens=1)
        await settle_read(db, account, [reading(0.45)], now())
        got = await charges(db, account)
        assert got[new_row] == pytest.approx(0.05)
        assert math.fsum(got.values()) == pytest.approx(0.55, abs=1e-9)
        assert (await pool(db, user))["quota"] == pytest.approx(5.45, abs=EPS)


async def test_settlement_floors_the_pool_at_zero(db_dsn):
    async with open_db(db_dsn) as db:
        user, account = await setup_account(db)
        await set_pool(db, user, "g", 0.1, 2)
        await insert_usage(db, user, account, total_tokens=10)
        await settle_read(db, account, [reading(0.5)], now())
        assert (await pool(db, user))["quota"] == 0


async def test_rows_of_deleted_users_are_settled_without_a_pool(db_dsn):
    async with open_db(db_dsn) as db:
        _, account = await setup_account(db)
        gone = await insert_user(db, "gone")
        kept = await insert_usage(db, gone, account, total_tokens=10)
        await sql(db, "DELETE FROM users WHERE user_id = %(u)s", u=gone)
        await settle_read(db, account, [reading(0.9)], now())
        assert (await charges(db))[kept] == pytest.approx(0.1)
        assert await value(db, "SELECT count(*) FROM shared_pools") == 0


async def test_the_first_read_of_a_group_charges_nothing(db_dsn):
    async with open_db(db_dsn) as db:
        user, account = await setup_account(db, initial=None)
        row = await insert_usage(db, user, account, total_tokens=10)
        await settle_read(db, account, [reading(0.5)], now())
        assert (await charges(db))[row] == 0


async def test_a_deleted_account_is_not_settled(db_dsn):
    async with open_db(db_dsn) as db:
        _, account = await setup_account(db)
        await sql(db, "DELETE FROM accounts WHERE account_id = %(a)s", a=account)
        result = await settle_read(db, account, [reading(0.5)], now())
        assert result.missing
        assert await value(db, "SELECT count(*) FROM model_quotas") == 0


async def test_a_drop_seen_before_its_requests_finish_is_carried_to_them(db_dsn):
    """A read during a request sees its cost before its usage row exists: nothing is lost."""
    async with open_db(db_dsn) as db:
        user, account = await setup_account(db)
        early = await settle_read(db, account, [reading(0.8)], now())
        assert early.carried == pytest.approx({"g": 0.2})
        assert await value(db, "SELECT amount FROM quota_carry") == pytest.approx(0.2)
        row = await insert_usage(db, user, account, total_tokens=10, consumed_at=now())
        # The next read sees a further fall of 0.1: the request is charged both.
        later = await settle_read(db, account, [reading(0.7)], now())
        assert later.carried == {}
        assert (await charges(db))[row] == pytest.approx(0.3)
        assert (await pool(db, user))["quota"] == pytest.approx(1.7, abs=EPS)
        assert await value(db, "SELECT count(*) FROM quota_carry") == 0


async def test_a_carry_nobody_claims_expires(db_dsn):
    async with open_db(db_dsn) as db:
        user, account = await setup_account(db)
        await settle_read(db, account, [reading(0.8)], now())
        await sql(db, "UPDATE quota_carry SET since = now() - interval '1 hour'")
        row = await insert_usage(db, user, account, total_tokens=10)
        await settle_read(db, account, [reading(0.75)], now())
        assert (await charges(db))[row] == pytest.approx(0.05)
        assert await value(db, "SELECT count(*) FROM quota_carry") == 0
