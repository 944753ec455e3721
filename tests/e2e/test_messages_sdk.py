"""``/v1/messages`` through the official anthropic SDK against the upstream double (issue 13):
text, streams, thinking with signatures over several turns, tool round trips (parallel
too), images, count_tokens and every error class, in Anthropic's shapes."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from antigv.appkeys import CONFIG
from tests.conftest import ADMIN_KEY
from tests.e2e.conftest import CLAUDE, E2E, FLASH, GEMINI, user
from tests.upstream_double import CLAUDE_THOUGHTS, TINY_PNG

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {
            "city": {"type": "string", "default": "Paris"},
            "unit": {"const": "celsius"},
            "days": {"type": "integer", "exclusiveMinimum": 0},
            "tags": {"type": "object", "propertyNames": {"pattern": "^[a-z]+$"}},
        },
        "required": ["city"],
        "additionalProperties": False,
    },
}
TIME = {
    "name": "get_time",
    "description": "Local time in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
# Claude Code's names for the models it drives.
SONNET_45 = "claude-sonnet-4-5-20250929"
OPUS_46 = "claude-opus-4-6"
HAIKU_45 = "claude-haiku-4-5-20251001"


def client(
    e2e: E2E, *, key: str | None = None, bearer: bool = False, gw: Any = None
) -> anthropic.AsyncAnthropic:
    base = str((gw or e2e.gw).server.make_url("/"))
    secret = key or e2e.user["api_key"]
    auth = {"auth_token": secret} if bearer else {"api_key": secret}
    return anthropic.AsyncAnthropic(base_url=base, max_retries=0, timeout=20, **auth)


def blocks_as_params(message: Any) -> list[dict[str, Any]]:
    """A reply's content as the next request's assistant turn, as Claude Code replays it."""
    return [block.model_dump(exclude_none=True) for block in message.content]


# --------------------------------------------------------------------------- text


@pytest.mark.parametrize("bearer", [False, True], ids=["x-api-key", "bearer"])
async def test_text_reply_usage_and_usage_row(e2e: E2E, bearer: bool) -> None:
    acc = await e2e.add_account()
    raw = await client(e2e, bearer=bearer).messages.with_raw_response.create(
        model=GEMINI, max_tokens=512, messages=user("Say hello")
    )
    message = await raw.parse()

    assert message.id.startswith("msg_") and message.type == "message" and message.role == "assistant"
    assert message.model == GEMINI
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "Hello world!"
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    upstream = e2e.double.last_chat().usage
    assert upstream is not None
    assert message.usage.input_tokens == upstream["promptTokenCount"] > 0
    assert message.usage.output_tokens == upstream["candidatesTokenCount"] + upstream.get(
        "thoughtsTokenCount", 0
    )
    assert message.usage.cache_read_input_tokens == 0
    request_id = raw.headers["request-id"]
    assert request_id == raw.headers["x-request-id"] == message._request_id
    (row,) = await e2e.usage_rows(request_id=request_id)
    assert row["surface"] == "messages" and row["account_id"] == acc.account_id and row["status"] == "ok"
    assert row["prompt_tokens"] == upstream["promptTokenCount"]
    assert e2e.double.last_chat_body()["request"]["generationConfig"]["maxOutputTokens"] == 512


async def test_stream_events_in_order_and_final_message(e2e: E2E) -> None:
    await e2e.add_account()
    async with client(e2e).messages.stream(
        model=CLAUDE, max_tokens=4096, messages=user("Say hello")
    ) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()

    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_start" in kinds and "content_block_stop" in kinds and "message_delta" in kinds
    # Claude thinks by default as claude-opus-4-6-thinking: a signed thinking block, then text.
    assert [block.type for block in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == "".join(CLAUDE_THOUGHTS)
    assert final.content[0].signature and e2e.double.signatures[final.content[0].signature].family == "claude"
    assert final.content[1].text == "Hello world!"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0 and final.usage.input_tokens > 0
    (row,) = await e2e.usage_rows(surface="messages")
    assert row["status"] == "ok" and row["completion_tokens"] == final.usage.output_tokens


async def test_raw_stream_wire_format(e2e: E2E) -> None:
    await e2e.add_account()
    response = await e2e.gw.http.post(
        "/v1/messages?beta=true",
        json={"model": GEMINI, "max_tokens": 100, "stream": True, "messages": user("hi")},
        headers={"x-api-key": e2e.user["api_key"], "anthropic-version": "2023-06-01", "anthropic-beta": "x"},
    )
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["request-id"]
    text = await response.text()
    events = [block.split("\n")[0] for block in text.strip().split("\n\n")]
    assert events[:3] == ["event: message_start", "event: ping", "event: content_block_start"]
    assert events[-2:] == ["event: message_delta", "event: message_stop"]
    assert '"text_delta"' in text and '"stop_reason":"end_turn"' in text


async def test_claude_code_model_names_resolve(e2e: E2E) -> None:
    await e2e.add_account()
    anthropic_client = client(e2e)
    names = (
        (SONNET_45, "claude-sonnet-4-6"),
        (OPUS_46, CLAUDE),
        (HAIKU_45, FLASH),
        ("claude-opus-5-5", CLAUDE),
    )
    for requested, served in names:
        message = await anthropic_client.messages.create(
            model=requested, max_tokens=2048, messages=user("hi")
        )
        assert message.model == requested
        assert e2e.double.last_chat_body()["model"] == served
        (row,) = await e2e.usage_rows(request_id=message._request_id)
        assert row["model_name"] == served


@pytest.mark.parametrize(
    ("marker", "reason"), [("", "end_turn"), ("[[length]]", "max_tokens"), ("[[safety]]", "refusal")]
)
async def test_stop_reasons(e2e: E2E, marker: str, reason: str) -> None:
    await e2e.add_account()
    message = await client(e2e).messages.create(model=GEMINI, max_tokens=100, messages=user(marker + " hi"))
    assert message.stop_reason == reason


async def test_request_fields_reach_the_upstream(e2e: E2E) -> None:
    await e2e.add_account()
    await client(e2e).messages.create(
        model=GEMINI,
        max_tokens=300,
        system=[
            {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Be kind."},
        ],
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}],
            }
        ],
        stop_sequences=["END"],
        metadata={"user_id": "user_abc"},
        extra_body={"context_management": {"edits": []}, "temperature": 0.3, "top_p": 0.9, "top_k": 20},
    )
    request = e2e.double.last_chat_body()["request"]
    assert request["systemInstruction"]["parts"][0]["text"] == "Be brief.\n\nBe kind."
    config = request["generationConfig"]
    assert config["stopSequences"] == ["END"] and config["temperature"] == 0.3
    assert config["topP"] == 0.9 and config["topK"] == 20 and config["maxOutputTokens"] == 300


# --------------------------------------------------------------------------- thinking


async def test_thinking_budget_and_adaptive_effort_map_to_the_upstream(e2e: E2E) -> None:
    await e2e.add_account()
    anthropic_client = client(e2e)
    await anthropic_client.messages.create(
        model=SONNET_45,
        max_tokens=8000,
        thinking={"type": "enabled", "budget_tokens": 2048},
        messages=user("hi"),
    )
    assert (
        e2e.double.last_chat_body()["request"]["generationConfig"]["thinkingConfig"]["thinkingBudget"] == 2048
    )
    await anthropic_client.messages.create(
        model=GEMINI,
        max_tokens=8000,
        thinking={"type": "adaptive"},
        extra_body={"output_config": {"effort": "low"}},
        messages=user("hi"),
    )
    assert (
        e2e.double.last_chat_body()["request"]["generationConfig"]["thinkingConfig"]["thinkingLevel"] == "low"
    )
    await anthropic_client.messages.create(
        model=CLAUDE, max_tokens=8000, thinking={"type": "disabled"}, messages=user("hi")
    )
    assert "thinkingConfig" not in e2e.double.last_chat_body()["request"]["generationConfig"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_claude_thinking_and_tool_use_over_several_turns(e2e: E2E, stream: bool) -> None:
    await e2e.add_account()
    anthropic_client = client(e2e)
    # What Claude Code sends for 4.6 models: adaptive thinking with an effort.
    thinking = {"type": "adaptive"}
    extra = {"output_config": {"effort": "medium"}}
    history: list[dict[str, Any]] = user("[[tool]] weather in Paris?")

    async def ask() -> Any:
        params: dict[str, Any] = {
            "model": OPUS_46,
            "max_tokens": 8000,
            "thinking": thinking,
            "tools": [WEATHER],
            "messages": history,
            "extra_body": extra,
        }
        if not stream:
            return await anthropic_client.messages.create(**params)
        async with anthropic_client.messages.stream(**params) as events:
            return await events.get_final_message()

    for turn in range(3):  # a tool call, its result, an answer; then again on the same history
        if turn:
            history.append({"role": "user", "content": "[[tool]] and tomorrow?"})
        asked = await ask()
        assert [block.type for block in asked.content] == ["thinking", "tool_use"]
        assert asked.stop_reason == "tool_use"
        thought, call = asked.content
        assert thought.thinking == "".join(CLAUDE_THOUGHTS) and thought.signature
        assert call.id.startswith("toolu_") and call.name == "get_weather" and isinstance(call.input, dict)
        history += [
            {"role": "assistant", "content": blocks_as_params(asked)},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "22C"}]},
        ]
        answer = await ask()
        rec = e2e.double.last_chat()
        assert rec.status == 200
        # Thinking stayed on: every replayed tool turn opens with its exact signed thinking.
        assert rec.generation_config["thinkingConfig"]["thinkingBudget"] >= 1024
        replayed = [c for c in rec.contents if any("functionCall" in p for p in c["parts"])]
        assert len(replayed) == turn + 1
        assert replayed[-1]["parts"][0] == {
            "thought": True,
            "text": thought.thinking,
            "thoughtSignature": thought.signature,
        }
        assert [block.type for block in answer.content] == ["thinking", "text"]
        history.append({"role": "assistant", "content": blocks_as_params(answer)})


async def test_claude_thinking_the_client_carried_back_serves_when_the_store_has_none(e2e: E2E) -> None:
    """Another deployment's store, or an expired one: the client's signed block is enough."""
    await e2e.add_account()
    thinking = {"type": "enabled", "budget_tokens": 2048}
    history = user("[[tool]] weather in Paris?")
    first = await client(e2e).messages.create(
        model=CLAUDE, max_tokens=8000, thinking=thinking, tools=[WEATHER], messages=history
    )
    await e2e.sql("DELETE FROM thought_signatures")
    other = await e2e.new_gateway()  # its in-memory store is empty too
    call = first.content[1]
    history += [
        {"role": "assistant", "content": blocks_as_params(first)},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "22C"}]},
    ]
    reply = await client(e2e, gw=other).messages.create(
        model=CLAUDE, max_tokens=8000, thinking=thinking, tools=[WEATHER], messages=history
    )
    assert reply.content[-1].text == "Hello world!"
    rec = e2e.double.last_chat()
    assert rec.status == 200 and rec.generation_config["thinkingConfig"]["thinkingBudget"] == 2048
    assert rec.contents[-2]["parts"][0]["thoughtSignature"] == first.content[0].signature


async def test_gemini_tool_call_signature_rides_in_a_thinking_block_and_returns(e2e: E2E) -> None:
    await e2e.add_account()
    history = user("[[tool]] weather in Paris?")
    first = await client(e2e).messages.create(
        model=GEMINI, max_tokens=2000, tools=[WEATHER], messages=history
    )
    assert [block.type for block in first.content] == ["thinking", "tool_use"]
    signature = first.content[0].signature
    assert e2e.double.signatures[signature].family == "gemini"
    call = first.content[1]
    assert call.id.startswith("toolu_")  # Gemini sends no id: the gateway's is Anthropic-shaped
    await e2e.sql("DELETE FROM thought_signatures")
    other = await e2e.new_gateway()
    history += [
        {"role": "assistant", "content": blocks_as_params(first)},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "22C", "is_error": True}],
        },
    ]
    reply = await client(e2e, gw=other).messages.create(
        model=GEMINI, max_tokens=2000, tools=[WEATHER], messages=history
    )
    assert reply.content[-1].text == "Hello world!"
    contents = e2e.double.last_chat().contents
    replayed = next(p for p in contents[-2]["parts"] if "functionCall" in p)
    assert replayed["thoughtSignature"] == signature
    response = next(p for p in contents[-1]["parts"] if "functionResponse" in p)["functionResponse"]
    assert response["response"] == {"error": "22C"} and response["id"] == call.id


@pytest.mark.parametrize("model", [GEMINI, CLAUDE])
async def test_parallel_tool_use_round_trip(e2e: E2E, model: str) -> None:
    await e2e.add_account()
    history = user("[[parallel]] weather and time in Paris?")
    first = await client(e2e).messages.create(
        model=model, max_tokens=8000, tools=[WEATHER, TIME], messages=history
    )
    calls = [block for block in first.content if block.type == "tool_use"]
    assert [call.name for call in calls] == ["get_weather", "get_time"]
    assert len({call.id for call in calls}) == 2
    history += [
        {"role": "assistant", "content": blocks_as_params(first)},
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": calls[0].id,
                    "content": [{"type": "text", "text": "22C"}],
                },
                {"type": "tool_result", "tool_use_id": calls[1].id, "content": "noon"},
            ],
        },
    ]
    reply = await client(e2e).messages.create(
        model=model, max_tokens=8000, tools=[WEATHER, TIME], messages=history
    )
    assert reply.content[-1].text == "Hello world!"
    assert e2e.double.last_chat().status == 200


async def test_tool_choice_and_sanitised_schema(e2e: E2E) -> None:
    await e2e.add_account()
    await client(e2e).messages.create(
        model=GEMINI,
        max_tokens=100,
        tools=[WEATHER, TIME],
        tool_choice={"type": "tool", "name": "get_time", "disable_parallel_tool_use": True},
        messages=user("hi"),
    )
    request = e2e.double.last_chat_body()["request"]
    assert request["toolConfig"]["functionCallingConfig"] == {
        "mode": "ANY",
        "allowedFunctionNames": ["get_time"],
    }
    parameters = request["tools"][0]["functionDeclarations"][0]["parameters"]
    assert "$schema" not in parameters and "default" not in parameters["properties"]["city"]


# --------------------------------------------------------------------------- images


async def test_images_reach_the_upstream_in_messages_and_tool_results(e2e: E2E) -> None:
    await e2e.add_account()
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": TINY_PNG}}
    first = await client(e2e).messages.create(
        model=GEMINI,
        max_tokens=100,
        tools=[WEATHER],
        messages=[{"role": "user", "content": [image, {"type": "text", "text": "[[tool]] what is this?"}]}],
    )
    call = next(block for block in first.content if block.type == "tool_use")
    parts = e2e.double.last_chat().contents[0]["parts"]
    assert parts[0] == {"inlineData": {"mimeType": "image/png", "data": TINY_PNG}}
    await client(e2e).messages.create(
        model=GEMINI,
        max_tokens=100,
        tools=[WEATHER],
        messages=[
            {"role": "user", "content": "[[tool]] weather?"},
            {"role": "assistant", "content": blocks_as_params(first)},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": [image]}],
            },
        ],
    )
    last = e2e.double.last_chat().contents[-1]["parts"]
    assert "functionResponse" in last[0] and last[1]["inlineData"]["data"] == TINY_PNG


# --------------------------------------------------------------------------- count_tokens


async def test_count_tokens_asks_the_upstream(e2e: E2E) -> None:
    await e2e.add_account()
    raw = await client(e2e).messages.with_raw_response.count_tokens(
        model=SONNET_45, messages=user("How many tokens is this?"), tools=[WEATHER]
    )
    count = await raw.parse()
    assert count.input_tokens > 0
    assert raw.headers["x-antigv-token-count"] == "upstream"
    (call,) = e2e.double.requests_for("countTokens")
    assert call.body["request"]["model"] == "claude-sonnet-4-6"
    assert not await e2e.usage_rows(wait=0.2, surface="messages")  # counting is not a chat


async def test_count_tokens_estimates_when_the_upstream_cannot(e2e: E2E) -> None:
    await e2e.add_account()
    e2e.double.fail("internal", rpc="countTokens", times=5)
    raw = await client(e2e).messages.with_raw_response.count_tokens(model=GEMINI, messages=user("x" * 400))
    assert raw.headers["x-antigv-token-count"] == "estimate"
    assert (await raw.parse()).input_tokens == 100


# --------------------------------------------------------------------------- errors


async def test_error_classes_and_shapes(e2e: E2E) -> None:
    anthropic_client = client(e2e)
    with pytest.raises(anthropic.AuthenticationError) as caught:
        await client(e2e, key="sk-wrong").messages.create(model=GEMINI, max_tokens=10, messages=user("hi"))
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid API key"},
    }
    assert caught.value.response.headers["request-id"]

    with pytest.raises(anthropic.PermissionDeniedError) as denied:  # no account yet
        await anthropic_client.messages.create(model=GEMINI, max_tokens=10, messages=user("hi"))
    assert denied.value.body["error"]["type"] == "permission_error"

    acc = await e2e.add_account()
    with pytest.raises(anthropic.BadRequestError) as bad:
        await anthropic_client.messages.create(model=GEMINI, messages=user("hi"), max_tokens=None)  # type: ignore[arg-type]
    assert bad.value.body["error"] == {
        "type": "invalid_request_error",
        "message": "max_tokens: field required",
    }

    with pytest.raises(anthropic.NotFoundError) as missing:
        await anthropic_client.messages.create(model="claude-nope-1", max_tokens=10, messages=user("hi"))
    assert missing.value.body["error"]["type"] == "not_found_error"

    e2e.double.fail("quota", account=acc.upstream, times=5)
    with pytest.raises(anthropic.RateLimitError) as limited:
        await anthropic_client.messages.create(model=GEMINI, max_tokens=10, messages=user("hi"))
    assert limited.value.body["error"]["type"] == "rate_limit_error"
    assert int(limited.value.response.headers["retry-after"]) >= 1

    e2e.double.reset_steering()
    await e2e.sql("DELETE FROM cooldowns")
    e2e.double.fail("internal", times=10)
    with pytest.raises(anthropic.APIStatusError) as failed:
        await anthropic_client.messages.create(model=GEMINI, max_tokens=10, messages=user("hi"))
    assert failed.value.status_code == 502 and failed.value.body["error"]["type"] == "api_error"

    response = await e2e.gw.http.post("/v1/messages", data=b"{", headers={"x-api-key": e2e.user["api_key"]})
    assert response.status == 400
    body = await response.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"


async def test_request_too_large_is_413(e2e: E2E) -> None:
    limit = e2e.gw.app[CONFIG].security.max_request_bytes
    response = await e2e.gw.http.post(
        "/v1/messages", data=b"x" * (limit + 1), headers={"x-api-key": e2e.user["api_key"]}
    )
    assert response.status == 413
    assert (await response.json())["error"]["type"] == "request_too_large"


INVALID = [
    ({"max_tokens": 10, "messages": user("hi")}, "model"),
    ({"model": GEMINI, "max_tokens": 10, "messages": []}, "messages"),
    (
        {"model": GEMINI, "max_tokens": 10, "messages": [{"role": "robot", "content": "x"}]},
        "messages[0].role",
    ),
    # Claude Code's system messages among the turns instruct, but a conversation needs a turn.
    (
        {"model": GEMINI, "max_tokens": 10, "messages": [{"role": "system", "content": "x"}]},
        "user or assistant",
    ),
    ({"model": GEMINI, "max_tokens": 0, "messages": user("hi")}, "max_tokens"),
    (
        {
            "model": GEMINI,
            "max_tokens": 10,
            "messages": user("hi"),
            "thinking": {"type": "enabled", "budget_tokens": 10},
        },
        "thinking.budget_tokens",
    ),
    (
        {
            "model": GEMINI,
            "max_tokens": 2000,
            "messages": user("hi"),
            "thinking": {"type": "enabled", "budget_tokens": 4000},
        },
        "max_tokens",
    ),
    (
        {
            "model": GEMINI,
            "max_tokens": 10,
            "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x"}]}],
        },
        "tool_use_id",
    ),
    (
        {
            "model": GEMINI,
            "max_tokens": 10,
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}],
                }
            ],
        },
        "source.type",
    ),
    (
        {
            "model": GEMINI,
            "max_tokens": 10,
            "messages": user("hi"),
            "tools": [{"type": "web_search_20250305", "name": "web_search"}],
        },
        "tools[0].type",
    ),
    (
        {
            "model": GEMINI,
            "max_tokens": 10,
            "messages": user("hi"),
            "tool_choice": {"type": "tool", "name": "nope"},
        },
        "tool_choice",
    ),
    ({"model": GEMINI, "max_tokens": 10, "messages": user("hi"), "temperature": 1.5}, "temperature"),
]


@pytest.mark.parametrize(("body", "field"), INVALID, ids=[field for _, field in INVALID])
async def test_invalid_bodies_are_400_naming_the_field(e2e: E2E, body: dict[str, Any], field: str) -> None:
    response = await e2e.gw.http.post("/v1/messages", json=body, headers={"x-api-key": e2e.user["api_key"]})
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["type"] == "invalid_request_error" and field in error["message"]


async def test_mid_stream_failure_is_an_error_event(e2e: E2E) -> None:
    await e2e.add_account()
    e2e.double.next_transport(break_after=2)
    with pytest.raises(anthropic.APIStatusError) as caught:
        async with client(e2e).messages.stream(model=GEMINI, max_tokens=100, messages=user("hi")) as stream:
            async for _ in stream:
                pass
    assert caught.value.body["error"]["type"] == "api_error"
    (row,) = await e2e.usage_rows(surface="messages")
    assert row["status"] == "error"


async def test_pings_while_the_model_is_silent(e2e: E2E) -> None:
    gw = await e2e.new_gateway(server={"stream_ping_interval": 0.05})
    await e2e.add_account()
    e2e.double.next_transport(frame_delay=0.3)
    response = await gw.http.post(
        "/v1/messages",
        json={"model": GEMINI, "max_tokens": 100, "stream": True, "messages": user("hi")},
        headers={"x-api-key": e2e.user["api_key"]},
    )
    text = await response.text()
    events = [block.split("\n")[0] for block in text.strip().split("\n\n")]
    # The one after message_start, and more while the frames were 0.3 s apart.
    assert events.count("event: ping") >= 3
    assert events[-1] == "event: message_stop" and "event: ping" not in events[-3:]


async def test_head_root_answers_without_a_key(e2e: E2E) -> None:
    response = await e2e.gw.http.head("/")
    assert response.status == 200


async def test_admin_key_and_chat_completions_share_accounts(e2e: E2E) -> None:
    await e2e.add_account()
    message = await client(e2e, key=ADMIN_KEY).messages.create(
        model=GEMINI, max_tokens=10, messages=user("hi")
    )
    assert message.content[0].text == "Hello world!"
    completion = await e2e.client().chat.completions.create(model=GEMINI, messages=user("hi"))
    rows = await e2e.usage_rows(count=2)
    assert sorted(row["surface"] for row in rows) == ["chat_completions", "messages"]
    assert completion.choices[0].message.content == "Hello world!"


# --- the model list, as Anthropic's clients read it ------------------------------------------


async def test_models_list_in_anthropic_s_shape_pages_through_every_model(e2e: E2E) -> None:
    await e2e.add_account()
    openai_ids = [model.id async for model in e2e.client().models.list()]
    anthropic_client = client(e2e)
    # The SDK pages on by after_id: three a page, every model once, in the same order.
    listed = [model async for model in anthropic_client.models.list(limit=3)]
    assert [model.id for model in listed] == openai_ids and len(listed) > 3
    opus = next(model for model in listed if model.id == CLAUDE)
    assert opus.type == "model" and opus.display_name == "Claude Opus 4.6 (Thinking)"
    assert opus.created_at.tzinfo is not None
    assert opus.max_input_tokens == 200000 and opus.max_tokens == 64000
    one = await anthropic_client.models.retrieve(GEMINI)
    assert (one.id, one.display_name) == (GEMINI, "Gemini 3.1 Pro (High)")

    first = await anthropic_client.models.list(limit=2)
    assert first.has_more and first.first_id == openai_ids[0] and first.last_id == openai_ids[1]
    back = await anthropic_client.models.list(before_id=openai_ids[3], limit=2)
    assert [m.id for m in back.data] == openai_ids[1:3] and back.has_more
    last = await anthropic_client.models.list(after_id=openai_ids[-2])
    assert [m.id for m in last.data] == openai_ids[-1:] and not last.has_more


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"after_id": "no-such-model"}, "after_id"),
        ({"after_id": GEMINI, "before_id": CLAUDE}, "before_id"),
    ],
)
async def test_models_list_bad_paging_is_an_anthropic_400(
    e2e: E2E, query: dict[str, str], param: str
) -> None:
    await e2e.add_account()
    response = await e2e.gw.http.get(
        "/v1/models",
        params=query,
        headers={"x-api-key": e2e.user["api_key"], "anthropic-version": "2023-06-01"},
    )
    assert response.status == 400 and response.headers["request-id"]
    body = await response.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith(param)


async def test_models_list_errors_in_anthropic_s_shape_and_openai_s_for_others(e2e: E2E) -> None:
    with pytest.raises(anthropic.AuthenticationError) as caught:
        await client(e2e, key="sk-wrong").models.list()
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid API key"},
    }
    with pytest.raises(anthropic.PermissionDeniedError):  # no account yet
        await client(e2e).models.list()
    with pytest.raises(anthropic.NotFoundError) as missing:
        await e2e.add_account()
        await client(e2e).models.retrieve("claude-nope-1")
    assert missing.value.body["error"]["type"] == "not_found_error"
    # The same path without Anthropic's header: OpenAI's shape.
    plain = await e2e.gw.http.get("/v1/models", headers={"Authorization": "Bearer sk-wrong"})
    assert plain.status == 401 and (await plain.json())["error"]["code"] == "invalid_api_key"
