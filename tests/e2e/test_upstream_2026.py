"""Today's upstream (PROTOCOL §13) end to end: client identity, hosts, envelope, frames, errors.

openai SDK -> antigv -> the upstream double, which speaks §13.12: it refuses old clients,
``"project": ""`` and serves the 2026 lineup. No test sleeps: time that must pass is
moved in the database.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import openai
import pytest

from antigv.appkeys import DB, TASKS, UPSTREAM
from antigv.backends.antigravity.identity import MANIFEST_REFRESH
from tests.conftest import ADMIN_KEY, bearer
from tests.e2e.conftest import E2E, WEATHER_TOOL, Acc, user
from tests.upstream_double import NEW_MODELS, google_error

NEW_MODEL = "gemini-3-flash-agent"  # one the double resolves only for clients >= 2.9.0
assert NEW_MODEL in NEW_MODELS


async def ask(e2e: E2E, model: str = NEW_MODEL, text: str = "hi", **kwargs: Any) -> Any:
    return await e2e.client().chat.completions.create(model=model, messages=user(text), **kwargs)


def seconds_until(moment: datetime) -> float:
    return (moment - datetime.now(UTC)).total_seconds()


async def account_api(e2e: E2E, acc: Acc) -> dict[str, Any]:
    response = await e2e.gw.http.get(f"/api/accounts/{acc.account_id}", headers=bearer(ADMIN_KEY))
    assert response.status == 200, await response.text()
    return (await response.json())["data"]


# --------------------------------------------------------------------------- §13.1 identity


async def test_a_chat_with_the_default_config_passes_the_version_gate(e2e: E2E) -> None:
    await e2e.add_account()

    reply = await ask(e2e)

    assert reply.choices[0].message.content == "Hello world!"
    assert e2e.double.last_chat().headers["User-Agent"] == "antigravity/hub/2.9.1 darwin/arm64"
    # The manifest is read by the background task, never on the request path.
    assert e2e.double.requests_for("manifest") == []


async def test_the_manifest_version_is_used_once_read_and_kept_when_a_read_fails(e2e: E2E) -> None:
    e2e.gw = await e2e.new_gateway(
        version_manifest_url=f"{e2e.double.base_url}/manifest/latest-arm64-mac.yml"
    )
    await e2e.add_account()
    task = e2e.gw.app[TASKS].tasks["refresh_client_version"]
    assert (task.every, task.once_per_cluster) == (MANIFEST_REFRESH, False)  # every 3 h, in every process
    # First of a round: at start, the other tasks' upstream calls already carry the version read.
    assert next(iter(e2e.gw.app[TASKS].tasks)) == "refresh_client_version"

    e2e.double.manifest_version = "3.2.0"
    await e2e.gw.app[TASKS].run_once("refresh_client_version")
    await ask(e2e)
    assert e2e.double.last_chat().headers["User-Agent"] == "antigravity/hub/3.2.0 darwin/arm64"

    e2e.double.manifest_status = 503
    await e2e.gw.app[TASKS].run_once("refresh_client_version")
    await ask(e2e)
    assert e2e.double.last_chat().headers["User-Agent"] == "antigravity/hub/3.2.0 darwin/arm64"
    assert len(e2e.double.requests_for("manifest")) == 2

    metrics = await e2e.gw.http.get("/metrics", headers=bearer(ADMIN_KEY))
    assert 'antigv_upstream_client_info{version="3.2.0"} 1.0' in await metrics.text()


async def test_an_old_client_version_gets_404_for_new_models_at_the_cost_of_one_call(e2e: E2E) -> None:
    # Two hosts and two accounts: a 404 is neither's fault (PROTOCOL §13.9).
    base = e2e.double.base_url
    e2e.gw = await e2e.new_gateway(user_agent="antigravity/2.8.0 windows/amd64", base_urls=[base, base])
    accounts = [await e2e.add_account(), await e2e.add_account()]

    with pytest.raises(openai.NotFoundError):
        await ask(e2e)

    assert [r.status for r in e2e.double.chat_requests] == [404]
    assert e2e.double.last_chat().headers["User-Agent"] == "antigravity/2.8.0 windows/amd64"
    assert await e2e.cooldowns() == []
    assert [(await e2e.account_row(a))["status"] for a in accounts] == [1, 1]


# --------------------------------------------------------------------------- §13.3 envelope


async def test_an_account_without_a_project_sends_no_project_key(e2e: E2E) -> None:
    acc = await e2e.add_account()
    acc.upstream.paid_tier, acc.upstream.project = "g1-pro-tier", None
    await e2e.sql("UPDATE accounts SET project_id = '' WHERE account_id = %s", (acc.account_id,))

    assert (await ask(e2e)).choices[0].message.content == "Hello world!"

    assert "project" not in e2e.double.last_chat_body()
    models = await e2e.gw.app[UPSTREAM].available_models(acc.upstream.access_token, "")
    assert models["models"]
    assert e2e.double.requests_for("fetchAvailableModels")[-1].body == {}


# --------------------------------------------------------------------------- §13.8 frames


async def test_snake_case_frames_keep_their_images_and_signatures(e2e: E2E) -> None:
    await e2e.add_account()
    e2e.double.next_transport(snake_case=True, times=2)

    image = await ask(e2e, text="[[image]]")
    call = await ask(e2e, text="[[tool]]", tools=[WEATHER_TOOL])

    assert "data:image/png;base64," in image.choices[0].message.content
    (tool_call,) = call.choices[0].message.tool_calls
    assert "'thought_signature'" in str(e2e.double.chat_requests[-1].frames)  # as the double sent it
    rows = await e2e.sql("SELECT tool_call_id FROM thought_signatures")
    assert [r["tool_call_id"] for r in rows] == [tool_call.id]


# --------------------------------------------------------------------------- §13.9 errors


async def test_validation_required_parks_the_whole_account_and_shows_where_to_verify(e2e: E2E) -> None:
    first = await e2e.add_account()
    other = await e2e.add_account(shared=True)  # tried after the dedicated one
    e2e.double.fail("validation_required", times=1, account=first.upstream)

    assert (await ask(e2e)).choices[0].message.content == "Hello world!"

    assert [r.account for r in e2e.double.chat_requests] == [first.email, other.email]
    row = await e2e.account_row(first)
    assert row["status"] == 1 and row["disabled_reason"] is None  # parked, not disabled
    assert 590 < seconds_until(row["blocked_until"]) <= 600
    url = "https://accounts.google.com/signin/continue?sarp=1&scc=1"
    assert (await account_api(e2e, first))["validation_url"] == url
    assert (await account_api(e2e, other))["validation_url"] is None
    # Every model of the account waits, not only the one asked for.
    await ask(e2e, model="claude-sonnet-4-6")
    assert e2e.double.last_chat().account == other.email

    # Ten minutes later (moved in the database) it serves again, and the URL goes.
    await e2e.sql(
        "UPDATE accounts SET blocked_until = now() - interval '1 second' WHERE account_id = %s",
        (first.account_id,),
    )
    await ask(e2e)
    assert e2e.double.last_chat().account == first.email
    assert (await account_api(e2e, first))["validation_url"] is None


async def test_an_account_parked_for_validation_is_a_429_when_it_was_the_only_one(e2e: E2E) -> None:
    acc = await e2e.add_account()
    e2e.double.fail("validation_required", times=1)

    with pytest.raises(openai.RateLimitError) as caught:
        await ask(e2e)
    assert caught.value.code == "account_validation_required"
    assert 590 < float(caught.value.response.headers["Retry-After"]) <= 600
    assert "accounts.google.com" not in str(caught.value.body)  # the URL is for its owner only
    with pytest.raises(openai.RateLimitError) as again:
        await ask(e2e, model="claude-sonnet-4-6")
    assert 590 < float(again.value.response.headers["Retry-After"]) <= 600
    assert len(e2e.double.chat_requests) == 1

    # Re-authorising the account clears the park and the URL.
    await e2e.gw.app[DB].execute(
        "reauthorise_account",
        account_id=acc.account_id,
        refresh_token="plain:" + acc.upstream.refresh_token,
        access_token="plain:" + acc.upstream.access_token,
        expires_at=(await e2e.account_row(acc))["access_token_expires_at"],
    )
    assert (await account_api(e2e, acc))["validation_url"] is None
    assert (await ask(e2e)).choices[0].message.content == "Hello world!"


@pytest.mark.parametrize(
    ("message", "disabled"),
    [
        ("This service has been disabled in this account for violation of Terms of Service.", True),
        ("The Cloud Code API has been disabled for this project.", False),
    ],
)
async def test_a_ban_needs_both_phrases(e2e: E2E, message: str, disabled: bool) -> None:
    acc = await e2e.add_account()
    await e2e.add_account(shared=True)
    e2e.double.fail(403, times=1, account=acc.upstream, body=google_error(403, "PERMISSION_DENIED", message))

    assert (await ask(e2e)).choices[0].message.content == "Hello world!"

    assert (await e2e.account_row(acc))["status"] == (0 if disabled else 1)


async def test_a_prompt_echoing_error_does_not_touch_another_users_shared_account(e2e: E2E) -> None:
    owner = await e2e.create_user("bob")
    shared = await e2e.add_account(user=owner, shared=True)
    # The caller shares an account too (a pool to draw on), but it has this model switched off,
    # so bob's account serves the request.
    own = await e2e.add_account(shared=True)
    await e2e.sql(
        "INSERT INTO model_quotas (account_id, model_name, quota_group, quota, status) "
        "VALUES (%s, %s, 'gemini', 1, 0)",
        (own.account_id, NEW_MODEL),
    )
    echo = (
        "Invalid value at 'contents[0]': RESOURCE_PROJECT_INVALID: this service has been disabled "
        "in this account for violation of Terms of Service"
    )
    e2e.double.fail(400, times=1, body=google_error(400, "INVALID_ARGUMENT", echo))

    with pytest.raises(openai.BadRequestError):
        await ask(e2e, text=echo)

    assert e2e.double.last_chat().account == shared.email

    row = await e2e.account_row(shared)
    assert (row["status"], row["disabled_reason"]) == (1, None)
    assert await e2e.cooldowns() == []
    assert e2e.double.requests_for("loadCodeAssist") == []
    assert len(e2e.double.chat_requests) == 1


async def test_spent_credits_park_the_account_like_exhausted_quota(e2e: E2E) -> None:
    first = await e2e.add_account()
    other = await e2e.add_account(shared=True)
    e2e.double.fail("credits", times=1, account=first.upstream)

    assert (await ask(e2e)).choices[0].message.content == "Hello world!"

    assert e2e.double.last_chat().account == other.email
    cooldowns = await e2e.cooldowns(first)
    assert cooldowns and {c["reason"] for c in cooldowns} == {"quota_exhausted"}
    assert NEW_MODEL in {c["model_name"] for c in cooldowns}


async def test_503_no_capacity_is_a_capacity_shortage_not_the_accounts_fault(e2e: E2E) -> None:
    # A first-byte budget shorter than the first back-off: the gateway gives up at once.
    e2e.gw = await e2e.new_gateway(first_byte_timeout=0.5)
    await e2e.add_account()
    await e2e.add_account()
    e2e.double.fail("no_capacity_503", times=5)

    with pytest.raises(openai.APIStatusError) as caught:
        await ask(e2e)

    assert (caught.value.status_code, caught.value.code) == (503, "model_capacity_exhausted")
    assert len(e2e.double.chat_requests) == 1
    assert await e2e.cooldowns() == []


# --------------------------------------------------------------------------- issue 11 item 23


async def test_keep_alive_comments_are_not_progress(e2e: E2E) -> None:
    e2e.gw = await e2e.new_gateway(idle_timeout=0.3)
    await e2e.add_account()
    # A comment every 50 ms while the next frame is 3 s away: the idle limit still applies.
    e2e.double.next_transport(frame_delay=3.0, keepalive=0.05)

    got = []
    with pytest.raises(openai.APIError) as caught:
        async for chunk in await ask(e2e, stream=True):
            got.append(chunk)

    assert caught.value.body["code"] == "upstream_timeout"
    assert [c.choices[0].delta.content for c in got if c.choices][1:] == ["Hello"]
    assert not e2e.double.last_chat().completed


async def test_a_stream_is_cut_at_max_stream_seconds(e2e: E2E) -> None:
    e2e.gw = await e2e.new_gateway(max_stream_seconds=0.5)
    await e2e.add_account()
    e2e.double.next_transport(frame_delay=0.05)  # 200 chunks: 10 s, each well within the idle limit

    got = []
    with pytest.raises(openai.APIError) as caught:
        async for chunk in await ask(e2e, text="[[long]]", stream=True):
            got.append(chunk)

    assert caught.value.body["code"] == "upstream_timeout"
    assert 2 < len(got) < 100
