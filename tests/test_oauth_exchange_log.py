"""A failed OAuth code exchange logs its cause (issue 11 #7), never the code or a token."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
import structlog.testing
from aiohttp import web

from antigv.backends.antigravity.oauth import exchange_code
from antigv.config import OAuthConfig
from antigv.core.errors import GatewayError

CODE = "4/0Ab-secret-authorization-code"


async def token_endpoint(aiohttp_server: Any, status: int, body: dict[str, Any]) -> str:
    async def answer(request: web.Request) -> web.Response:
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_post("/token", answer)
    server = await aiohttp_server(app)
    return str(server.make_url("/token"))


async def failed_exchange(token_url: str) -> tuple[GatewayError, list[dict[str, Any]]]:
    async with aiohttp.ClientSession() as http:
        with structlog.testing.capture_logs() as logs, pytest.raises(GatewayError) as info:
            await exchange_code(http, OAuthConfig(token_url=token_url), CODE)
    assert CODE not in repr(logs)
    return info.value, [entry for entry in logs if entry["event"] == "oauth_exchange_failed"]


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (400, {"error": "invalid_grant", "error_description": "Bad Request"}, "invalid_grant"),
        (500, {"error": "server_error", "error_description": "backend down"}, "server_error"),
        (503, {}, ""),
    ],
)
async def test_a_refused_exchange_logs_the_status_and_googles_error_code(aiohttp_server, status, body, error):
    _, logged = await failed_exchange(await token_endpoint(aiohttp_server, status, body))
    assert len(logged) == 1
    assert (logged[0]["status"], logged[0]["error"], logged[0]["log_level"]) == (status, error, "warning")


async def test_an_unreachable_token_endpoint_logs_the_network_error(unused_tcp_port):
    refused, logged = await failed_exchange(f"http://127.0.0.1:{unused_tcp_port}/token")
    assert refused.code == "oauth_unreachable"
    assert len(logged) == 1
    assert logged[0]["network_error"].startswith("ClientConnectorError")
