"""End-to-end harness: the real app (aiohttp test server, real PostgreSQL) in front of the
upstream test double, driven through the official openai SDK.

One ``e2e`` fixture per test bundles everything: the started double, one gateway
(more with :meth:`E2E.new_gateway`, all on the test's database), a user with an API
key, helpers that insert accounts with SQL (tokens stored as ``plain:<token>``), read
rows back, and openai clients with retries off (a retry would hide what the gateway did).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from antigv.app import create_app
from antigv.appkeys import DB, GATEWAY
from antigv.gateway.clock import Clock
from tests.conftest import create_user, make_config
from tests.gemini_double import GeminiApiDouble
from tests.upstream_double import Account as UpstreamAccount
from tests.upstream_double import UpstreamDouble

GEMINI = "gemini-pro-agent"
CLAUDE = "claude-opus-4-6-thinking"
FLASH = "gemini-3-flash"


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Local time in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}

_emails = itertools.count(1)


@dataclass
class Gateway:
    app: web.Application
    server: TestServer
    http: TestClient  # raw HTTP, for what the SDK cannot send (bad JSON, missing model)

    @property
    def base_url(self) -> str:
        return str(self.server.make_url("/v1"))


class SteppedClock:
    """Time that moves only when the gateway waits: its sleeps return at once, recorded."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.offset)

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.offset += seconds
        await asyncio.sleep(0)

    def clock(self) -> Clock:
        return Clock(now=self.now, monotonic=self.monotonic, sleep=self.sleep)


@dataclass
class Acc:
    account_id: int
    email: str
    upstream: UpstreamAccount


class E2E:
    def __init__(self, aiohttp_server: Any, db_dsn: str, double: UpstreamDouble) -> None:
        self._aiohttp_server = aiohttp_server
        self.db_dsn = db_dsn
        self.double = double
        self.gateways: list[Gateway] = []
        self.clock = SteppedClock()
        self._clients: list[Any] = []
        self.gw: Gateway
        self.user: dict[str, Any]

    # --- gateways and users --------------------------------------------------

    async def new_gateway(
        self,
        *,
        server: dict[str, Any] | None = None,
        keys: dict[str, Any] | None = None,
        gemini_api: dict[str, Any] | None = None,
        **upstream: Any,
    ) -> Gateway:
        base = self.double.base_url
        assert base is not None
        config = make_config(
            self.db_dsn,
            upstream={"base_urls": [base], "first_byte_timeout": 5, "idle_timeout": 2, **upstream},
            oauth={"token_url": base + "/token"},
            server=server or {},
            keys=keys or {},
            gemini_api=gemini_api or {},
        )
        app = create_app(config, clock=self.clock.clock())
        server = await self._aiohttp_server(app)
        http = TestClient(server)
        await http.start_server()
        gateway = Gateway(app, server, http)
        self.gateways.append(gateway)
        return gateway

    async def create_user(self, name: str = "alice", **fields: Any) -> dict[str, Any]:
        return await create_user(self.gw.http, name, **fields)

    # --- accounts --------------------------------------------------------------

    async def add_account(
        self,
        email: str | None = None,
        *,
        user: dict[str, Any] | None = None,
        shared: bool = False,
        expired: bool = False,
        status: int = 1,
    ) -> Acc:
        """An account known to the double and stored for ``user`` (default: the test's user).

        ``expired``: the stored access token's expiry is in the past (the double expires it too).
        """
        email = email or f"acc{next(_emails)}@example.com"
        upstream = self.double.add_account(email)
        if expired:
            self.double.expire_access_token(account=upstream)
        expires_at = datetime.now(UTC) + (timedelta(minutes=-5) if expired else timedelta(hours=1))
        rows = await self.sql(
            "INSERT INTO accounts (user_id, email, refresh_token, access_token, access_token_expires_at, "
            "project_id, is_shared, status) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING account_id",
            (
                (user or self.user)["user_id"],
                email,
                "plain:" + upstream.refresh_token,
                "plain:" + upstream.access_token,
                expires_at,
                upstream.project,
                int(shared),
                status,
            ),
        )
        return Acc(rows[0]["account_id"], email, upstream)

    # --- database ----------------------------------------------------------------

    async def sql(self, query: str, params: tuple | dict | None = None) -> list[dict[str, Any]]:
        """Raw SQL, behind the gateways' backs: their account caches are dropped after it,
        as the app's own writes drop them."""
        async with self.gw.app[DB].pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(query, params)
            rows = []
            if cur.description is not None:
                columns = [d.name for d in cur.description]
                rows = [dict(zip(columns, row, strict=True)) for row in await cur.fetchall()]
        for gateway in self.gateways:
            gateway.app[GATEWAY].router.invalidate()
        return rows

    async def account_row(self, acc: Acc) -> dict[str, Any]:
        rows = await self.sql("SELECT * FROM accounts WHERE account_id = %s", (acc.account_id,))
        return rows[0]

    async def cooldowns(self, acc: Acc | None = None) -> list[dict[str, Any]]:
        if acc is None:
            return await self.sql("SELECT * FROM cooldowns ORDER BY account_id, model_name")
        return await self.sql("SELECT * FROM cooldowns WHERE account_id = %s", (acc.account_id,))

    async def usage_rows(self, count: int = 1, wait: float = 2.0, **where: Any) -> list[dict[str, Any]]:
        """Usage rows matching ``where`` once at least ``count`` exist (the writer batches)."""
        clause = " AND ".join(f"{column} = %({column})s" for column in where) or "TRUE"
        query = f"SELECT * FROM usage_log WHERE {clause} ORDER BY consumed_at, log_id"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            rows = await self.sql(query, where)
            if len(rows) >= count or loop.time() > deadline:
                return rows
            await asyncio.sleep(0.05)

    # --- clients -----------------------------------------------------------------

    def client(self, user: dict[str, Any] | None = None, gw: Gateway | None = None) -> openai.AsyncOpenAI:
        oc = openai.AsyncOpenAI(
            base_url=(gw or self.gw).base_url,
            api_key=(user or self.user)["api_key"],
            max_retries=0,
            timeout=20,
        )
        self._clients.append(oc)
        return oc

    def sync_client(self, user: dict[str, Any] | None = None) -> openai.OpenAI:
        oc = openai.OpenAI(
            base_url=self.gw.base_url, api_key=(user or self.user)["api_key"], max_retries=0, timeout=20
        )
        self._clients.append(oc)
        return oc

    def account_of(self, request_index: int) -> str | None:
        """E-mail of the account the n-th chat request at the double was made with."""
        return self.double.chat_requests[request_index].account

    async def assert_nothing_in_flight(self) -> None:
        """Every attempt released its account (cut requests finish a moment later)."""
        for _ in range(120):  # up to 3 s: a slow machine may take a moment
            if not any(gw.app[GATEWAY].router.inflight for gw in self.gateways):
                return
            await asyncio.sleep(0.025)
        raise AssertionError(
            f"accounts left in flight: {[gw.app[GATEWAY].router.inflight for gw in self.gateways]}"
        )

    async def close(self) -> None:
        for oc in self._clients:
            result = oc.close()
            if asyncio.iscoroutine(result):
                await result
        for gateway in self.gateways:
            await gateway.http.close()


@pytest.fixture
async def e2e(aiohttp_server: Any, db_dsn: str, double: UpstreamDouble) -> AsyncIterator[E2E]:
    harness = E2E(aiohttp_server, db_dsn, double)
    harness.gw = await harness.new_gateway()
    harness.user = await harness.create_user()
    yield harness
    try:
        await harness.assert_nothing_in_flight()
    finally:
        await harness.close()


@pytest.fixture
async def keyed(e2e: E2E, gemini: GeminiApiDouble) -> E2E:
    """The e2e harness with a gateway whose Gemini API is the double."""
    e2e.gw = await e2e.new_gateway(gemini_api={"base_url": gemini.base_url})
    return e2e
