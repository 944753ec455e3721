"""A burst cannot overdraw a shared pool (issue 11 item 25).

Charges settle seconds after a request, when a quota read measures it; admission
reserves an estimate per request meanwhile (antigv/quotas/reservations.py).
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2
import pytest

from antigv.accounting.reservations import (
    ESTIMATE_DEFAULT,
    ESTIMATE_FLOOR,
    SETTLED_ELSEWHERE_AFTER,
    PoolReservations,
)
from antigv.accounting.usage import UsageRecord
from antigv.appkeys import CONFIG, QUOTAS, RESERVATIONS, TASKS, USAGE
from antigv.config import Config
from tests.conftest import bearer, create_user, make_config
from tests.upstream_double import UpstreamDouble

GEMINI = "gemini-3-pro-high"
COST = 0.01  # what one request takes from its account (the double's default)
BALANCE = 0.05  # the user's pool: five requests' worth
BURST = 20


@pytest.fixture
def config(db_dsn: str, double: UpstreamDouble) -> Config:
    base = double.base_url
    return make_config(db_dsn, upstream={"base_urls": [base]}, oauth={"token_url": base + "/token"})


def sql(dsn: str, query: str, params: tuple = ()) -> list[tuple]:
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


async def setup_pool(client: Any, double: UpstreamDouble, db_dsn: str) -> tuple[dict[str, Any], int, str]:
    """Alice shares one account; her pool holds BALANCE; recent requests cost COST each."""
    alice = await create_user(client, "alice")
    group = client.app[CONFIG].quotas.group_of(GEMINI)
    upstream = double.add_account("shared@example.com")
    ((account_id,),) = sql(
        db_dsn,
        "INSERT INTO accounts (user_id, email, refresh_token, access_token, access_token_expires_at,"
        " project_id, is_shared) VALUES (%s, %s, %s, %s, now() + interval '1 hour', %s, 1) RETURNING account_id",
        (
            alice["user_id"],
            upstream.email,
            "plain:" + upstream.refresh_token,
            "plain:" + upstream.access_token,
            upstream.project,
        ),
    )
    sql(
        db_dsn,
        "INSERT INTO shared_pools (user_id, quota_group, quota, max_quota, last_recovered_at)"
        " VALUES (%s, %s, %s, 2, now())",
        (alice["user_id"], group, BALANCE),
    )
    # History the estimate learns from: settled shared requests of this group.
    sql(
        db_dsn,
        "INSERT INTO usage_log (request_id, user_id, account_id, model_name, quota_group, is_shared,"
        " status, quota_consumed) SELECT 'old-' || n, %s, %s, %s, %s, 1, 'ok', %s FROM generate_series(1, 10) n",
        (alice["user_id"], account_id, GEMINI, group, COST),
    )
    assert await client.app[TASKS].run_once("pool_estimates")
    return alice, account_id, group


async def chat(client: Any, user: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = await client.post(
        "/v1/chat/completions",
        json={"model": GEMINI, "messages": [{"role": "user", "content": "hi"}]},
        headers=bearer(user["api_key"]),
    )
    return response.status, await response.json()


async def test_a_burst_admits_what_the_pool_holds_plus_one(client, double, db_dsn):
    alice, _, _ = await setup_pool(client, double, db_dsn)
    results = await asyncio.gather(*(chat(client, alice) for _ in range(BURST)))
    admitted = sum(1 for status, _ in results if status == 200)
    refused = [body["error"]["code"] for status, body in results if status != 200]
    holds = math.floor(BALANCE / COST + 1e-9)
    assert holds <= admitted <= holds + 1, results
    assert set(refused) == {"pool_exhausted"}


async def test_settlement_ends_the_reservations_with_the_charge(client, double, db_dsn):
    alice, account_id, group = await setup_pool(client, double, db_dsn)
    quotas, ledger = client.app[QUOTAS], client.app[RESERVATIONS]
    await quotas.read(account_id)  # the read the next one is compared with
    assert (await chat(client, alice))[0] == 200
    assert ledger.reserved(alice["user_id"], group) == pytest.approx(COST)
    await client.app[USAGE].flush()
    assert ledger.reserved(alice["user_id"], group) == pytest.approx(COST)  # written, not charged yet
    await quotas.read(account_id)
    assert ledger.reserved(alice["user_id"], group) == 0
    ((balance,),) = sql(db_dsn, "SELECT quota FROM shared_pools WHERE user_id = %s", (alice["user_id"],))
    assert balance == pytest.approx(BALANCE - COST, abs=1e-3)


async def test_a_failed_attempt_reserves_nothing(client, double, db_dsn):
    alice, _, group = await setup_pool(client, double, db_dsn)
    double.fail(500, times=10)
    status, _ = await chat(client, alice)
    assert status == 502
    assert client.app[RESERVATIONS].reserved(alice["user_id"], group) == 0


# --- the ledger on its own -----------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def record(user_id: int = 1, account_id: int = 7) -> UsageRecord:
    return UsageRecord("r", user_id, account_id, GEMINI, "pro", 1, "ok", 10)


SHARED = {"account_id": 7, "is_shared": 1}


def test_estimates_have_a_floor_and_a_default():
    ledger = PoolReservations()
    ledger.set_estimates(
        [{"quota_group": "pro", "per_request": 0.0}, {"quota_group": "flash", "per_request": 0.2}]
    )
    assert ledger.estimate("pro") == ESTIMATE_FLOOR
    assert ledger.estimate("flash") == 0.2
    assert ledger.estimate("unknown") == ESTIMATE_DEFAULT


def test_dedicated_accounts_and_the_admin_reserve_nothing():
    ledger = PoolReservations()
    assert ledger.reserve(1, "pro", {"account_id": 7, "is_shared": 0}) is None
    assert ledger.reserve(None, "pro", SHARED) is None
    assert ledger.reserved(1, "pro") == 0


def test_a_read_ends_only_reservations_whose_rows_it_saw():
    ledger = PoolReservations()
    done, other = record(), record(account_id=8)
    ledger.finished(ledger.reserve(1, "pro", SHARED), done)
    ledger.finished(ledger.reserve(1, "pro", {"account_id": 8, "is_shared": 1}), other)
    running = ledger.reserve(1, "pro", SHARED)
    assert running is not None
    before = datetime.now(UTC) - timedelta(seconds=1)
    ledger.on_usage_batch([done, other])
    ledger.on_settled(7, before)  # started before the rows were written: it did not see them
    assert ledger.reserved(1, "pro") == pytest.approx(3 * ESTIMATE_DEFAULT)
    ledger.on_settled(7, datetime.now(UTC))
    assert ledger.reserved(1, "pro") == pytest.approx(2 * ESTIMATE_DEFAULT)  # account 8's, the running one


def test_a_reservation_nobody_settles_here_runs_out_after_its_request():
    clock = Clock()
    ledger = PoolReservations(clock)
    ledger.finished(ledger.reserve(1, "pro", SHARED), record())
    running = ledger.reserve(1, "pro", SHARED)
    assert running is not None
    clock.now += SETTLED_ELSEWHERE_AFTER + 1
    assert ledger.reserved(1, "pro") == pytest.approx(ESTIMATE_DEFAULT)  # the running one stays
    ledger.cancel(running)
    assert ledger.reserved(1, "pro") == 0
