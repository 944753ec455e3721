"""The chat proxy end to end: openai SDK -> antigv -> upstream double (SPEC §7, PROTOCOL §3-5)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pytest

from tests.conftest import ADMIN_KEY, bearer
from tests.e2e.conftest import CLAUDE, E2E, FLASH, GEMINI, TIME_TOOL, WEATHER_TOOL, user
from tests.upstream_double import (
    CLAUDE_THOUGHTS,
    GEMINI_THOUGHTS,
    SKIP_SIGNATURE,
    TINY_PNG,
    UTF8_CHUNKS,
)

BOTH = pytest.mark.parametrize("model", [GEMINI, CLAUDE])


async def collect(stream: Any) -> list[Any]:
    return [chunk async for chunk in stream]


def content_deltas(chunks: list[Any]) -> list[str]:
    return [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]


def text_of(chunks: list[Any]) -> str:
    return "".join(content_deltas(chunks))


def reasoning_of(chunks: list[Any]) -> str:
    return "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)


def finish_of(chunks: list[Any]) -> str | None:
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(reasons) == 1, reasons
    return reasons[0]


def streamed_tool_calls(chunks: list[Any]) -> dict[int, dict[str, Any]]:
    """Tool calls re-assembled by ``index``, as an OpenAI client does."""
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for tc in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            assert tc.index is not None
            call = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": "", "extra": None})
            call["id"] = call["id"] or tc.id
            call["name"] += tc.function.name or ""
            call["arguments"] += tc.function.arguments or ""
            call["extra"] = call["extra"] or (tc.model_extra or {}).get("extra_content")
    return calls


def replayed_assistant(calls: list[dict[str, Any]], *, keep_extra: bool) -> dict[str, Any]:
    tool_calls = []
    for call in calls:
        item = {
            "id": call["id"],
            "type": "function",
            "function": {"name": call["name"], "arguments": call["arguments"]},
        }
        if keep_extra and call.get("extra"):
            item["extra_content"] = call["extra"]
        tool_calls.append(item)
    return {"role": "assistant", "content": None, "tool_calls": tool_calls}


def weather_follow_up(
    messages: list[dict[str, Any]], calls: list[dict[str, Any]], *, keep_extra: bool = False
) -> list[dict[str, Any]]:
    """The history a client sends after answering the first weather call: the prompt,
    the replayed assistant turn, and the tool's result."""
    return [
        *messages,
        replayed_assistant(calls, keep_extra=keep_extra),
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "22C sunny"},
    ]


def message_calls(message: Any) -> list[dict[str, Any]]:
    return [
        {
            "id": tc.id,
            "name": tc.function.name,
            "arguments": tc.function.arguments,
            "extra": (tc.model_extra or {}).get("extra_content"),
        }
        for tc in message.tool_calls
    ]


def upstream_usage(e2e: E2E) -> dict[str, int]:
    usage = e2e.double.last_chat().usage
    assert usage is not None
    return usage


def assert_usage_matches(usage: Any, upstream: dict[str, int]) -> None:
    thoughts = upstream.get("thoughtsTokenCount", 0)
    assert usage.prompt_tokens == upstream["promptTokenCount"] > 0
    assert usage.completion_tokens == upstream.get("candidatesTokenCount", 0) + thoughts > 0
    assert usage.total_tokens == upstream["totalTokenCount"]
    assert usage.completion_tokens_details.reasoning_tokens == thoughts


# --------------------------------------------------------------------------- plain text


@BOTH
async def test_non_stream_text_usage_and_usage_row(e2e: E2E, model: str) -> None:
    acc = await e2e.add_account()
    oc = e2e.client()

    completion = await oc.chat.completions.create(model=model, messages=user("Say hello"))

    choice = completion.choices[0]
    assert completion.object == "chat.completion"
    assert completion.model == model
    assert choice.message.role == "assistant"
    assert choice.message.content == "Hello world!"
    assert choice.finish_reason == "stop"
    upstream = upstream_usage(e2e)
    assert_usage_matches(completion.usage, upstream)
    # The upstream call was made for the right model and project, by the right account.
    body = e2e.double.last_chat_body()
    assert body["model"] == model and body["project"] == acc.upstream.project
    assert e2e.account_of(-1) == acc.email

    request_id = completion._request_id
    assert request_id
    (row,) = await e2e.usage_rows(request_id=request_id)
    assert row["user_id"] == e2e.user["user_id"]
    assert row["account_id"] == acc.account_id
    assert row["model_name"] == model
    assert row["status"] == "ok"
    assert row["is_shared"] == 0
    assert row["prompt_tokens"] == completion.usage.prompt_tokens
    assert row["completion_tokens"] == completion.usage.completion_tokens
    assert row["reasoning_tokens"] == upstream.get("thoughtsTokenCount", 0)
    assert row["total_tokens"] == completion.usage.total_tokens


@BOTH
async def test_stream_text_chunks_done_and_request_id(e2e: E2E, model: str) -> None:
    await e2e.add_account()
    oc = e2e.client()

    stream = await oc.chat.completions.create(model=model, messages=user("Say hello"), stream=True)
    chunks = await collect(stream)

    first = chunks[0].choices[0].delta
    assert first.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.model == model for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert text_of(chunks) == "Hello world!"
    assert finish_of(chunks) == "stop"
    assert chunks[-1].choices[0].finish_reason == "stop"
    if model == CLAUDE:
        # The whitespace-only delta survives on its own (PROTOCOL §4.3).
        assert content_deltas(chunks) == ["Hello", " ", "world", "!"]
    request_id = stream.response.headers.get("x-request-id")
    assert request_id, "a streamed reply carries its request id too"
    (row,) = await e2e.usage_rows(request_id=request_id)
    assert row["status"] == "ok"
    assert row["total_tokens"] == upstream_usage(e2e)["totalTokenCount"]


async def test_sync_client_non_stream_and_stream(e2e: E2E) -> None:
    await e2e.add_account()
    oc = e2e.sync_client()

    def run() -> tuple[Any, list[Any]]:
        completion = oc.chat.completions.create(model=FLASH, messages=user("hi"))
        chunks = list(
            oc.chat.completions.create(
                model=CLAUDE, messages=user("hi"), stream=True, stream_options={"include_usage": True}
            )
        )
        return completion, chunks

    completion, chunks = await asyncio.to_thread(run)
    assert completion.choices[0].message.content == "Hello world!"
    assert text_of(chunks) == "Hello world!"
    assert reasoning_of(chunks) == "".join(CLAUDE_THOUGHTS)
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0
    assert len(await e2e.usage_rows(2)) == 2


@pytest.mark.parametrize(
    "transport",
    [
        {"split": 9},
        {"crlf": True},
        {"gzip": True},
        {"split": 5, "crlf": True, "gzip": True, "coalesce": 2, "trailing_empty": True, "usage": "separate"},
    ],
    ids=["split", "crlf", "gzip", "all"],
)
async def test_stream_survives_odd_framing(e2e: E2E, transport: dict[str, Any]) -> None:
    await e2e.add_account()
    oc = e2e.client()
    for model in (GEMINI, CLAUDE):
        e2e.double.next_transport(**transport)
        chunks = await collect(
            await oc.chat.completions.create(
                model=model, messages=user("[[utf8]]"), stream=True, stream_options={"include_usage": True}
            )
        )

        # Multi-byte characters cut between reads come out whole, nothing lost or doubled.
        assert text_of(chunks) == "".join(UTF8_CHUNKS), model
        assert finish_of(chunks) == "stop"
        rec = e2e.double.last_chat()
        assert rec.completed
        if transport.get("gzip"):
            assert "gzip" in rec.headers.get("Accept-Encoding", "")
        assert chunks[-1].choices == []
        assert chunks[-1].usage.total_tokens == rec.usage["totalTokenCount"]


# --------------------------------------------------------------------------- reasoning


@BOTH
async def test_reasoning_content_streamed_and_in_message(e2e: E2E, model: str) -> None:
    await e2e.add_account()
    oc = e2e.client()
    thoughts = "".join(GEMINI_THOUGHTS if model == GEMINI else CLAUDE_THOUGHTS)

    # Gemini 3 shows its thoughts only when asked to think (PROTOCOL §13.5).
    effort = {"reasoning_effort": "high"}
    chunks = await collect(
        await oc.chat.completions.create(model=model, messages=user("[[think]] hi"), stream=True, **effort)
    )
    assert reasoning_of(chunks) == thoughts
    assert text_of(chunks) == "Hello world!"  # no thought leaked into the answer
    # All reasoning comes before the answer.
    kinds = [
        "r" if getattr(c.choices[0].delta, "reasoning_content", None) else "c"
        for c in chunks[1:]
        if c.choices
        and (c.choices[0].delta.content or getattr(c.choices[0].delta, "reasoning_content", None))
    ]
    assert kinds == sorted(kinds, reverse=True)

    completion = await oc.chat.completions.create(model=model, messages=user("[[think]] hi"), **effort)
    message = completion.choices[0].message
    assert message.content == "Hello world!"
    assert (message.model_extra or {}).get("reasoning_content") == thoughts
    assert completion.usage.completion_tokens_details.reasoning_tokens > 0


# --------------------------------------------------------------------------- tool calls


@BOTH
async def test_single_tool_call(e2e: E2E, model: str) -> None:
    await e2e.add_account()
    oc = e2e.client()

    for stream in (False, True):
        reply = await oc.chat.completions.create(
            model=model, messages=user("[[tool]] weather in Paris?"), tools=[WEATHER_TOOL], stream=stream
        )
        if stream:
            chunks = await collect(reply)
            calls = streamed_tool_calls(chunks)
            finish = finish_of(chunks)
            assert text_of(chunks) == ""
        else:
            finish = reply.choices[0].finish_reason
            assert reply.choices[0].message.content is None
            calls = dict(enumerate(message_calls(reply.choices[0].message)))

        assert finish == "tool_calls"
        assert list(calls) == [0]
        call = calls[0]
        assert call["name"] == "get_weather"
        assert json.loads(call["arguments"]) == {"city": "city-1"}
        assert call["id"]
        upstream_call = next(
            p["functionCall"]
            for f in e2e.double.last_chat().frames
            for p in f["response"]["candidates"][0].get("content", {}).get("parts", [])
            if "functionCall" in p
        )
        if model == CLAUDE:
            assert call["id"] == upstream_call["id"]  # Claude's own toolu_ id is kept
        else:
            assert "id" not in upstream_call and call["id"].startswith("call_")  # synthesised


@BOTH
async def test_parallel_tool_calls_and_follow_up(e2e: E2E, model: str) -> None:
    await e2e.add_account()
    oc = e2e.client()
    messages = user("[[parallel]] weather and time in Paris?")

    chunks = await collect(
        await oc.chat.completions.create(
            model=model, messages=messages, tools=[WEATHER_TOOL, TIME_TOOL], stream=True
        )
    )
    calls = streamed_tool_calls(chunks)
    assert finish_of(chunks) == "tool_calls"
    assert sorted(calls) == [0, 1]
    assert [calls[0]["name"], calls[1]["name"]] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["arguments"]) == {"city": "city-1"}
    assert json.loads(calls[1]["arguments"]) == {"city": "city-2"}
    assert calls[0]["id"] and calls[1]["id"] and calls[0]["id"] != calls[1]["id"]

    follow_up = [
        *messages,
        replayed_assistant([calls[0], calls[1]], keep_extra=False),
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "22C sunny"},
        {"role": "tool", "tool_call_id": calls[1]["id"], "content": "14:05"},
    ]
    completion = await oc.chat.completions.create(
        model=model, messages=follow_up, tools=[WEATHER_TOOL, TIME_TOOL]
    )
    assert completion.choices[0].message.content == "Hello world!"
    assert completion.choices[0].finish_reason == "stop"
    contents = e2e.double.last_chat().contents
    # Both results travel in one user turn right after the two-call model turn.
    model_turn, results = contents[-2], contents[-1]
    assert [p["functionCall"]["id"] for p in model_turn["parts"] if "functionCall" in p] == [
        calls[0]["id"],
        calls[1]["id"],
    ]
    responses = [p["functionResponse"] for p in results["parts"]]
    assert [(r["id"], r["name"]) for r in responses] == [
        (calls[0]["id"], "get_weather"),
        (calls[1]["id"], "get_time"),
    ]
    assert responses[0]["response"] == {"output": "22C sunny"}


async def test_claude_tool_name_outside_claudes_alphabet_round_trips(e2e: E2E) -> None:
    await e2e.add_account()
    tool = {"type": "function", "function": {**WEATHER_TOOL["function"], "name": "weather.get"}}
    completion = await e2e.client().chat.completions.create(
        model=CLAUDE, messages=user("[[tool]] weather?"), tools=[tool]
    )
    assert completion.choices[0].message.tool_calls[0].function.name == "weather.get"


async def test_tool_name_sanitised_upstream_and_restored(e2e: E2E) -> None:
    await e2e.add_account()
    tool = {"type": "function", "function": {**WEATHER_TOOL["function"], "name": "weather/get now"}}
    messages = user("[[tool]] weather?")
    completion = await e2e.client().chat.completions.create(model=GEMINI, messages=messages, tools=[tool])
    calls = message_calls(completion.choices[0].message)
    assert calls[0]["name"] == "weather/get now"
    upstream_name = e2e.double.last_chat_body()["request"]["tools"][0]["functionDeclarations"][0]["name"]
    assert upstream_name != "weather/get now"

    follow_up = weather_follow_up(messages, calls)
    answer = await e2e.client().chat.completions.create(model=GEMINI, messages=follow_up, tools=[tool])
    assert answer.choices[0].message.content == "Hello world!"
    result = e2e.double.last_chat().contents[-1]["parts"][0]["functionResponse"]
    assert result["name"] == upstream_name


@pytest.mark.parametrize("keep_extra", [True, False], ids=["extra_content_kept", "extra_content_stripped"])
async def test_gemini3_tool_follow_up_replays_signature(e2e: E2E, keep_extra: bool) -> None:
    await e2e.add_account()
    oc = e2e.client()
    messages = user("[[tool]] weather in Paris?")

    completion = await oc.chat.completions.create(model=GEMINI, messages=messages, tools=[WEATHER_TOOL])
    calls = message_calls(completion.choices[0].message)
    issued = calls[0]["extra"]["google"]["thought_signature"]
    assert issued in e2e.double.signatures

    follow_up = weather_follow_up(messages, calls, keep_extra=keep_extra)
    answer = await oc.chat.completions.create(model=GEMINI, messages=follow_up, tools=[WEATHER_TOOL])

    assert answer.choices[0].message.content == "Hello world!"
    assert e2e.double.last_chat().status == 200
    model_turn = e2e.double.last_chat().contents[-2]
    first_call = next(p for p in model_turn["parts"] if "functionCall" in p)
    # Kept or not, the gateway sends the real signature back (its store), never nothing.
    assert first_call["thoughtSignature"] == issued


async def test_gemini3_follow_up_with_unknown_call_gets_sentinel(e2e: E2E) -> None:
    """History the gateway never produced (another gateway, a hand-written transcript)."""
    await e2e.add_account()
    oc = e2e.client()
    follow_up = weather_follow_up(
        user("weather in Paris?"),
        [{"id": "call_from_elsewhere", "name": "get_weather", "arguments": '{"city":"Paris"}'}],
    )
    answer = await oc.chat.completions.create(model=GEMINI, messages=follow_up, tools=[WEATHER_TOOL])
    assert answer.choices[0].message.content == "Hello world!"
    first_call = next(p for p in e2e.double.last_chat().contents[-2]["parts"] if "functionCall" in p)
    assert first_call["thoughtSignature"] == SKIP_SIGNATURE


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_claude_thinking_tool_follow_up_uses_server_signature(e2e: E2E, stream: bool) -> None:
    await e2e.add_account()
    oc = e2e.client()
    messages = user("[[tool]] weather in Paris?")

    reply = await oc.chat.completions.create(
        model=CLAUDE, messages=messages, tools=[WEATHER_TOOL], stream=stream
    )
    if stream:
        chunks = await collect(reply)
        calls = [streamed_tool_calls(chunks)[0]]
        assert reasoning_of(chunks) == "".join(CLAUDE_THOUGHTS)
    else:
        calls = message_calls(reply.choices[0].message)
        assert reply.choices[0].message.model_extra["reasoning_content"] == "".join(CLAUDE_THOUGHTS)

    # Clients drop reasoning_content and extra_content when they replay history.
    follow_up = weather_follow_up(messages, calls)
    answer = await oc.chat.completions.create(model=CLAUDE, messages=follow_up, tools=[WEATHER_TOOL])

    assert answer.choices[0].message.content == "Hello world!"
    rec = e2e.double.last_chat()
    assert rec.status == 200
    # Thinking stayed on: the replayed turn opens with the exact signed thinking.
    assert rec.generation_config["thinkingConfig"]["thinkingBudget"] >= 1024
    first = rec.contents[-2]["parts"][0]
    assert first["thought"] is True
    assert first["text"] == "".join(CLAUDE_THOUGHTS)
    assert e2e.double.signatures[first["thoughtSignature"]].family == "claude"
    assert (answer.choices[0].message.model_extra or {}).get("reasoning_content")


async def test_claude_follow_up_on_another_instance(e2e: E2E) -> None:
    """The signature store is shared through the database."""
    await e2e.add_account()
    other = await e2e.new_gateway()
    messages = user("[[tool]] weather in Paris?")

    first = await e2e.client().chat.completions.create(model=CLAUDE, messages=messages, tools=[WEATHER_TOOL])
    calls = message_calls(first.choices[0].message)
    follow_up = weather_follow_up(messages, calls)
    answer = await e2e.client(gw=other).chat.completions.create(
        model=CLAUDE, messages=follow_up, tools=[WEATHER_TOOL]
    )
    assert answer.choices[0].message.content == "Hello world!"
    assert e2e.double.last_chat().contents[-2]["parts"][0].get("thought") is True


async def test_claude_follow_up_without_known_signature_turns_thinking_off(e2e: E2E) -> None:
    await e2e.add_account()
    follow_up = weather_follow_up(
        user("weather in Paris?"),
        [{"id": "toolu_unknown_1", "name": "get_weather", "arguments": '{"city":"Paris"}'}],
    )
    answer = await e2e.client().chat.completions.create(
        model=CLAUDE, messages=follow_up, tools=[WEATHER_TOOL]
    )
    assert answer.choices[0].message.content == "Hello world!"
    rec = e2e.double.last_chat()
    assert rec.status == 200
    assert not rec.generation_config.get("thinkingConfig", {}).get("thinkingBudget")
    assert not any(p.get("thought") for c in rec.contents for p in c["parts"])


# --------------------------------------------------------------------------- images


@BOTH
async def test_image_data_uri_reaches_upstream_as_inline_data(e2e: E2E, model: str) -> None:
    await e2e.add_account()
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{TINY_PNG}"}},
            ],
        }
    ]
    completion = await e2e.client().chat.completions.create(model=model, messages=messages)
    assert completion.choices[0].message.content == "Hello world!"
    parts = e2e.double.last_chat().contents[-1]["parts"]
    assert {"inlineData": {"mimeType": "image/png", "data": TINY_PNG}} in parts
    assert {"text": "What is in this picture?"} in parts


async def test_generated_image_is_markdown_data_uri(e2e: E2E) -> None:
    await e2e.add_account()
    completion = await e2e.client().chat.completions.create(model=FLASH, messages=user("[[image]] a cat"))
    content = completion.choices[0].message.content
    assert content.startswith("Here is your image:")
    assert f"(data:image/png;base64,{TINY_PNG})" in content


async def test_http_image_url_is_rejected_with_param(e2e: E2E) -> None:
    await e2e.add_account()
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            ],
        }
    ]
    with pytest.raises(openai.BadRequestError) as caught:
        await e2e.client().chat.completions.create(model=GEMINI, messages=messages)
    assert caught.value.status_code == 400
    assert caught.value.param == "messages[0].content[1].image_url"
    assert e2e.double.chat_requests == []


# --------------------------------------------------------------------------- usage and finish


@BOTH
async def test_include_usage_final_chunk(e2e: E2E, model: str) -> None:
    await e2e.add_account()
    chunks = await collect(
        await e2e.client().chat.completions.create(
            model=model, messages=user("hi"), stream=True, stream_options={"include_usage": True}
        )
    )
    last = chunks[-1]
    assert last.choices == []
    assert_usage_matches(last.usage, upstream_usage(e2e))
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    ("marker", "reason", "text"),
    [("[[length]]", "length", "The answer is long and"), ("[[safety]]", "content_filter", "I can")],
    ids=["length", "content_filter"],
)
async def test_finish_reasons(e2e: E2E, marker: str, reason: str, text: str) -> None:
    await e2e.add_account()
    oc = e2e.client()
    for model in (FLASH, CLAUDE):
        chunks = await collect(
            await oc.chat.completions.create(model=model, messages=user(marker), stream=True)
        )
        assert finish_of(chunks) == reason, model
        assert text_of(chunks) == text
        completion = await oc.chat.completions.create(model=model, messages=user(marker))
        assert completion.choices[0].finish_reason == reason, model
        assert completion.choices[0].message.content == text


async def test_whitespace_only_deltas_preserved(e2e: E2E) -> None:
    await e2e.add_account()
    chunks = await collect(
        await e2e.client().chat.completions.create(model=FLASH, messages=user("[[ws]]"), stream=True)
    )
    assert content_deltas(chunks) == ["Hello", " ", " ", "\n", "world", " ", "!"]
    completion = await e2e.client().chat.completions.create(model=FLASH, messages=user("[[ws]]"))
    assert completion.choices[0].message.content == "Hello  \nworld !"


async def test_raw_stream_wire_format_and_stream_defaults_to_false(e2e: E2E) -> None:
    await e2e.add_account()
    headers = bearer(e2e.user["api_key"])
    body = {"model": FLASH, "messages": user("hi")}

    response = await e2e.gw.http.post("/v1/chat/completions", json=body, headers=headers)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert (await response.json())["object"] == "chat.completion"

    response = await e2e.gw.http.post("/v1/chat/completions", json={**body, "stream": True}, headers=headers)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    raw = await response.text()
    assert raw.endswith("data: [DONE]\n\n")
    events = [block for block in raw.split("\n\n") if block]
    assert all(block.startswith("data: ") for block in events)
    assert events.count("data: [DONE]") == 1
    first = json.loads(events[0][6:])
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    chunks = [json.loads(block[6:]) for block in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "Hello world!"


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_version_notice_is_an_error_not_content(e2e: E2E, stream: bool) -> None:
    acc = await e2e.add_account()
    await e2e.add_account()
    e2e.double.min_version = "99.0"
    with pytest.raises(openai.APIStatusError) as caught:
        reply = await e2e.client().chat.completions.create(model=FLASH, messages=user("hi"), stream=stream)
        if stream:
            await collect(reply)
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_client_outdated"
    assert "no longer supported" not in str(caught.value.message)
    # The notice concerns the gateway, not the account: nothing parked, nothing disabled,
    # and no other account burnt on it.
    assert len(e2e.double.chat_requests) == 1
    assert (await e2e.account_row(acc))["status"] == 1
    assert await e2e.cooldowns() == []


async def test_client_giving_up_on_a_non_streamed_reply_aborts_upstream(e2e: E2E) -> None:
    await e2e.add_account()
    e2e.double.next_transport(frame_delay=0.03)
    oc = e2e.client()
    with pytest.raises(openai.APITimeoutError):
        await oc.chat.completions.create(
            model=FLASH, messages=user("[[long]]"), timeout=0.5, extra_headers={"X-Request-Id": "gone-2"}
        )
    rec = e2e.double.last_chat()
    for _ in range(100):
        if rec.disconnected:
            break
        await asyncio.sleep(0.03)
    assert rec.disconnected and not rec.completed
    (row,) = await e2e.usage_rows(request_id="gone-2")
    assert row["status"] == "cancelled"
    assert row["completion_tokens"] > 0


async def test_admin_key_can_chat(e2e: E2E) -> None:
    acc = await e2e.add_account()
    admin = {"api_key": ADMIN_KEY, "user_id": None}
    completion = await e2e.client(user=admin).chat.completions.create(model=FLASH, messages=user("hi"))
    assert completion.choices[0].message.content == "Hello world!"
    (row,) = await e2e.usage_rows(request_id=completion._request_id)
    assert row["user_id"] is None and row["account_id"] == acc.account_id


@pytest.mark.parametrize(("model", "break_after"), [(FLASH, 2), (CLAUDE, 4)])
async def test_upstream_break_mid_stream(e2e: E2E, model: str, break_after: int) -> None:
    await e2e.add_account()
    e2e.double.next_transport(break_after=break_after)
    stream = await e2e.client().chat.completions.create(
        model=model, messages=user("hi"), stream=True, extra_headers={"X-Request-Id": "midstream-1"}
    )
    got: list[Any] = []
    with pytest.raises(openai.APIError) as caught:
        async for chunk in stream:
            got.append(chunk)
    assert not isinstance(caught.value, openai.APIStatusError)  # raised while iterating a 200
    assert caught.value.body["type"] == "upstream_error"
    assert got and got[0].choices[0].delta.role == "assistant"
    assert "Hello world!".startswith(text_of(got))
    assert all(c.choices[0].finish_reason is None for c in got if c.choices)
    assert e2e.double.last_chat().disconnected
    (row,) = await e2e.usage_rows(request_id="midstream-1")
    assert row["status"] == "error"


async def test_upstream_break_in_a_non_streamed_reply_is_502(e2e: E2E) -> None:
    await e2e.add_account()
    e2e.double.next_transport(break_after=2)
    with pytest.raises(openai.APIStatusError) as caught:
        await e2e.client().chat.completions.create(
            model=GEMINI, messages=user("hi"), extra_headers={"X-Request-Id": "broken-1"}
        )
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_error"
    (row,) = await e2e.usage_rows(request_id="broken-1")
    assert row["status"] == "error"


@BOTH
async def test_client_disconnect_aborts_upstream(e2e: E2E, model: str) -> None:
    await e2e.add_account()
    e2e.double.next_transport(frame_delay=0.03)
    stream = await e2e.client().chat.completions.create(
        model=model, messages=user("[[long]]"), stream=True, extra_headers={"X-Request-Id": "gone-1"}
    )
    seen = 0
    async for chunk in stream:
        seen += bool(chunk.choices and chunk.choices[0].delta.content)
        if seen >= 3:
            break
    await stream.close()

    rec = e2e.double.last_chat()
    for _ in range(100):
        if rec.disconnected:
            break
        await asyncio.sleep(0.03)
    assert rec.disconnected, "the gateway kept the upstream request open after the client left"
    assert not rec.completed
    assert len(rec.frames) < 100
    (row,) = await e2e.usage_rows(request_id="gone-1")
    assert row["status"] == "cancelled"
    if model != CLAUDE:  # Gemini repeats usage on every frame: what was observed is recorded
        assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0


INVALID_BODIES = [
    ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
    ({"model": FLASH, "messages": []}, "messages"),
    ({"model": FLASH, "messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
    ({"model": FLASH, "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}, "stream"),
    (
        {"model": FLASH, "messages": [{"role": "user", "content": "hi"}], "stream_options": 3},
        "stream_options",
    ),
    ({"model": FLASH, "messages": [{"role": "tool", "content": "22C"}]}, "messages[0].tool_call_id"),
]


async def test_invalid_raw_requests_are_400_with_param(e2e: E2E) -> None:
    await e2e.add_account()
    for body, param in INVALID_BODIES:
        response = await e2e.gw.http.post(
            "/v1/chat/completions", json=body, headers=bearer(e2e.user["api_key"])
        )
        assert response.status == 400, body
        error = (await response.json())["error"]
        assert error["type"] == "invalid_request_error"
        assert error["param"] == param, body
    for raw in (b"{not json", b"", b"[1, 2]"):
        response = await e2e.gw.http.post(
            "/v1/chat/completions",
            data=raw,
            headers={**bearer(e2e.user["api_key"]), "Content-Type": "application/json"},
        )
        assert response.status == 400, raw
        error = (await response.json())["error"]
        assert error["type"] == "invalid_request_error"
        assert set(error) == {"message", "type", "code", "param"}
    assert e2e.double.chat_requests == []


async def test_invalid_sdk_requests_are_400_with_param(e2e: E2E) -> None:
    await e2e.add_account()
    oc = e2e.client()
    cases = [
        ({"n": 2}, "n"),
        ({"temperature": 5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
    ]
    for extra, param in cases:
        with pytest.raises(openai.BadRequestError) as caught:
            await oc.chat.completions.create(model=FLASH, messages=user("hi"), **extra)
        assert caught.value.status_code == 400
        assert caught.value.param == param, extra
    assert e2e.double.chat_requests == []


async def test_no_account_is_403(e2e: E2E) -> None:
    with pytest.raises(openai.PermissionDeniedError) as caught:
        await e2e.client().chat.completions.create(model=GEMINI, messages=user("hi"))
    assert caught.value.status_code == 403
    assert caught.value.code == "no_account"
    # Another user's dedicated account does not change that.
    bob = await e2e.create_user("bob")
    await e2e.add_account(user=bob)
    with pytest.raises(openai.PermissionDeniedError):
        await e2e.client().chat.completions.create(model=GEMINI, messages=user("hi"))
    assert e2e.double.chat_requests == []


async def test_bad_api_key_is_401(e2e: E2E) -> None:
    await e2e.add_account()
    with pytest.raises(openai.AuthenticationError):
        await e2e.client(user={"api_key": "sk-not-a-key"}).chat.completions.create(
            model=FLASH, messages=user("hi")
        )
    assert e2e.double.chat_requests == []
