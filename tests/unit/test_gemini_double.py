"""The Gemini API test double behaves like Google's public API (plain aiohttp client against it)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from tests.gemini_double import (
    SIGNATURE_SENTINELS,
    GeminiApiDouble,
    Reply,
    Transport,
    function_call_part,
    next_pacific_midnight,
    pacific_day,
    text_part,
)
from tests.upstream_double import SKIP_SIGNATURE, parse_sse

KEY = "AIzaSyTestKey-0123456789abcdefghijklm"
PT = ZoneInfo("America/Los_Angeles")
# 23:58:10 Pacific (PDT) on 14 July 2026: close to the quota day's end, 10 s into a minute.
START = datetime(2026, 7, 14, 23, 58, 10, tzinfo=PT)
WEATHER = {
    "functionDeclarations": [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        }
    ]
}


@pytest.fixture
async def double():
    d = GeminiApiDouble(start=START, frozen=True)
    d.add_key(KEY)
    await d.start()
    yield d
    await d.stop()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


def user(text: str = "Hi") -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": text}]}


def chat(text: str = "Hi", **fields: Any) -> dict[str, Any]:
    return {"contents": [user(text)], **fields}


async def call(
    http,
    double,
    method: str,
    body: Any = None,
    *,
    model: str = "gemini-2.5-flash",
    key: str | None = KEY,
    query: str = "",
    **headers: str,
) -> tuple[int, Any, str]:
    url = f"{double.base_url}/v1beta/models/{model}:{method}{query}"
    hdrs = {"Content-Type": "application/json", **headers}
    if key is not None:
        hdrs["x-goog-api-key"] = key
    async with http.post(url, data=json.dumps(body if body is not None else chat()), headers=hdrs) as resp:
        return resp.status, resp.headers, await resp.text()


async def generate(http, double, body: Any = None, **kw: Any) -> tuple[int, dict[str, Any]]:
    status, _, text = await call(http, double, "generateContent", body, **kw)
    return status, json.loads(text)


async def stream(http, double, body: Any = None, **kw: Any) -> tuple[str, list[dict[str, Any]]]:
    status, headers, text = await call(http, double, "streamGenerateContent", body, query="?alt=sse", **kw)
    assert status == 200, text
    assert headers["Content-Type"].startswith("text/event-stream")
    return text, parse_sse(text)


async def get(http, double, path: str, key: str | None = KEY) -> tuple[int, dict[str, Any]]:
    headers = {"x-goog-api-key": key} if key else {}
    async with http.get(f"{double.base_url}{path}", headers=headers) as resp:
        return resp.status, await resp.json()


def parts_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for c in body.get("candidates", []) for p in c.get("content", {}).get("parts", [])]


def error(body: dict[str, Any]) -> dict[str, Any]:
    return body["error"]


def detail(body: dict[str, Any], name: str) -> dict[str, Any]:
    return next(d for d in body["error"]["details"] if d["@type"] == f"type.googleapis.com/google.rpc.{name}")


# --------------------------------------------------------------------------------------
# models.list / models.get
# --------------------------------------------------------------------------------------


async def test_models_list_pages_with_tokens(http, double):
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        path = "/v1beta/models?pageSize=5" + (f"&pageToken={token}" if token else "")
        status, body = await get(http, double, path)
        assert status == 200, body
        assert len(body["models"]) <= 5
        seen += [m["name"] for m in body["models"]]
        pages += 1
        token = body.get("nextPageToken")
        if not token:
            break
    assert pages == -(-len(double.models) // 5)
    assert seen == [f"models/{m}" for m in double.models]
    status, body = await get(http, double, "/v1beta/models")  # default page size 50: one page
    assert status == 200 and "nextPageToken" not in body and len(body["models"]) == len(double.models)


async def test_models_listing_fields_and_get(http, double):
    status, body = await get(http, double, "/v1beta/models")
    by_name = {m["name"]: m for m in body["models"]}
    flash = by_name["models/gemini-2.5-flash"]
    assert set(flash) == {
        "name",
        "version",
        "displayName",
        "description",
        "inputTokenLimit",
        "outputTokenLimit",
        "supportedGenerationMethods",
        "temperature",
        "topP",
        "topK",
        "maxTemperature",
        "thinking",
    }
    assert flash["thinking"] is True and "generateContent" in flash["supportedGenerationMethods"]
    assert "models/gemini-3-pro-preview" in by_name and "models/gemini-3-flash-preview" in by_name
    embedding = by_name["models/gemini-embedding-001"]
    assert "generateContent" not in embedding["supportedGenerationMethods"]
    assert "embedContent" in embedding["supportedGenerationMethods"]
    assert by_name["models/imagen-4.0-generate-001"]["supportedGenerationMethods"] == ["predict"]

    status, one = await get(http, double, "/v1beta/models/gemini-2.5-pro")
    assert status == 200 and one == by_name["models/gemini-2.5-pro"]
    status, missing = await get(http, double, "/v1beta/models/gemini-0-nope")
    assert status == 404 and error(missing)["status"] == "NOT_FOUND"


async def test_bad_page_token_and_key_model_allow_list(http, double):
    status, body = await get(http, double, "/v1beta/models?pageToken=garbage")
    assert status == 400 and error(body)["status"] == "INVALID_ARGUMENT"
    narrow = double.add_key("AIza-narrow", models=["gemini-2.5-flash"]).key
    status, body = await get(http, double, "/v1beta/models", key=narrow)
    assert [m["name"] for m in body["models"]] == ["models/gemini-2.5-flash"]
    status, _ = await generate(http, double, model="gemini-2.5-pro", key=narrow)
    assert status == 404


# --------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------


async def test_unknown_key_is_api_key_invalid(http, double):
    status, body = await generate(http, double, key="AIza-not-registered")
    message = "API key not valid. Please pass a valid API key."
    assert status == 400
    assert body == {
        "error": {
            "code": 400,
            "message": message,
            "status": "INVALID_ARGUMENT",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                },
                {
                    "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                    "locale": "en-US",
                    "message": message,
                },
            ],
        }
    }
    status, body = await get(http, double, "/v1beta/models", key="AIza-not-registered")
    assert status == 400 and detail(body, "ErrorInfo")["reason"] == "API_KEY_INVALID"


async def test_missing_key_and_query_key(http, double):
    status, body = await generate(http, double, key=None)
    assert status == 403 and error(body)["status"] == "PERMISSION_DENIED"
    assert "unregistered callers" in error(body)["message"]
    status, body = await generate(http, double, key=None, query=f"?key={KEY}")
    assert status == 200, body
    assert double.last_chat().api_key == KEY


async def test_suspended_key_and_project(http, double):
    entry = double.key(KEY)
    double.suspend(KEY)
    status, body = await generate(http, double)
    assert status == 403 and error(body)["status"] == "PERMISSION_DENIED"
    assert error(body)["message"] == f"Permission denied: Consumer 'api_key:{KEY}' has been suspended."
    info = detail(body, "ErrorInfo")
    assert info["reason"] == "CONSUMER_SUSPENDED"
    assert info["metadata"]["consumer"] == f"projects/{entry.project.number}"
    assert detail(body, "LocalizedMessage")["message"] == error(body)["message"]
    double.unsuspend(KEY)
    double.suspend(KEY, project=True)
    status, body = await generate(http, double)
    assert status == 403 and f"'projects/{entry.project.number}'" in error(body)["message"]
    double.unsuspend(KEY)
    assert (await generate(http, double))[0] == 200
    double.remove_key(KEY)
    assert (await generate(http, double))[0] == 400


# --------------------------------------------------------------------------------------
# generateContent, streamGenerateContent, countTokens
# --------------------------------------------------------------------------------------


async def test_generate_content_unary_shape(http, double):
    status, body = await generate(http, double)
    assert status == 200, body
    cand = body["candidates"][0]
    assert cand["content"] == {"parts": [{"text": "Hello world!"}], "role": "model"}
    assert cand["finishReason"] == "STOP" and cand["index"] == 0
    usage = body["usageMetadata"]
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"] + usage.get(
        "thoughtsTokenCount", 0
    )
    assert usage["thoughtsTokenCount"] > 0  # 2.5 Flash thinks by default, thoughts hidden but billed
    assert body["modelVersion"] == "gemini-2.5-flash" and body["responseId"]
    rec = double.last_chat()
    assert rec.status == 200 and rec.headers["x-goog-api-key"] == KEY
    assert rec.body == chat() and rec.method == "POST" and rec.path.endswith(":generateContent")


async def test_stream_frames_parse(http, double):
    raw, events = await stream(http, double)
    assert raw.startswith("data: {") and raw.endswith("\r\n\r\n") and "\r\n\r\n" in raw
    texts = [p["text"] for e in events for p in parts_of(e)]
    assert texts == ["Hello", " world", "!"]
    *middle, last = events
    for event in middle:  # prompt count only, like Google's
        assert set(event["usageMetadata"]) == {"promptTokenCount", "totalTokenCount", "promptTokensDetails"}
        assert "finishReason" not in event["candidates"][0]
    assert last["candidates"][0]["finishReason"] == "STOP"
    assert last["usageMetadata"]["candidatesTokenCount"] > 0
    assert len({e["responseId"] for e in events}) == 1
    # Without alt=sse the stream is one JSON array.
    status, _, text = await call(http, double, "streamGenerateContent")
    assert status == 200 and [p["text"] for e in json.loads(text) for p in parts_of(e)] == texts


async def test_count_tokens_both_forms_match_prompt_count(http, double):
    body = chat(
        "Tell me a story about a magic backpack.", systemInstruction={"parts": [{"text": "Be brief."}]}
    )
    status, _, text = await call(http, double, "countTokens", {"contents": body["contents"]})
    assert status == 200
    plain = json.loads(text)["totalTokens"]
    status, _, text = await call(
        http, double, "countTokens", {"generateContentRequest": {"model": "models/gemini-2.5-flash", **body}}
    )
    assert status == 200
    nested = json.loads(text)["totalTokens"]
    assert nested > plain > 0
    status, generated = await generate(http, double, body)
    assert generated["usageMetadata"]["promptTokenCount"] == nested
    assert double.usage(KEY, "gemini-2.5-flash")["rpm"] == 1  # countTokens is not a generate request
    status, _, text = await call(
        http, double, "countTokens", {"contents": body["contents"], "generateContentRequest": body}
    )
    assert status == 400


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"project": "p", "request": chat()}, 'Unknown name "project"'),
        ({**chat(), "requestId": "r-1"}, 'Unknown name "requestId"'),
        ({**chat(), "model": "gemini-2.5-flash"}, 'Unknown name "model"'),
        ({**chat(), "labels": {"a": "b"}}, 'Unknown name "labels"'),
        (
            {**chat(), "generationConfig": {"thinking": True}},
            "Unknown name \"thinking\" at 'generation_config'",
        ),
        ({"generationConfig": {}}, "contents is not specified"),
        ({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}, "valid role: user, model"),
        ({"contents": [{"role": "user", "parts": []}]}, "parts must not be empty"),
        (
            chat(generationConfig={"thinkingConfig": {"thinkingBudget": 100, "thinkingLevel": "low"}}),
            "only one of thinking budget and thinking level",
        ),
        (chat(generationConfig={"thinkingConfig": {"thinkingLevel": "low"}}), "Thinking level"),
        (chat(generationConfig={"maxOutputTokens": 65537}), "maxOutputTokens value of 65537"),
    ],
)
async def test_request_validation(http, double, body, needle):
    status, resp = await generate(http, double, body)
    assert status == 400, resp
    assert error(resp)["status"] == "INVALID_ARGUMENT" and needle in error(resp)["message"]


async def test_unknown_field_has_bad_request_detail(http, double):
    status, body = await generate(http, double, {**chat(), "project": "x"})
    assert status == 400
    violation = detail(body, "BadRequest")["fieldViolations"][0]
    assert violation == {
        "description": 'Invalid JSON payload received. Unknown name "project": Cannot find field.'
    }


@pytest.mark.parametrize("keyword", ["$schema", "$ref", "const"])
async def test_schema_keywords_rejected(http, double, keyword):
    params = {"type": "object", "properties": {"city": {"type": "string", keyword: "x"}}}
    tools = [{"functionDeclarations": [{"name": "get_weather", "parameters": params}]}]
    status, body = await generate(http, double, chat(tools=tools))
    assert status == 400
    field_path = "tools[0].function_declarations[0].parameters.properties[0].value"
    assert detail(body, "BadRequest")["fieldViolations"][0]["field"] == field_path
    # parametersJsonSchema takes full JSON Schema.
    tools = [{"functionDeclarations": [{"name": "get_weather", "parametersJsonSchema": params}]}]
    assert (await generate(http, double, chat(tools=tools)))[0] == 200


async def test_models_without_generate_content(http, double):
    for model in ("gemini-embedding-001", "imagen-4.0-generate-001", "gemini-0-nope"):
        status, body = await generate(http, double, model=model)
        assert status == 404 and error(body)["status"] == "NOT_FOUND"
        assert error(body)["message"].startswith(f"models/{model} is not found for API version v1beta")
    status, _, text = await call(
        http, double, "countTokens", {"contents": [user()]}, model="gemini-embedding-001"
    )
    assert status == 200 and json.loads(text)["totalTokens"] > 0


async def test_tts_model_needs_audio_modality(http, double):
    status, body = await generate(http, double, model="gemini-2.5-flash-preview-tts")
    assert status == 400
    status, body = await generate(
        http,
        double,
        chat(generationConfig={"responseModalities": ["AUDIO"]}),
        model="gemini-2.5-flash-preview-tts",
    )
    assert status == 200 and parts_of(body)[0]["inlineData"]["mimeType"].startswith("audio/L16")


# --------------------------------------------------------------------------------------
# Thought signatures (Gemini 3)
# --------------------------------------------------------------------------------------


def tool_turn(call_part: dict[str, Any]) -> dict[str, Any]:
    return {
        "contents": [
            user("Weather in Paris? [[tool]]"),
            {"role": "model", "parts": [call_part]},
            {
                "role": "user",
                "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp": 21}}}],
            },
        ],
        "tools": [WEATHER],
    }


async def test_gemini3_function_call_signature_validation(http, double):
    model = "gemini-3-flash-preview"
    status, body = await generate(
        http, double, chat("Weather in Paris? [[tool]]", tools=[WEATHER]), model=model
    )
    assert status == 200, body
    (part,) = parts_of(body)
    assert part["functionCall"] == {"name": "get_weather", "args": {"city": "city-1"}}
    signature = part["thoughtSignature"]

    status, body = await generate(http, double, tool_turn(part), model=model)
    assert status == 200 and parts_of(body)[0]["text"] == "Hello world!"

    unsigned = {"functionCall": part["functionCall"]}
    status, body = await generate(http, double, tool_turn(unsigned), model=model)
    assert status == 400
    assert error(body)["message"].startswith(
        "Function call is missing a thought_signature in functionCall parts"
    )
    assert "`default_api:get_weather`" in error(body)["message"]

    for sentinel in SIGNATURE_SENTINELS:
        status, _ = await generate(
            http, double, tool_turn({**unsigned, "thoughtSignature": sentinel}), model=model
        )
        assert status == 200
    forged = {**unsigned, "thoughtSignature": signature[::-1]}
    status, body = await generate(http, double, tool_turn(forged), model=model)
    assert status == 400 and "Corrupted thought signature" in error(body)["message"]
    # Gemini 2.5 does not validate.
    assert (await generate(http, double, tool_turn(unsigned), model="gemini-2.5-flash"))[0] == 200
    # An earlier turn is not the current one.
    history = tool_turn(unsigned)
    history["contents"] += [{"role": "model", "parts": [{"text": "21 degrees."}]}, user("Thanks")]
    assert (await generate(http, double, history, model=model))[0] == 200
    assert SKIP_SIGNATURE in SIGNATURE_SENTINELS


async def test_parallel_calls_sign_only_the_first(http, double):
    status, body = await generate(
        http, double, chat("[[parallel]]", tools=[WEATHER]), model="gemini-3-flash-preview"
    )
    assert status == 200
    first, second = parts_of(body)
    assert "thoughtSignature" in first and "thoughtSignature" not in second
    status, body = await generate(
        http,
        double,
        chat("[[tool]]", tools=[WEATHER], generationConfig={"thinkingConfig": {"thinkingBudget": 0}}),
    )
    assert "thoughtSignature" not in parts_of(body)[0]  # 2.5 Flash with thinking off signs nothing


# --------------------------------------------------------------------------------------
# Replies and steering
# --------------------------------------------------------------------------------------


async def test_markers(http, double):
    think = chat("[[think]]", generationConfig={"thinkingConfig": {"includeThoughts": True}})
    _, events = await stream(http, double, think)
    thoughts = [p for e in events for p in parts_of(e) if p.get("thought")]
    assert thoughts and events[-1]["usageMetadata"]["thoughtsTokenCount"] > 0
    _, events = await stream(http, double, chat("[[think]]"))
    assert not [p for e in events for p in parts_of(e) if p.get("thought")]
    status, body = await generate(http, double, chat("[[length]]"))
    assert body["candidates"][0]["finishReason"] == "MAX_TOKENS"
    status, body = await generate(http, double, chat("[[image]]"))
    assert status == 200
    assert parts_of(body)[-1]["inlineData"]["mimeType"] == "image/png"
    _, events = await stream(http, double, chat("[[empty]]"))
    assert events == []


async def test_script_responder_and_transport(http, double):
    double.script(Reply("custom", [[text_part("one")], [function_call_part("f", {"a": 1})]], "STOP"))
    status, body = await generate(http, double)
    assert [("text" in p, "functionCall" in p) for p in parts_of(body)] == [(True, False), (False, True)]
    assert double.last_chat().reply_kind == "custom"
    double.responder = lambda ctx: Reply("r", [[text_part(f"model={ctx.model}")]], "STOP")
    status, body = await generate(http, double, model="gemini-2.5-pro")
    assert status == 200 and parts_of(body)[0]["text"] == "model=gemini-2.5-pro"
    double.responder = None
    double.script(None, transport=Transport(crlf=False, usage="every"))
    raw, events = await stream(http, double)
    assert "\r\n" not in raw and all("candidatesTokenCount" in e["usageMetadata"] for e in events)


async def test_fail_injects_overloaded_then_recovers(http, double):
    inj = double.fail(503, times=2)
    for _ in range(2):
        status, body = await generate(http, double)
        assert status == 503
        assert error(body) == {
            "code": 503,
            "message": "The model is overloaded. Please try again later.",
            "status": "UNAVAILABLE",
        }
    assert inj.fired == 2
    double.fail("internal", rpc="countTokens")
    assert (await generate(http, double))[0] == 200
    status, _, text = await call(http, double, "countTokens", {"contents": [user()]})
    assert status == 500 and json.loads(text)["error"]["status"] == "INTERNAL"


# --------------------------------------------------------------------------------------
# Quotas
# --------------------------------------------------------------------------------------


async def test_rpm_quota_429_shape_and_reset(http, double):
    double.set_limits(KEY, "gemini-2.5-flash", rpm=2)
    for _ in range(2):
        assert (await generate(http, double))[0] == 200
    status, body = await generate(http, double)
    assert status == 429
    err = error(body)
    assert err["status"] == "RESOURCE_EXHAUSTED" and err["code"] == 429
    assert "You exceeded your current quota" in err["message"] and "Please retry in 50s." in err["message"]
    (violation,) = detail(body, "QuotaFailure")["violations"]
    assert violation == {
        "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
        "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
        "quotaDimensions": {"location": "global", "model": "gemini-2.5-flash"},
        "quotaValue": "2",
    }
    assert detail(body, "Help")["links"][0]["url"] == "https://ai.google.dev/gemini-api/docs/rate-limits"
    delay = detail(body, "RetryInfo")["retryDelay"]
    assert delay == "50s"  # the clock is 10 s into its minute
    assert double.usage(KEY, "gemini-2.5-flash")["rpm"] == 2  # the refused request did not count
    double.advance(int(delay[:-1]) - 1)
    assert (await generate(http, double))[0] == 429
    double.advance(1)
    assert (await generate(http, double))[0] == 200
    # Other models and other projects have their own windows.
    assert (await generate(http, double, model="gemini-2.5-pro"))[0] == 200
    other = double.add_key("AIza-other").key
    double.set_limits(other, "gemini-2.5-flash", rpm=2)
    assert (await generate(http, double, key=other))[0] == 200


async def test_keys_of_one_project_share_quota(http, double):
    double.add_key("AIza-sibling", project=double.key(KEY).project.id)
    double.set_limits(KEY, "gemini-2.5-flash", rpm=1)
    assert (await generate(http, double))[0] == 200
    assert (await generate(http, double, key="AIza-sibling"))[0] == 429


async def test_tpm_quota(http, double):
    double.set_limits(KEY, "gemini-2.5-flash", tpm=40)
    long_text = "x" * 120  # ~30 tokens
    assert (await generate(http, double, chat(long_text)))[0] == 200
    status, body = await generate(http, double, chat(long_text))
    assert status == 429
    (violation,) = detail(body, "QuotaFailure")["violations"]
    assert violation["quotaId"] == "GenerateContentInputTokensPerModelPerMinute-FreeTier"
    assert violation["quotaMetric"].endswith("generate_content_free_tier_input_token_count")
    assert violation["quotaValue"] == "40"


async def test_rpd_resets_at_pacific_midnight(http, double):
    double.set_limits(KEY, "gemini-2.5-flash", rpd=1, rpm=None)
    assert pacific_day(double.now()) == "2026-07-14"
    assert (await generate(http, double))[0] == 200
    status, body = await generate(http, double)
    assert status == 429
    (violation,) = detail(body, "QuotaFailure")["violations"]
    assert violation["quotaId"] == "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
    assert detail(body, "RetryInfo")["retryDelay"] == "50s"  # Google's per-minute hint, even per day
    double.advance(60)  # 23:59:10: a new minute, the same day
    assert (await generate(http, double))[0] == 429
    midnight = next_pacific_midnight(double.now())
    assert datetime.fromtimestamp(midnight, PT) == datetime(2026, 7, 15, tzinfo=PT)
    double.set_time(midnight - 1)
    assert (await generate(http, double))[0] == 429
    double.advance(1)
    assert pacific_day(double.now()) == "2026-07-15"
    assert (await generate(http, double))[0] == 200
    assert double.usage(KEY, "gemini-2.5-flash")["rpd"] == 1


def test_pacific_day_follows_dst():
    winter = datetime(2026, 1, 10, 7, 59, 59, tzinfo=UTC)  # 23:59:59 PST on the 9th
    assert pacific_day(winter.timestamp()) == "2026-01-09"
    assert pacific_day((winter + timedelta(seconds=1)).timestamp()) == "2026-01-10"
    summer = datetime(2026, 7, 10, 6, 59, 59, tzinfo=UTC)  # 23:59:59 PDT on the 9th
    assert pacific_day(summer.timestamp()) == "2026-07-09"
    assert pacific_day((summer + timedelta(seconds=1)).timestamp()) == "2026-07-10"


async def test_paid_tier_and_no_free_tier_model(http, double):
    status, body = await generate(http, double, model="gemini-3-pro-preview")
    assert status == 429  # free projects get limit 0 for Gemini 3 Pro
    violations = detail(body, "QuotaFailure")["violations"]
    assert {v["quotaValue"] for v in violations} == {"0"}
    assert {v["quotaDimensions"]["model"] for v in violations} == {"gemini-3-pro"}
    paid = double.add_key("AIza-paid", tier="paid").key
    assert (await generate(http, double, model="gemini-3-pro-preview", key=paid))[0] == 200
    double.set_limits(paid, "gemini-3-pro-preview", rpm=1)
    status, body = await generate(http, double, model="gemini-3-pro-preview", key=paid)
    assert status == 429
    (violation,) = detail(body, "QuotaFailure")["violations"]
    assert violation["quotaId"] == "GenerateRequestsPerMinutePerProjectPerModel"
    assert violation["quotaMetric"] == "generativelanguage.googleapis.com/generate_requests_per_model"


# --------------------------------------------------------------------------------------
# Standalone
# --------------------------------------------------------------------------------------


def test_standalone_serves():
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.gemini_double", "--port", "0", "--key", KEY],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.split("listening on ")[1].split()[0]
        req = urllib.request.Request(f"{url}/v1beta/models?pageSize=2", headers={"x-goog-api-key": KEY})
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = json.loads(resp.read())
        assert len(body["models"]) == 2 and body["nextPageToken"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
