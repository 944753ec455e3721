"""OAuth onboarding (SPEC §4, PROTOCOL §7) against the upstream test double.

The double plays Google: its consent page redirects with a code (``queue_login``),
its token, userinfo and v1internal endpoints answer per account fixture. The
gateway's own callback is reached both ways: the browser path (``GET
/api/oauth/callback``, an HTML page) and the pasted-URL path (``POST
/api/oauth/callback/manual``, JSON).
"""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import pytest

from antigv.app import create_app
from antigv.appkeys import TASKS
from antigv.backends.antigravity import oauth as oauth_module
from antigv.core.errors import Unprocessable
from antigv.core.failures import FailureKind, UpstreamFailure
from antigv.store.crypto import TokenCipher, parse_key
from tests.conftest import ADMIN_KEY, bearer, create_user, double_config, make_config
from tests.test_accounts_api import ACCOUNT_FIELDS, api_error, ok, sql
from tests.upstream_double import SCOPES, UpstreamDouble

ENCRYPTION_KEY = base64.b64encode(bytes(range(32))).decode()
CALLBACK_URL = "http://localhost:42532/oauth-callback"
ADMIN = bearer(ADMIN_KEY)
NO_REFRESH_HINT = "https://myaccount.google.com/permissions"


@pytest.fixture
def config(db_dsn, double):
    return double_config(
        db_dsn,
        double,
        oauth={"callback_url": CALLBACK_URL},
        security={"token_encryption_key": ENCRYPTION_KEY},
    )


@pytest.fixture(autouse=True)
def fast_onboarding(monkeypatch):
    monkeypatch.setattr(oauth_module, "ONBOARD_POLL_DELAY", 0.0)


@pytest.fixture
async def alice(client) -> dict[str, Any]:
    user = await create_user(client, "alice")
    return {"id": user["user_id"], "key": bearer(user["api_key"])}


@pytest.fixture
async def bob(client) -> dict[str, Any]:
    user = await create_user(client, "bob")
    return {"id": user["user_id"], "key": bearer(user["api_key"])}


# --- helpers ---------------------------------------------------------------------------


async def authorize(client: Any, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    return await ok(await client.post("/api/oauth/authorize", json=body, headers=headers))


async def google_login(double: UpstreamDouble, auth_url: str, email: str) -> str:
    """The browser at Google's consent page: the redirect it is sent to."""
    double.queue_login(email)
    async with aiohttp.ClientSession() as session, session.get(auth_url, allow_redirects=False) as response:
        assert response.status == 302, await response.text()
        return response.headers["Location"]


async def start(client: Any, double: UpstreamDouble, headers: dict[str, str], email: str, **body: Any) -> str:
    """authorize + consent: the redirect URL, ready for either callback path."""
    started = await authorize(client, headers, **body)
    return await google_login(double, started["auth_url"], email)


async def browser(client: Any, location: str) -> tuple[int, str]:
    """The browser following the redirect to the gateway's callback."""
    response = await client.get("/api/oauth/callback?" + urlsplit(location).query)
    text = await response.text()
    assert response.content_type == "text/html", text
    assert response.charset == "utf-8"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert '"error"' not in text and "success" not in text
    return response.status, text


async def manual(client: Any, headers: dict[str, str], location: str) -> Any:
    return await client.post("/api/oauth/callback/manual", json={"callback_url": location}, headers=headers)


async def finish(client: Any, path: str, headers: dict[str, str], location: str) -> None:
    """Complete successfully on one of the two paths."""
    if path == "browser":
        status, text = await browser(client, location)
        assert status == 200, text
    else:
        await ok(await manual(client, headers, location))


async def fail(client: Any, path: str, headers: dict[str, str], location: str, status: int) -> str:
    """Fail on one of the two paths with this status; the reason's text."""
    if path == "browser":
        got, text = await browser(client, location)
        assert got == status, text
        return text
    error = await api_error(await manual(client, headers, location), status)
    return error["message"]


def accounts(dsn: str) -> list[dict[str, Any]]:
    return sql(dsn, "SELECT * FROM accounts ORDER BY account_id")


def quotas(dsn: str) -> dict[str, dict[str, Any]]:
    rows = sql(dsn, "SELECT * FROM model_quotas ORDER BY model_name")
    return {r["model_name"]: r for r in rows}


def states(dsn: str) -> list[dict[str, Any]]:
    return sql(dsn, "SELECT * FROM oauth_states")


def nothing_stored(dsn: str) -> None:
    assert accounts(dsn) == []
    assert quotas(dsn) == {}
    assert states(dsn) == [], "the state is consumed even when the attempt fails"


CIPHER = TokenCipher(parse_key(ENCRYPTION_KEY))
PATHS = ["browser", "manual"]


# --- authorize -------------------------------------------------------------------------


async def test_authorize_returns_google_url_and_stores_state(client, alice, double, db_dsn):
    response = await client.post("/api/oauth/authorize", json={"is_shared": 1}, headers=alice["key"])
    body = await response.json()
    assert response.status == 200, body
    data = body["data"]
    assert set(data) == {"auth_url", "state", "expires_in"}
    assert data["expires_in"] == 300
    url = urlsplit(data["auth_url"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == double.base_url + "/o/oauth2/v2/auth"
    query = {k: v[0] for k, v in parse_qs(url.query, strict_parsing=True).items()}
    assert query == {
        "access_type": "offline",
        "client_id": "1071006060591-tmhssin2h21lcre235vtolojh4g403ep.apps.googleusercontent.com",
        "prompt": "consent",
        "redirect_uri": CALLBACK_URL,
        "response_type": "code",
        "scope": SCOPES,
        "state": data["state"],
    }
    assert len(data["state"]) >= 32
    [row] = states(db_dsn)
    assert (row["state"], row["user_id"], row["is_shared"]) == (data["state"], alice["id"], 1)
    ttl = row["expires_at"] - row["created_at"]
    assert timedelta(seconds=299) <= ttl <= timedelta(seconds=301)
    # is_shared defaults to 0, with or without a body; every state is new.
    second = await authorize(client, alice["key"])
    empty = await ok(await client.post("/api/oauth/authorize", headers=alice["key"]))
    assert len({data["state"], second["state"], empty["state"]}) == 3
    shared = {r["state"]: r["is_shared"] for r in states(db_dsn)}
    assert (shared[second["state"]], shared[empty["state"]]) == (0, 0)


async def test_authorize_validation_and_owner(client, alice, bob, db_dsn):
    for body in ({"is_shared": 2}, {"is_shared": "1"}, {"is_shared": None}):
        error = await api_error(
            await client.post("/api/oauth/authorize", json=body, headers=alice["key"]), 400
        )
        assert error["param"] == "is_shared", body
    error = await api_error(
        await client.post("/api/oauth/authorize", json={"user_id": "x"}, headers=ADMIN), 400
    )
    assert error["param"] == "user_id"
    # The admin must say whose account it will be, and that user must exist.
    error = await api_error(await client.post("/api/oauth/authorize", json={}, headers=ADMIN), 400)
    assert error["param"] == "user_id"
    await api_error(await client.post("/api/oauth/authorize", json={"user_id": 999999}, headers=ADMIN), 404)
    for_bob = await authorize(client, ADMIN, user_id=bob["id"], is_shared=1)
    # A user cannot start one for somebody else.
    await api_error(
        await client.post("/api/oauth/authorize", json={"user_id": bob["id"]}, headers=alice["key"]), 404
    )
    own = await authorize(client, alice["key"], user_id=alice["id"])
    await api_error(await client.post("/api/oauth/authorize", json={}), 401, "authentication_error")
    rows = {r["state"]: (r["user_id"], r["is_shared"]) for r in states(db_dsn)}
    assert rows == {for_bob["state"]: (bob["id"], 1), own["state"]: (alice["id"], 0)}


# --- the whole flow --------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
async def test_free_account_with_project(client, alice, double, db_dsn, path):
    acc = double.add_account("alice.g@example.com")
    double.set_quota(acc, "gemini", 0.0)  # exhausted: no remainingFraction upstream
    double.set_quota(acc, "claude_gpt", 0.42)
    double.set_quota(acc, "claude_gpt", 0.9, reset_time=5 * 86400, window="weekly")
    location = await start(client, double, alice["key"], "alice.g@example.com", is_shared=1)
    before = datetime.now(UTC)
    if path == "browser":
        status, text = await browser(client, location)
        assert status == 200, text
        assert "Account added" in text
        assert "alice.g@example.com" in text
    else:
        response = await manual(client, alice["key"], location)
        assert acc.refresh_token not in await response.text()
        assert acc.access_token not in await response.text()
        body = await response.json()
        assert body["message"] == "account added"
        view = body["data"]
        assert set(view) == ACCOUNT_FIELDS
        assert view["email"] == "alice.g@example.com"
        assert view["project_id"] == acc.project
        assert view["user_id"] == alice["id"]
        assert view["is_shared"] == 1
        assert view["status"] == 1
        assert view["cooldowns"] == []
    [row] = accounts(db_dsn)
    assert row["user_id"] == alice["id"]
    assert row["email"] == "alice.g@example.com"
    assert row["name"] == "alice.g@example.com"
    assert row["is_shared"] == 1
    assert row["status"] == 1
    assert row["disabled_reason"] is None
    assert row["project_id"] == acc.project
    assert row["tier"] == "free-tier"
    assert (
        before + timedelta(seconds=3500) < row["access_token_expires_at"] < before + timedelta(seconds=3700)
    )
    assert row["quota_fetched_at"] is not None
    assert states(db_dsn) == []
    # What Google saw.
    [token_call] = double.token_calls
    assert token_call.body["grant_type"] == "authorization_code"
    assert token_call.body["redirect_uri"] == CALLBACK_URL
    assert token_call.body["code"] == parse_qs(urlsplit(location).query)["code"][0]
    [load] = double.requests_for("loadCodeAssist")
    assert load.body == {"metadata": {"ideType": "ANTIGRAVITY"}}
    assert double.requests_for("onboardUser") == []
    [models] = double.requests_for("fetchAvailableModels")
    assert models.body == {"project": acc.project}
    [summary] = double.requests_for("retrieveUserQuotaSummary")
    assert summary.body == {"project": acc.project}
    # Quotas are stored; a missing fraction is 0, internal models are skipped.
    stored = quotas(db_dsn)
    assert stored["gemini-pro-agent"]["quota"] == 0.0
    assert stored["gemini-pro-agent"]["quota_group"] == "gemini"
    assert stored["gemini-pro-agent"]["reset_time"] is not None
    assert stored["gemini-3.1-pro-low"]["quota"] == 0.0
    assert stored["claude-sonnet-4-6"]["quota"] == pytest.approx(0.42)
    assert stored["claude-opus-4-6-thinking"]["quota_group"] == "claude_gpt"
    assert stored["gemini-3.1-flash-image"]["quota"] == 1.0
    assert all(r["account_id"] == row["account_id"] and r["status"] == 1 for r in stored.values())
    assert not any(name.startswith(("chat_", "tab_")) for name in stored)


async def test_tokens_are_sealed_at_rest(client, alice, double, db_dsn):
    acc = double.add_account("sealed@example.com")
    await ok(
        await manual(client, alice["key"], await start(client, double, alice["key"], "sealed@example.com"))
    )
    [row] = accounts(db_dsn)
    for column, value in row.items():
        assert acc.refresh_token not in str(value), column
        assert acc.access_token not in str(value), column
        # Not even the distinctive parts.
        assert acc.refresh_token[len("1//double-") :] not in str(value), column
    assert row["refresh_token"].startswith("v1:")
    assert row["access_token"].startswith("v1:")
    assert CIPHER.open(row["refresh_token"]) == acc.refresh_token
    assert CIPHER.open(row["access_token"]) == acc.access_token
    # The API never shows them either.
    for path in ("/api/accounts", f"/api/accounts/{row['account_id']}"):
        text = await (await client.get(path, headers=alice["key"])).text()
        assert "v1:" not in text and acc.access_token not in text and acc.refresh_token not in text


@pytest.mark.parametrize("path", PATHS)
async def test_free_account_without_project_is_onboarded(client, alice, double, db_dsn, path):
    acc = double.add_account("new@example.com", project=None, onboard_polls=2)
    await finish(client, path, alice["key"], await start(client, double, alice["key"], "new@example.com"))
    onboard = double.requests_for("onboardUser")
    assert len(onboard) == 3  # two "not done yet", then done
    for call in onboard:
        assert call.body == {"tierId": "free-tier", "metadata": {"ideType": "ANTIGRAVITY"}}
    [row] = accounts(db_dsn)
    assert row["project_id"] == acc.onboard_project
    assert row["tier"] == "free-tier"
    [models] = double.requests_for("fetchAvailableModels")
    assert models.body == {"project": acc.onboard_project}
    assert quotas(db_dsn)


async def test_onboarding_that_never_finishes_is_refused(client, alice, double, db_dsn, monkeypatch):
    monkeypatch.setattr(oauth_module, "ONBOARD_MAX_POLLS", 3)
    double.add_account("slow@example.com", project=None, onboard_polls=50)
    location = await start(client, double, alice["key"], "slow@example.com")
    error = await api_error(await manual(client, alice["key"], location), 422)
    assert error["code"] == "onboarding_timeout"
    assert "3" in error["message"]
    assert len(double.requests_for("onboardUser")) == 3
    nothing_stored(db_dsn)


@pytest.mark.parametrize("path", PATHS)
async def test_paid_account_without_project_is_onboarded(client, alice, double, db_dsn, path):
    # PROTOCOL §13.7: onboardUser runs for paid tiers too, with the paid tier's id.
    acc = double.add_account("pro@example.com", project=None, paid_tier="g1-pro-tier", onboard_polls=1)
    await finish(client, path, alice["key"], await start(client, double, alice["key"], "pro@example.com"))
    [row] = accounts(db_dsn)
    assert row["project_id"] == acc.onboard_project
    assert row["tier"] == "g1-pro-tier"
    onboard = double.requests_for("onboardUser")
    assert len(onboard) == 2  # "not done yet", then done
    for call in onboard:
        assert call.body == {"tierId": "g1-pro-tier", "metadata": {"ideType": "ANTIGRAVITY"}}
    [models] = double.requests_for("fetchAvailableModels")
    assert models.body == {"project": acc.onboard_project}
    assert quotas(db_dsn)


async def test_paid_account_onboarding_gives_no_project(client, alice, double, db_dsn):
    """Only when onboarding still yields none is a paid account kept without a project."""
    double.add_account("noproj@example.com", project=None, paid_tier="g1-ultra-tier", onboard_project="")
    await ok(
        await manual(client, alice["key"], await start(client, double, alice["key"], "noproj@example.com"))
    )
    [row] = accounts(db_dsn)
    assert (row["project_id"], row["tier"]) == ("", "g1-ultra-tier")
    assert len(double.requests_for("onboardUser")) == 3  # two "not done yet", then done without one
    # Unknown project: the summary is asked without one, never with "" (PROTOCOL §13.3).
    [summary] = double.requests_for("retrieveUserQuotaSummary")
    assert summary.body == {}


@pytest.mark.parametrize("path", PATHS)
async def test_ineligible_account_is_refused(client, alice, double, db_dsn, path):
    double.add_account("kid@example.com", project=None, ineligible="INELIGIBLE_ACCOUNT")
    location = await start(client, double, alice["key"], "kid@example.com")
    reason = await fail(client, path, alice["key"], location, 422)
    assert "INELIGIBLE_ACCOUNT" in reason
    assert "not eligible" in reason
    assert double.requests_for("onboardUser") == []
    assert double.requests_for("fetchAvailableModels") == []
    nothing_stored(db_dsn)


async def test_ineligible_but_paid_account_is_accepted(client, alice, double, db_dsn):
    double.add_account(
        "paid-kid@example.com", project=None, ineligible="INELIGIBLE_ACCOUNT", paid_tier="g1-ultra-tier"
    )
    await ok(
        await manual(client, alice["key"], await start(client, double, alice["key"], "paid-kid@example.com"))
    )
    [row] = accounts(db_dsn)
    assert row["tier"] == "g1-ultra-tier"
    assert row["project_id"] == double.account("paid-kid@example.com").onboard_project


@pytest.mark.parametrize("path", PATHS)
async def test_missing_refresh_token_is_refused(client, alice, double, db_dsn, monkeypatch, path):
    double.add_account("norefresh@example.com")
    issue = double._token_payload

    def without_refresh(acc, *, with_refresh):
        return issue(acc, with_refresh=False)

    monkeypatch.setattr(double, "_token_payload", without_refresh)
    location = await start(client, double, alice["key"], "norefresh@example.com")
    reason = await fail(client, path, alice["key"], location, 400)
    assert "no refresh token" in reason
    assert NO_REFRESH_HINT in reason
    assert double.requests_for("loadCodeAssist") == []
    nothing_stored(db_dsn)


@pytest.mark.parametrize("path", PATHS)
async def test_rejected_code_is_refused(client, alice, double, db_dsn, path):
    double.add_account("code@example.com")
    location = await start(client, double, alice["key"], "code@example.com")
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    query["code"] = "4/not-a-code-google-issued"
    forged = CALLBACK_URL + "?" + urlencode(query)
    reason = await fail(client, path, alice["key"], forged, 400)
    assert "rejected the authorization code" in reason
    assert "invalid_grant" in reason
    assert len(double.token_calls) == 1
    nothing_stored(db_dsn)


async def test_token_endpoint_error_is_refused(client, alice, double, db_dsn):
    double.add_account("t500@example.com")
    double.fail(500, rpc="token", body={"error": "server_error", "error_description": "backend down"})
    location = await start(client, double, alice["key"], "t500@example.com")
    error = await api_error(await manual(client, alice["key"], location), 400)
    assert error["code"] == "oauth_exchange_failed"
    assert "backend down" in error["message"]
    nothing_stored(db_dsn)


async def test_unreachable_token_endpoint(aiohttp_client, unused_tcp_port, db_dsn, double):
    base = double.base_url
    closed = f"http://127.0.0.1:{unused_tcp_port}/token"
    config = make_config(
        db_dsn,
        upstream={"base_urls": [base]},
        oauth={
            "token_url": closed,
            "userinfo_url": base + "/oauth2/v2/userinfo",
            "authorize_url": base + "/o/oauth2/v2/auth",
        },
        security={"token_encryption_key": ENCRYPTION_KEY},
    )
    client = await aiohttp_client(create_app(config))
    alice = bearer((await create_user(client, "alice"))["api_key"])
    double.add_account("down@example.com")
    location = await start(client, double, alice, "down@example.com")
    error = await api_error(await manual(client, alice, location), 502, "upstream_error")
    assert error["code"] == "oauth_unreachable"
    nothing_stored(db_dsn)


async def test_userinfo_failure_is_refused(client, alice, double, db_dsn):
    double.add_account("who@example.com")
    double.fail(401, rpc="userinfo")
    location = await start(client, double, alice["key"], "who@example.com")
    error = await api_error(await manual(client, alice["key"], location), 400)
    assert error["code"] == "oauth_userinfo_failed"
    assert double.requests_for("loadCodeAssist") == []
    nothing_stored(db_dsn)


async def test_load_code_assist_failures(client, alice, double, db_dsn):
    double.add_account("denied@example.com")
    double.fail("permission_denied", rpc="loadCodeAssist")
    location = await start(client, double, alice["key"], "denied@example.com")
    error = await api_error(await manual(client, alice["key"], location), 422)
    assert error["code"] == "project_discovery_failed"
    assert "loadCodeAssist" in error["message"] and "403" in error["message"]
    nothing_stored(db_dsn)
    # Google failing (5xx) is not the account's fault: 502, try again.
    double.fail("internal", rpc="loadCodeAssist")
    location = await start(client, double, alice["key"], "denied@example.com")
    error = await api_error(await manual(client, alice["key"], location), 502, "upstream_error")
    assert error["code"] == "project_discovery_unavailable"
    nothing_stored(db_dsn)
    # And with Google back, the same account goes through.
    await ok(
        await manual(client, alice["key"], await start(client, double, alice["key"], "denied@example.com"))
    )
    assert len(accounts(db_dsn)) == 1


async def test_failed_quota_read_still_adds_the_account(client, alice, double, db_dsn):
    double.add_account("noquota@example.com")
    double.fail("internal", rpc="fetchAvailableModels")
    await ok(
        await manual(client, alice["key"], await start(client, double, alice["key"], "noquota@example.com"))
    )
    [row] = accounts(db_dsn)
    assert row["quota_fetched_at"] is None
    assert quotas(db_dsn) == {}


# --- states ----------------------------------------------------------------------------


@pytest.mark.parametrize("second", PATHS)
async def test_state_is_single_use(client, alice, double, db_dsn, second):
    double.add_account("once@example.com")
    location = await start(client, double, alice["key"], "once@example.com")
    status, text = await browser(client, location)
    assert status == 200, text
    reason = await fail(client, second, alice["key"], location, 404)
    assert "already used" in reason
    assert len(double.token_calls) == 1
    assert len(accounts(db_dsn)) == 1


async def test_concurrent_callbacks_use_the_state_once(client, alice, double, db_dsn):
    double.add_account("race@example.com")
    double.token_delay = 0.2  # both callbacks are in flight together
    location = await start(client, double, alice["key"], "race@example.com")
    results = await asyncio.gather(browser(client, location), browser(client, location))
    assert sorted(status for status, _ in results) == [200, 404]
    assert len(double.token_calls) == 1
    assert len(accounts(db_dsn)) == 1


@pytest.mark.parametrize("path", PATHS)
async def test_expired_state_is_refused_and_consumed(client, alice, double, db_dsn, path):
    double.add_account("late@example.com")
    location = await start(client, double, alice["key"], "late@example.com")
    sql(db_dsn, "UPDATE oauth_states SET expires_at = now() - interval '1 second'")
    reason = await fail(client, path, alice["key"], location, 400)
    assert "expired" in reason
    assert double.token_calls == []
    nothing_stored(db_dsn)


async def test_failed_attempt_consumes_the_state(client, alice, double, db_dsn):
    double.add_account("kid@example.com", project=None, ineligible="INELIGIBLE_ACCOUNT")
    location = await start(client, double, alice["key"], "kid@example.com")
    await api_error(await manual(client, alice["key"], location), 422)
    await api_error(await manual(client, alice["key"], location), 404)
    assert len(double.token_calls) == 1


async def test_another_users_state_on_the_manual_path(client, alice, bob, double, db_dsn):
    double.add_account("alice-g@example.com")
    location = await start(client, double, alice["key"], "alice-g@example.com")
    stolen = await api_error(await manual(client, bob["key"], location), 404)
    unknown = await api_error(
        await manual(client, bob["key"], CALLBACK_URL + "?state=no-such-state&code=x"), 404
    )
    assert stolen == unknown  # nothing tells bob the state exists
    assert double.token_calls == []
    assert len(states(db_dsn)) == 1  # still usable by its owner
    view = await ok(await manual(client, alice["key"], location))
    assert view["user_id"] == alice["id"]
    assert states(db_dsn) == []


async def test_admin_may_finish_any_users_state(client, bob, double, db_dsn):
    double.add_account("bob-g@example.com")
    location = await start(client, double, ADMIN, "bob-g@example.com", user_id=bob["id"], is_shared=1)
    view = await ok(await manual(client, ADMIN, location))
    assert (view["user_id"], view["is_shared"]) == (bob["id"], 1)


async def test_cleanup_task_drops_expired_states(client, alice, db_dsn):
    live = await authorize(client, alice["key"])
    old = await authorize(client, alice["key"])
    sql(
        db_dsn,
        "UPDATE oauth_states SET expires_at = now() - interval '1 minute' WHERE state = %(s)s",
        {"s": old["state"]},
    )
    assert await client.server.app[TASKS].run_once("cleanup_oauth_states")
    assert [r["state"] for r in states(db_dsn)] == [live["state"]]


# --- e-mails already known -------------------------------------------------------------


async def _rotate(double: UpstreamDouble, acc: Any) -> None:
    """Give the double's account new tokens (as Google does after a revoke and a new consent)."""
    double.rotate_on_next_refresh(acc)
    async with aiohttp.ClientSession() as session:
        form = {
            "grant_type": "refresh_token",
            "refresh_token": acc.refresh_token,
            "client_id": double.client_id,
            "client_secret": double.client_secret,
        }
        async with session.post(double.base_url + "/token", data=form) as response:
            assert response.status == 200


@pytest.mark.parametrize("path", PATHS)
async def test_reauthorising_own_account_updates_tokens_only(client, alice, double, db_dsn, path):
    acc = double.add_account("mine@example.com")
    await ok(
        await manual(client, alice["key"], await start(client, double, alice["key"], "mine@example.com"))
    )
    [first] = accounts(db_dsn)
    # The owner changed things meanwhile; the refresh loop was backing off.
    sql(
        db_dsn,
        "UPDATE accounts SET name = 'renamed', status = 0, disabled_reason = 'disabled by owner', "
        "refresh_failures = 4, refresh_retry_at = now() + interval '1 hour'",
    )
    old_refresh = acc.refresh_token
    await _rotate(double, acc)
    assert acc.refresh_token != old_refresh
    location = await start(client, double, alice["key"], "mine@example.com", is_shared=1)
    if path == "browser":
        status, text = await browser(client, location)
        assert status == 200, text
        assert "re-authorised" in text
    else:
        body = await (await manual(client, alice["key"], location)).json()
        assert body["success"] is True, body
        assert "re-authorised" in body["message"]
        assert body["data"]["account_id"] == first["account_id"]
    [row] = accounts(db_dsn)
    assert row["account_id"] == first["account_id"]
    assert CIPHER.open(row["refresh_token"]) == acc.refresh_token
    assert CIPHER.open(row["access_token"]) == acc.access_token
    assert row["refresh_token"] != first["refresh_token"]
    assert (row["refresh_failures"], row["refresh_retry_at"]) == (0, None)
    unchanged = (
        "user_id",
        "email",
        "name",
        "is_shared",
        "status",
        "disabled_reason",
        "project_id",
        "tier",
        "created_at",
    )
    assert {k: row[k] for k in unchanged} == {
        **{k: first[k] for k in unchanged},
        "name": "renamed",
        "status": 0,
        "disabled_reason": "disabled by owner",
    }
    assert row["is_shared"] == 0  # the new state's is_shared does not apply
    assert len(double.requests_for("loadCodeAssist")) == 1  # only the first time


@pytest.mark.parametrize("path", PATHS)
async def test_email_of_another_user_is_a_conflict(client, alice, bob, double, db_dsn, path):
    double.add_account("taken@example.com")
    await ok(
        await manual(client, alice["key"], await start(client, double, alice["key"], "taken@example.com"))
    )
    [before] = accounts(db_dsn)
    location = await start(client, double, bob["key"], "taken@example.com")
    if path == "browser":
        status, text = await browser(client, location)
        assert status == 409, text
        assert "already added by another user" in text
    else:
        error = await api_error(await manual(client, bob["key"], location), 409)
        assert error["code"] == "account_exists"
    assert accounts(db_dsn) == [before]
    assert len(double.requests_for("loadCodeAssist")) == 1
    assert states(db_dsn) == []


async def test_emails_compare_without_case(client, alice, bob, double, db_dsn):
    double.add_account("Carol.G@Example.com")
    double.add_account("carol.g@example.com")
    view = await ok(
        await manual(client, alice["key"], await start(client, double, alice["key"], "Carol.G@Example.com"))
    )
    assert view["email"] == "carol.g@example.com"
    location = await start(client, double, bob["key"], "carol.g@example.com")
    await api_error(await manual(client, bob["key"], location), 409)
    assert len(accounts(db_dsn)) == 1


# --- escaping and malformed callbacks ----------------------------------------------------


async def test_google_error_parameter_is_escaped(client, alice, double, db_dsn):
    started = await authorize(client, alice["key"])
    query = urlencode(
        {
            "state": started["state"],
            "error": "<script>alert(1)</script>",
            "error_description": "<img src=x onerror=alert(2)> & \"quotes\" 'too'",
        }
    )
    response = await client.get("/api/oauth/callback?" + query)
    text = await response.text()
    assert response.status == 400, text
    assert response.content_type == "text/html"
    assert "<script>" not in text and "<img" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;img src=x onerror=alert(2)&gt; &amp; &quot;quotes&quot; &#x27;too&#x27;" in text
    assert "did not grant access" in text
    assert double.token_calls == []
    nothing_stored(db_dsn)
    # Without a state too.
    response = await client.get("/api/oauth/callback?" + urlencode({"error": "<b>access_denied</b>"}))
    text = await response.text()
    assert response.status == 400
    assert "<b>" not in text and "&lt;b&gt;access_denied&lt;/b&gt;" in text


async def test_manual_path_reports_google_error(client, alice, db_dsn):
    started = await authorize(client, alice["key"])
    url = CALLBACK_URL + "?" + urlencode({"state": started["state"], "error": "access_denied"})
    error = await api_error(await manual(client, alice["key"], url), 400)
    assert error["code"] == "oauth_denied"
    assert "access_denied" in error["message"]
    assert states(db_dsn) == []


async def test_success_page_escapes_the_email(client, alice, double, db_dsn):
    double.add_account("<b>odd</b>@example.com")
    location = await start(client, double, alice["key"], "<b>odd</b>@example.com")
    status, text = await browser(client, location)
    assert status == 200, text
    assert "<b>odd" not in text
    assert "&lt;b&gt;odd&lt;/b&gt;@example.com" in text


async def test_browser_callback_errors_are_pages(client, db_dsn):
    for query, status in (
        ("", 400),
        ("code=abc", 400),
        ("state=nope&code=abc", 404),
        ("state=" + "x" * 5000, 404),
    ):
        response = await client.get("/api/oauth/callback?" + query)
        text = await response.text()
        assert response.status == status, (query, text)
        assert response.content_type == "text/html", query
        assert "<h1>The account was not added</h1>" in text
    # No key is needed (Google's redirect carries none) and none is asked for.
    response = await client.get(
        "/api/oauth/callback?state=nope&code=abc", headers={"Authorization": "Bearer bad"}
    )
    assert response.status == 404


async def test_manual_validation(client, alice, double, db_dsn):
    path = "/api/oauth/callback/manual"
    for body in ({}, {"callback_url": ""}, {"callback_url": 5}, {"callback_url": "x" * 9000}):
        error = await api_error(await client.post(path, json=body, headers=alice["key"]), 400)
        assert error["param"] == "callback_url", body
    error = await api_error(
        await client.post(path, json={"callback_url": CALLBACK_URL + "?code=abc"}, headers=alice["key"]), 400
    )
    assert (error["param"], error["code"]) == ("callback_url", "oauth_state_missing")
    await api_error(await client.post(path, data=b"not json", headers=alice["key"]), 400)
    await api_error(await client.post(path, json={"callback_url": CALLBACK_URL}), 401, "authentication_error")
    # Just the query string works too.
    double.add_account("query@example.com")
    location = await start(client, double, alice["key"], "query@example.com")
    await ok(await manual(client, alice["key"], "?" + urlsplit(location).query))
    assert len(accounts(db_dsn)) == 1


# --- the tier policy on replies the double does not make ----------------------------------


class FakeUpstream:
    """Scripted v1internal replies, for discover_project alone."""

    def __init__(self, **replies: list[dict[str, Any]]) -> None:
        self.replies = replies
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def call(self, method: str, access_token: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((method, payload))
        reply = self.replies[method].pop(0)
        if isinstance(reply, BaseException):
            raise reply
        return reply


async def test_paid_account_onboarding_refused_keeps_it_without_project():
    """PROTOCOL §13.7: a paid tier is onboarded with its own id; refused, it serves without a project."""
    load = {"currentTier": {"id": "standard-tier"}, "paidTier": {"id": "g1-pro-tier"}}
    refused = UpstreamFailure(FailureKind.INVALID_REQUEST, 400, "Precondition Failed")
    upstream = FakeUpstream(loadCodeAssist=[load], onboardUser=[refused])
    found = await oauth_module.discover_project(upstream, "token", delay=0)
    assert found == oauth_module.Project("", "g1-pro-tier")
    assert upstream.calls[1] == (
        "onboardUser",
        {"tierId": "g1-pro-tier", "metadata": {"ideType": "ANTIGRAVITY"}},
    )
    # Google not answering is not the account's fault: try again later.
    upstream = FakeUpstream(
        loadCodeAssist=[load], onboardUser=[UpstreamFailure(FailureKind.SERVER_ERROR, 503, "unavailable")]
    )
    with pytest.raises(oauth_module.UpstreamError):
        await oauth_module.discover_project(upstream, "token", delay=0)


async def test_onboarding_done_without_a_project_is_refused():
    load = {
        "allowedTiers": [{"id": "legacy-tier"}, {"id": "standard-tier", "isDefault": True}],
        "ineligibleTiers": [
            {"reasonCode": "UNSUPPORTED_LOCATION", "reasonMessage": "Not in your <country>."}
        ],
        "paidTier": {"id": "free-g1-tier"},  # "free" in the id: not paid
    }
    upstream = FakeUpstream(
        loadCodeAssist=[load], onboardUser=[{"done": False}, {"done": True, "response": {}}]
    )
    with pytest.raises(Unprocessable) as caught:
        await oauth_module.discover_project(upstream, "token", delay=0)
    assert caught.value.code == "account_unsupported"
    assert "UNSUPPORTED_LOCATION" in caught.value.message and "Not in your <country>." in caught.value.message
    assert [m for m, _ in upstream.calls] == ["loadCodeAssist", "onboardUser", "onboardUser"]
    assert upstream.calls[1][1]["tierId"] == "standard-tier"  # the default allowed tier
    # With no reason given, the message says what is missing.
    upstream = FakeUpstream(loadCodeAssist=[{}], onboardUser=[{"done": True}])
    with pytest.raises(Unprocessable) as caught:
        await oauth_module.discover_project(upstream, "token", delay=0)
    assert "NO_PROJECT_AND_FREE_TIER" in caught.value.message
    assert upstream.calls[1][1]["tierId"] == "free-tier"


async def test_project_shapes_and_tiers():
    # onboardUser's project is an object; loadCodeAssist's a string.
    upstream = FakeUpstream(
        loadCodeAssist=[{"currentTier": {"id": "legacy-tier"}}],
        onboardUser=[{"done": True, "response": {"cloudaicompanionProject": {"id": "p-1", "name": "p-1"}}}],
    )
    found = await oauth_module.discover_project(upstream, "token", delay=0)
    assert found == oauth_module.Project("p-1", "legacy-tier")
    upstream = FakeUpstream(
        loadCodeAssist=[
            {
                "currentTier": {"id": "standard-tier"},
                "cloudaicompanionProject": "p-2",
                "paidTier": {"id": "g1-pro-tier"},
            }
        ]
    )
    assert await oauth_module.discover_project(upstream, "token") == oauth_module.Project(
        "p-2", "g1-pro-tier"
    )
    assert [m for m, _ in upstream.calls] == ["loadCodeAssist"]
