"""Quota buckets of PROTOCOL §13.6: family quota groups, the 5-hour and weekly windows of
``retrieveUserQuotaSummary``, what they do to account selection, and the free-tier shape."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from antigv.accounting.pools import group_models
from antigv.accounting.quota_reads import QuotaWindow, parse_quota_readings, parse_quota_windows
from antigv.app import create_app
from antigv.appkeys import GATEWAY, QUOTAS
from antigv.config import QuotasConfig, build_config
from antigv.core.errors import RateLimited
from antigv.gateway.selection import no_account_error, rank_candidates
from tests import test_quotas
from tests.conftest import make_config
from tests.quota_helpers import insert_account, sql, value
from tests.test_quotas import Gateway, error, ok
from tests.upstream_double import UpstreamDouble

CLAUDE = "claude-sonnet-4-6"
GEMINI = "gemini-3-flash"
IMAGE = "gemini-3.1-flash-image"
DAY = 86400
gateway = test_quotas.gateway  # the fixture


# --- quota groups by family ----------------------------------------------------------------


def test_default_groups_follow_the_families_for_models_never_heard_of():
    groups = QuotasConfig()
    for model in ("gemini-pro-agent", "gemini-3.7-flash-high", "gemini-9-ultra-agent", "gemini-2.5-flash"):
        assert groups.group_of(model) == "gemini", model
    for model in ("claude-opus-4-6-thinking", "claude-sonnet-9", "gpt-oss-120b-medium", "gpt-oss-7b"):
        assert groups.group_of(model) == "claude_gpt", model
    # Each image model has its own quota: a group of its own.
    assert groups.group_of(IMAGE) == IMAGE
    assert groups.group_of("gemini-4-pro-image") == "gemini-4-pro-image"
    assert groups.group_of("rev19-uic3-1p") == "rev19-uic3-1p"
    assert groups.group_of_bucket("3p") == "claude_gpt" and groups.group_of_bucket("gemini") == "gemini"
    assert groups.group_of_bucket("video") is None


def test_named_models_win_over_patterns_and_the_first_pattern_group_wins():
    config = build_config(
        {
            "security": {"admin_api_key": "x" * 16},
            "quotas": {
                "groups": {
                    "flash": ["gemini-*-flash*", "!*-lite"],
                    "gemini": ["gemini-*", "gemini-3-pro-special"],
                    "special": ["gemini-3-flash"],
                }
            },
        },
        env={},
    )
    groups = config.quotas
    assert groups.group_of("gemini-3-flash") == "special"  # named exactly
    assert groups.group_of("gemini-3.7-flash-high") == "flash"  # first group whose patterns take it
    assert groups.group_of("gemini-3.1-flash-lite") == "gemini"  # left out of "flash"
    assert groups.group_of("claude-x") == "claude-x"
    assert groups.named_models("special") == ["gemini-3-flash"]
    assert groups.named_models("claude-x") == ["claude-x"]
    known = ["gemini-3-flash", "gemini-3.7-flash-high", "gemini-3.1-flash-lite", "claude-x"]
    assert group_models(groups, "gemini", known) == ["gemini-3-pro-special", "gemini-3.1-flash-lite"]
    assert group_models(groups, "flash", known) == ["gemini-3.7-flash-high"]


# --- parsing the summary ---------------------------------------------------------------------

SUMMARY = {
    "groups": [
        {
            "displayName": "Gemini Models",
            "buckets": [
                {
                    "bucketId": "gemini-5h",
                    "window": "5h",
                    "remainingFraction": 0.75,
                    "resetTime": "2026-11-27T18:00:00Z",
                },
                {"bucketId": "gemini-weekly", "window": "weekly", "resetTime": "2026-12-01T00:00:00Z"},
            ],
        },
        {
            "displayName": "Claude and GPT models",
            "buckets": [
                {"bucketId": "3p-5h", "remainingFraction": 0.5, "resetTime": "2026-11-27T19:00:00Z"},
                {"bucketId": "3p-weekly", "window": "weekly", "remainingFraction": 1.5},
                {"bucketId": "3p-monthly", "window": "monthly"},  # no figure at all: no window open
                {"window": "5h", "remainingFraction": 0.1},  # no id
                "junk",
            ],
        },
        {"displayName": "Video", "buckets": [{"bucketId": "video-5h", "remainingFraction": 0.2}]},
    ]
}


def test_summary_windows_are_parsed_with_proto3_zeroes_and_their_groups():
    windows = {w.bucket_id: w for w in parse_quota_windows(SUMMARY, QuotasConfig())}
    assert set(windows) == {"gemini-5h", "gemini-weekly", "3p-5h", "3p-weekly", "video-5h"}
    assert windows["gemini-5h"] == QuotaWindow(
        "gemini-5h", "gemini", "5h", "gemini", 0.75, datetime(2026, 11, 27, 18, tzinfo=UTC)
    )
    # A missing fraction with a reset is 0 (PROTOCOL §6), as in fetchAvailableModels.
    assert windows["gemini-weekly"].quota == 0.0 and windows["gemini-weekly"].window == "weekly"
    # The window is read from the id when missing; fractions are clamped.
    assert (windows["3p-5h"].window, windows["3p-5h"].bucket, windows["3p-5h"].quota_group) == (
        "5h",
        "3p",
        "claude_gpt",
    )
    assert windows["3p-weekly"].quota == 1.0 and windows["3p-weekly"].reset_time is None
    # A bucket no group maps is kept for display, limiting nothing.
    assert windows["video-5h"].quota_group is None


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=30,
)


@given(
    st.dictionaries(
        st.sampled_from(["groups", "buckets", "bucketId", "window", "remainingFraction", "resetTime", "x"]),
        json_values,
        max_size=4,
    )
)
def test_the_summary_parser_takes_anything(data: dict[str, Any]):
    for window in parse_quota_windows(data, QuotasConfig()):
        assert 0.0 <= window.quota <= 1.0 and window.bucket_id


# --- the free-tier "starter" shape ----------------------------------------------------------


def _models_without_claude_fractions() -> dict[str, Any]:
    reset = "2026-11-27T20:00:00Z"
    return {
        "models": {
            CLAUDE: {"quotaInfo": {"resetTime": reset}},
            "gpt-oss-120b-medium": {"quotaInfo": {}},
            GEMINI: {"quotaInfo": {"resetTime": reset}},
        }
    }


def test_on_a_free_tier_claude_and_gpt_take_the_summarys_3p_5h_figure():
    groups = QuotasConfig()
    windows = parse_quota_windows(SUMMARY, groups)
    free = {
        r.model_name: r
        for r in parse_quota_readings(
            _models_without_claude_fractions(), groups, free_tier=True, windows=windows
        )
    }
    assert free[CLAUDE].quota == 0.5 and free[CLAUDE].reset_time == datetime(2026, 11, 27, 19, tzinfo=UTC)
    assert free["gpt-oss-120b-medium"].quota == 0.5
    # Everywhere else a missing fraction with a reset time still means exhausted (PROTOCOL §6).
    assert free[GEMINI].quota == 0.0
    paid = {
        r.model_name: r
        for r in parse_quota_readings(_models_without_claude_fractions(), groups, windows=windows)
    }
    assert paid[CLAUDE].quota == 0.0 and "gpt-oss-120b-medium" not in paid
    no_summary = parse_quota_readings(_models_without_claude_fractions(), groups, free_tier=True)
    assert {r.model_name: r.quota for r in no_summary} == {CLAUDE: 0.0, GEMINI: 0.0}


# --- selection -------------------------------------------------------------------------------


def _row(**fields: Any) -> dict[str, Any]:
    row = {
        "account_id": 1,
        "user_id": 1,
        "is_shared": 0,
        "quota": 0.8,
        "reset_time": None,
        "quota_status": 1,
        "cooldown_until": None,
        "access_token_expires_at": datetime.now(UTC) + timedelta(hours=1),
        "refresh_retry_at": None,
        "pool_quota": 2.0,
        "pool_max": 2.0,
        "window_exhausted": False,
        "window_reset": None,
    }
    return {**row, **fields}


def test_an_exhausted_window_parks_the_account_until_the_latest_reason_passes():
    now = datetime(2026, 11, 27, 12, tzinfo=UTC)
    weekly = now + timedelta(days=3)

    def rank(**fields: Any) -> Any:
        return rank_candidates([_row(**fields)], user_id=1, prefer_shared=False, inflight={}, now=now)

    ranking = rank(window_exhausted=True, window_reset=weekly)
    assert ranking.accounts == [] and ranking.retry_at == weekly
    # It comes back at the later reset: a 5-hour exhaustion and a cooldown end sooner.
    ranking = rank(
        window_exhausted=True,
        window_reset=weekly,
        quota=0.0,
        reset_time=now + timedelta(hours=1),
        cooldown_until=now + timedelta(minutes=5),
    )
    assert ranking.retry_at == weekly
    err = no_account_error(ranking, CLAUDE, now=now)
    assert isinstance(err, RateLimited) and err.retry_after == 3 * DAY
    # Past its reset, the window is open again by itself.
    assert rank(window_exhausted=True, window_reset=now - timedelta(seconds=1)).accounts
    # Unknown reset: looked at again in an hour.
    assert rank(window_exhausted=True).retry_at == now + timedelta(hours=1)


# --- end to end ------------------------------------------------------------------------------


async def test_a_weekly_window_at_zero_parks_the_account_until_its_reset(gateway: Gateway):
    alice, key = await gateway.user("alice")
    account = await gateway.account(alice, "a@example.com", is_shared=0)
    # The 5-hour window (what fetchAvailableModels shows) is open; the weekly one is spent.
    gateway.double.set_quota("a@example.com", "claude_gpt", 0.0, reset_time=3 * DAY, window="weekly")
    await gateway.quotas.read(account)
    stored = await value(gateway.db, "SELECT quota FROM model_quotas WHERE model_name = %(m)s", m=CLAUDE)
    assert stored == 1.0
    chats = len(gateway.double.chat_requests)

    response = await gateway.chat(key, CLAUDE)
    err = await error(response, 429)
    assert err["type"] == "rate_limit_error" and err["code"] == "accounts_exhausted"
    assert abs(int(response.headers["Retry-After"]) - 3 * DAY) < 120
    assert len(gateway.double.chat_requests) == chats, "known to be exhausted: upstream not asked"
    # The other family's bucket is untouched.
    assert (await gateway.chat(key, GEMINI)).status == 200

    # At its reset it comes back by itself: move the stored reset instead of waiting 3 days.
    gateway.double.set_quota("a@example.com", "claude_gpt", 1.0, reset_time=7 * DAY, window="weekly")
    await sql(gateway.db, "UPDATE quota_windows SET reset_time = now() - interval '1 second' WHERE quota = 0")
    gateway.app[GATEWAY].router.invalidate()  # changed behind the app's back
    assert (await gateway.chat(key, CLAUDE)).status == 200


async def test_the_account_comes_back_at_the_later_reset_of_its_windows(gateway: Gateway):
    alice, key = await gateway.user("alice")
    account = await gateway.account(alice, "a@example.com", is_shared=0)
    gateway.double.set_quota("a@example.com", "gemini", 0.0, reset_time=3600)
    gateway.double.set_quota("a@example.com", "gemini", 0.0, reset_time=2 * DAY, window="weekly")
    await gateway.quotas.read(account)
    response = await gateway.chat(key, GEMINI)
    await error(response, 429)
    assert abs(int(response.headers["Retry-After"]) - 2 * DAY) < 120
    # A fresh read that shows both windows open brings it back at once.
    gateway.double.set_quota("a@example.com", "gemini", 0.5, reset_time=3600)
    gateway.double.set_quota("a@example.com", "gemini", 0.5, reset_time=2 * DAY, window="weekly")
    await gateway.quotas.read(account)
    assert (await gateway.chat(key, GEMINI)).status == 200


async def test_the_quotas_endpoint_shows_both_windows_beside_the_model_rows(gateway: Gateway):
    alice, key = await gateway.user("alice")
    account = await gateway.account(alice, "a@example.com", read=False)
    gateway.double.set_quota("a@example.com", "claude_gpt", 0.25, reset_time=2 * DAY, window="weekly")
    response = await gateway.client.get(f"/api/accounts/{account}/quotas", headers=key)
    rows = await ok(response)
    body = await response.json()
    assert {r["model_name"] for r in rows} >= {CLAUDE, GEMINI, IMAGE}  # today's per-model rows, unchanged
    windows = {(w["bucket"], w["window"]): w for w in body["windows"]}
    assert set(windows) == {("gemini", "5h"), ("gemini", "weekly"), ("3p", "5h"), ("3p", "weekly")}
    weekly = windows[("3p", "weekly")]
    assert set(weekly) >= {"bucket", "window", "quota", "reset_time"}
    assert weekly["quota"] == 0.25 and isinstance(weekly["quota"], float)
    assert weekly["quota_group"] == "claude_gpt" and weekly["bucket_id"] == "3p-weekly"
    assert weekly["reset_time"].endswith("Z")
    assert [w["window"] for w in body["windows"]] == ["5h", "weekly", "5h", "weekly"]
    [summary] = gateway.double.requests_for("retrieveUserQuotaSummary")
    assert summary.body == {"project": gateway.double.account("a@example.com").project}


async def test_a_free_starter_account_serves_claude_on_the_summarys_figure(gateway: Gateway):
    alice, key = await gateway.user("alice")
    upstream = gateway.double.add_account("starter@example.com", starter=True)
    account = await insert_account(
        gateway.db,
        alice,
        "starter@example.com",
        is_shared=0,
        project=upstream.project,
        access_token=upstream.access_token,
    )
    await sql(gateway.db, "UPDATE accounts SET tier = 'free-tier' WHERE account_id = %(a)s", a=account)
    gateway.double.set_quota(upstream, "claude_gpt", 0.6)
    await gateway.quotas.read(account)
    quotas = {
        r["model_name"]: r["quota"]
        for r in await sql(
            gateway.db, "SELECT model_name, quota FROM model_quotas WHERE account_id = %(a)s", a=account
        )
    }
    assert quotas[CLAUDE] == pytest.approx(0.6) and quotas["gpt-oss-120b-medium"] == pytest.approx(0.6)
    assert (await gateway.chat(key, CLAUDE)).status == 200


async def test_a_quota_429_parks_every_model_of_the_family_the_account_offers(gateway: Gateway):
    alice, key = await gateway.user("alice")
    account = await gateway.account(alice, "a@example.com", is_shared=0)
    gateway.double.fail("quota", rpc="chat")
    await error(await gateway.chat(key, GEMINI), 429)
    parked = {
        r["model_name"]
        for r in await sql(gateway.db, "SELECT model_name FROM cooldowns WHERE account_id = %(a)s", a=account)
    }
    offered = {m for m in gateway.double.models if gateway.double.group_of(m) == "gemini"}
    assert parked == offered and IMAGE not in parked and CLAUDE not in parked


async def test_a_paid_account_kept_without_a_project_is_onboarded_by_a_later_read(gateway: Gateway):
    alice, _ = await gateway.user("alice")
    double = gateway.double
    pro = double.add_account("pro@example.com", project=None, paid_tier="g1-pro-tier", onboard_polls=0)
    account = await insert_account(
        gateway.db, alice, "pro@example.com", project="", access_token=pro.access_token
    )
    assert await gateway.quotas.read(account) is not None
    project = await value(gateway.db, "SELECT project_id FROM accounts WHERE account_id = %(a)s", a=account)
    assert project == pro.onboard_project
    [onboard] = double.requests_for("onboardUser")
    assert onboard.body == {"tierId": "g1-pro-tier", "metadata": {"ideType": "ANTIGRAVITY"}}
    [summary] = double.requests_for("retrieveUserQuotaSummary")
    assert summary.body == {"project": pro.onboard_project}

    # Onboarding that yields none keeps the account serving without one, and is not asked every read.
    double.clear_requests()
    none = double.add_account("none@example.com", project=None, paid_tier="g1-pro-tier", onboard_project="")
    other = await insert_account(
        gateway.db, alice, "none@example.com", project="", access_token=none.access_token
    )
    for _ in range(2):
        await sql(gateway.db, "UPDATE accounts SET quota_fetched_at = NULL")
        assert await gateway.quotas.read(other) is not None
    assert len(double.requests_for("onboardUser")) == 1
    assert await value(gateway.db, "SELECT project_id FROM accounts WHERE account_id = %(a)s", a=other) == ""
    assert [r.body for r in double.requests_for("retrieveUserQuotaSummary")] == [{}, {}]


# --- the summary call --------------------------------------------------------------------------


@pytest.fixture
async def two_hosts(aiohttp_client: Any, db_dsn: str) -> AsyncIterator[tuple[Gateway, UpstreamDouble]]:
    """A gateway whose base_urls are a "daily" double, then a "prod" one knowing the same accounts."""
    daily, prod = UpstreamDouble(), UpstreamDouble()
    daily_base, prod_base = await daily.start(), await prod.start()
    try:
        config = make_config(db_dsn, upstream={"base_urls": [daily_base, prod_base]})
        client = await aiohttp_client(create_app(config))
        client.server.app[QUOTAS].min_delay = 60.0
        yield Gateway(client, daily), prod
    finally:
        await daily.stop()
        await prod.stop()


async def test_a_failing_summary_keeps_the_last_windows_and_never_tries_another_host(two_hosts):
    gateway, prod = two_hosts
    alice, _ = await gateway.user("alice")
    acc = gateway.double.add_account("a@example.com")
    prod.add_account("a@example.com", refresh_token=acc.refresh_token, access_token=acc.access_token)
    account = await insert_account(
        gateway.db, alice, "a@example.com", project=acc.project, access_token=acc.access_token
    )
    gateway.double.set_quota(acc, "claude_gpt", 0.0, reset_time=DAY, window="weekly")
    assert await gateway.quotas.read(account) is not None
    assert await value(gateway.db, "SELECT count(*) FROM quota_windows") == 4

    gateway.double.fail("internal", rpc="retrieveUserQuotaSummary", times=2)
    gateway.double.set_quota(acc, "gemini", 0.5)
    with structlog.testing.capture_logs() as logs:
        for _ in range(2):
            await sql(gateway.db, "UPDATE accounts SET quota_fetched_at = now() - interval '1 hour'")
            assert await gateway.quotas.read(account) is not None
    # The read counted (models stored), the windows stayed, one warning for the outage.
    stored = await value(gateway.db, "SELECT quota FROM model_quotas WHERE model_name = %(m)s", m=GEMINI)
    assert stored == 0.5
    weekly = await value(gateway.db, "SELECT quota FROM quota_windows WHERE bucket_id = '3p-weekly'")
    assert weekly == 0.0
    assert [e["event"] for e in logs].count("quota_summary_failed") == 1
    # Only the daily host has current weekly figures: prod was never asked for them.
    assert prod.requests_for("retrieveUserQuotaSummary") == []
    # Back: the windows are replaced again.
    gateway.double.set_quota(acc, "claude_gpt", 0.75, reset_time=DAY, window="weekly")
    await sql(gateway.db, "UPDATE accounts SET quota_fetched_at = now() - interval '1 hour'")
    assert await gateway.quotas.read(account) is not None
    weekly = await value(gateway.db, "SELECT quota FROM quota_windows WHERE bucket_id = '3p-weekly'")
    assert weekly == 0.75


# --- the double speaks §13.6 and §13.7 ---------------------------------------------------------


async def _call(double: UpstreamDouble, rpc: str, token: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{double.base_url}/v1internal:{rpc}",
            json=body,
            headers={"Authorization": f"Bearer {token}", "User-Agent": "antigravity/hub/2.9.1 darwin/arm64"},
        ) as response,
    ):
        return response.status, await response.json()


async def test_the_double_answers_the_summary_and_steers_its_windows(double: UpstreamDouble):
    acc = double.add_account("a@example.com")
    double.set_quota(acc, "claude_gpt", 0.0, reset_time=3 * DAY, window="weekly")
    double.set_quota(acc, "gemini", 0.4)
    status, summary = await _call(
        double, "retrieveUserQuotaSummary", acc.access_token, {"project": acc.project}
    )
    assert status == 200
    buckets = {b["bucketId"]: b for g in summary["groups"] for b in g["buckets"]}
    assert set(buckets) == {"gemini-5h", "gemini-weekly", "3p-5h", "3p-weekly"}
    assert buckets["gemini-5h"]["remainingFraction"] == 0.4 and buckets["gemini-5h"]["window"] == "5h"
    assert "remainingFraction" not in buckets["3p-weekly"] and buckets["3p-weekly"]["window"] == "weekly"
    # A chat of the family with its weekly window spent is a 429; the other family is served.
    assert double.group_of(CLAUDE) == "claude_gpt" and double.group_of(IMAGE) == IMAGE
    status, _ = await _call(double, "generateContent", acc.access_token, _chat(acc.project, CLAUDE))
    assert status == 429
    status, _ = await _call(double, "generateContent", acc.access_token, _chat(acc.project, GEMINI))
    assert status == 200
    assert double.quota(acc, GEMINI, "weekly") < 1.0  # both windows of the bucket are drawn on


async def test_the_double_has_the_free_starter_shape(double: UpstreamDouble):
    acc = double.add_account("s@example.com", starter=True)
    _, models = await _call(double, "fetchAvailableModels", acc.access_token, {"project": acc.project})
    assert "remainingFraction" not in models["models"][CLAUDE]["quotaInfo"]
    assert models["models"][GEMINI]["quotaInfo"]["remainingFraction"] == 1.0


async def test_the_double_onboards_paid_tiers(double: UpstreamDouble):
    acc = double.add_account("p@example.com", project=None, paid_tier="g1-pro-tier", onboard_polls=0)
    body = {"tierId": "g1-pro-tier", "metadata": {"ideType": "ANTIGRAVITY"}}
    status, reply = await _call(double, "onboardUser", acc.access_token, body)
    assert status == 200 and reply["response"]["cloudaicompanionProject"]["id"] == acc.onboard_project
    status, _ = await _call(double, "onboardUser", acc.access_token, {**body, "tierId": "g1-ultra-tier"})
    assert status == 400
    none = double.add_account(
        "n@example.com", project=None, paid_tier="g1-pro-tier", onboard_polls=0, onboard_project=""
    )
    _, reply = await _call(double, "onboardUser", none.access_token, body)
    assert reply["done"] is True and "cloudaicompanionProject" not in reply["response"]


def _chat(project: str | None, model: str) -> dict[str, Any]:
    return {
        "project": project,
        "requestId": "agent-1",
        "model": model,
        "userAgent": "antigravity",
        "requestType": "agent",
        "request": {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "sessionId": "-1"},
    }
