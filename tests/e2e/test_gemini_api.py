"""Gemini API keys as accounts (issue 15), beside Antigravity accounts in one pool: adding
a key, chatting through it with tools, images, reasoning and usage (openai and anthropic
SDKs), failover between the kinds, a key parked for a quota window and back after it, and
an invalid key disabled. The Gemini API is played by tests/gemini_double.py."""

from __future__ import annotations

import dataclasses
from typing import Any

import anthropic
import openai
import pytest

from antigv.appkeys import CATALOGUE, QUOTAS, TASKS
from antigv.protocols.admin.gemini_keys import learn_key_models
from tests.conftest import bearer
from tests.e2e.conftest import E2E, WEATHER_TOOL, user
from tests.gemini_double import GeminiApiDouble

MODEL = "gemini-2.5-flash"


async def add_key(
    e2e: E2E, key: str, *, user: dict[str, Any] | None = None, **fields: Any
) -> tuple[int, Any]:
    response = await e2e.gw.http.post(
        "/api/accounts/gemini-key",
        json={"api_key": key, **fields},
        headers=bearer((user or e2e.user)["api_key"]),
    )
    return response.status, await response.json()


async def test_a_key_is_checked_stored_sealed_and_listed(keyed: E2E, gemini: GeminiApiDouble) -> None:
    key = gemini.add_key(tier="paid").key
    status, body = await add_key(keyed, key, name="team key")
    assert status == 200, body
    account = body["data"]
    assert account["kind"] == "gemini_api" and account["name"] == "team key" and account["status"] == 1
    assert key not in str(body)
    (row,) = await keyed.sql(
        "SELECT api_key, email FROM accounts WHERE account_id = %s", (account["account_id"],)
    )
    # The suite stores credentials in clear ("plain:"); with a token key they are sealed (test_storage).
    assert row["api_key"] == "plain:" + key and key not in row["email"]
    # Its models join the list, those that cannot chat (embeddings) do not.
    keyed.double.clear_requests()
    models = {m.id for m in (await keyed.client().models.list()).data}
    assert MODEL in models and not any("embedding" in m for m in models)
    # Listing asks nothing of Google's OAuth or Cloud Code for a key.
    assert keyed.double.requests == []
    status, body = await add_key(keyed, key)
    assert status == 409


async def test_a_refused_key_is_a_400_naming_the_reason_and_nothing_is_stored(
    keyed: E2E, gemini: GeminiApiDouble
) -> None:
    status, body = await add_key(keyed, "AIza" + "x" * 35)
    assert status == 400 and body["error"]["param"] == "api_key"
    assert "API_KEY_INVALID" in body["error"]["message"] and "AIza" not in body["error"]["message"]
    suspended = gemini.add_key()
    gemini.suspend(suspended)
    status, body = await add_key(keyed, suspended.key)
    assert status == 400 and "CONSUMER_SUSPENDED" in body["error"]["message"]
    assert suspended.key not in str(body)
    assert await keyed.sql("SELECT * FROM accounts") == []


async def test_chat_through_a_key_with_tools_and_usage(keyed: E2E, gemini: GeminiApiDouble) -> None:
    key = gemini.add_key(tier="paid").key
    status, body = await add_key(keyed, key)
    assert status == 200
    client = keyed.client()
    completion = await client.chat.completions.create(model=MODEL, messages=user("hi"))
    assert completion.choices[0].message.content == "Hello world!"
    assert completion.usage.prompt_tokens > 0
    request = gemini.last_chat()
    assert request.api_key == key and "project" not in request.body and "sessionId" not in request.body
    (row,) = await keyed.usage_rows(request_id=completion._request_id)
    assert row["account_id"] == body["data"]["account_id"] and row["quota_consumed"] is not None

    tool_messages = user("[[tool]] weather in Paris?")
    first = await client.chat.completions.create(model=MODEL, messages=tool_messages, tools=[WEATHER_TOOL])
    call = first.choices[0].message.tool_calls[0]
    # The public API's documented mode for "auto", not Cloud Code's VALIDATED.
    assert gemini.last_chat().body["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
    follow = [
        *tool_messages,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)]},
        {"role": "tool", "tool_call_id": call.id, "content": "22C"},
    ]
    answer = await client.chat.completions.create(model=MODEL, messages=follow, tools=[WEATHER_TOOL])
    assert answer.choices[0].message.content == "Hello world!"
    assert gemini.last_chat().status == 200

    stream = await client.chat.completions.create(model=MODEL, messages=user("hi"), stream=True)
    text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
    assert text == "Hello world!"

    messages = anthropic.AsyncAnthropic(
        base_url=str(keyed.gw.server.make_url("/")), api_key=keyed.user["api_key"], max_retries=0
    )
    reply = await messages.messages.create(model=MODEL, max_tokens=100, messages=user("hi"))
    assert reply.content[-1].text == "Hello world!"


async def test_failover_from_an_exhausted_oauth_account_to_a_key_and_back(
    keyed: E2E, gemini: GeminiApiDouble
) -> None:
    """A Gemini model both kinds serve: the OAuth account's quota runs out, the key serves."""
    model = "gemini-3-flash"  # the Antigravity double's id; the Gemini API double gets it too
    gemini.models[model] = dataclasses.replace(gemini.models[MODEL], id=model, display_name="Gemini 3 Flash")
    oauth = await keyed.add_account()
    await keyed.client().models.list()  # the catalogue learns the OAuth account's models
    entry = gemini.add_key(tier="paid")
    status, body = await add_key(keyed, entry.key)
    assert status == 200
    key_account = body["data"]["account_id"]
    catalogue = keyed.gw.app[CATALOGUE]
    assert catalogue.offers(oauth.account_id, model) and catalogue.offers(key_account, model)
    keyed.double.fail("quota", account=oauth.upstream, times=10)
    served = []
    for i in range(3):
        completion = await keyed.client().chat.completions.create(model=model, messages=user(f"hi {i}"))
        assert completion.choices[0].message.content == "Hello world!"
        served.append((await keyed.usage_rows(request_id=completion._request_id))[0]["account_id"])
    assert served == [key_account] * 3
    assert await keyed.cooldowns(oauth)  # the exhausted account is parked
    # And back: the key's window runs out; the OAuth account's quota came back.
    keyed.double.reset_steering()
    await keyed.sql("DELETE FROM cooldowns")
    gemini.set_limits(entry, model, rpm=0)
    completion = await keyed.client().chat.completions.create(model=model, messages=user("back"))
    assert completion.choices[0].message.content == "Hello world!"
    assert (await keyed.usage_rows(request_id=completion._request_id))[0]["account_id"] == oauth.account_id


async def test_a_key_parked_for_a_minute_window_comes_back_after_it(
    keyed: E2E, gemini: GeminiApiDouble
) -> None:
    first = gemini.add_key(tier="free")
    second = gemini.add_key(tier="free")
    gemini.set_limits(first, MODEL, rpm=1)
    gemini.set_limits(second, MODEL, rpm=1)
    ids = []
    for entry in (first, second):
        status, body = await add_key(keyed, entry.key)
        assert status == 200
        ids.append(body["data"]["account_id"])
    client = keyed.client()
    served = []
    for _ in range(2):
        completion = await client.chat.completions.create(model=MODEL, messages=user("hi"))
        served.append((await keyed.usage_rows(request_id=completion._request_id))[0]["account_id"])
    assert sorted(served) == sorted(ids)
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model=MODEL, messages=user("hi"))
    assert caught.value.code == "quota_exhausted"
    cooldowns = await keyed.cooldowns()
    assert {c["account_id"] for c in cooldowns} == set(ids)
    assert all(c["model_name"] == MODEL and c["reason"] == "model_quota_exhausted" for c in cooldowns)
    # Past the window (the double's clock and the database's): served again.
    gemini.advance(61)
    await keyed.sql("UPDATE cooldowns SET until = now() - interval '1 second'")
    completion = await client.chat.completions.create(model=MODEL, messages=user("hi"))
    assert completion.choices[0].message.content == "Hello world!"


async def test_a_key_google_stops_accepting_is_disabled_and_the_next_serves(
    keyed: E2E, gemini: GeminiApiDouble
) -> None:
    bad = gemini.add_key(tier="paid")
    good = gemini.add_key(tier="paid")
    status, body = await add_key(keyed, bad.key)
    assert status == 200
    bad_id = body["data"]["account_id"]
    assert (await add_key(keyed, good.key))[0] == 200
    gemini.remove_key(bad)
    for i in range(4):  # other conversations: not all kept on one account
        completion = await keyed.client().chat.completions.create(model=MODEL, messages=user(f"hi {i}"))
        assert completion.choices[0].message.content == "Hello world!"
    (row,) = await keyed.sql("SELECT status, disabled_reason FROM accounts WHERE account_id = %s", (bad_id,))
    assert row["status"] == 0 and "API_KEY_INVALID" in row["disabled_reason"]
    assert bad.key not in row["disabled_reason"]


async def test_a_request_s_own_400_never_disables_a_key(keyed: E2E, gemini: GeminiApiDouble) -> None:
    key = gemini.add_key(tier="paid").key
    status, body = await add_key(keyed, key)
    assert status == 200
    response = await keyed.gw.http.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": user("hi"), "max_tokens": 10_000_000},
        headers=bearer(keyed.user["api_key"]),
    )
    assert response.status in (200, 400)
    (row,) = await keyed.sql(
        "SELECT status FROM accounts WHERE account_id = %s", (body["data"]["account_id"],)
    )
    assert row["status"] == 1


async def test_a_keys_quotas_show_its_parked_windows_and_todays_use(
    keyed: E2E, gemini: GeminiApiDouble
) -> None:
    entry = gemini.add_key(tier="free")
    gemini.set_limits(entry, MODEL, rpm=1)
    status, body = await add_key(keyed, entry.key, is_shared=1)
    assert status == 200
    account_id = body["data"]["account_id"]
    client = keyed.client()
    completion = await client.chat.completions.create(model=MODEL, messages=user("hi"))
    with pytest.raises(openai.RateLimitError):
        await client.chat.completions.create(model=MODEL, messages=user("again"))
    await keyed.usage_rows(request_id=completion._request_id)
    response = await keyed.gw.http.get(
        f"/api/accounts/{account_id}/quotas", headers=bearer(keyed.user["api_key"])
    )
    quotas = await response.json()
    assert response.status == 200 and quotas["data"] == [] and quotas["windows"] == []
    (parked,) = quotas["parked"]
    assert parked["model_name"] == MODEL and parked["reason"] == "model_quota_exhausted"
    today = quotas["today"]
    assert today["requests"] >= 1 and today["tokens"] == completion.usage.total_tokens
    # A shared key's tokens are charged to its user's pool at once, against the daily allowance.
    assert today["quota_consumed"] == pytest.approx(completion.usage.total_tokens / today["daily_tokens"])


async def test_count_tokens_through_a_key(keyed: E2E, gemini: GeminiApiDouble) -> None:
    assert (await add_key(keyed, gemini.add_key(tier="paid").key))[0] == 200
    messages = anthropic.AsyncAnthropic(
        base_url=str(keyed.gw.server.make_url("/")), api_key=keyed.user["api_key"], max_retries=0
    )
    raw = await messages.messages.with_raw_response.count_tokens(
        model=MODEL, messages=user("How many tokens?")
    )
    assert raw.headers["x-antigv-token-count"] == "upstream"
    assert (await raw.parse()).input_tokens > 0


async def test_a_model_only_a_key_lists_goes_to_the_key_not_to_an_unread_oauth_account(
    keyed: E2E, gemini: GeminiApiDouble
) -> None:
    """Right after a start no OAuth listing is read yet; the key's is (it was read when added)."""
    await keyed.add_account()
    status, body = await add_key(keyed, gemini.add_key(tier="paid").key)
    assert status == 200
    for i in range(3):
        completion = await keyed.client().chat.completions.create(model=MODEL, messages=user(f"hi {i}"))
        assert completion.choices[0].message.content == "Hello world!"
        (row,) = await keyed.usage_rows(request_id=completion._request_id)
        assert row["account_id"] == body["data"]["account_id"]
    assert keyed.double.chat_requests == []


async def test_reasoning_and_images_through_a_key(keyed: E2E, gemini: GeminiApiDouble) -> None:
    assert (await add_key(keyed, gemini.add_key(tier="paid").key))[0] == 200
    client = keyed.client()
    completion = await client.chat.completions.create(
        model=MODEL, messages=user("[[think]] hi"), reasoning_effort="low"
    )
    config = gemini.last_chat().generation_config
    # Gemini 2.5 takes a token budget (the family table, PROTOCOL §13.5), and thinks aloud on request.
    assert config["thinkingConfig"]["thinkingBudget"] > 0 and config["thinkingConfig"]["includeThoughts"]
    assert completion.choices[0].message.model_extra.get("reasoning_content")
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
    image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}}
    completion = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": [{"type": "text", "text": "what is it?"}, image]}]
    )
    assert completion.choices[0].message.content == "Hello world!"
    parts = gemini.last_chat().contents[-1]["parts"]
    assert {"inlineData": {"mimeType": "image/png", "data": png}} in parts


async def test_a_key_is_never_read_as_a_google_account(keyed: E2E, gemini: GeminiApiDouble) -> None:
    """A key has no quota fractions and no OAuth token: the quota service leaves it alone
    (a refresh for it would fail with invalid_grant and disable the key)."""
    status, body = await add_key(keyed, gemini.add_key(tier="paid").key)
    assert status == 200
    account_id = body["data"]["account_id"]
    completion = await keyed.client().chat.completions.create(model=MODEL, messages=user("hi"))
    (row,) = await keyed.usage_rows(request_id=completion._request_id)
    assert row["quota_consumed"] is not None  # charged as written: no read is due
    assert keyed.gw.app[QUOTAS].pending_reads == 0
    keyed.double.clear_requests()
    assert await keyed.gw.app[QUOTAS].read(account_id) is None
    assert keyed.double.requests == []
    (account,) = await keyed.sql("SELECT status, disabled_reason FROM accounts")
    assert account == {"status": 1, "disabled_reason": None}
    # And it still serves.
    again = await keyed.client().chat.completions.create(model=MODEL, messages=user("hi"))
    assert again.choices[0].message.content == "Hello world!"


async def test_every_background_task_leaves_a_key_alone(keyed: E2E, gemini: GeminiApiDouble) -> None:
    """A mixed pool, after some use, through every background task: the key asks nothing of
    Google's OAuth or Cloud Code, stays enabled and keeps serving."""
    oauth = await keyed.add_account()
    status, body = await add_key(keyed, gemini.add_key(tier="paid").key, is_shared=1)
    assert status == 200
    await keyed.client().chat.completions.create(model=MODEL, messages=user("hi"))
    await keyed.usage_rows(1)
    # Every stored read and token is old, so each task has work to do.
    await keyed.sql(
        "UPDATE accounts SET quota_fetched_at = now() - interval '1 day',"
        " access_token_expires_at = now() - interval '1 minute'"
    )
    keyed.double.clear_requests()
    tasks = keyed.gw.app[TASKS]
    for name in sorted(tasks.tasks):
        await tasks.run_once(name)
    key_account = body["data"]["account_id"]
    touched = {r.account for r in keyed.double.requests if r.account is not None}
    assert touched <= {oauth.upstream.email}, touched
    assert not [r for r in keyed.double.requests if r.path == "/token" and r.account != oauth.upstream.email]
    rows = {
        r["account_id"]: r
        for r in await keyed.sql("SELECT account_id, status, disabled_reason FROM accounts")
    }
    assert rows[key_account]["status"] == 1 and rows[key_account]["disabled_reason"] is None
    assert rows[oauth.account_id]["status"] == 1
    again = await keyed.client().chat.completions.create(model=MODEL, messages=user("hi"))
    assert again.choices[0].message.content == "Hello world!"


async def test_a_key_sealed_with_another_token_key_is_skipped_when_models_are_learnt(
    keyed: E2E, gemini: GeminiApiDouble
) -> None:
    status, body = await add_key(keyed, gemini.add_key(tier="paid").key)
    assert status == 200
    account_id = body["data"]["account_id"]
    # Sealed, but this gateway has no token key to open it with (as after a key change).
    await keyed.sql("UPDATE accounts SET api_key = 'v1:AAAA' WHERE account_id = %s", (account_id,))
    before = len(gemini.requests)
    await learn_key_models(keyed.gw.app, account_id)  # logged and skipped, not raised
    assert len(gemini.requests) == before
