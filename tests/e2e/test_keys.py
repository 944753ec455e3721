"""Several API keys per user, each with its own limits (issue 14), through both surfaces,
on one instance and on two sharing the database; time is the injected clock's."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import anthropic
import openai
import psycopg2
import pytest

from antigv.appkeys import KEY_LIMITER
from antigv.store.db import load_migrations, migrate
from tests.conftest import ADMIN_KEY, bearer
from tests.e2e.conftest import E2E, FLASH, GEMINI, user

KEY_FIELDS = {
    "key_id",
    "user_id",
    "name",
    "key_prefix",
    "is_primary",
    "status",
    "created_at",
    "updated_at",
    "last_used_at",
    "expires_at",
    "rpm",
    "tpm",
    "max_concurrency",
    "allowed_models",
    "monthly_token_budget",
    "limits_locked",
}


async def api(
    e2e: E2E, method: str, path: str, key: str, body: Any = None, gw: Any = None
) -> tuple[int, Any]:
    response = await (gw or e2e.gw).http.request(method, path, json=body, headers=bearer(key))
    return response.status, await response.json()


async def new_key(e2e: E2E, key: str | None = None, path: str = "/api/keys", **fields: Any) -> dict[str, Any]:
    status, body = await api(e2e, "POST", path, key or e2e.user["api_key"], {"name": "agent", **fields})
    assert status == 200, body
    return body["data"]


async def chat(e2e: E2E, key: str, gw: Any = None, model: str = GEMINI) -> Any:
    """A raw chat completion: (status, headers, body)."""
    response = await (gw or e2e.gw).http.post(
        "/v1/chat/completions", json={"model": model, "messages": user("hi")}, headers=bearer(key)
    )
    return response.status, response.headers, await response.json()


async def reconcile(e2e: E2E) -> None:
    """One round of every instance's exchange with the others (as its loop does each second)."""
    for gateway in e2e.gateways:
        await gateway.app[KEY_LIMITER].reconcile()
    for gateway in e2e.gateways:
        await gateway.app[KEY_LIMITER].reconcile()


# --------------------------------------------------------------------------- keys


async def test_keys_are_listed_without_secrets_and_each_one_works(e2e: E2E) -> None:
    await e2e.add_account()
    status, body = await api(e2e, "GET", "/api/keys", e2e.user["api_key"])
    assert status == 200
    (default,) = body["data"]
    assert set(default) == KEY_FIELDS
    assert (
        default["name"] == "default"
        and default["is_primary"]
        and default["key_prefix"] == e2e.user["key_prefix"]
    )

    created = await new_key(e2e, rpm=5, allowed_models=["gemini-*"])
    assert set(created) == KEY_FIELDS | {"api_key"} and created["api_key"].startswith(created["key_prefix"])
    assert (created["rpm"], created["allowed_models"], created["is_primary"]) == (5, ["gemini-*"], False)
    _, body = await api(e2e, "GET", "/api/keys", e2e.user["api_key"])
    assert [key["name"] for key in body["data"]] == ["default", "agent"]
    assert all("api_key" not in key and "key_hash" not in key for key in body["data"])

    status, _, reply = await chat(e2e, created["api_key"])
    assert status == 200
    (row,) = await e2e.usage_rows(key_id=created["key_id"])
    assert row["user_id"] == e2e.user["user_id"]
    status, body = await api(e2e, "GET", f"/api/keys/{created['key_id']}", e2e.user["api_key"])
    assert (
        body["data"]["month_requests"] == 1 and body["data"]["month_tokens"] == reply["usage"]["total_tokens"]
    )
    assert body["data"]["last_used_at"] is not None
    status, body = await api(
        e2e, "GET", f"/api/quotas/consumption?key_id={created['key_id']}", e2e.user["api_key"]
    )
    assert [r["key_id"] for r in body["data"]] == [created["key_id"]]


async def test_another_users_key_is_a_404_and_the_admin_acts_with_user_id(e2e: E2E) -> None:
    bob = await e2e.create_user("bob")
    bobs = await new_key(e2e, bob["api_key"])
    for method, body in (("GET", None), ("PUT", {"name": "x"}), ("DELETE", None)):
        status, answer = await api(e2e, method, f"/api/keys/{bobs['key_id']}", e2e.user["api_key"], body)
        assert status == 404 and answer["success"] is False
    status, _ = await api(e2e, "GET", f"/api/keys?user_id={bob['user_id']}", e2e.user["api_key"])
    assert status == 404
    made = await new_key(e2e, ADMIN_KEY, f"/api/keys?user_id={bob['user_id']}", tpm=1000, limits_locked=1)
    assert made["user_id"] == bob["user_id"] and made["limits_locked"] == 1
    status, body = await api(e2e, "POST", "/api/keys", ADMIN_KEY, {"name": "x"})
    assert status == 400 and "user_id" in body["error"]["message"]


async def test_revoked_deleted_and_expired_keys_are_401_at_once(e2e: E2E) -> None:
    await e2e.add_account()
    revoked = await new_key(e2e)
    deleted = await new_key(e2e)
    expiring = await new_key(e2e, expires_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat())
    for key in (revoked, deleted, expiring):
        assert (await chat(e2e, key["api_key"]))[0] == 200  # cached now
    status, body = await api(e2e, "PUT", f"/api/keys/{revoked['key_id']}", e2e.user["api_key"], {"status": 0})
    assert status == 200 and body["data"]["status"] == 0
    status, _ = await api(e2e, "DELETE", f"/api/keys/{deleted['key_id']}", e2e.user["api_key"])
    assert status == 200
    e2e.clock.offset += 3601
    for key, code in ((revoked, "key_revoked"), (deleted, "invalid_api_key"), (expiring, "key_expired")):
        status, _, body = await chat(e2e, key["api_key"])
        assert status == 401, body
        assert body["error"]["type"] == "authentication_error"
        assert body["error"]["code"] in (code, None), body
    assert (await chat(e2e, e2e.user["api_key"]))[0] == 200
    status, body = await api(
        e2e, "POST", "/api/keys", e2e.user["api_key"], {"name": "x", "expires_at": "2001-01-01"}
    )
    assert status == 400 and body["error"]["param"] == "expires_at"


async def test_a_locked_keys_owner_may_rename_and_lower_but_not_raise_clear_or_unlock(e2e: E2E) -> None:
    key = await new_key(
        e2e,
        ADMIN_KEY,
        f"/api/keys?user_id={e2e.user['user_id']}",
        rpm=10,
        allowed_models=["gemini-*"],
        limits_locked=1,
    )
    path, mine = f"/api/keys/{key['key_id']}", e2e.user["api_key"]
    for change in (
        {"rpm": 20},
        {"rpm": None},
        {"limits_locked": 0},
        {"allowed_models": ["claude-*"]},
        {"tpm": 5, "rpm": 11},
    ):
        status, body = await api(e2e, "PUT", path, mine, change)
        assert status == 403, (change, body)
        assert body["error"]["code"] == "limits_locked"
    status, body = await api(
        e2e,
        "PUT",
        path,
        mine,
        {"name": "renamed", "rpm": 5, "tpm": 100, "allowed_models": ["gemini-3*", "gemini-pro-agent"]},
    )
    assert status == 200, body
    assert (body["data"]["name"], body["data"]["rpm"], body["data"]["tpm"]) == ("renamed", 5, 100)
    status, body = await api(e2e, "PUT", path, mine, {"status": 0})
    assert status == 200
    status, body = await api(e2e, "PUT", path, mine, {"status": 1})
    assert status == 403
    status, body = await api(e2e, "PUT", path, ADMIN_KEY, {"status": 1, "limits_locked": 0, "rpm": None})
    assert status == 200 and body["data"]["rpm"] is None and body["data"]["limits_locked"] == 0
    status, body = await api(e2e, "PUT", path, mine, {"rpm": 1000})
    assert status == 200


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "name"),
        ({"name": "x", "rpm": 0}, "rpm"),
        ({"name": "x", "tpm": "10"}, "tpm"),
        ({"name": "x", "allowed_models": []}, "allowed_models"),
        ({"name": "x", "allowed_models": ["a*b"]}, "allowed_models"),
        ({"name": "x", "expires_at": "soon"}, "expires_at"),
        ({"name": "x", "limit": 3}, "limit"),
    ],
)
async def test_bad_key_fields_are_400_naming_them(e2e: E2E, body: dict[str, Any], param: str) -> None:
    status, answer = await api(e2e, "POST", "/api/keys", e2e.user["api_key"], body)
    assert status == 400 and answer["error"]["param"] == param


# --------------------------------------------------------------------------- limits


async def test_rpm_counts_down_in_the_headers_and_retry_after_is_honest(e2e: E2E) -> None:
    await e2e.add_account()
    key = (await new_key(e2e, rpm=3))["api_key"]
    remaining = []
    for _ in range(3):
        status, headers, _ = await chat(e2e, key)
        assert status == 200
        assert headers["x-ratelimit-limit-requests"] == "3"
        remaining.append(int(headers["x-ratelimit-remaining-requests"]))
        assert headers["x-ratelimit-reset-requests"].endswith("s")
        e2e.clock.offset += 1
    assert remaining == [2, 1, 0]
    status, headers, body = await chat(e2e, key)
    assert status == 429 and body["error"]["type"] == "rate_limit_error"
    assert body["error"]["code"] == "rate_limit_requests"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    wait = int(headers["Retry-After"])
    assert 55 <= wait <= 58  # the first request leaves the minute 57 s from now
    e2e.clock.offset += wait - 1
    assert (await chat(e2e, key))[0] == 429  # not before
    e2e.clock.offset += 1
    status, headers, _ = await chat(e2e, key)
    assert status == 200 and headers["x-ratelimit-remaining-requests"] == "0"
    # Other keys of the same user are not limited by it.
    assert (await chat(e2e, e2e.user["api_key"]))[0] == 200


async def test_tpm_blocks_until_the_tokens_leave_the_minute(e2e: E2E) -> None:
    await e2e.add_account()
    key = (await new_key(e2e, tpm=3))["api_key"]
    status, headers, first = await chat(e2e, key)
    assert status == 200 and headers["x-ratelimit-remaining-tokens"] == "3"
    used = first["usage"]["prompt_tokens"] + first["usage"]["completion_tokens"]
    assert used >= 3  # the double's reply costs more than the key's minute
    e2e.clock.offset += 5
    status, headers, body = await chat(e2e, key)
    assert status == 429 and body["error"]["code"] == "rate_limit_tokens"
    assert headers["x-ratelimit-remaining-tokens"] == "0"
    wait = int(headers["Retry-After"])
    assert 54 <= wait <= 56
    e2e.clock.offset += wait
    status, headers, _ = await chat(e2e, key)
    assert status == 200 and headers["x-ratelimit-remaining-tokens"] == "3"


async def test_max_concurrency_caps_parallel_streams(e2e: E2E) -> None:
    await e2e.add_account()
    key = {"api_key": (await new_key(e2e, max_concurrency=2))["api_key"]}
    e2e.double.set_transport(frame_delay=0.2)
    client = e2e.client(key)

    async def stream() -> str:
        chunks = await client.chat.completions.create(model=GEMINI, messages=user("hi"), stream=True)
        return "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])

    running = [asyncio.create_task(stream()) for _ in range(2)]
    for _ in range(100):
        if len(e2e.double.chat_requests) == 2:
            break
        await asyncio.sleep(0.01)
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model=GEMINI, messages=user("hi"))
    assert caught.value.code == "concurrency_limit"
    assert caught.value.response.headers["retry-after"] == "1"
    assert await asyncio.gather(*running) == ["Hello world!"] * 2
    e2e.double.set_transport(frame_delay=0.0)
    assert (await client.chat.completions.create(model=GEMINI, messages=user("hi"))).choices


async def test_allowed_models_on_chat_messages_and_the_model_list(e2e: E2E) -> None:
    await e2e.add_account()
    key = await new_key(e2e, allowed_models=["gemini-3*", "gemini-pro-agent"])
    listed = await e2e.client(key).models.list()
    ids = {model.id for model in listed.data}
    assert "gemini-3-flash" in ids and "gemini-pro-agent" in ids
    assert not any(model.startswith("claude-") for model in ids)
    assert "gemini-3-pro-high" in ids  # an alias of an allowed model
    status, _, body = await chat(e2e, key["api_key"], model="claude-sonnet-4-6")
    assert status == 403 and body["error"]["code"] == "model_not_allowed"
    assert "claude-sonnet-4-6" in body["error"]["message"]
    assert (await chat(e2e, key["api_key"], model=FLASH))[0] == 200
    anthropic_client = anthropic.AsyncAnthropic(
        base_url=str(e2e.gw.server.make_url("/")), api_key=key["api_key"], max_retries=0
    )
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        await anthropic_client.messages.create(model="claude-opus-4-6", max_tokens=10, messages=user("hi"))
    assert caught.value.body["error"]["type"] == "permission_error"
    assert (await anthropic_client.messages.create(model=FLASH, max_tokens=10, messages=user("hi"))).content


async def test_the_monthly_budget_holds_until_the_month_turns(e2e: E2E) -> None:
    await e2e.add_account()
    key = (await new_key(e2e, monthly_token_budget=3))["api_key"]
    assert (await chat(e2e, key))[0] == 200
    status, headers, body = await chat(e2e, key)
    assert status == 429 and body["error"]["code"] == "monthly_budget_exhausted"
    now = e2e.clock.now()
    turn = datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=UTC)
    assert int(headers["Retry-After"]) == math.ceil((turn - now).total_seconds())
    # What the usage writer counted is what another instance, or a restart, reads.
    await e2e.usage_rows()
    other = await e2e.new_gateway()
    assert (await chat(e2e, key, gw=other))[0] == 200  # it knows nothing yet: within tolerance
    await reconcile(e2e)
    assert (await chat(e2e, key, gw=other))[0] == 429
    e2e.clock.offset += (turn - now).total_seconds() + 1
    assert (await chat(e2e, key))[0] == 200
    assert (await chat(e2e, key, gw=other))[0] == 200


async def test_rpm_and_concurrency_hold_across_two_instances(e2e: E2E) -> None:
    await e2e.add_account()
    other = await e2e.new_gateway()
    key = (await new_key(e2e, rpm=4))["api_key"]
    for gateway in (e2e.gw, e2e.gw, other):
        assert (await chat(e2e, key, gw=gateway))[0] == 200
    await reconcile(e2e)
    status, headers, _ = await chat(e2e, key, gw=other)
    assert status == 200 and headers["x-ratelimit-remaining-requests"] == "0"
    await reconcile(e2e)
    for gateway in (e2e.gw, other):
        status, headers, body = await chat(e2e, key, gw=gateway)
        assert status == 429, body
        # Honest across instances too: once the first requests leave the minute (its
        # 10-second bucket, for the other instance's), a retry is served.
        e2e.clock.offset += int(headers["Retry-After"])
        assert (await chat(e2e, key, gw=gateway))[0] == 200
        e2e.clock.offset -= int(headers["Retry-After"])
        await reconcile(e2e)


async def test_the_reconcile_loop_runs_by_itself(e2e: E2E) -> None:
    await e2e.add_account()
    first = await e2e.new_gateway(keys={"reconcile_interval": 0.05})
    second = await e2e.new_gateway(keys={"reconcile_interval": 0.05})
    key = (await new_key(e2e, rpm=2))["api_key"]
    assert (await chat(e2e, key, gw=first))[0] == 200
    assert (await chat(e2e, key, gw=first))[0] == 200
    for _ in range(100):  # within a few intervals, the second instance knows
        status, _, _ = await chat(e2e, key, gw=second)
        if status == 429:
            break
        await asyncio.sleep(0.05)
    assert status == 429


async def test_messages_surface_shares_the_limits_in_its_own_shape(e2e: E2E) -> None:
    await e2e.add_account()
    key = (await new_key(e2e, rpm=1))["api_key"]
    anthropic_client = anthropic.AsyncAnthropic(
        base_url=str(e2e.gw.server.make_url("/")), api_key=key, max_retries=0
    )
    raw = await anthropic_client.messages.with_raw_response.create(
        model=FLASH, max_tokens=10, messages=user("hi")
    )
    assert raw.headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(anthropic.RateLimitError) as caught:
        await anthropic_client.messages.create(model=FLASH, max_tokens=10, messages=user("hi"))
    assert caught.value.body["error"]["type"] == "rate_limit_error"
    assert int(caught.value.response.headers["retry-after"]) >= 59
    assert (await chat(e2e, key))[0] == 429  # one key, one minute, whichever surface


async def test_the_key_a_user_had_becomes_its_default_key(fresh_database: str) -> None:
    """Migration 0013 on a database whose users still hold their key themselves."""
    migrations = load_migrations()
    await migrate(fresh_database, [m for m in migrations if m.version < 13])
    conn = psycopg2.connect(fresh_database)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO users (name, key_hash, key_prefix) VALUES ('old', sha256('sk-old'::bytea), 'sk-old') "
                "RETURNING user_id"
            )
            (user_id,) = cur.fetchone()
        await migrate(fresh_database, migrations)
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT user_id, name, is_primary, key_prefix, key_hash = sha256('sk-old'::bytea) FROM api_keys"
            )
            assert cur.fetchall() == [(user_id, "default", True, "sk-old", True)]
    finally:
        conn.close()
