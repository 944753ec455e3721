"""Whatever the upstream sends, the client gets an answer in OpenAI's shape and the usage row
is kept (issue 11 items 2, 13, 14, 17): malformed frames before the first byte are a 502 that
blames no account; after it an SSE error event and a clean end of the stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import structlog
from aiohttp import web

from tests.conftest import bearer
from tests.e2e.conftest import E2E, FLASH
from tests.upstream_double import RecordedRequest, Transport, UpstreamDouble


@dataclass(frozen=True)
class Pause:
    seconds: float = 0.05


class RawFramesDouble(UpstreamDouble):
    """The double, with streamed replies whose SSE events can be given verbatim."""

    def __init__(self) -> None:
        super().__init__()
        self.raw_replies: list[list[Any]] = []

    def send_raw(self, *events: Any) -> None:
        """The next chat reply is these events (JSON values, or bytes sent as they are),
        with a :class:`Pause` where the stream waits."""
        self.raw_replies.append(list(events))

    async def _send_stream(
        self, request: web.Request, rec: RecordedRequest, frames: list[dict], tr: Transport
    ) -> web.StreamResponse:
        if not self.raw_replies:
            return await super()._send_stream(request, rec, frames, tr)
        events = self.raw_replies.pop(0)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        rec.status = 200
        await response.prepare(request)
        for event in events:
            if isinstance(event, Pause):
                await asyncio.sleep(event.seconds)  # so the gateway reads what follows apart
                continue
            payload = event if isinstance(event, bytes) else orjson.dumps(event)
            await response.write(b"data: " + payload + b"\n\n")
        await response.write_eof()
        rec.completed = True
        return response


@pytest.fixture
async def double() -> AsyncIterator[RawFramesDouble]:
    d = RawFramesDouble()
    await d.start()
    yield d
    await d.stop()


def text_frame(text: str, usage: Any = None, finish: str | None = None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}}
    if finish:
        candidate["finishReason"] = finish
    response: dict[str, Any] = {"candidates": [candidate]}
    if usage is not None:
        response["usageMetadata"] = usage
    return {"response": response, "traceId": "t"}


MALFORMED = [
    {"response": "text"},
    ["a", "json", "array"],
    {"response": {"candidates": {"content": "x"}}},
    {"response": {"candidates": [{"content": {"parts": [{"text": 5}]}}]}},
    {"response": {"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": "x"}}]}}]}},
]


async def chat(e2e: E2E, *, stream: bool, request_id: str, text: str = "hi", **extra: Any) -> Any:
    body = {"model": FLASH, "messages": [{"role": "user", "content": text}], "stream": stream, **extra}
    headers = {**bearer(e2e.user["api_key"]), "X-Request-Id": request_id}
    return await e2e.gw.http.post("/v1/chat/completions", json=body, headers=headers)


def sse_payloads(body: bytes) -> list[Any]:
    assert body.endswith(b"\n\n"), body[-200:]
    payloads = [block.removeprefix(b"data: ") for block in body[:-2].split(b"\n\n")]
    return [payload.decode() if payload == b"[DONE]" else orjson.loads(payload) for payload in payloads]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("bad", MALFORMED, ids=repr)
async def test_a_malformed_first_frame_is_a_502_that_blames_no_account(
    e2e: E2E, bad: Any, stream: bool
) -> None:
    first, second = await e2e.add_account(), await e2e.add_account()
    e2e.double.send_raw(bad)
    response = await chat(e2e, stream=stream, request_id="bad-first")
    assert response.status == 502, await response.text()
    assert response.content_type == "application/json"
    error = (await response.json())["error"]
    assert (error["type"], error["code"]) == ("upstream_error", "upstream_error")
    assert len(e2e.double.chat_requests) == 1  # the reply's fault, not the account's: no failover
    assert await e2e.cooldowns() == []
    for acc in (first, second):
        row = await e2e.account_row(acc)
        assert (row["status"], row["disabled_reason"]) == (1, None)
    # Both accounts still serve.
    ok = await chat(e2e, stream=False, request_id="after-bad")
    assert ok.status == 200


@pytest.mark.parametrize("bad", MALFORMED, ids=repr)
async def test_a_malformed_frame_mid_stream_ends_it_with_an_error_event(e2e: E2E, bad: Any) -> None:
    await e2e.add_account()
    usage = {"promptTokenCount": 4, "candidatesTokenCount": 2, "totalTokenCount": 6}
    e2e.double.send_raw(text_frame("Hello", usage), Pause(), bad, text_frame(" never sent"))
    response = await chat(e2e, stream=True, request_id="bad-midway")
    assert response.status == 200
    body = await response.read()  # the chunked body ends cleanly, no hang, no second response
    assert b"HTTP/1.1" not in body
    chunks = sse_payloads(body)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1]) == "Hello"
    assert chunks[-1]["error"]["type"] == "upstream_error"  # the error object ends the stream
    (row,) = await e2e.usage_rows(request_id="bad-midway")
    assert (row["status"], row["prompt_tokens"], row["completion_tokens"]) == ("error", 4, 2)


@pytest.mark.parametrize("bad", MALFORMED, ids=repr)
async def test_a_malformed_frame_later_in_a_non_streamed_reply_is_a_502_with_its_usage(
    e2e: E2E, bad: Any
) -> None:
    await e2e.add_account()
    usage = {"promptTokenCount": 4, "candidatesTokenCount": 2, "totalTokenCount": 6}
    e2e.double.send_raw(text_frame("Hello", usage), Pause(), bad)
    response = await chat(e2e, stream=False, request_id="bad-later")
    assert response.status == 502, await response.text()
    assert (await response.json())["error"]["type"] == "upstream_error"
    (row,) = await e2e.usage_rows(request_id="bad-later")
    assert (row["status"], row["prompt_tokens"]) == ("error", 4)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize(
    "usage",
    [
        [1, 2, 3],
        "plenty",
        {"promptTokenCount": 3e9, "candidatesTokenCount": 2, "totalTokenCount": 3e9},
        {"promptTokenCount": {"n": 1}, "candidatesTokenCount": 2},
    ],
    ids=repr,
)
async def test_a_bad_usage_metadata_keeps_the_reply_and_its_usage_row(
    e2e: E2E, usage: Any, stream: bool
) -> None:
    await e2e.add_account()
    e2e.double.send_raw(text_frame("Hello", usage, finish="STOP"))
    response = await chat(e2e, stream=stream, request_id="bad-usage")
    assert response.status == 200, await response.text()
    if stream:
        assert sse_payloads(await response.read())[-1] == "[DONE]"
    else:
        assert (await response.json())["choices"][0]["message"]["content"] == "Hello"
    (row,) = await e2e.usage_rows(request_id="bad-usage")
    assert row["status"] == "ok"
    assert row["prompt_tokens"] == 0  # not believed
    assert row["completion_tokens"] == (2 if isinstance(usage, dict) else 0)


async def test_tool_call_arguments_nested_too_deep_to_forward_are_a_400(e2e: E2E) -> None:
    await e2e.add_account()
    arguments = '{"a":' * 300 + "1" + "}" * 300  # valid JSON; orjson writes 255 levels at most
    messages = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "22C"},
    ]
    body = {"model": FLASH, "messages": messages}
    response = await e2e.gw.http.post("/v1/chat/completions", json=body, headers=bearer(e2e.user["api_key"]))
    assert response.status == 400, await response.text()
    error = (await response.json())["error"]
    assert error["type"] == "invalid_request_error"
    assert e2e.double.chat_requests == []


async def test_a_mid_stream_error_that_quotes_the_prompt_is_logged_without_it(e2e: E2E) -> None:
    # Issue 11 item 20: the log says which error, never the upstream's message.
    await e2e.add_account()
    prompt = "my-secret-plan-for-the-quarter"
    quoting = {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": f"bad turn: {prompt}"}}
    e2e.double.send_raw(text_frame("Hello"), Pause(), quoting)
    with structlog.testing.capture_logs() as logged:
        response = await chat(e2e, stream=True, request_id="quoting", text=prompt)
        body = await response.read()
    assert sse_payloads(body)[-1]["error"]["type"] in ("upstream_error", "invalid_request_error")
    (failed,) = [entry for entry in logged if entry["event"] == "stream_failed_midway"]
    assert failed["error"] and failed["code"]
    assert prompt not in repr(logged)
