"""Account choice and failover end to end (SPEC §5): openai SDK -> antigv -> upstream double.

Which of two equal accounts a request tries first depends on sticky routing, so these
tests either read the order from the double's recorded requests, or make it certain by
tier (a dedicated account is tried before a shared one).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import openai
import pytest

from antigv.backends.google.failures import MIN_THROTTLE_DELAY
from tests.conftest import bearer
from tests.e2e.conftest import CLAUDE, E2E, GEMINI, Acc, user
from tests.upstream_double import (
    anthropic_error_body,
    empty_reply,
    invalid_argument_body,
    quota_exhausted_body,
    rate_limit_body,
)

BOTH = pytest.mark.parametrize("model", [GEMINI, CLAUDE])
QUOTA_RESET = 4 * 3600 + 30 * 60 + 28  # what the double's QUOTA_EXHAUSTED says


async def ask(
    e2e: E2E, model: str = GEMINI, text: str = "hi", *, gw: Any = None, request_id: str | None = None
) -> str:
    headers = {"X-Request-Id": request_id} if request_id else None
    completion = await e2e.client(gw=gw).chat.completions.create(
        model=model, messages=user(text), extra_headers=headers
    )
    return completion.choices[0].message.content


def by_email(accounts: list[Acc], email: str | None) -> Acc:
    return next(a for a in accounts if a.email == email)


async def statuses(e2e: E2E, accounts: list[Acc]) -> list[int]:
    return [(await e2e.account_row(a))["status"] for a in accounts]


def seconds_until(moment: datetime) -> float:
    return (moment - datetime.now(UTC)).total_seconds()


# --------------------------------------------------------------------------- throttling


@BOTH
async def test_quota_exhausted_fails_over_and_parks_the_account(e2e: E2E, model: str) -> None:
    accounts = [await e2e.add_account(), await e2e.add_account()]
    e2e.double.fail("quota", times=1)

    assert await ask(e2e, model, request_id="quota-1") == "Hello world!"

    first, second = (by_email(accounts, e2e.account_of(i)) for i in (0, 1))
    assert first is not second
    cooldowns = await e2e.cooldowns()
    # The whole quota group shares the bucket, so every model of it the account's last read
    # reported is parked (PROTOCOL §13.6); none was read here, so just the one asked for.
    assert [c["model_name"] for c in cooldowns] == [model]
    for cooldown in cooldowns:
        assert cooldown["account_id"] == first.account_id
        assert cooldown["reason"] == "quota_exhausted"
        assert abs(seconds_until(cooldown["until"]) - QUOTA_RESET) < 120
    (row,) = await e2e.usage_rows(request_id="quota-1")
    assert row["account_id"] == second.account_id and row["status"] == "ok"

    # The parked account is skipped without being asked again, even for the same conversation.
    assert await ask(e2e, model) == "Hello world!"
    assert len(e2e.double.chat_requests) == 3
    assert e2e.account_of(2) == second.email


async def test_short_rate_limit_is_waited_out_on_the_same_account(e2e: E2E) -> None:
    await e2e.add_account()
    await e2e.add_account()
    e2e.double.fail("rate_limit", times=1)

    assert await ask(e2e) == "Hello world!"

    assert len(e2e.double.chat_requests) == 2
    assert e2e.account_of(0) == e2e.account_of(1)
    # The upstream asked for ~1 s; a throttle is never retried sooner than the floor.
    assert e2e.clock.sleeps == [MIN_THROTTLE_DELAY]
    assert await e2e.cooldowns() == []


@pytest.mark.parametrize("kind", ["capacity", "capacity_503"])
async def test_capacity_backs_off_on_the_same_account_without_cooldown(e2e: E2E, kind: str) -> None:
    await e2e.add_account()
    await e2e.add_account()
    e2e.double.fail(kind, times=1)

    assert await ask(e2e) == "Hello world!"

    assert e2e.clock.sleeps == [1.0]  # backed off before asking again (failover.capacity_backoff)
    assert len(e2e.double.chat_requests) == 2
    assert e2e.account_of(0) == e2e.account_of(1)
    assert await e2e.cooldowns() == []


async def test_lasting_capacity_shortage_gives_up_without_burning_accounts(e2e: E2E) -> None:
    e2e.gw = await e2e.new_gateway(first_byte_timeout=1.5)
    accounts = [await e2e.add_account(), await e2e.add_account()]
    e2e.double.fail("capacity", times=10)

    with pytest.raises(openai.RateLimitError) as caught:
        await ask(e2e)

    assert caught.value.code == "model_capacity_exhausted"
    emails = {r.account for r in e2e.double.chat_requests}
    assert len(emails) == 1 and len(e2e.double.chat_requests) == 2
    assert e2e.clock.sleeps == [1.0]  # the next backoff (2 s) would pass the first-byte deadline
    assert await e2e.cooldowns() == []
    assert await statuses(e2e, accounts) == [1] * len(accounts)


async def test_long_rate_limit_parks_the_account_and_moves_on(e2e: E2E) -> None:
    accounts = [await e2e.add_account(), await e2e.add_account()]
    e2e.double.fail(429, times=1, body=rate_limit_body(GEMINI, delay=30))

    assert await ask(e2e) == "Hello world!"

    first = by_email(accounts, e2e.account_of(0))
    assert e2e.account_of(1) != first.email
    (cooldown,) = await e2e.cooldowns()
    assert cooldown["account_id"] == first.account_id and cooldown["reason"] == "rate_limited"
    assert 20 < seconds_until(cooldown["until"]) <= 31


async def test_silent_upstream_is_504_without_failover(e2e: E2E) -> None:
    e2e.gw = await e2e.new_gateway(first_byte_timeout=0.3)
    await e2e.add_account()
    await e2e.add_account()
    e2e.double.next_transport(first_byte_delay=0.6)

    with pytest.raises(openai.APIStatusError) as caught:
        await ask(e2e)

    assert caught.value.status_code == 504
    assert caught.value.code == "upstream_timeout"
    assert len(e2e.double.chat_requests) == 1
    assert await e2e.cooldowns() == []


async def test_headers_without_a_first_frame_time_out(e2e: E2E) -> None:
    e2e.gw = await e2e.new_gateway(first_byte_timeout=0.3)
    await e2e.add_account()
    e2e.double.next_transport(first_frame_delay=2.0)

    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        await ask(e2e)

    assert caught.value.status_code == 504
    assert time.monotonic() - started < 1.6  # the 0.3 s bound, not the frame at 2 s (slack for slow CI)
    assert not e2e.double.last_chat().completed


async def test_stall_mid_stream_ends_with_an_error_event(e2e: E2E) -> None:
    e2e.gw = await e2e.new_gateway(idle_timeout=0.2)
    await e2e.add_account()
    e2e.double.next_transport(frame_delay=0.6)
    stream = await e2e.client().chat.completions.create(
        model=GEMINI, messages=user("hi"), stream=True, extra_headers={"X-Request-Id": "stall-1"}
    )
    got = []
    with pytest.raises(openai.APIError) as caught:
        async for chunk in stream:
            got.append(chunk)
    assert caught.value.body["code"] == "upstream_timeout"
    assert [c.choices[0].delta.content for c in got[1:]] == ["Hello"]
    (row,) = await e2e.usage_rows(request_id="stall-1")
    assert row["status"] == "error"


async def test_empty_reply_moves_to_the_next_account(e2e: E2E) -> None:
    await e2e.add_account()
    await e2e.add_account()
    e2e.double.script(empty_reply())

    assert await ask(e2e) == "Hello world!"

    assert [r.reply_kind for r in e2e.double.chat_requests] == ["empty", "text"]
    assert e2e.account_of(0) != e2e.account_of(1)


# --------------------------------------------------------------------------- errors of one account


@pytest.mark.parametrize("failure", ["internal", "not_found_host", "network"])
async def test_server_and_network_errors_move_to_the_next_account(e2e: E2E, failure: str) -> None:
    accounts = [await e2e.add_account(), await e2e.add_account()]
    if failure == "network":
        e2e.double.next_transport(break_after=0)  # half a frame, then the connection drops
    elif failure == "internal":
        e2e.double.fail("internal", times=1)
    else:
        e2e.double.fail(503, times=1)

    assert await ask(e2e, request_id="fo-1") == "Hello world!"

    assert len(e2e.double.chat_requests) == 2
    assert e2e.account_of(0) != e2e.account_of(1)
    assert await e2e.cooldowns() == []
    assert await statuses(e2e, accounts) == [1] * len(accounts)
    (row,) = await e2e.usage_rows(request_id="fo-1")
    assert row["account_id"] == by_email(accounts, e2e.account_of(1)).account_id


async def test_401_refreshes_once_and_retries_the_same_account(e2e: E2E) -> None:
    acc = await e2e.add_account()
    e2e.double.expire_access_token(account=acc.upstream)

    assert await ask(e2e) == "Hello world!"

    requests = e2e.double.chat_requests
    assert [r.status for r in requests] == [401, 200]
    assert requests[1].account == acc.email
    assert e2e.double.refresh_count(acc.upstream) == 1
    row = await e2e.account_row(acc)
    assert row["access_token"] == "plain:" + acc.upstream.access_token
    # The next request uses the refreshed token without another refresh.
    assert await ask(e2e) == "Hello world!"
    assert e2e.double.refresh_count(acc.upstream) == 1
    assert e2e.double.chat_requests[-1].status == 200


@pytest.mark.parametrize("where", ["expired_in_db", "rejected_upstream"])
async def test_revoked_refresh_token_disables_the_account_and_fails_over(e2e: E2E, where: str) -> None:
    dedicated = await e2e.add_account(expired=where == "expired_in_db")
    shared = await e2e.add_account(shared=True)  # tried after the dedicated one
    e2e.double.revoke(dedicated.upstream)
    if where == "rejected_upstream":
        e2e.double.expire_access_token(account=dedicated.upstream)

    assert await ask(e2e, request_id="revoked-1") == "Hello world!"

    assert e2e.double.refresh_count(dedicated.upstream) == 1
    assert e2e.account_of(-1) == shared.email
    row = await e2e.account_row(dedicated)
    assert row["status"] == 0
    assert "invalid_grant" in row["disabled_reason"]
    (usage,) = await e2e.usage_rows(request_id="revoked-1")
    assert usage["account_id"] == shared.account_id and usage["is_shared"] == 1
    # A disabled account is not tried again.
    assert await ask(e2e) == "Hello world!"
    assert e2e.double.refresh_count(dedicated.upstream) == 1


async def test_transient_refresh_failure_backs_off_without_disabling(e2e: E2E) -> None:
    dedicated = await e2e.add_account(expired=True)
    shared = await e2e.add_account(shared=True)
    e2e.double.fail(500, times=1, rpc="token", body={"error": "internal_failure"})

    assert await ask(e2e) == "Hello world!"

    assert e2e.account_of(-1) == shared.email
    row = await e2e.account_row(dedicated)
    assert row["status"] == 1 and row["disabled_reason"] is None
    assert row["refresh_failures"] == 1 and seconds_until(row["refresh_retry_at"]) > 10
    # While it backs off, the account is not asked to refresh again.
    assert await ask(e2e) == "Hello world!"
    assert len(e2e.double.token_calls) == 1  # the failed one (injected, so not a refresh_count)
    assert e2e.account_of(-1) == shared.email


@pytest.mark.parametrize(
    ("kind", "reason_part"),
    [
        # VALIDATION_REQUIRED parks instead (PROTOCOL §13.9): tests/e2e/test_upstream_2026.py.
        ("banned", "Terms of Service"),
        ("project_invalid", "Invalid resource field"),
    ],
)
async def test_account_problems_disable_the_account(e2e: E2E, kind: str, reason_part: str) -> None:
    dedicated = await e2e.add_account()
    shared = await e2e.add_account(shared=True)
    e2e.double.fail(kind, times=1, account=dedicated.upstream)

    assert await ask(e2e, CLAUDE) == "Hello world!"

    assert [r.account for r in e2e.double.chat_requests] == [dedicated.email, shared.email]
    row = await e2e.account_row(dedicated)
    assert row["status"] == 0
    assert reason_part in row["disabled_reason"]
    assert (await e2e.account_row(shared))["status"] == 1
    # A project refused as invalid is asked for again first; here it has not changed.
    expected_checks = 1 if kind == "project_invalid" else 0
    assert len(e2e.double.requests_for("loadCodeAssist")) == expected_checks


async def test_plain_permission_denied_parks_but_does_not_disable(e2e: E2E) -> None:
    dedicated = await e2e.add_account()
    shared = await e2e.add_account(shared=True)
    e2e.double.fail("permission_denied", times=2, account=dedicated.upstream)

    assert await ask(e2e) == "Hello world!"

    assert e2e.account_of(-1) == shared.email
    assert (await e2e.account_row(dedicated))["status"] == 1
    (cooldown,) = await e2e.cooldowns(dedicated)
    assert cooldown["reason"] == "permission_denied"
    # The project was asked for again (unchanged), and not again on the next refusal.
    await e2e.sql("DELETE FROM cooldowns")
    assert await ask(e2e) == "Hello world!"
    assert len(e2e.double.requests_for("loadCodeAssist")) == 1


@pytest.mark.parametrize("kind", ["moved", "project_invalid"])
async def test_a_project_google_moved_is_found_again_and_the_request_served(e2e: E2E, kind: str) -> None:
    acc = await e2e.add_account()
    old_project = acc.upstream.project
    acc.upstream.project = "moved-project-12345"
    if kind == "project_invalid":
        e2e.double.fail("project_invalid", times=1, account=acc.upstream)
    # "moved": the double refuses the old project with 403 PERMISSION_DENIED, as upstream does.

    assert await ask(e2e) == "Hello world!"

    assert [(r.account, r.project) for r in e2e.double.chat_requests] == [
        (acc.email, old_project),
        (acc.email, "moved-project-12345"),
    ]
    row = await e2e.account_row(acc)
    assert row["status"] == 1 and row["project_id"] == "moved-project-12345"
    assert await e2e.cooldowns(acc) == []


async def test_a_failed_project_check_falls_back_to_disabling(e2e: E2E) -> None:
    dedicated = await e2e.add_account()
    shared = await e2e.add_account(shared=True)
    e2e.double.fail("project_invalid", times=1, account=dedicated.upstream)
    e2e.double.fail("internal", rpc="loadCodeAssist", times=1)

    assert await ask(e2e) == "Hello world!"

    assert e2e.account_of(-1) == shared.email
    assert (await e2e.account_row(dedicated))["status"] == 0


@BOTH
@pytest.mark.parametrize("flavour", ["google", "anthropic"])
async def test_invalid_argument_is_the_clients_400_without_failover(
    e2e: E2E, model: str, flavour: str
) -> None:
    accounts = [await e2e.add_account(), await e2e.add_account()]
    if flavour == "google":
        e2e.double.fail("invalid_argument", times=1)
        message = "Request contains an invalid argument."
    else:
        message = "messages: text content blocks must be non-empty"
        e2e.double.fail(400, times=1, body=anthropic_error_body(message))

    with pytest.raises(openai.BadRequestError) as caught:
        await ask(e2e, model)

    assert caught.value.status_code == 400
    assert caught.value.body["message"] == message  # the embedded Anthropic message, unwrapped
    assert len(e2e.double.chat_requests) == 1
    assert await statuses(e2e, accounts) == [1] * len(accounts)
    assert await e2e.cooldowns() == []


async def test_bad_request_mentioning_quota_is_still_the_clients_400(e2e: E2E) -> None:
    await e2e.add_account()
    await e2e.add_account()
    # E.g. the client's tool has a property named "quota" with a schema the upstream refuses.
    message = "Invalid value at 'tools[0].function_declarations[0].parameters.properties[0].value' (quota)"
    e2e.double.fail(400, times=2, body=invalid_argument_body(message))

    with pytest.raises(openai.BadRequestError):
        await ask(e2e)
    assert len(e2e.double.chat_requests) == 1
    assert await e2e.cooldowns() == []


# --------------------------------------------------------------------------- exhaustion


@BOTH
async def test_all_accounts_exhausted_is_429_with_retry_after(e2e: E2E, model: str) -> None:
    await e2e.add_account()
    await e2e.add_account()
    e2e.double.fail("quota", times=2)

    with pytest.raises(openai.RateLimitError) as caught:
        await ask(e2e, model)
    retry_after = float(caught.value.response.headers["Retry-After"])
    assert abs(retry_after - QUOTA_RESET) < 120
    assert len(e2e.double.chat_requests) == 2
    parked = {c["account_id"] for c in await e2e.cooldowns() if c["model_name"] == model}
    assert len(parked) == 2

    # Known exhausted: answered at once, without asking the upstream.
    with pytest.raises(openai.RateLimitError) as caught:
        await ask(e2e, model)
    assert abs(float(caught.value.response.headers["Retry-After"]) - QUOTA_RESET) < 120
    assert caught.value.code == "accounts_exhausted"
    assert len(e2e.double.chat_requests) == 2


async def test_exhausted_retry_after_is_the_earliest_comeback(e2e: E2E) -> None:
    dedicated = await e2e.add_account()  # tried first: back in an hour
    await e2e.add_account(shared=True)  # tried last: back in 4.5 hours
    e2e.double.fail(
        429, times=1, account=dedicated.upstream, body=quota_exhausted_body(GEMINI, 3600, time.time())
    )
    e2e.double.fail("quota", times=1)

    with pytest.raises(openai.RateLimitError) as first:
        await ask(e2e)
    with pytest.raises(openai.RateLimitError) as second:
        await ask(e2e)

    assert len(e2e.double.chat_requests) == 2
    # The same answer whether the accounts were found exhausted now or earlier.
    for caught in (first, second):
        assert 3500 <= float(caught.value.response.headers["Retry-After"]) <= 3600


async def test_cooldown_ends_by_itself(e2e: E2E) -> None:
    acc = await e2e.add_account()
    until = datetime.now(UTC) + timedelta(minutes=10)
    await e2e.sql(
        "INSERT INTO cooldowns (account_id, model_name, until, reason) VALUES (%s, %s, %s, 'quota_exhausted')",
        (acc.account_id, GEMINI, until),
    )
    with pytest.raises(openai.RateLimitError) as caught:
        await ask(e2e)
    assert 590 <= float(caught.value.response.headers["Retry-After"]) <= 600
    assert e2e.double.chat_requests == []
    # Another model of the same account is not affected.
    assert await ask(e2e, CLAUDE) == "Hello world!"

    await e2e.sql("UPDATE cooldowns SET until = now() - interval '1 second'")
    assert await ask(e2e) == "Hello world!"
    assert e2e.account_of(-1) == acc.email


async def test_exhausted_quota_row_comes_back_after_its_reset(e2e: E2E) -> None:
    acc = await e2e.add_account()
    await e2e.sql(
        "INSERT INTO model_quotas (account_id, model_name, quota_group, quota, reset_time) "
        "VALUES (%s, %s, 'gemini', 0, now() + interval '2 hours')",
        (acc.account_id, GEMINI),
    )
    with pytest.raises(openai.RateLimitError) as caught:
        await ask(e2e)
    assert 7000 <= float(caught.value.response.headers["Retry-After"]) <= 7200
    assert e2e.double.chat_requests == []

    await e2e.sql("UPDATE model_quotas SET reset_time = now() - interval '1 minute'")
    assert await ask(e2e) == "Hello world!"
    assert e2e.account_of(-1) == acc.email


async def test_model_switched_off_by_hand_stays_off(e2e: E2E) -> None:
    acc = await e2e.add_account()
    await e2e.sql(
        "INSERT INTO model_quotas (account_id, model_name, quota_group, quota, reset_time, status) "
        "VALUES (%s, %s, 'gemini', 1, now() - interval '1 hour', 0)",
        (acc.account_id, GEMINI),
    )
    with pytest.raises(openai.PermissionDeniedError):
        await ask(e2e)
    assert e2e.double.chat_requests == []
    assert await ask(e2e, CLAUDE) == "Hello world!"


# --------------------------------------------------------------------------- choosing


async def test_dedicated_first_unless_the_user_prefers_shared(e2e: E2E) -> None:
    dedicated = await e2e.add_account()
    shared = await e2e.add_account(shared=True)

    for i in range(3):
        assert await ask(e2e, text=f"conversation {i}") == "Hello world!"
    assert {r.account for r in e2e.double.chat_requests} == {dedicated.email}

    response = await e2e.gw.http.put(
        f"/api/users/{e2e.user['user_id']}/preference",
        json={"prefer_shared": 1},
        headers=bearer(e2e.user["api_key"]),
    )
    assert response.status == 200
    e2e.double.clear_requests()
    for i in range(3):
        assert await ask(e2e, text=f"conversation {i}") == "Hello world!"
    assert {r.account for r in e2e.double.chat_requests} == {shared.email}
    rows = await e2e.usage_rows(6)
    assert [r["is_shared"] for r in rows] == [0, 0, 0, 1, 1, 1]


async def test_shared_accounts_of_others_need_a_pool(e2e: E2E) -> None:
    bob = await e2e.create_user("bob")
    bobs = await e2e.add_account(user=bob, shared=True)

    # Alice shares nothing, so she has no pool: no account may serve her (not "retry later").
    with pytest.raises(openai.PermissionDeniedError) as caught:
        await ask(e2e)
    assert caught.value.code == "no_account"

    # Once she shares an account she draws on the whole pool, Bob's account included.
    alices = await e2e.add_account(shared=True)
    await e2e.sql(
        "INSERT INTO cooldowns (account_id, model_name, until, reason) "
        "VALUES (%s, %s, now() + interval '1 hour', 'quota_exhausted')",
        (alices.account_id, GEMINI),
    )
    assert await ask(e2e, request_id="pool-1") == "Hello world!"
    assert e2e.account_of(-1) == bobs.email
    (row,) = await e2e.usage_rows(request_id="pool-1")
    assert row["user_id"] == e2e.user["user_id"] and row["account_id"] == bobs.account_id
    assert row["is_shared"] == 1

    # A pool that is used up is a wait, not a refusal.
    await e2e.sql(
        "INSERT INTO shared_pools (user_id, quota_group, quota, max_quota) VALUES (%s, 'gemini', 0, 2) "
        "ON CONFLICT (user_id, quota_group) DO UPDATE SET quota = 0",
        (e2e.user["user_id"],),
    )
    with pytest.raises(openai.RateLimitError) as caught:
        await ask(e2e)
    assert caught.value.code == "pool_exhausted"
    assert float(caught.value.response.headers["Retry-After"]) > 0
    assert len(e2e.double.chat_requests) == 1


async def test_sticky_routing_keeps_a_conversation_and_spreads_others(e2e: E2E) -> None:
    for _ in range(3):
        await e2e.add_account()

    for turn in range(4):
        messages = [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "the same opening"},
            *([{"role": "assistant", "content": "ok"}, {"role": "user", "content": f"turn {turn}"}] * turn),
        ]
        await e2e.client().chat.completions.create(model=GEMINI, messages=messages)
    assert len({r.account for r in e2e.double.chat_requests}) == 1

    e2e.double.clear_requests()
    for i in range(16):
        await ask(e2e, text=f"a different conversation {i}")
    assert len({r.account for r in e2e.double.chat_requests}) == 3


# --------------------------------------------------------------------------- tokens under load


@pytest.mark.parametrize("where", ["expired_in_db", "rejected_upstream"])
async def test_refresh_is_single_flight_under_concurrency(e2e: E2E, where: str) -> None:
    acc = await e2e.add_account(expired=where == "expired_in_db")
    e2e.double.expire_access_token(account=acc.upstream)
    e2e.double.token_delay = 0.2
    oc = e2e.client()

    answers = await asyncio.gather(
        *(oc.chat.completions.create(model=GEMINI, messages=user(f"q{i}")) for i in range(50))
    )

    assert [a.choices[0].message.content for a in answers] == ["Hello world!"] * 50
    assert e2e.double.refresh_count(acc.upstream) == 1
    served = [r for r in e2e.double.chat_requests if r.status == 200]
    assert len(served) == 50
    assert {r.bearer for r in served} == {acc.upstream.access_token}
    if where == "expired_in_db":  # nobody even tried the dead token
        assert len(e2e.double.chat_requests) == 50


async def test_rotated_refresh_token_is_stored_and_used(e2e: E2E) -> None:
    acc = await e2e.add_account(expired=True)
    e2e.double.rotate_on_next_refresh(acc.upstream)
    old_refresh = acc.upstream.refresh_token

    assert await ask(e2e) == "Hello world!"
    row = await e2e.account_row(acc)
    assert acc.upstream.refresh_token != old_refresh
    assert row["refresh_token"] == "plain:" + acc.upstream.refresh_token

    # The old refresh token is revoked now; the next refresh must use the new one.
    await e2e.sql("UPDATE accounts SET access_token_expires_at = now() - interval '1 minute'")
    e2e.double.expire_access_token(account=acc.upstream)
    assert await ask(e2e) == "Hello world!"
    assert (await e2e.account_row(acc))["status"] == 1
    assert e2e.double.refresh_count(old_refresh) == 1
    assert e2e.double.refresh_count(acc.upstream) == 1


# --------------------------------------------------------------------------- two instances


async def test_two_instances_share_cooldowns(e2e: E2E) -> None:
    await e2e.add_account()
    other = await e2e.new_gateway()
    e2e.double.fail("quota", times=1)

    with pytest.raises(openai.RateLimitError):
        await ask(e2e)
    assert len(e2e.double.chat_requests) == 1

    with pytest.raises(openai.RateLimitError) as caught:
        await ask(e2e, gw=other)
    assert caught.value.code == "accounts_exhausted"
    assert abs(float(caught.value.response.headers["Retry-After"]) - QUOTA_RESET) < 120
    assert len(e2e.double.chat_requests) == 1


async def test_two_instances_refresh_one_account_once(e2e: E2E) -> None:
    acc = await e2e.add_account(expired=True)
    other = await e2e.new_gateway()
    e2e.double.token_delay = 0.3
    clients = [e2e.client(), e2e.client(gw=other)]

    answers = await asyncio.gather(
        *(clients[i % 2].chat.completions.create(model=CLAUDE, messages=user(f"q{i}")) for i in range(20))
    )

    assert {a.choices[0].message.content for a in answers} == {"Hello world!"}
    assert e2e.double.refresh_count(acc.upstream) == 1
    assert {r.bearer for r in e2e.double.chat_requests} == {acc.upstream.access_token}
