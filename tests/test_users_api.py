"""The users endpoints of SPEC §3, each with its error cases.

Making a database per test costs about half a second, so the cases of one
endpoint share a test and say which case failed in the assertion message.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from tests.conftest import ADMIN_KEY, bearer, create_user

KEY_RE = re.compile(r"^sk-[A-Za-z0-9_-]{48}$")
USER_FIELDS = {"user_id", "name", "status", "prefer_shared", "key_prefix", "created_at", "updated_at"}
ERROR_FIELDS = {"message", "type", "code", "param"}
MALFORMED_IDS = ["abc", "99999999999999999999", "-1", "1.5", "0x1", "1e3", "+1", " 1"]
USER_ENDPOINTS = [
    ("GET", "/api/user/me"),
    ("GET", "/api/users"),
    ("POST", "/api/users"),
    ("POST", "/api/users/1/regenerate-key"),
    ("PUT", "/api/users/1/status"),
    ("PUT", "/api/users/1/preference"),
    ("DELETE", "/api/users/1"),
]


async def api_error(response: Any, status: int, error_type: str) -> dict[str, Any]:
    """Check an /api/* error response and return its ``error`` object."""
    text = await response.text()
    assert response.status == status, text
    assert response.content_type == "application/json"
    body = await response.json()
    assert body["success"] is False
    assert set(body) == {"success", "error"}
    assert set(body["error"]) == ERROR_FIELDS
    assert body["error"]["type"] == error_type
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    assert "Traceback" not in text
    return body["error"]


async def ok(response: Any) -> Any:
    text = await response.text()
    assert response.status == 200, text
    body = await response.json()
    assert body["success"] is True
    return body["data"]


def check_timestamp(value: str) -> None:
    assert value.endswith("Z"), value
    datetime.fromisoformat(value.replace("Z", "+00:00"))


async def me(client: Any, key: str) -> Any:
    return await client.get("/api/user/me", headers=bearer(key))


# --- create ------------------------------------------------------------------------------


async def test_create_returns_the_key_once(client, admin):
    response = await client.post("/api/users", json={"name": "alice", "prefer_shared": 1}, headers=admin)
    body = await response.json()
    assert response.status == 200
    assert body["success"] is True
    assert "not shown again" in body["message"]
    user = body["data"]
    assert set(user) == USER_FIELDS | {"api_key"}
    assert KEY_RE.match(user["api_key"]), user["api_key"]
    assert user["api_key"].startswith(user["key_prefix"])
    assert len(user["key_prefix"]) < len(user["api_key"]) // 2
    assert user["name"] == "alice"
    assert user["prefer_shared"] == 1
    assert user["status"] == 1
    assert isinstance(user["user_id"], int)
    check_timestamp(user["created_at"])
    check_timestamp(user["updated_at"])
    # The key works at once.
    profile = await ok(await me(client, user["api_key"]))
    assert profile["user_id"] == user["user_id"]


async def test_create_name_and_preference_are_optional(client, admin):
    user = await ok(await client.post("/api/users", json={}, headers=admin))
    assert user["name"] == ""
    assert user["prefer_shared"] == 0
    named = await ok(
        await client.post("/api/users", json={"name": "  bob  ", "prefer_shared": True}, headers=admin)
    )
    assert named["name"] == "bob"
    assert named["prefer_shared"] == 1
    null_name = await ok(await client.post("/api/users", json={"name": None}, headers=admin))
    assert null_name["name"] == ""


async def test_created_keys_are_distinct(client):
    keys = {(await create_user(client, f"u{i}"))["api_key"] for i in range(5)}
    assert len(keys) == 5
    assert all(KEY_RE.match(k) for k in keys)


async def test_create_rejects_bad_fields(client, admin):
    cases = [
        ({"prefer_shared": 2}, "prefer_shared"),
        ({"prefer_shared": -1}, "prefer_shared"),
        ({"prefer_shared": "1"}, "prefer_shared"),
        ({"prefer_shared": 1.0}, "prefer_shared"),
        ({"prefer_shared": None}, "prefer_shared"),
        ({"name": 5}, "name"),
        ({"name": ["a"]}, "name"),
        ({"name": "x" * 201}, "name"),
    ]
    for body, param in cases:
        response = await client.post("/api/users", json=body, headers=admin)
        error = await api_error(response, 400, "invalid_request_error")
        assert error["param"] == param, body
    # Nothing was created.
    assert (await ok(await client.get("/api/users", headers=admin)))["total"] == 0


async def test_create_names_an_unknown_field(client, admin):
    for body, field in (({"nmae": "alice"}, "nmae"), ({"name": "bob", "is_admin": True}, "is_admin")):
        response = await client.post("/api/users", json=body, headers=admin)
        error = await api_error(response, 400, "invalid_request_error")
        assert error["param"] == field
        assert field in error["message"]
    assert (await ok(await client.get("/api/users", headers=admin)))["total"] == 0


async def test_key_is_never_shown_again(client, admin):
    user = await create_user(client)
    key = user["api_key"]
    listing = await client.get("/api/users", headers=admin)
    assert key not in await listing.text()
    assert all("api_key" not in u for u in (await listing.json())["data"]["users"])
    profile = await me(client, key)
    assert key not in await profile.text()
    assert "api_key" not in (await profile.json())["data"]
    status = await client.put(f"/api/users/{user['user_id']}/status", json={"status": 1}, headers=admin)
    assert key not in await status.text()
    preference = await client.put(
        f"/api/users/{user['user_id']}/preference", json={"prefer_shared": 1}, headers=admin
    )
    assert key not in await preference.text()
    assert "api_key" not in (await preference.json())["data"]


# --- list ----------------------------------------------------------------------------------


async def test_list_pages(client, admin):
    created = [await create_user(client, f"user{i}") for i in range(5)]
    everyone = await ok(await client.get("/api/users", headers=admin))
    assert everyone["total"] == 5
    assert everyone["limit"] == 100
    assert everyone["offset"] == 0
    assert [u["user_id"] for u in everyone["users"]] == [u["user_id"] for u in created]
    assert all(set(u) == USER_FIELDS for u in everyone["users"])

    page = await ok(await client.get("/api/users", params={"limit": 2, "offset": 1}, headers=admin))
    assert page["total"] == 5
    assert (page["limit"], page["offset"]) == (2, 1)
    assert [u["name"] for u in page["users"]] == ["user1", "user2"]

    tail = await ok(await client.get("/api/users", params={"limit": 2, "offset": 4}, headers=admin))
    assert [u["name"] for u in tail["users"]] == ["user4"]
    beyond = await ok(await client.get("/api/users", params={"offset": 50}, headers=admin))
    assert beyond["users"] == []
    assert beyond["total"] == 5
    edge = await ok(await client.get("/api/users", params={"limit": 1000, "offset": 2**62}, headers=admin))
    assert edge["users"] == []


async def test_list_empty(client, admin):
    listing = await ok(await client.get("/api/users", headers=admin))
    assert listing["users"] == []
    assert listing["total"] == 0


async def test_list_rejects_bad_paging(client, admin):
    cases = [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "-5"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "1.5"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"offset": "x"}, "offset"),
        ({"offset": str(2**62 + 1)}, "offset"),
        ({"offset": "99999999999999999999999"}, "offset"),
    ]
    for params, param in cases:
        response = await client.get("/api/users", params=params, headers=admin)
        error = await api_error(response, 400, "invalid_request_error")
        assert error["param"] == param, params


# --- regenerate-key ----------------------------------------------------------------------------


async def test_regenerate_key(client, admin):
    user = await create_user(client)
    old = user["api_key"]
    await ok(await me(client, old))  # cached as valid on this instance
    response = await client.post(f"/api/users/{user['user_id']}/regenerate-key", headers=admin)
    body = await response.json()
    assert response.status == 200
    regenerated = body["data"]
    assert body["message"]
    new = regenerated["api_key"]
    assert KEY_RE.match(new)
    assert new != old
    assert set(regenerated) == USER_FIELDS | {"api_key"}
    assert regenerated["user_id"] == user["user_id"]
    assert new.startswith(regenerated["key_prefix"])
    assert regenerated["name"] == user["name"]
    # The old key stops at once; the new one works.
    await api_error(await me(client, old), 401, "authentication_error")
    profile = await ok(await me(client, new))
    assert profile["user_id"] == user["user_id"]
    assert profile["key_prefix"] == regenerated["key_prefix"]


async def test_regenerate_key_unknown_user(client, admin):
    response = await client.post("/api/users/424242/regenerate-key", headers=admin)
    assert (await api_error(response, 404, "invalid_request_error"))["code"] == "not_found"


# --- status ----------------------------------------------------------------------------------


async def test_disable_and_enable(client, admin):
    user = await create_user(client)
    key, user_id = user["api_key"], user["user_id"]
    await ok(await me(client, key))  # cached as valid on this instance
    disabled = await ok(await client.put(f"/api/users/{user_id}/status", json={"status": 0}, headers=admin))
    assert disabled["status"] == 0
    listed = (await ok(await client.get("/api/users", headers=admin)))["users"][0]
    assert listed["status"] == 0
    enabled = await ok(await client.put(f"/api/users/{user_id}/status", json={"status": 1}, headers=admin))
    assert enabled["status"] == 1
    assert (await ok(await me(client, key)))["status"] == 1


async def test_disabled_key_is_refused_at_once(client, admin):
    user = await create_user(client)
    key, user_id = user["api_key"], user["user_id"]
    await ok(await me(client, key))  # cached as valid on this instance
    await ok(await client.put(f"/api/users/{user_id}/status", json={"status": 0}, headers=admin))
    error = await api_error(await me(client, key), 403, "permission_error")
    assert error["code"] == "user_disabled"
    # A disabled user cannot change their own preference either.
    response = await client.put(
        f"/api/users/{user_id}/preference", json={"prefer_shared": 1}, headers=bearer(key)
    )
    await api_error(response, 403, "permission_error")


async def test_enabled_again_works_at_once_after_a_refusal(client, admin):
    user = await create_user(client)
    key, user_id = user["api_key"], user["user_id"]
    await ok(await client.put(f"/api/users/{user_id}/status", json={"status": 0}, headers=admin))
    await api_error(await me(client, key), 403, "permission_error")
    await ok(await client.put(f"/api/users/{user_id}/status", json={"status": 1}, headers=admin))
    await ok(await me(client, key))


async def test_status_accepts_booleans(client, admin):
    user = await create_user(client)
    path = f"/api/users/{user['user_id']}/status"
    assert (await ok(await client.put(path, json={"status": False}, headers=admin)))["status"] == 0
    assert (await ok(await client.put(path, json={"status": True}, headers=admin)))["status"] == 1


async def test_status_rejects_bad_values(client, admin):
    user = await create_user(client)
    path = f"/api/users/{user['user_id']}/status"
    for body in [{"status": 2}, {"status": "0"}, {"status": None}, {"status": 0.0}, {}, {"enabled": 0}]:
        response = await client.put(path, json=body, headers=admin)
        error = await api_error(response, 400, "invalid_request_error")
        assert error["param"] == "status", body
    assert (await ok(await me(client, user["api_key"])))["status"] == 1


async def test_status_unknown_user(client, admin):
    response = await client.put("/api/users/424242/status", json={"status": 0}, headers=admin)
    await api_error(response, 404, "invalid_request_error")


# --- preference ------------------------------------------------------------------------------


async def test_preference_by_the_user_themself(client):
    user = await create_user(client)
    key, path = user["api_key"], f"/api/users/{user['user_id']}/preference"
    updated = await ok(await client.put(path, json={"prefer_shared": 1}, headers=bearer(key)))
    assert updated["prefer_shared"] == 1
    assert set(updated) == USER_FIELDS
    assert (await ok(await me(client, key)))["prefer_shared"] == 1
    back = await ok(await client.put(path, json={"prefer_shared": 0}, headers=bearer(key)))
    assert back["prefer_shared"] == 0


async def test_preference_of_another_user_is_404(client):
    alice = await create_user(client, "alice")
    bob = await create_user(client, "bob")
    response = await client.put(
        f"/api/users/{bob['user_id']}/preference", json={"prefer_shared": 1}, headers=bearer(alice["api_key"])
    )
    error = await api_error(response, 404, "invalid_request_error")
    assert error["code"] == "not_found"
    # The same answer as for a user that does not exist: nothing is revealed.
    missing = await client.put(
        "/api/users/424242/preference", json={"prefer_shared": 1}, headers=bearer(alice["api_key"])
    )
    assert (await api_error(missing, 404, "invalid_request_error"))["message"] == error["message"]
    assert (await ok(await me(client, bob["api_key"])))["prefer_shared"] == 0


async def test_preference_by_admin(client, admin):
    user = await create_user(client)
    path = f"/api/users/{user['user_id']}/preference"
    assert (await ok(await client.put(path, json={"prefer_shared": 1}, headers=admin)))["prefer_shared"] == 1
    assert (await ok(await me(client, user["api_key"])))["prefer_shared"] == 1
    response = await client.put("/api/users/424242/preference", json={"prefer_shared": 1}, headers=admin)
    await api_error(response, 404, "invalid_request_error")


async def test_preference_rejects_bad_values(client):
    user = await create_user(client)
    path = f"/api/users/{user['user_id']}/preference"
    for body in [{"prefer_shared": 3}, {"prefer_shared": "yes"}, {}, {"prefer_shared": [1]}]:
        response = await client.put(path, json=body, headers=bearer(user["api_key"]))
        error = await api_error(response, 400, "invalid_request_error")
        assert error["param"] == "prefer_shared", body
    assert (await ok(await me(client, user["api_key"])))["prefer_shared"] == 0


# --- delete ----------------------------------------------------------------------------------


async def test_delete(client, admin):
    user = await create_user(client)
    other = await create_user(client, "other")
    key, user_id = user["api_key"], user["user_id"]
    await ok(await me(client, key))  # cached as valid on this instance
    response = await client.delete(f"/api/users/{user_id}", headers=admin)
    assert await ok(response) == {"user_id": user_id}
    await api_error(await me(client, key), 401, "authentication_error")
    # Gone for every endpoint now.
    await api_error(await client.delete(f"/api/users/{user_id}", headers=admin), 404, "invalid_request_error")
    response = await client.post(f"/api/users/{user_id}/regenerate-key", headers=admin)
    await api_error(response, 404, "invalid_request_error")
    response = await client.put(f"/api/users/{user_id}/status", json={"status": 1}, headers=admin)
    await api_error(response, 404, "invalid_request_error")
    listing = await ok(await client.get("/api/users", headers=admin))
    assert [u["user_id"] for u in listing["users"]] == [other["user_id"]]
    # Others are untouched.
    await ok(await me(client, other["api_key"]))


# --- me --------------------------------------------------------------------------------------


async def test_me_for_a_user(client):
    user = await create_user(client, "carol", prefer_shared=1)
    profile = await ok(await me(client, user["api_key"]))
    assert set(profile) == USER_FIELDS | {"is_admin"}
    assert profile["is_admin"] is False
    assert profile["user_id"] == user["user_id"]
    assert profile["name"] == "carol"
    assert profile["prefer_shared"] == 1
    assert profile["status"] == 1
    assert profile["key_prefix"] == user["key_prefix"]
    check_timestamp(profile["created_at"])


async def test_me_for_the_admin(client, admin):
    response = await client.get("/api/user/me", headers=admin)
    assert ADMIN_KEY not in await response.text()
    profile = await ok(response)
    assert profile["is_admin"] is True
    assert profile["user_id"] is None


# --- malformed ids ---------------------------------------------------------------------------


def id_requests(bad: str) -> list[tuple[str, str, dict | None]]:
    return [
        ("POST", f"/api/users/{bad}/regenerate-key", None),
        ("PUT", f"/api/users/{bad}/status", {"status": 0}),
        ("PUT", f"/api/users/{bad}/preference", {"prefer_shared": 1}),
        ("DELETE", f"/api/users/{bad}", None),
    ]


async def test_malformed_ids_are_404(client, admin):
    await create_user(client)  # user 1 exists: a lenient parse would find it
    for bad in MALFORMED_IDS:
        for method, path, body in id_requests(bad):
            response = await client.request(method, path, json=body, headers=admin)
            error = await api_error(response, 404, "invalid_request_error")
            assert error["code"] == "not_found", (method, path)
    listing = await ok(await client.get("/api/users", headers=admin))
    assert [(u["status"], u["prefer_shared"]) for u in listing["users"]] == [(1, 0)]


async def test_non_ascii_digit_ids_are_404(client, admin):
    await create_user(client)
    statuses = []
    for bad in ["²", "١"]:
        response = await client.put(f"/api/users/{bad}/status", json={"status": 0}, headers=admin)
        statuses.append(response.status)
    assert statuses == [404, 404]


async def test_large_but_valid_ids_are_plain_404(client, admin):
    # 18 digits fits a bigint: the database answers "no such user".
    response = await client.put(f"/api/users/{'9' * 18}/status", json={"status": 0}, headers=admin)
    await api_error(response, 404, "invalid_request_error")


# --- who may call what -------------------------------------------------------------------------


async def test_user_key_on_admin_endpoints_is_403(client):
    user = await create_user(client)
    headers = bearer(user["api_key"])
    uid = user["user_id"]
    calls = [
        ("POST", "/api/users", {"name": "mallory"}),
        ("GET", "/api/users", None),
        ("POST", f"/api/users/{uid}/regenerate-key", None),
        ("PUT", f"/api/users/{uid}/status", {"status": 0}),
        ("DELETE", f"/api/users/{uid}", None),
    ]
    for method, path, body in calls:
        response = await client.request(method, path, json=body, headers=headers)
        error = await api_error(response, 403, "permission_error")
        assert error["code"] == "admin_required", path
    # None of it happened: the key still works and the user is enabled.
    profile = await ok(await me(client, user["api_key"]))
    assert profile["status"] == 1


async def test_missing_key_is_401(client):
    missing = [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer    "},
        {"Authorization": f"Basic {ADMIN_KEY}"},
        {"Authorization": ADMIN_KEY},
    ]
    for headers in missing:
        for method, path in USER_ENDPOINTS:
            response = await client.request(
                method, path, json={"status": 0, "prefer_shared": 1}, headers=headers
            )
            error = await api_error(response, 401, "authentication_error")
            assert error["code"] == "missing_api_key", (headers, path)


async def test_invalid_key_is_401(client, admin):
    user = await create_user(client)
    for key in ["sk-" + "A" * 48, "nonsense", ADMIN_KEY + "x", ADMIN_KEY[:-1], user["api_key"] + "x"]:
        for method, path in USER_ENDPOINTS:
            response = await client.request(
                method, path, json={"status": 0, "prefer_shared": 1}, headers=bearer(key)
            )
            error = await api_error(response, 401, "authentication_error")
            assert error["code"] == "invalid_api_key", (key, path)
    # Nothing happened to user 1.
    listing = await ok(await client.get("/api/users", headers=admin))
    rows = [(u["user_id"], u["status"], u["prefer_shared"]) for u in listing["users"]]
    assert rows == [(user["user_id"], 1, 0)]


async def test_bearer_scheme_is_case_insensitive(client):
    user = await create_user(client)
    response = await client.get("/api/user/me", headers={"Authorization": f"bearer {user['api_key']}"})
    assert (await ok(response))["user_id"] == user["user_id"]
