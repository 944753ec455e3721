"""Operations: metrics access and content, graceful shutdown, database outages, units."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psycopg2
import pytest
import structlog.testing

from antigv.app import create_app
from antigv.appkeys import TASKS
from antigv.ops.embedded_pg import Cluster
from antigv.store.db import close_pool, create_pool, migrate
from tests.conftest import ADMIN_KEY, bearer, create_user, make_config
from tests.upstream_double import UpstreamDouble, parse_sse

REPO = Path(__file__).resolve().parent.parent


def insert_account(dsn: str, user_id: int, upstream: Any) -> None:
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO accounts (user_id, email, refresh_token, access_token, access_token_expires_at,"
                " project_id) VALUES (%s, %s, %s, %s, now() + interval '1 hour', %s)",
                (
                    user_id,
                    upstream.email,
                    "plain:" + upstream.refresh_token,
                    "plain:" + upstream.access_token,
                    upstream.project,
                ),
            )
    finally:
        conn.close()


def query_one(dsn: str, sql: str) -> tuple:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone()
    finally:
        conn.close()


# --- metrics ----------------------------------------------------------------


async def test_metrics_needs_admin_key_or_allowed_address(aiohttp_client, db_dsn):
    client = await aiohttp_client(create_app(make_config(db_dsn)))
    user = await create_user(client)
    assert (await client.get("/metrics")).status == 401
    assert (await client.get("/metrics", headers=bearer(user["api_key"]))).status == 403
    response = await client.get("/metrics", headers=bearer(ADMIN_KEY))
    assert response.status == 200
    assert response.content_type == "text/plain"

    allowed = await aiohttp_client(
        create_app(make_config(db_dsn, metrics={"allowed_addresses": ["127.0.0.0/8"]}))
    )
    assert (await allowed.get("/metrics")).status == 200


async def test_metrics_report_requests_by_route_and_database_gauges(aiohttp_client, db_dsn):
    client = await aiohttp_client(create_app(make_config(db_dsn)))
    user = await create_user(client)
    insert_account(db_dsn, user["user_id"], UpstreamDouble().add_account("m@example.com"))
    for _ in range(3):
        await client.get("/api/user/me", headers=bearer(user["api_key"]))
    text = await (await client.get("/metrics", headers=bearer(ADMIN_KEY))).text()
    assert 'antigv_requests_total{method="GET",route="/api/user/me",status="200"} 3.0' in text
    assert 'antigv_accounts{state="enabled"} 1.0' in text
    assert "antigv_db_pool_connections" in text


# --- graceful shutdown -----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_config(path: Path, dsn: str, upstream: str, port: int, **extra: str) -> None:
    lines = [
        "[server]",
        'host = "127.0.0.1"',
        f"port = {port}",
        f"shutdown_timeout = {extra.get('shutdown_timeout', '10')}",
        "[database]",
        f"dsn = {dsn!r}".replace("'", '"'),
        "[security]",
        f'admin_api_key = "{ADMIN_KEY}"',
        "allow_plaintext_tokens = true",
        "[upstream]",
        f'base_urls = ["{upstream}"]',
        "[oauth]",
        f'token_url = "{upstream}/token"',
        "[tasks]",
        "enabled = false",
        "[logging]",
        'format = "json"',
    ]
    path.write_text("\n".join(lines) + "\n")


@asynccontextmanager
async def _serving(config: Path, *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """``antigv serve`` in a process group of its own, as an operator runs it.

    On the way out the whole group is killed: workers of a supervisor that failed
    a test must not outlive it.
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "antigv",
        "--config",
        str(config),
        "serve",
        *args,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


async def _wait_ready(base: str, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(base + "/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("gateway did not become ready")


@dataclass
class LongStream:
    """A served gateway, and a long streamed reply whose first chunk has arrived."""

    process: asyncio.subprocess.Process
    session: aiohttp.ClientSession
    base: str
    reply: aiohttp.ClientResponse
    first: bytes


@asynccontextmanager
async def _long_stream(
    tmp_path: Path,
    dsn: str,
    *,
    shutdown_timeout: str,
    frame_delay: float,
    surface: str = "/v1/chat/completions",
):
    """``antigv serve`` in a process, streaming ``[[long]]`` (200 frames, ``frame_delay`` apart)
    through ``surface`` (chat completions or Anthropic's messages)."""
    double = UpstreamDouble()
    upstream = await double.start()
    port = _free_port()
    config = tmp_path / "config.toml"
    _write_config(config, dsn, upstream, port, shutdown_timeout=shutdown_timeout)
    base = f"http://127.0.0.1:{port}"
    try:
        async with _serving(config) as process, aiohttp.ClientSession() as session:
            await _wait_ready(base)
            async with session.post(base + "/api/users", json={"name": "s"}, headers=bearer(ADMIN_KEY)) as r:
                user = (await r.json())["data"]
            insert_account(dsn, user["user_id"], double.add_account("s@example.com"))
            double.set_transport(frame_delay=frame_delay)
            body = {
                "model": "gemini-3-flash",
                "stream": True,
                "max_tokens": 1000,
                "messages": [{"role": "user", "content": "[[long]]"}],
            }
            async with session.post(base + surface, json=body, headers=bearer(user["api_key"])) as reply:
                assert reply.status == 200
                first = await reply.content.readline()
                assert first.startswith(b"data: " if surface == "/v1/chat/completions" else b"event: ")
                yield LongStream(process, session, base, reply, first)
    finally:
        await double.stop()


async def test_sigterm_lets_a_running_stream_finish_and_records_it(tmp_path, db_dsn):
    async with _long_stream(tmp_path, db_dsn, shutdown_timeout="10", frame_delay=0.02) as s:  # about 4 s
        s.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        # New connections are refused while the stream goes on.
        with pytest.raises(aiohttp.ClientError):
            async with s.session.get(s.base + "/readyz", headers={"Connection": "close"}) as probe:
                assert probe.status == 503
        rest = (s.first + await s.reply.read()).decode()
        assert rest.rstrip().endswith("data: [DONE]")
        chunks = [e for e in parse_sse(rest.replace("data: [DONE]", "")) if e.get("choices")]
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
        assert await asyncio.wait_for(s.process.wait(), 20) == 0
    assert query_one(db_dsn, "SELECT count(*), min(status) FROM usage_log") == (1, "ok")


async def test_sigterm_past_the_drain_bound_ends_a_stream_with_an_error_event_in_time(tmp_path, db_dsn):
    # Issue 11 item 22: a stream longer than server.shutdown_timeout gets an SSE error event
    # and a clean end of its chunked body within the bound, not a cut connection.
    async with _long_stream(tmp_path, db_dsn, shutdown_timeout="2", frame_delay=0.1) as s:  # about 20 s
        s.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        rest = (s.first + await asyncio.wait_for(s.reply.read(), 10)).decode()  # a clean end
        took = time.monotonic() - signalled
        assert took < 2 + 1.5, took  # the bound, with slack for a slow machine
        events = parse_sse(rest.replace("data: [DONE]", ""))
        assert events[-1]["error"]["type"] == "service_unavailable", events[-1]
        assert await asyncio.wait_for(s.process.wait(), 20) == 0
    assert query_one(db_dsn, "SELECT count(*) FROM usage_log") == (1,)


async def test_sigterm_past_the_drain_bound_ends_a_messages_stream_with_an_error_event(tmp_path, db_dsn):
    async with _long_stream(
        tmp_path, db_dsn, shutdown_timeout="2", frame_delay=0.1, surface="/v1/messages"
    ) as s:
        s.process.send_signal(signal.SIGTERM)
        rest = (s.first + await asyncio.wait_for(s.reply.read(), 10)).decode()
        last = rest.strip().split("\n\n")[-1]
        assert last.startswith("event: error\n"), last
        assert '"type":"overloaded_error"' in last
        assert await asyncio.wait_for(s.process.wait(), 20) == 0
    assert query_one(db_dsn, "SELECT count(*), min(status), min(surface) FROM usage_log") == (
        1,
        "error",
        "messages",
    )


# --- database outages ----------------------------------------------------------


@pytest.fixture
def own_cluster():
    """A cluster of this test's own, which it may stop and start."""
    root = Path(tempfile.mkdtemp(prefix="antigv-outage-", dir="/tmp"))
    root.chmod(0o755)
    cluster = Cluster(root / "pg")
    cluster.start(fast_unsafe=True)
    asyncio.run(migrate(cluster.dsn()))
    yield cluster
    cluster.stop()
    shutil.rmtree(root, ignore_errors=True)


async def test_database_outage_fails_fast_and_recovers(aiohttp_client, own_cluster):
    double = UpstreamDouble()
    upstream = await double.start()
    config = make_config(
        own_cluster.dsn(),
        upstream={"base_urls": [upstream]},
        oauth={"token_url": upstream + "/token"},
        # About the outage, not the cache: within the shipped 1 s TTL a request may still be
        # served from cached account rows.
        database={"account_cache_ttl": 0},
    )
    client = await aiohttp_client(create_app(config))
    user = await create_user(client)
    insert_account(own_cluster.dsn(), user["user_id"], double.add_account("o@example.com"))
    body = {"model": "gemini-3-flash", "messages": [{"role": "user", "content": "hi"}]}
    headers = bearer(user["api_key"])
    assert (await client.post("/v1/chat/completions", json=body, headers=headers)).status == 200

    await asyncio.to_thread(own_cluster.stop)
    try:
        assert (await client.get("/readyz")).status == 503
        started = time.monotonic()
        for _ in range(5):
            response = await client.post("/v1/chat/completions", json=body, headers=headers)
            assert response.status == 503
            error = (await response.json())["error"]
            assert error["type"] == "service_unavailable"
        assert time.monotonic() - started < 10  # fast, not a hang per request
    finally:
        await asyncio.to_thread(own_cluster.start, fast_unsafe=True)

    deadline = time.monotonic() + 15
    while (await client.get("/readyz")).status != 200:
        assert time.monotonic() < deadline, "readiness did not come back"
        await asyncio.sleep(0.2)
    response = await client.post("/v1/chat/completions", json=body, headers=headers)
    assert response.status == 200
    await double.stop()


async def test_background_tasks_log_a_database_outage_once_and_its_end_once(aiohttp_client, own_cluster):
    app = create_app(make_config(own_cluster.dsn(), upstream={"version_manifest_url": ""}))
    await aiohttp_client(app)
    loop = app[TASKS]

    async def round_of_every_task() -> None:
        for task in loop.tasks.values():
            task.next_run = 0.0  # due now, whatever its schedule
        await loop._tick()

    await asyncio.to_thread(own_cluster.stop)
    try:
        with structlog.testing.capture_logs() as during:
            for _ in range(3):
                await round_of_every_task()
    finally:
        await asyncio.to_thread(own_cluster.start, fast_unsafe=True)

    # One warning for the outage: not one per task, nor one per round.
    loud = [entry for entry in during if entry["log_level"] in ("warning", "error", "critical")]
    assert [entry["event"] for entry in loud] == ["database_unavailable"], loud
    assert "exc_info" not in loud[0]

    with structlog.testing.capture_logs() as after:
        deadline = time.monotonic() + 15
        while not any(entry["event"] == "database_available" for entry in after):
            assert time.monotonic() < deadline, "the tasks did not notice the database is back"
            await asyncio.sleep(0.2)
            await round_of_every_task()
        await round_of_every_task()
    back = [entry for entry in after if entry["event"] == "database_available"]
    assert len(back) == 1 and back[0]["log_level"] == "info"
    assert [entry for entry in after if entry["event"] == "database_unavailable"] == []


async def test_closing_the_pool_does_not_wait_forever_for_a_leaked_connection(db_dsn):
    pool = await create_pool(db_dsn, minsize=1, maxsize=2)
    leaked = await pool.acquire()  # never released, as a buggy or stuck caller would

    await asyncio.wait_for(close_pool(pool, grace=0.2), 5)

    assert pool.closed and leaked.closed


# --- deployment units ----------------------------------------------------------


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("unit", ["antigv.service", "antigv@.service"])
def test_systemd_units_verify(tmp_path, unit):
    # verify checks ExecStart binaries exist; point them at something that does.
    text = (REPO / "deploy" / unit).read_text().replace("/opt/antigv/bin/antigv", "/bin/true")
    target = tmp_path / unit
    target.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(target)],
        capture_output=True,
        text=True,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "err"},
    )
    problems = [
        line for line in result.stderr.splitlines() if unit.split("@")[0] in line and "Unknown" in line
    ]
    assert not problems, result.stderr


def test_units_carry_the_required_hardening():
    for unit in ("antigv.service", "antigv@.service"):
        text = (REPO / "deploy" / unit).read_text()
        for setting in (
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "ReadWritePaths=/var/lib/antigv",
            "EnvironmentFile=-/etc/antigv/antigv.env",
            "ExecStartPre=/opt/antigv/bin/antigv migrate",
            "Restart=on-failure",
        ):
            assert setting in text, f"{unit} lacks {setting}"


# --- several workers on one port ----------------------------------------------------


async def test_serve_workers_share_one_port_and_their_metrics(tmp_path, db_dsn):
    port = _free_port()
    config = tmp_path / "config.toml"
    _write_config(config, db_dsn, "http://127.0.0.1:9", port)
    base = f"http://127.0.0.1:{port}"
    async with _serving(config, "--workers", "2") as process:
        await _wait_ready(base)
        children_file = Path(f"/proc/{process.pid}/task/{process.pid}/children")
        children = (await asyncio.to_thread(children_file.read_text)).split()
        assert len(children) == 2
        for _ in range(20):
            # A new connection each time, so the kernel spreads them over the workers.
            async with aiohttp.ClientSession() as session, session.get(base + "/healthz") as response:
                assert response.status == 200
        async with (
            aiohttp.ClientSession() as session,
            session.get(base + "/metrics", headers=bearer(ADMIN_KEY)) as response,
        ):
            text = await response.text()
        # Whichever worker answers reports the requests of both.
        line = next(
            x for x in text.splitlines() if x.startswith("antigv_requests_total{") and "/healthz" in x
        )
        assert float(line.rsplit(" ", 1)[1]) >= 20
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0


async def test_sigterm_while_workers_start_up_is_a_clean_stop(tmp_path, db_dsn):
    config = tmp_path / "config.toml"
    _write_config(config, db_dsn, "http://127.0.0.1:9", _free_port())
    async with _serving(config, "--workers", "2") as process:
        children_file = Path(f"/proc/{process.pid}/task/{process.pid}/children")
        deadline = time.monotonic() + 20
        # As soon as both workers exist, long before they serve: they die by the signal itself.
        while len((await asyncio.to_thread(children_file.read_text)).split()) < 2:
            assert time.monotonic() < deadline, "workers were not started"
            await asyncio.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0
