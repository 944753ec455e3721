"""Error messages that say what to do (issue 11 #9): the limit of a 413, the endpoint a
404 probably meant, the way to add an account."""

from __future__ import annotations

from typing import Any

import pytest

from antigv.app import create_app
from tests.conftest import bearer, create_user, make_config


async def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    return (await response.json())["error"]


async def test_413_states_the_limit(aiohttp_client, db_dsn, admin):
    client = await aiohttp_client(create_app(make_config(db_dsn, security={"max_request_size": "1kb"})))
    for path in ("/api/users", "/v1/chat/completions"):
        error = await error_of(await client.post(path, json={"name": "x" * 2048}, headers=admin), 413)
        assert error["code"] == "request_too_large"
        assert "1kb" in error["message"] and "security.max_request_size" in error["message"], error


@pytest.mark.parametrize(
    ("method", "path", "meant", "why"),
    [
        ("GET", "/models", "/v1/models", "base URL ends in /v1"),
        ("POST", "/chat/completions", "/v1/chat/completions", "base URL ends in /v1"),
        ("GET", "/v1/models/", "/v1/models", "trailing slash"),
        ("POST", "/v1/chat/completions/", "/v1/chat/completions", "trailing slash"),
        ("GET", "/api/user/me/", "/api/user/me", "trailing slash"),
        ("POST", "/v1/v1/chat/completions", "/v1/chat/completions", "already ends in /v1"),
        ("GET", "/models/", "/v1/models", "base URL ends in /v1"),
    ],
)
async def test_no_such_endpoint_suggests_the_path_meant(client, method, path, meant, why):
    error = await error_of(await client.request(method, path, json={}), 404)
    assert error["code"] == "unknown_route"
    assert f"did you mean {meant}?" in error["message"]
    assert why in error["message"]


async def test_no_such_endpoint_without_a_close_one_suggests_nothing(client):
    for path in ("/nothing", "/v1/embeddings", "/api/users/1/nothing"):
        error = await error_of(await client.get(path), 404)
        assert error["message"] == "no such endpoint"


async def test_models_without_an_account_says_how_to_add_one(client):
    user = await create_user(client)
    error = await error_of(await client.get("/v1/models", headers=bearer(user["api_key"])), 403)
    assert error["code"] == "no_account"
    assert "add an account via /api/oauth/authorize" in error["message"]
