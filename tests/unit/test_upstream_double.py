"""The upstream test double behaves like PROTOCOL §9 says (plain aiohttp client against it)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from tests.upstream_double import (
    ANTIGRAVITY_CLIENT_ID,
    ANTIGRAVITY_CLIENT_SECRET,
    SKIP_SIGNATURE,
    VERSION_NOTICE,
    go_duration,
    parse_sse,
    proto_duration,
    text_reply,
)

UA = "antigravity/hub/2.9.1 darwin/arm64"


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


def chat_body(
    project: str | None,
    text: str = "Hi",
    *,
    model: str = "gemini-3-flash",
    contents: list[dict] | None = None,
    **request: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "requestId": "agent-1",
        "model": model,
        "userAgent": "antigravity",
        "requestType": "agent",
        "request": {
            "contents": contents or [{"role": "user", "parts": [{"text": text}]}],
            "systemInstruction": {"role": "user", "parts": [{"text": ""}]},
            "generationConfig": {"temperature": 1, "maxOutputTokens": 8192},
            "sessionId": "-1",
            **request,
        },
    }
    if project is not None:
        body["project"] = project
    return body


async def post(http, double, method: str, token: str | None, body: Any, *, sse: bool = False, **headers):
    url = f"{double.base_url}/v1internal:{method}" + ("?alt=sse" if sse else "")
    hdrs = {"User-Agent": UA, "Content-Type": "application/json", **headers}
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    async with http.post(url, data=json.dumps(body), headers=hdrs) as resp:
        return resp.status, resp.headers, await resp.read()


async def stream(http, double, token, body, **headers):
    status, hdrs, raw = await post(http, double, "streamGenerateContent", token, body, sse=True, **headers)
    assert status == 200, raw
    return hdrs, raw.decode(), parse_sse(raw.decode())


def parts(events):
    return [
        p
        for e in events
        for c in e["response"].get("candidates", [])
        for p in c.get("content", {}).get("parts", [])
    ]


def visible_text(events) -> str:
    return "".join(p.get("text", "") for p in parts(events) if not p.get("thought"))


async def test_chat_requires_known_unexpired_token(double, http):
    acc = double.add_account("a@example.com")
    status, _, raw = await post(
        http, double, "streamGenerateContent", "ya29.nope", chat_body(acc.project), sse=True
    )
    assert status == 401
    assert json.loads(raw)["error"]["status"] == "UNAUTHENTICATED"
    double.expire_access_token(acc.access_token)
    status, _, _ = await post(http, double, "generateContent", acc.access_token, chat_body(acc.project))
    assert status == 401
    assert double.requests[-1].rpc == "generateContent"


async def test_stream_a1_gemini_thinking_tool_call(double, http):
    acc = double.add_account("a@example.com")
    body = chat_body(
        acc.project,
        "[[think]][[tool]] Weather in Paris?",
        model="gemini-pro-agent",
        tools=[
            {
                "functionDeclarations": [
                    {
                        "name": "get_weather",
                        "parameters": {
                            "type": "object",
                            "properties": {"city": {"type": "string"}},
                            "required": ["city"],
                        },
                    }
                ]
            }
        ],
        toolConfig={"functionCallingConfig": {"mode": "VALIDATED"}},
        generationConfig={
            "maxOutputTokens": 8192,
            "thinkingConfig": {"includeThoughts": True, "thinkingBudget": 1024},
        },
    )
    hdrs, text, events = await stream(http, double, acc.access_token, body)
    assert hdrs["Content-Type"].startswith("text/event-stream")
    assert "[DONE]" not in text and text.endswith("\n\n")
    assert all(set(e) == {"response", "traceId"} for e in events)
    ps = parts(events)
    assert ps[0]["thought"] is True
    call = next(p for p in ps if "functionCall" in p)
    assert "id" not in call["functionCall"] and call["functionCall"]["name"] == "get_weather"
    assert call["functionCall"]["args"] == {"city": "city-1"}
    assert call["thoughtSignature"] in double.signatures
    last = events[-1]["response"]
    assert last["candidates"][0]["finishReason"] == "STOP"
    usage = last["usageMetadata"]
    assert (
        usage["totalTokenCount"]
        == usage["promptTokenCount"] + usage["candidatesTokenCount"] + usage["thoughtsTokenCount"]
    )
    rec = double.last_chat()
    assert (
        rec.account == "a@example.com"
        and rec.completed
        and rec.usage == usage
        and len(rec.frames) == len(events)
    )

    # Replaying the call: no signature -> 400; sentinel or the issued signature -> 200.
    replay = [
        {"role": "user", "parts": [{"text": "Weather in Paris?"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
        {
            "role": "user",
            "parts": [{"functionResponse": {"name": "get_weather", "response": {"output": "22C"}}}],
        },
    ]
    status, _, raw = await post(
        http,
        double,
        "generateContent",
        acc.access_token,
        chat_body(acc.project, model="gemini-pro-agent", contents=replay),
    )
    assert status == 400 and "missing a thought_signature" in json.loads(raw)["error"]["message"]
    for sig in (SKIP_SIGNATURE, call["thoughtSignature"]):
        replay[1]["parts"][0]["thoughtSignature"] = sig
        status, _, raw = await post(
            http,
            double,
            "generateContent",
            acc.access_token,
            chat_body(acc.project, model="gemini-pro-agent", contents=replay),
        )
        assert status == 200, raw
        unary = json.loads(raw)
        assert unary["response"]["candidates"][0]["content"]["parts"] == [{"text": "Hello world!"}]


async def test_claude_thinking_default_and_signed_replay(double, http):
    acc = double.add_account("c@example.com")
    gen = {"maxOutputTokens": 8192, "thinkingConfig": {"includeThoughts": True, "thinkingBudget": 1024}}
    tools = [
        {"functionDeclarations": [{"name": "lookup", "parameters": {"type": "object", "properties": {}}}]}
    ]
    _, _, events = await stream(
        http,
        double,
        acc.access_token,
        chat_body(
            acc.project, "[[tool]]", model="claude-opus-4-6-thinking", generationConfig=gen, tools=tools
        ),
    )
    ps = parts(events)
    thinking = "".join(p["text"] for p in ps if p.get("thought"))
    sig_part = next(p for p in ps if p.get("thoughtSignature"))
    assert sig_part == {"text": "", "thought": True, "thoughtSignature": sig_part["thoughtSignature"]}
    call = next(p for p in ps if "functionCall" in p)["functionCall"]
    assert call["id"].startswith("toolu_vrtx_")
    assert events[-1]["response"]["candidates"][0]["finishReason"] == "OTHER"

    history = [
        {"role": "user", "parts": [{"text": "look it up"}]},
        {"role": "model", "parts": [{"functionCall": call}]},
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"id": call["id"], "name": "lookup", "response": {"result": "ok"}}}
            ],
        },
    ]
    body = chat_body(
        acc.project, model="claude-opus-4-6-thinking", contents=history, generationConfig=gen, tools=tools
    )
    status, _, raw = await post(http, double, "streamGenerateContent", acc.access_token, body, sse=True)
    assert status == 400
    inner = json.loads(json.loads(raw)["error"]["message"])
    assert (
        inner["error"]["type"] == "invalid_request_error"
        and "must start with a thinking block" in inner["error"]["message"]
    )

    history[1]["parts"].insert(
        0, {"text": thinking, "thought": True, "thoughtSignature": sig_part["thoughtSignature"]}
    )
    _, _, events = await stream(http, double, acc.access_token, body)
    assert visible_text(events) == "Hello world!"

    history[1]["parts"][0]["text"] = thinking + " (edited)"
    status, _, raw = await post(http, double, "streamGenerateContent", acc.access_token, body, sse=True)
    assert status == 400 and "Invalid `signature`" in raw.decode()


async def test_quota_exhaustion_answers_429(double, http):
    acc = double.add_account("q@example.com")
    double.set_quota(acc, "gemini-pro-agent", 0.02)
    double.set_quota_cost(0.01)
    for _ in range(2):
        await stream(http, double, acc.access_token, chat_body(acc.project, model="gemini-pro-agent"))
    assert double.quota(acc, "gemini-pro-agent") == 0
    status, _, raw = await post(
        http,
        double,
        "streamGenerateContent",
        acc.access_token,
        chat_body(acc.project, model="gemini-pro-agent"),
        sse=True,
    )
    assert status == 429
    err = json.loads(raw)["error"]
    info, retry = err["details"]
    assert err["status"] == "RESOURCE_EXHAUSTED" and info["reason"] == "QUOTA_EXHAUSTED"
    assert set(info["metadata"]) >= {"quotaResetDelay", "quotaResetTimeStamp", "model"}
    assert retry["retryDelay"].endswith("s")

    status, _, raw = await post(
        http, double, "fetchAvailableModels", acc.access_token, {"project": acc.project}
    )
    models = json.loads(raw)["models"]
    assert "remainingFraction" not in models["gemini-pro-agent"]["quotaInfo"]
    assert "resetTime" in models["gemini-pro-agent"]["quotaInfo"]
    assert models["claude-sonnet-4-6"]["quotaInfo"]["remainingFraction"] == 1.0
    assert {"chat_20706", "tab_flash_lite_preview"} <= set(models)
    # other groups are untouched; the reset time passing refills the bucket
    double.advance(6 * 3600)
    assert double.quota(acc, "gemini-pro-agent") == 1.0


async def test_injected_errors_then_success(double, http):
    acc = double.add_account("i@example.com")
    double.fail("rate_limit", times=2, event_stream=True)
    statuses = []
    for _ in range(3):
        status, _, raw = await post(
            http, double, "streamGenerateContent", acc.access_token, chat_body(acc.project), sse=True
        )
        statuses.append(status)
    assert statuses == [429, 429, 200]
    assert double.chat_requests[0].injected and not double.chat_requests[2].injected
    double.fail("capacity_503", array=True)
    status, _, raw = await post(http, double, "generateContent", acc.access_token, chat_body(acc.project))
    assert status == 503 and json.loads(raw)[0]["error"]["details"][0]["reason"] == "MODEL_CAPACITY_EXHAUSTED"


async def test_oauth_exchange_refresh_and_invalid_grant(double, http):
    acc = double.add_account("o@example.com")
    double.add_auth_code("code-1", "o@example.com")
    form = {"client_id": ANTIGRAVITY_CLIENT_ID, "client_secret": ANTIGRAVITY_CLIENT_SECRET}
    url = f"{double.base_url}/token"
    async with http.post(
        url,
        data={
            **form,
            "grant_type": "authorization_code",
            "code": "code-1",
            "redirect_uri": "http://localhost:42532/oauth-callback",
        },
    ) as r:
        assert r.status == 200
        tok = await r.json()
    assert (
        tok["refresh_token"] == acc.refresh_token
        and tok["token_type"] == "Bearer"
        and tok["expires_in"] > 3500
    )
    async with http.get(
        f"{double.base_url}/oauth2/v2/userinfo", headers={"Authorization": f"Bearer {tok['access_token']}"}
    ) as r:
        assert (await r.json())["email"] == "o@example.com"
    async with http.get(f"{double.base_url}/oauth2/v1/userinfo", headers={"Authorization": "Bearer x"}) as r:
        assert r.status == 401

    async with http.post(
        url, data={**form, "grant_type": "refresh_token", "refresh_token": acc.refresh_token}
    ) as r:
        refreshed = await r.json()
    assert "refresh_token" not in refreshed and refreshed["access_token"] != tok["access_token"]
    assert double.refresh_count(acc) == 1

    async with http.post(
        url,
        data={
            **form,
            "client_secret": "nope",
            "grant_type": "refresh_token",
            "refresh_token": acc.refresh_token,
        },
    ) as r:
        assert r.status == 401

    old = acc.refresh_token
    double.rotate_on_next_refresh(acc)
    async with http.post(url, data={**form, "grant_type": "refresh_token", "refresh_token": old}) as r:
        rotated = await r.json()
    assert rotated["refresh_token"] == acc.refresh_token != old

    double.revoke(acc.refresh_token)
    async with http.post(
        url, data={**form, "grant_type": "refresh_token", "refresh_token": acc.refresh_token}
    ) as r:
        assert r.status == 400
        assert await r.json() == {
            "error": "invalid_grant",
            "error_description": "Token has been expired or revoked.",
        }
    assert len(double.token_calls) == 5
    assert double.token_calls[0].body["grant_type"] == "authorization_code"


async def test_load_code_assist_and_onboarding(double, http):
    free = double.add_account("free@example.com")
    new = double.add_account("new@example.com", project=None, onboard_polls=2)
    paid = double.add_account("paid@example.com", project=None, paid_tier="g1-pro-tier")
    bad = double.add_account("bad@example.com", project=None, ineligible="UNSUPPORTED_LOCATION")
    meta = {"metadata": {"ideType": "ANTIGRAVITY"}}

    async def lca(acc):
        status, _, raw = await post(http, double, "loadCodeAssist", acc.access_token, meta)
        assert status == 200
        return json.loads(raw)

    assert (await lca(free))["cloudaicompanionProject"] == free.project
    fresh = await lca(new)
    assert "cloudaicompanionProject" not in fresh and "currentTier" not in fresh
    assert next(t for t in fresh["allowedTiers"] if t.get("isDefault"))["id"] == "free-tier"
    p = await lca(paid)
    assert p["paidTier"]["id"] == "g1-pro-tier" and "cloudaicompanionProject" not in p
    assert (await lca(bad))["ineligibleTiers"][0]["reasonCode"] == "UNSUPPORTED_LOCATION"

    # chat with a random project is refused for the not-yet-onboarded free account, fine for paid
    status, _, raw = await post(
        http, double, "generateContent", new.access_token, chat_body("useful-fuze-abcde")
    )
    assert status == 403 and json.loads(raw)["error"]["message"] == "The caller does not have permission"
    status, _, _ = await post(
        http, double, "generateContent", paid.access_token, chat_body("useful-fuze-abcde")
    )
    assert status == 200

    ops = []
    for _ in range(3):
        status, _, raw = await post(
            http, double, "onboardUser", new.access_token, {"tierId": "free-tier", **meta}
        )
        ops.append(json.loads(raw))
    assert [o["done"] for o in ops] == [False, False, True]
    project = ops[-1]["response"]["cloudaicompanionProject"]
    assert set(project) == {"id", "name", "projectNumber"}
    assert (await lca(new))["cloudaicompanionProject"] == project["id"]
    status, _, _ = await post(http, double, "generateContent", new.access_token, chat_body(project["id"]))
    assert status == 200


def _parallel_history(b):
    call = {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": SKIP_SIGNATURE}
    b["request"]["contents"] = [
        {"role": "user", "parts": [{"text": "go"}]},
        {"role": "model", "parts": [call, {"functionCall": {"name": "f", "args": {}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"output": "1"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"output": "2"}}}]},
    ]


def _claude(b, **gen):
    b["model"] = "claude-opus-4-6-thinking"
    b["request"]["generationConfig"] = gen


def _claude_unmatched_ids(b):
    _claude(b)
    b["request"]["contents"] = [
        {"role": "user", "parts": [{"text": "go"}]},
        {"role": "model", "parts": [{"functionCall": {"id": "toolu_vrtx_1", "name": "f", "args": {}}}]},
        {
            "role": "user",
            "parts": [{"functionResponse": {"id": "call_2", "name": "f", "response": {"r": 1}}}],
        },
    ]


PARAMS = [
    (_parallel_history, "number of function response parts is equal"),
    (
        lambda b: _claude(
            b, maxOutputTokens=1024, thinkingConfig={"includeThoughts": True, "thinkingBudget": 1024}
        ),
        "`max_tokens` must be greater than `thinking.budget_tokens`",
    ),
    (_claude_unmatched_ids, "`tool_use` ids were found without `tool_result` blocks"),
]


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda b: b["request"]["generationConfig"].update(foo=1), 'Unknown name "foo"'),
        (lambda b: b.update(messages=[]), 'Unknown name "messages"'),
        (lambda b: b["request"].update(contents=[]), "contents is not specified"),
        (
            lambda b: b["request"].update(systemInstruction="be nice"),
            "Invalid value at 'request.system_instruction'",
        ),
        (lambda b: b["request"]["contents"][0].update(role="assistant"), "valid role"),
        (
            lambda b: b["request"].update(
                tools=[
                    {
                        "functionDeclarations": [
                            {
                                "name": "f",
                                "parameters": {
                                    "type": "object",
                                    "properties": {"x": {"type": "string", "const": "a"}},
                                },
                            }
                        ]
                    }
                ]
            ),
            'Unknown name "const"',
        ),
        (
            lambda b: b["request"].update(tools=[{"functionDeclarations": [{"name": "bad name"}]}]),
            "Invalid function name",
        ),
        (
            lambda b: (
                b.update(model="gemini-pro-agent")
                or b["request"]["generationConfig"].update(thinkingConfig={"thinkingBudget": 0})
            ),
            "Budget 0 is invalid",
        ),
        *PARAMS,
    ],
)
async def test_invalid_requests_are_400(double, http, mutate, needle):
    acc = double.add_account("v@example.com")
    body = chat_body(acc.project)
    mutate(body)
    status, _, raw = await post(http, double, "streamGenerateContent", acc.access_token, body, sse=True)
    assert status == 400, raw
    assert needle in json.loads(raw)["error"]["message"]


async def test_snake_case_fields_accepted_and_unknown_model_404(double, http):
    acc = double.add_account("s@example.com")
    body = chat_body(
        acc.project, generation_config={"thinking_config": {"include_thoughts": True, "thinking_budget": 512}}
    )
    del body["request"]["generationConfig"]
    status, _, raw = await post(http, double, "generateContent", acc.access_token, body)
    assert status == 200, raw
    status, _, _ = await post(
        http, double, "generateContent", acc.access_token, chat_body(acc.project, model="chat_20706")
    )
    assert status == 404


async def test_transport_variants(double, http):
    acc = double.add_account("t@example.com")
    double.set_transport(crlf=True, split=4, coalesce=2, usage="separate", trailing_empty=True, gzip=True)
    hdrs, text, events = await stream(
        http, double, acc.access_token, chat_body(acc.project, "[[utf8]]"), **{"Accept-Encoding": "gzip"}
    )
    assert hdrs["Content-Encoding"] == "gzip" and "\r\n\r\n" in text
    assert visible_text(events) == "Grüße, 世界 🌍🚀 naïve café"
    assert events[-2]["response"]["candidates"][0]["finishReason"] == "STOP"
    assert "candidates" not in events[-1]["response"] and "usageMetadata" in events[-1]["response"]

    double.next_transport(break_after=1)
    url = f"{double.base_url}/v1internal:streamGenerateContent?alt=sse"
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(
            url,
            json=chat_body(acc.project),
            headers={"Authorization": f"Bearer {acc.access_token}", "User-Agent": UA},
        ) as r:
            await r.read()
    assert double.last_chat().disconnected

    double.script(text_reply(["a", "b"]), transport=None)
    _, _, events = await stream(http, double, acc.access_token, chat_body(acc.project))
    assert visible_text(events) == "ab"

    _, text, events = await stream(http, double, acc.access_token, chat_body(acc.project, "[[empty]]"))
    assert text == "" and events == []


async def test_version_notice_and_user_agent(double, http):
    acc = double.add_account("u@example.com")
    status, _, _ = await post(
        http,
        double,
        "generateContent",
        acc.access_token,
        chat_body(acc.project),
        **{"User-Agent": "python-requests/2.0"},
    )
    assert status == 400
    old = "antigravity/1.11.3 windows/amd64"
    _, _, events = await stream(http, double, acc.access_token, chat_body(acc.project), **{"User-Agent": old})
    assert visible_text(events) == VERSION_NOTICE
    assert double.last_chat().headers["User-Agent"] == old


async def test_client_disconnect_is_recorded(double, http):
    acc = double.add_account("d@example.com")
    double.set_transport(frame_delay=0.05)
    url = f"{double.base_url}/v1internal:streamGenerateContent?alt=sse"
    async with http.post(
        url,
        json=chat_body(acc.project, "[[long]]"),
        headers={"Authorization": f"Bearer {acc.access_token}", "User-Agent": UA},
    ) as r:
        await r.content.readline()
        r.close()
    for _ in range(50):
        if double.last_chat().disconnected:
            break
        await asyncio.sleep(0.02)
    assert double.last_chat().disconnected and not double.last_chat().completed


async def test_count_tokens_and_durations(double, http):
    acc = double.add_account("n@example.com")
    body = {
        "request": {
            "model": "models/gemini-3-flash",
            "contents": [{"role": "user", "parts": [{"text": "x" * 40}]}],
        }
    }
    status, _, raw = await post(http, double, "countTokens", acc.access_token, body)
    assert status == 200 and json.loads(raw) == {"totalTokens": 10}
    assert go_duration(13 * 3600 + 19 * 60 + 1.20964964) == "13h19m1.20964964s"
    assert go_duration(0.976066617) == "976.066617ms"
    assert proto_duration(25) == "25s" and proto_duration(0.976066617) == "0.976066617s"


# --- today's upstream (PROTOCOL §13.4, §13.5, §13.3) ---------------------------------------


def _prefill(b):
    b["request"]["contents"].append({"role": "model", "parts": [{"text": "Sure,"}]})


@pytest.mark.parametrize(
    ("model", "mutate", "needle"),
    [
        ("gemini-pro-agent", lambda b: _thinking(b, thinkingBudget=0), "Budget 0 is invalid"),
        ("gemini-3.1-pro-low", lambda b: _thinking(b, thinkingBudget=0), "Budget 0 is invalid"),
        ("gemini-3.7-flash-high", lambda b: _thinking(b, thinkingBudget=0), "Budget 0 is invalid"),
        (
            "gemini-3-flash",
            lambda b: _thinking(b, thinkingBudget=1024, thinkingLevel="low"),
            "only one of thinking budget and thinking level",
        ),
        ("gemini-pro-agent", lambda b: _thinking(b, thinkingLevel="minimal"), "MINIMAL is not supported"),
        ("gemini-3-flash", lambda b: _thinking(b, thinkingLevel="max"), "MAX is not supported"),
        ("gemini-3.7-flash-high", _prefill, "end with a user turn"),
        ("gemini-3.6-flash-high", _prefill, "end with a user turn"),
        ("claude-sonnet-4-6", _prefill, "does not support assistant message prefill"),
        ("gemini-3.1-flash-image", lambda b: None, "only supports requestType image_gen"),
        (
            "gemini-3-flash",
            lambda b: b["request"]["generationConfig"].update(maxOutputTokens=500000),
            "supported range is from 1 (inclusive) to 65537",
        ),
    ],
)
async def test_todays_generation_rules_are_400(double, http, model, mutate, needle):
    acc = double.add_account("r@example.com")
    body = chat_body(acc.project, model=model)
    mutate(body)
    status, _, raw = await post(http, double, "streamGenerateContent", acc.access_token, body, sse=True)
    assert status == 400, raw
    assert needle in raw.decode()


def _thinking(b, **config):
    b["request"]["generationConfig"]["thinkingConfig"] = config


async def test_older_flash_accepts_prefill_and_no_thinking_config(double, http):
    acc = double.add_account("p@example.com")
    body = chat_body(acc.project, model="gemini-3-flash")
    _prefill(body)
    _, _, events = await stream(http, double, acc.access_token, body)
    assert visible_text(events) == "Hello world!"


async def test_deprecated_ids_listed_and_retired_ids_answer_the_notice(double, http):
    acc = double.add_account("d@example.com")
    status, _, raw = await post(
        http, double, "fetchAvailableModels", acc.access_token, {"project": acc.project}
    )
    payload = json.loads(raw)
    assert payload["deprecatedModelIds"]["gemini-3-pro-high"] == {"newModelId": "gemini-pro-agent"}
    assert "gemini-3-pro-high" not in payload["models"]
    assert payload["models"]["gemini-pro-agent"]["displayName"] == "Gemini 3.1 Pro (High)"
    _, _, events = await stream(
        http, double, acc.access_token, chat_body(acc.project, model="claude-sonnet-4-6-thinking")
    )
    assert "is no longer available. Please switch to Claude Sonnet 4.6" in visible_text(events)
    status, _, _ = await post(
        http,
        double,
        "streamGenerateContent",
        acc.access_token,
        chat_body(acc.project, model="gpt-9"),
        sse=True,
    )
    assert status == 404


async def test_image_models_take_the_image_gen_form(double, http):
    acc = double.add_account("img@example.com")
    body = {
        "project": acc.project,
        "requestId": "image_gen/1764000000000/0b7c3a52-5a0b-4f7e-9d7e-2a1f0c9b8d11/12",
        "model": "gemini-3.1-flash-image",
        "userAgent": "antigravity",
        "requestType": "image_gen",
        "request": {
            "contents": [{"role": "user", "parts": [{"text": "a cat"}]}],
            "generationConfig": {"candidateCount": 1, "imageConfig": {"aspectRatio": "1:1"}},
        },
    }
    _, _, events = await stream(http, double, acc.access_token, body)
    assert any("inlineData" in p for p in parts(events))
    body["request"]["generationConfig"]["temperature"] = 1
    status, _, raw = await post(http, double, "streamGenerateContent", acc.access_token, body, sse=True)
    assert status == 400 and "generation_config.temperature" in raw.decode()
