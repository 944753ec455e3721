"""The served gateway answers requests that are not valid HTTP in OpenAI's shape, and never
quotes them back (issue 11 #18)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp import web

from antigv.app import create_app
from antigv.ops.serving import GatewayRunner
from tests.conftest import make_config

SECRET = "sk-" + "Pr0t0c0lKeyValue" * 3


@pytest.fixture
async def served(db_dsn: str) -> AsyncIterator[int]:
    runner = GatewayRunner(create_app(make_config(db_dsn)), access_log=None)
    await runner.setup()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield port
    await runner.cleanup()


async def exchange(port: int, raw: bytes) -> tuple[bytes, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        received = await asyncio.wait_for(reader.read(), 5)  # the server closes the connection
    finally:
        writer.close()
    head, _, body = received.partition(b"\r\n\r\n")
    return head, body


MALFORMED = {
    "control character in a header": f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SECRET}\x01z\r\n\r\n",
    "over-long header": f"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: {SECRET}{'a' * 9000}\r\n\r\n",
    "bad chunk size": f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{SECRET}\r\nx\r\n",
    "unknown method": f"FOO@ /{SECRET} HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad path byte": f"GET /\x00{SECRET} HTTP/1.1\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_request_that_is_not_http_gets_an_openai_error_without_its_bytes(
    served: int, raw: str
) -> None:
    head, body = await exchange(served, raw.encode("latin-1"))  # and the server closed the connection
    assert head.split(b"\r\n")[0].split(b" ")[1] == b"400", head
    assert b"Content-Type: application/json" in head
    error = orjson.loads(body)["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "bad_http_request",
        None,
    )
    assert SECRET.encode() not in head + body and b"Pr0t0c0l" not in body


async def test_valid_requests_are_served_as_before(served: int) -> None:
    head, body = await exchange(served, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    head, body = await exchange(served, b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401")
    assert orjson.loads(body)["error"]["type"] == "authentication_error"
