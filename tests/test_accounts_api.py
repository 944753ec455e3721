"""The account endpoints of SPEC §3: owner, admin and other-user checks, validation,
the SPEC §9 view (never a token) and active cooldowns.

Accounts are put in the database directly here; ``test_oauth.py`` adds them the real way.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg2
import psycopg2.extras
import pytest

from tests.conftest import ADMIN_KEY, bearer, create_user

ACCOUNT_FIELDS = {
    "account_id",
    "user_id",
    "email",
    "name",
    "is_shared",
    "status",
    "disabled_reason",
    "project_id",
    "tier",
    "access_token_expires_at",
    "cooldowns",
    "last_used_at",
    "created_at",
    "updated_at",
    "validation_url",
    "kind",
}
ERROR_FIELDS = {"message", "type", "code", "param"}
MALFORMED_IDS = ["abc", "99999999999999999999", "-1", "1.5", "0x1", "1e3", "+1"]
ADMIN = bearer(ADMIN_KEY)


# --- helpers (test_oauth.py uses them too) ---------------------------------------------


def sql(dsn: str, query: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Run one statement on the test database; rows as dicts (empty for no result set)."""
    conn = psycopg2.connect(dsn)
    try:
        conn.autocommit = True
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(query, params or {})
            return [dict(r) for r in cur.fetchall()] if cur.description else []
    finally:
        conn.close()


async def api_error(response: Any, status: int, error_type: str = "invalid_request_error") -> dict[str, Any]:
    """Check an /api/* error response and return its ``error`` object."""
    text = await response.text()
    assert response.status == status, text
    assert response.content_type == "application/json", text
    body = await response.json()
    assert body["success"] is False
    assert set(body["error"]) == ERROR_FIELDS
    assert body["error"]["type"] == error_type
    assert body["error"]["message"]
    return body["error"]


async def ok(response: Any) -> Any:
    text = await response.text()
    assert response.status == 200, text
    body = await response.json()
    assert body["success"] is True
    return body["data"]


def parse_time(value: str) -> datetime:
    assert isinstance(value, str) and value.endswith("Z"), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def check_timestamp(value: str) -> None:
    parse_time(value)


def insert_account(dsn: str, user_id: int, email: str, **fields: Any) -> int:
    values = {
        "user_id": user_id,
        "email": email,
        "name": email,
        "project_id": "proj-" + email.split("@")[0],
        "tier": "free-tier",
        "refresh_token": f"plain:1//refresh-secret-{email}",
        "access_token": f"plain:ya29.access-secret-{email}",
        **fields,
    }
    columns = ", ".join(values)
    placeholders = ", ".join(f"%({c})s" for c in values)
    rows = sql(dsn, f"INSERT INTO accounts ({columns}) VALUES ({placeholders}) RETURNING account_id", values)
    return rows[0]["account_id"]


@pytest.fixture
async def world(client, db_dsn) -> dict[str, Any]:
    """alice (two accounts), bob (one), carol (none)."""
    alice = await create_user(client, "alice")
    bob = await create_user(client, "bob")
    carol = await create_user(client, "carol")
    a1 = insert_account(
        db_dsn,
        alice["user_id"],
        "a1@example.com",
        access_token_expires_at=datetime.fromisoformat("2030-01-01T00:00:00+00:00"),
    )
    a2 = insert_account(db_dsn, alice["user_id"], "a2@example.com", is_shared=1)
    b1 = insert_account(db_dsn, bob["user_id"], "b1@example.com")
    return {
        "alice": bearer(alice["api_key"]),
        "bob": bearer(bob["api_key"]),
        "carol": bearer(carol["api_key"]),
        "alice_id": alice["user_id"],
        "bob_id": bob["user_id"],
        "a1": a1,
        "a2": a2,
        "b1": b1,
    }


def no_secrets(text: str) -> None:
    assert "secret" not in text, text
    assert "refresh_token" not in text
    assert '"access_token"' not in text


# --- list ------------------------------------------------------------------------------


async def test_list_shows_own_accounts_only(client, world):
    response = await client.get("/api/accounts", headers=world["alice"])
    no_secrets(await response.text())
    accounts = await ok(response)
    assert [a["account_id"] for a in accounts] == [world["a1"], world["a2"]]
    for account in accounts:
        assert set(account) == ACCOUNT_FIELDS
        assert account["user_id"] == world["alice_id"]
        assert account["status"] == 1
        assert account["disabled_reason"] is None
        assert account["cooldowns"] == []
        assert account["last_used_at"] is None
        check_timestamp(account["created_at"])
        check_timestamp(account["updated_at"])
    first = accounts[0]
    assert first["email"] == "a1@example.com"
    assert first["name"] == "a1@example.com"
    assert first["project_id"] == "proj-a1"
    assert first["tier"] == "free-tier"
    assert first["is_shared"] == 0
    assert accounts[1]["is_shared"] == 1
    assert first["access_token_expires_at"] == "2030-01-01T00:00:00Z"
    assert accounts[1]["access_token_expires_at"] is None
    bob = await ok(await client.get("/api/accounts", headers=world["bob"]))
    assert [a["account_id"] for a in bob] == [world["b1"]]
    assert await ok(await client.get("/api/accounts", headers=world["carol"])) == []


async def test_list_for_admin_and_user_filter(client, world):
    everything = await ok(await client.get("/api/accounts", headers=ADMIN))
    assert [a["account_id"] for a in everything] == [world["a1"], world["a2"], world["b1"]]
    only_bob = await ok(await client.get(f"/api/accounts?user_id={world['bob_id']}", headers=ADMIN))
    assert [a["account_id"] for a in only_bob] == [world["b1"]]
    assert await ok(await client.get("/api/accounts?user_id=999999", headers=ADMIN)) == []
    # A user may name themself, never another user.
    own = await ok(await client.get(f"/api/accounts?user_id={world['alice_id']}", headers=world["alice"]))
    assert [a["account_id"] for a in own] == [world["a1"], world["a2"]]
    await api_error(await client.get(f"/api/accounts?user_id={world['bob_id']}", headers=world["alice"]), 404)
    # "²" and "١" pass str.isdigit; they must be refused as cleanly as "abc".
    for bad in ("abc", "-1", "1.5", "9" * 30, "²", "١"):
        for path in ("/api/accounts", "/api/quotas/consumption"):
            error = await api_error(await client.get(path, params={"user_id": bad}, headers=ADMIN), 400)
            assert error["param"] == "user_id", (path, bad)


async def test_list_shows_active_cooldowns_only(client, world, db_dsn):
    sql(
        db_dsn,
        """INSERT INTO cooldowns (account_id, model_name, until, reason) VALUES
           (%(a)s, 'gemini-3-pro-high', '2099-01-01T00:00:00Z', 'quota exhausted'),
           (%(a)s, 'claude-sonnet-4-5', '2099-02-03T04:05:06Z', 'rate limited'),
           (%(a)s, 'gemini-2.5-flash', now() - interval '1 minute', 'old')""",
        {"a": world["a1"]},
    )
    expected = [
        {"model_name": "claude-sonnet-4-5", "until": "2099-02-03T04:05:06Z", "reason": "rate limited"},
        {"model_name": "gemini-3-pro-high", "until": "2099-01-01T00:00:00Z", "reason": "quota exhausted"},
    ]
    accounts = await ok(await client.get("/api/accounts", headers=world["alice"]))
    assert accounts[0]["cooldowns"] == expected
    assert accounts[1]["cooldowns"] == []
    one = await ok(await client.get(f"/api/accounts/{world['a1']}", headers=world["alice"]))
    assert one["cooldowns"] == expected
    # The views of the updates show them too.
    renamed = await ok(
        await client.put(f"/api/accounts/{world['a1']}/name", json={"name": "x"}, headers=world["alice"])
    )
    assert renamed["cooldowns"] == expected


# --- one account -----------------------------------------------------------------------


async def test_get_owner_admin_and_others(client, world):
    path = f"/api/accounts/{world['a1']}"
    response = await client.get(path, headers=world["alice"])
    no_secrets(await response.text())
    account = await ok(response)
    assert set(account) == ACCOUNT_FIELDS
    assert account["account_id"] == world["a1"]
    assert account["email"] == "a1@example.com"
    assert (await ok(await client.get(path, headers=ADMIN)))["account_id"] == world["a1"]
    # Another user's account and a missing one answer alike.
    other = await api_error(await client.get(path, headers=world["bob"]), 404)
    missing = await api_error(await client.get("/api/accounts/999999", headers=world["bob"]), 404)
    assert other == missing
    for bad in MALFORMED_IDS:
        await api_error(await client.get(f"/api/accounts/{bad}", headers=world["alice"]), 404)


async def test_every_endpoint_needs_a_key(client, world):
    a1 = world["a1"]
    calls = [
        ("GET", "/api/accounts", None),
        ("GET", f"/api/accounts/{a1}", None),
        ("PUT", f"/api/accounts/{a1}/status", {"status": 0}),
        ("PUT", f"/api/accounts/{a1}/name", {"name": "x"}),
        ("PUT", f"/api/accounts/{a1}/type", {"is_shared": 1}),
        ("DELETE", f"/api/accounts/{a1}", None),
    ]
    for method, path, body in calls:
        response = await client.request(method, path, json=body)
        await api_error(response, 401, "authentication_error")
        bad_key = await client.request(method, path, json=body, headers=bearer("sk-" + "x" * 48))
        await api_error(bad_key, 401, "authentication_error")
    assert len(await ok(await client.get("/api/accounts", headers=ADMIN))) == 3


# --- status ----------------------------------------------------------------------------


async def test_status_disable_and_enable(client, world, db_dsn):
    path = f"/api/accounts/{world['a1']}/status"
    before = await ok(await client.get(f"/api/accounts/{world['a1']}", headers=world["alice"]))
    sql(
        db_dsn,
        "UPDATE accounts SET refresh_failures = 3, refresh_retry_at = now() + interval '1 hour' "
        "WHERE account_id = %(a)s",
        {"a": world["a1"]},
    )
    disabled = await ok(await client.put(path, json={"status": 0}, headers=world["alice"]))
    assert disabled["status"] == 0
    assert disabled["disabled_reason"] == "disabled by owner"
    assert parse_time(disabled["updated_at"]) > parse_time(before["updated_at"])
    stored = sql(
        db_dsn, "SELECT status, disabled_reason FROM accounts WHERE account_id = %(a)s", {"a": world["a1"]}
    )
    assert stored == [{"status": 0, "disabled_reason": "disabled by owner"}]
    enabled = await ok(await client.put(path, json={"status": True}, headers=world["alice"]))
    assert enabled["status"] == 1
    assert enabled["disabled_reason"] is None
    # Enabling lets the token refresh be tried at once.
    row = sql(
        db_dsn,
        "SELECT refresh_failures, refresh_retry_at FROM accounts WHERE account_id = %(a)s",
        {"a": world["a1"]},
    )
    assert row == [{"refresh_failures": 0, "refresh_retry_at": None}]
    # The other account is untouched.
    other = await ok(await client.get(f"/api/accounts/{world['a2']}", headers=world["alice"]))
    assert other["status"] == 1


async def test_status_clears_an_automatic_reason(client, world, db_dsn):
    sql(
        db_dsn,
        "UPDATE accounts SET status = 0, disabled_reason = 'invalid_grant: revoked' WHERE account_id = %(a)s",
        {"a": world["a1"]},
    )
    shown = await ok(await client.get(f"/api/accounts/{world['a1']}", headers=world["alice"]))
    assert shown["disabled_reason"] == "invalid_grant: revoked"
    enabled = await ok(
        await client.put(f"/api/accounts/{world['a1']}/status", json={"status": 1}, headers=world["alice"])
    )
    assert (enabled["status"], enabled["disabled_reason"]) == (1, None)


async def test_status_admin_others_and_validation(client, world):
    path = f"/api/accounts/{world['b1']}/status"
    await api_error(await client.put(path, json={"status": 0}, headers=world["alice"]), 404)
    assert (await ok(await client.get(f"/api/accounts/{world['b1']}", headers=world["bob"])))["status"] == 1
    by_admin = await ok(await client.put(path, json={"status": 0}, headers=ADMIN))
    assert (by_admin["status"], by_admin["disabled_reason"]) == (0, "disabled by owner")
    for body in ({}, {"status": 2}, {"status": "1"}, {"status": None}, {"status": 1.0}, {"status": -1}):
        error = await api_error(await client.put(path, json=body, headers=world["bob"]), 400)
        assert error["param"] == "status", body
    not_json = await client.put(path, data=b"{", headers=world["bob"])
    await api_error(not_json, 400)
    array = await client.put(path, json=[1], headers=world["bob"])
    await api_error(array, 400)
    await api_error(await client.put("/api/accounts/999999/status", json={"status": 1}, headers=ADMIN), 404)
    for bad in MALFORMED_IDS:
        response = await client.put(f"/api/accounts/{bad}/status", json={"status": 1}, headers=ADMIN)
        await api_error(response, 404)
    assert (await ok(await client.get(f"/api/accounts/{world['b1']}", headers=world["bob"])))["status"] == 0


# --- name ------------------------------------------------------------------------------


async def test_rename(client, world, db_dsn):
    path = f"/api/accounts/{world['a1']}/name"
    renamed = await ok(await client.put(path, json={"name": "  work account  "}, headers=world["alice"]))
    assert renamed["name"] == "work account"
    assert renamed["email"] == "a1@example.com"
    longest = await ok(await client.put(path, json={"name": "é" * 100}, headers=world["alice"]))
    assert longest["name"] == "é" * 100
    by_admin = await ok(await client.put(path, json={"name": "by admin"}, headers=ADMIN))
    assert by_admin["name"] == "by admin"
    stored = sql(db_dsn, "SELECT name FROM accounts WHERE account_id = %(a)s", {"a": world["a1"]})
    assert stored == [{"name": "by admin"}]


async def test_rename_validation_and_others(client, world):
    path = f"/api/accounts/{world['a1']}/name"
    for body in (
        {},
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 101},
        {"name": 5},
        {"name": None},
        {"name": ["a"]},
    ):
        error = await api_error(await client.put(path, json=body, headers=world["alice"]), 400)
        assert error["param"] == "name", body
    await api_error(await client.put(path, json={"name": "mine now"}, headers=world["bob"]), 404)
    account = await ok(await client.get(f"/api/accounts/{world['a1']}", headers=world["alice"]))
    assert account["name"] == "a1@example.com"


# --- type ------------------------------------------------------------------------------


async def test_type_switch(client, world, db_dsn):
    path = f"/api/accounts/{world['a1']}/type"
    shared = await ok(await client.put(path, json={"is_shared": 1}, headers=world["alice"]))
    assert shared["is_shared"] == 1
    dedicated = await ok(await client.put(path, json={"is_shared": False}, headers=world["alice"]))
    assert dedicated["is_shared"] == 0
    by_admin = await ok(await client.put(path, json={"is_shared": 1}, headers=ADMIN))
    assert by_admin["is_shared"] == 1
    stored = sql(db_dsn, "SELECT is_shared FROM accounts WHERE account_id = %(a)s", {"a": world["a1"]})
    assert stored == [{"is_shared": 1}]
    await api_error(await client.put(path, json={"is_shared": 0}, headers=world["bob"]), 404)
    for body in ({}, {"is_shared": 2}, {"is_shared": "0"}, {"is_shared": None}):
        error = await api_error(await client.put(path, json=body, headers=world["alice"]), 400)
        assert error["param"] == "is_shared", body
    assert (
        sql(db_dsn, "SELECT is_shared FROM accounts WHERE account_id = %(a)s", {"a": world["a1"]}) == stored
    )


# --- delete ----------------------------------------------------------------------------


async def test_delete(client, world, db_dsn):
    a1 = world["a1"]
    sql(
        db_dsn,
        """INSERT INTO model_quotas (account_id, model_name, quota_group, quota) VALUES (%(a)s, 'm', 'm', 0.5);
           INSERT INTO cooldowns (account_id, model_name, until, reason) VALUES (%(a)s, 'm', now(), 'x')""",
        {"a": a1},
    )
    # Another user: 404, and the account stays.
    await api_error(await client.delete(f"/api/accounts/{a1}", headers=world["bob"]), 404)
    assert sql(db_dsn, "SELECT count(*) AS n FROM accounts WHERE account_id = %(a)s", {"a": a1}) == [{"n": 1}]
    body = await (await client.delete(f"/api/accounts/{a1}", headers=world["alice"])).json()
    assert body == {"success": True, "data": {"account_id": a1}, "message": "account deleted"}
    for table in ("accounts", "model_quotas", "cooldowns"):
        rows = sql(db_dsn, f"SELECT count(*) AS n FROM {table} WHERE account_id = %(a)s", {"a": a1})
        assert rows == [{"n": 0}], table
    await api_error(await client.delete(f"/api/accounts/{a1}", headers=world["alice"]), 404)
    await api_error(await client.get(f"/api/accounts/{a1}", headers=world["alice"]), 404)
    remaining = await ok(await client.get("/api/accounts", headers=world["alice"]))
    assert [a["account_id"] for a in remaining] == [world["a2"]]
    # The admin deletes anyone's.
    assert (await ok(await client.delete(f"/api/accounts/{world['b1']}", headers=ADMIN)))[
        "account_id"
    ] == world["b1"]
    assert await ok(await client.get("/api/accounts", headers=world["bob"])) == []
    for bad in MALFORMED_IDS:
        await api_error(await client.delete(f"/api/accounts/{bad}", headers=ADMIN), 404)


async def test_deleting_the_user_deletes_the_accounts(client, world):
    await ok(await client.delete(f"/api/users/{world['alice_id']}", headers=ADMIN))
    remaining = await ok(await client.get("/api/accounts", headers=ADMIN))
    assert [a["account_id"] for a in remaining] == [world["b1"]]
