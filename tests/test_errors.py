"""Every kind of bad input gets the OpenAI error shape (SPEC §2), never HTML or a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from typing import Any

import orjson
import pytest
from aiohttp import web

from antigv.app import create_app
from antigv.config import ConfigError
from antigv.core.errors import RateLimited, UpstreamTimeout
from antigv.protocols.auth import PUBLIC, access
from tests.conftest import ADMIN_KEY, bearer, make_config

ERROR_FIELDS = {"message", "type", "code", "param"}
SECRET = "sk-this-must-not-leak-0123456789"


async def error_of(response: Any, status: int, *, api: bool) -> dict[str, Any]:
    text = await response.text()
    assert response.status == status, text
    assert response.content_type == "application/json", text
    body = await response.json()
    if api:
        assert body["success"] is False
        assert set(body) == {"success", "error"}
    else:
        assert set(body) == {"error"}
    assert set(body["error"]) == ERROR_FIELDS
    assert body["error"]["message"]
    assert "<html" not in text.lower()
    assert "Traceback" not in text
    return body["error"]


@access(PUBLIC)
async def boom(request: web.Request) -> web.Response:
    raise RuntimeError(f"database password is {SECRET}")


@access(PUBLIC)
async def slow_down(request: web.Request) -> web.Response:
    raise RateLimited("slow down", retry_after=float(request.query.get("after", "2.4")))


@access(PUBLIC)
async def too_slow(request: web.Request) -> web.Response:
    raise UpstreamTimeout("the upstream did not answer in time")


@access(PUBLIC)
async def aiohttp_bad_request(request: web.Request) -> web.Response:
    raise web.HTTPBadRequest(reason="Nope")


@access(PUBLIC)
async def redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/healthz")


@pytest.fixture
async def rigged(aiohttp_client: Any, config: Any) -> Any:
    """An app from create_app with a few throwaway routes that fail on purpose."""
    app = create_app(config)
    app.router.add_get("/api/boom", boom)
    app.router.add_get("/v1/boom", boom)
    app.router.add_get("/api/slow-down", slow_down)
    app.router.add_get("/v1/too-slow", too_slow)
    app.router.add_get("/api/aiohttp-bad-request", aiohttp_bad_request)
    app.router.add_get("/api/redirect", redirect)
    return await aiohttp_client(app)


# --- bodies --------------------------------------------------------------------------------


async def test_malformed_json(client, admin):
    for raw in [b"{", b"{'name': 'x'}", b"nul", b'{"name": "x",}', b"\xff\xfe"]:
        response = await client.post(
            "/api/users", data=raw, headers={**admin, "Content-Type": "application/json"}
        )
        error = await error_of(response, 400, api=True)
        assert error["type"] == "invalid_request_error"
        assert "JSON" in error["message"], raw


async def test_json_that_is_not_an_object(client, admin):
    for raw in [b"[]", b'["name"]', b'"alice"', b"42", b"null", b"true"]:
        response = await client.put(
            "/api/users/1/status", data=raw, headers={**admin, "Content-Type": "application/json"}
        )
        error = await error_of(response, 400, api=True)
        assert error["type"] == "invalid_request_error"
        assert "object" in error["message"], raw


async def test_empty_body(client, admin):
    response = await client.put("/api/users/1/status", headers=admin)
    error = await error_of(response, 400, api=True)
    assert error["type"] == "invalid_request_error"
    assert "empty" in error["message"]


async def test_nul_character_in_a_string_is_a_400(client, admin):
    response = await client.post("/api/users", json={"name": "a\u0000b"}, headers=admin)
    error = await error_of(response, 400, api=True)
    assert error["param"] == "name"


async def test_body_over_max_request_size_is_413(aiohttp_client, db_dsn, admin):
    client = await aiohttp_client(create_app(make_config(db_dsn, security={"max_request_size": "1kb"})))
    small = await client.post("/api/users", json={"name": "x" * 100}, headers=admin)
    assert small.status == 200
    response = await client.post("/api/users", json={"name": "x" * 2048}, headers=admin)
    error = await error_of(response, 413, api=True)
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "request_too_large"
    listing = await client.get("/api/users", headers=admin)
    assert (await listing.json())["data"]["total"] == 1


# --- routes and methods ---------------------------------------------------------------------------


async def test_unknown_route_is_404_without_a_key(client):
    error = await error_of(await client.get("/api/no-such-thing"), 404, api=True)
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "unknown_route"
    # Outside /api/ the shape is OpenAI's alone.
    error = await error_of(await client.post("/v1/no-such-thing", json={}), 404, api=False)
    assert error["code"] == "unknown_route"
    error = await error_of(await client.get("/v2"), 404, api=False)
    assert error["code"] == "unknown_route"


async def test_wrong_method_is_405_without_a_key(client):
    error = await error_of(await client.delete("/api/users"), 405, api=True)
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "method_not_allowed"
    assert "DELETE" in error["message"]
    error = await error_of(await client.post("/healthz"), 405, api=False)
    assert error["code"] == "method_not_allowed"


async def test_405_says_which_methods_are_allowed(client):
    response = await client.delete("/api/users")
    assert response.status == 405
    assert {m.strip() for m in response.headers.get("Allow", "").split(",")} >= {"GET", "POST"}


# --- unexpected exceptions --------------------------------------------------------------------------


async def test_unexpected_exception_is_a_500_with_request_id(rigged):
    for path, api in [("/api/boom", True), ("/v1/boom", False)]:
        response = await rigged.get(path)
        text = await response.text()
        error = await error_of(response, 500, api=api)
        assert error["type"] == "server_error"
        request_id = response.headers["X-Request-Id"]
        assert request_id in error["message"]
        assert SECRET not in text
        assert "RuntimeError" not in text
        assert "boom" not in text


async def test_unexpected_exception_keeps_a_callers_request_id(rigged):
    response = await rigged.get("/api/boom", headers={"X-Request-Id": "trace-me-42"})
    error = await error_of(response, 500, api=True)
    assert response.headers["X-Request-Id"] == "trace-me-42"
    assert "trace-me-42" in error["message"]


async def test_aiohttp_http_errors_get_our_shape(rigged):
    error = await error_of(await rigged.get("/api/aiohttp-bad-request"), 400, api=True)
    assert error["type"] == "invalid_request_error"


async def test_redirects_are_not_errors(rigged):
    response = await rigged.get("/api/redirect", allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == "/healthz"


async def test_upstream_timeout_shape(rigged):
    error = await error_of(await rigged.get("/v1/too-slow"), 504, api=False)
    assert error["type"] == "upstream_error"
    assert error["code"] == "upstream_timeout"


# --- Retry-After ------------------------------------------------------------------------------------


async def test_retry_after_header(rigged):
    response = await rigged.get("/api/slow-down", params={"after": "2.4"})
    error = await error_of(response, 429, api=True)
    assert error["type"] == "rate_limit_error"
    # Whole seconds (RFC 9110); 2.4 s may round either way, though up is kinder to the limit.
    assert response.headers["Retry-After"] in ("2", "3")
    response = await rigged.get("/api/slow-down", params={"after": "0.2"})
    await error_of(response, 429, api=True)
    assert response.headers["Retry-After"] == "1"  # never 0: that would invite a hot loop
    response = await rigged.get("/api/slow-down", params={"after": "90"})
    await error_of(response, 429, api=True)
    assert response.headers["Retry-After"] == "90"


async def test_no_retry_after_on_other_errors(client):
    response = await client.get("/api/user/me")
    assert response.status == 401
    assert "Retry-After" not in response.headers


# --- request ids ------------------------------------------------------------------------------------


async def test_request_id_is_echoed(client, admin):
    response = await client.get("/api/user/me", headers={**admin, "X-Request-Id": "abc-123.x:y_z"})
    assert response.status == 200
    assert response.headers["X-Request-Id"] == "abc-123.x:y_z"
    response = await client.get("/api/user/me", headers={"X-Request-Id": "on-error-too"})
    assert response.status == 401
    assert response.headers["X-Request-Id"] == "on-error-too"
    response = await client.get("/nowhere", headers={"X-Request-Id": "and-on-404"})
    assert response.status == 404
    assert response.headers["X-Request-Id"] == "and-on-404"


async def test_request_id_is_generated_otherwise(client):
    first = (await client.get("/healthz")).headers["X-Request-Id"]
    second = (await client.get("/healthz")).headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{24}", first)
    assert first != second


async def test_unsafe_request_ids_are_replaced(client):
    for unsafe in ["has space", "x" * 129, "new\tline", "<script>", "a/b"]:
        response = await client.get("/healthz", headers={"X-Request-Id": unsafe})
        echoed = response.headers["X-Request-Id"]
        assert echoed != unsafe
        assert re.fullmatch(r"[0-9a-f]{24}", echoed), unsafe


# --- the database is down -----------------------------------------------------------------------------


async def test_database_down_is_503_not_500(aiohttp_client, db_dsn):
    dead = db_dsn.replace("dbname=", "dbname=no_such_database_")
    assert dead != db_dsn
    client = await aiohttp_client(create_app(make_config(dead)))
    response = await client.get("/api/user/me", headers=bearer("sk-" + "C" * 48))
    error = await error_of(response, 503, api=True)
    assert error["type"] == "service_unavailable"
    assert "no_such_database" not in error["message"]
    ready = await client.get("/readyz")
    assert ready.status == 503
    # The admin key needs no database.
    me = await client.get("/api/user/me", headers=bearer(ADMIN_KEY))
    assert me.status == 200


# --- bodies that cannot be read (issue 11 items 17, 24) ---------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_plain_body_labelled_compressed_is_a_400(client, admin, encoding):
    for path, api in [("/api/users", True), ("/v1/chat/completions", False)]:
        response = await client.post(
            path,
            data=b'{"name": "x"}',
            headers={**admin, "Content-Type": "application/json", "Content-Encoding": encoding},
        )
        error = await error_of(response, 400, api=api)
        assert error["type"] == "invalid_request_error"
        assert error["code"] == "invalid_body_encoding"


async def _raw_exchange(client: Any, request: bytes, *, within: float = 5.0) -> bytes:
    """Send raw bytes on a connection of its own; everything read until the server closes it
    (or ``within`` seconds pass, as a client left hanging would see)."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(request)
        await writer.drain()
        received = b""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while chunk := await reader.read(65536):
                    received += chunk
        return received
    finally:
        writer.close()


async def test_a_body_slower_than_the_body_timeout_is_a_408(aiohttp_client, db_dsn):
    client = await aiohttp_client(create_app(make_config(db_dsn, server={"body_timeout": 0.2})))
    started = time.monotonic()
    head = (
        b"POST /api/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + ADMIN_KEY.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n"
    )
    received = await _raw_exchange(client, head + b'{"name": ', within=3)  # and nothing more
    assert time.monotonic() - started < 2.5
    status_line, _, rest = received.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 408 Request Timeout", received
    body = orjson.loads(rest.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["code"] == "request_timeout"
    assert "server.body_timeout" in body["error"]["message"]


def test_body_timeout_is_a_positive_number_of_seconds(db_dsn):
    assert make_config(db_dsn).server.body_timeout == 30
    with pytest.raises(ConfigError, match=r"server\.body_timeout"):
        make_config(db_dsn, server={"body_timeout": 0})


# --- a failure after the response has started (issue 11 item 13) ------------------------------


@access(PUBLIC)
async def stream_then_fail(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(b'data: {"choices": []}\n\n')
    raise RuntimeError(f"a bug after the first byte, {SECRET}")


async def test_the_middleware_never_answers_on_a_response_already_started(aiohttp_client, config):
    app = create_app(config)
    app.router.add_get("/v1/stream-then-fail", stream_then_fail)
    client = await aiohttp_client(app)
    started = time.monotonic()
    received = await _raw_exchange(client, b"GET /v1/stream-then-fail HTTP/1.1\r\nHost: x\r\n\r\n")
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert received.count(b"HTTP/1.1") == 1  # no second status line inside the chunked body
    assert b"data: " in received and SECRET.encode() not in received
    assert time.monotonic() - started < 4  # the connection is closed, the client does not hang
