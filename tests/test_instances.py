"""Several instances on one database: nothing but PostgreSQL coordinates them."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg2
import pytest

import antigv.protocols.auth
from antigv.app import create_app
from antigv.appkeys import DB, TASKS
from antigv.backends.antigravity import oauth as oauth_module
from antigv.ops.tasks import run_locked
from tests.conftest import ADMIN_KEY, bearer, create_user, double_config
from tests.test_oauth import google_login


@pytest.fixture
async def two_instances(aiohttp_client, db_dsn, double) -> tuple[Any, Any]:
    config = double_config(db_dsn, double)
    return await aiohttp_client(create_app(config)), await aiohttp_client(create_app(config))


async def test_oauth_started_on_one_instance_finishes_on_the_other(two_instances, double, monkeypatch):
    monkeypatch.setattr(oauth_module, "ONBOARD_POLL_DELAY", 0.0)
    first, second = two_instances
    user = await create_user(first)
    key = bearer(user["api_key"])
    double.add_account("multi@example.com")
    started = await first.post("/api/oauth/authorize", json={"is_shared": 1}, headers=key)
    assert started.status == 200
    location = await google_login(double, (await started.json())["data"]["auth_url"], "multi@example.com")

    finished = await second.post("/api/oauth/callback/manual", json={"callback_url": location}, headers=key)
    assert finished.status == 200, await finished.text()
    listed = await (await first.get("/api/accounts", headers=key)).json()
    assert [a["email"] for a in listed["data"]] == ["multi@example.com"]
    assert listed["data"][0]["is_shared"] == 1
    # The state was consumed for both instances.
    again = await first.post("/api/oauth/callback/manual", json={"callback_url": location}, headers=key)
    assert again.status == 404


class _Clock:
    """Stands in for the ``time`` module inside antigv.protocols.auth only (asyncio keeps the real one)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


async def test_a_key_disabled_on_one_instance_stops_on_the_other_within_the_cache_ttl(
    two_instances, monkeypatch
):
    clock = _Clock()
    monkeypatch.setattr(antigv.protocols.auth, "time", clock)
    first, second = two_instances
    user = await create_user(first)
    key = bearer(user["api_key"])
    assert (await second.get("/api/user/me", headers=key)).status == 200  # cached on the second
    disabled = await first.put(
        f"/api/users/{user['user_id']}/status", json={"status": 0}, headers=bearer(ADMIN_KEY)
    )
    assert disabled.status == 200
    assert (await first.get("/api/user/me", headers=key)).status == 403  # user_disabled
    clock.now += antigv.protocols.auth.CACHE_TTL + 0.1
    assert (await second.get("/api/user/me", headers=key)).status == 403


async def test_a_cluster_task_runs_on_one_instance_at_a_time(two_instances):
    first, second = two_instances
    runs: list[str] = []
    running = asyncio.Event()
    release = asyncio.Event()

    async def slow() -> None:
        runs.append("ran")
        running.set()
        await release.wait()

    async def attempt(client: Any) -> bool:
        return await run_locked(client.app[DB], "probe", slow)

    holder = asyncio.create_task(attempt(first))
    await running.wait()
    # While the first instance holds the lock, the second one skips the task.
    assert await attempt(second) is False
    release.set()
    assert await holder is True
    assert runs == ["ran"]
    # Once released, the other instance may run it.
    assert await attempt(second) is True


async def test_background_refresh_on_two_instances_refreshes_each_account_once(two_instances, double, db_dsn):
    first, second = two_instances
    user = await create_user(first)
    upstream = double.add_account("expiring@example.com")
    conn = psycopg2.connect(db_dsn)
    with conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO accounts (user_id, email, refresh_token, access_token, access_token_expires_at, project_id)"
            " VALUES (%s, %s, %s, %s, now() + interval '1 minute', %s)",
            (user["user_id"], upstream.email, "plain:" + upstream.refresh_token, "plain:x", upstream.project),
        )
    conn.close()
    results = await asyncio.gather(
        first.app[TASKS].run_once("refresh_tokens"), second.app[TASKS].run_once("refresh_tokens")
    )
    assert True in results
    assert double.refresh_count(upstream) == 1


async def test_a_cluster_task_holds_no_database_connection_while_it_runs(two_instances):
    # Issue 11 item 16: a task that calls Google for minutes must not pin a pooled connection.
    first, _ = two_instances
    db = first.app[DB]
    in_use: list[int] = []

    async def probe() -> None:
        in_use.append(db.pool.size - db.pool.freesize)

    assert await run_locked(db, "probe", probe) is True
    assert in_use == [0]


async def test_a_lease_whose_holder_died_runs_out(two_instances):
    first, second = two_instances
    db = first.app[DB]
    ran: list[str] = []

    async def note() -> None:
        ran.append("ran")

    await db.execute("take_task_lease", name="probe", holder="dead", seconds=60)
    assert await run_locked(second.app[DB], "probe", note) is False
    async with db.cursor() as cur:  # the dead holder's lease runs out
        await cur.execute("UPDATE task_leases SET expires_at = now() - interval '1 second'")
    assert await run_locked(second.app[DB], "probe", note) is True
    assert ran == ["ran"]
    async with db.cursor() as cur:
        await cur.execute("SELECT count(*) FROM task_leases")
        assert (await cur.fetchone())[0] == 0  # released after the run
