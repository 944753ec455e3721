"""OAuth tokens at rest (issue 11 #21): never in clear unless the operator says so, and an
instance without the right key says so instead of answering 500."""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog.testing

from antigv.app import create_app
from antigv.appkeys import DB, TASKS
from antigv.config import ConfigError
from antigv.store.crypto import TokenCipher, parse_key
from tests.conftest import bearer, create_user, make_config
from tests.quota_helpers import sql

SEALING_KEY = base64.b64encode(secrets.token_bytes(32)).decode()
OTHER_KEY = base64.b64encode(secrets.token_bytes(32)).decode()


def test_an_app_without_a_key_is_refused_unless_clear_text_is_allowed(db_dsn):
    with pytest.raises(ConfigError) as info:
        create_app(make_config(db_dsn, security={"allow_plaintext_tokens": False}))
    assert "security.token_encryption_key" in str(info.value)
    assert "allow_plaintext_tokens" in str(info.value)
    create_app(
        make_config(db_dsn, security={"allow_plaintext_tokens": False, "token_encryption_key": SEALING_KEY})
    )
    create_app(make_config(db_dsn, security={"allow_plaintext_tokens": True}))


async def add_sealed_account(client: Any, *, expires_in: timedelta) -> dict[str, Any]:
    """A user with one account whose tokens were sealed under SEALING_KEY."""
    user = await create_user(client)
    cipher = TokenCipher(parse_key(SEALING_KEY))
    await sql(
        client.app[DB],
        "INSERT INTO accounts (user_id, email, refresh_token, access_token, access_token_expires_at, project_id)"
        " VALUES (%(u)s, 'sealed@example.com', %(r)s, %(a)s, %(e)s, 'p')",
        u=user["user_id"],
        r=cipher.seal("refresh-token"),
        a=cipher.seal("access-token"),
        e=datetime.now(UTC) + expires_in,
    )
    return user


@pytest.mark.parametrize(
    ("security", "why"),
    [
        ({}, "security.token_encryption_key is empty"),
        ({"token_encryption_key": OTHER_KEY}, "not the key they were sealed with"),
    ],
)
async def test_sealed_tokens_without_their_key_are_a_clear_503_logged_once(
    aiohttp_client, db_dsn, security, why
):
    client = await aiohttp_client(create_app(make_config(db_dsn, security=security)))
    user = await add_sealed_account(client, expires_in=timedelta(hours=1))
    with structlog.testing.capture_logs() as logs:
        for _ in range(2):
            response = await client.get("/v1/models", headers=bearer(user["api_key"]))
            assert response.status == 503
            error = (await response.json())["error"]
            assert (error["type"], error["code"]) == ("service_unavailable", "token_key_mismatch")
            assert why in error["message"]
    told = [entry for entry in logs if entry["event"] == "sealed_tokens_unreadable"]
    assert len(told) == 1 and told[0]["log_level"] == "error"
    assert [entry for entry in logs if entry["event"] == "unhandled_error"] == []


async def test_the_refresh_task_reports_a_wrong_key_without_a_traceback(aiohttp_client, db_dsn):
    app = create_app(make_config(db_dsn, security={"token_encryption_key": OTHER_KEY}))
    client = await aiohttp_client(app)
    await add_sealed_account(client, expires_in=timedelta(seconds=30))  # due for a refresh
    with structlog.testing.capture_logs() as logs:
        for name, task in app[TASKS].tasks.items():
            task.next_run = 0.0 if name == "refresh_tokens" else float("inf")
        await app[TASKS]._tick()
    failed = [entry for entry in logs if entry["event"] == "task_failed"]
    assert [(entry["task"], entry["code"]) for entry in failed] == [("refresh_tokens", "token_key_mismatch")]
    assert all("exc_info" not in entry for entry in failed)
    assert [entry["event"] for entry in logs].count("sealed_tokens_unreadable") == 1
