from __future__ import annotations

import re
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from antigv.backends.antigravity.notices import reject_notices
from antigv.backends.google.frames import MAX_TOKEN_COUNT, FrameDecoder, counted_total
from antigv.backends.google.models import PLACEHOLDER_ARGUMENT
from antigv.backends.google.sse import SSEParser
from antigv.core.errors import MalformedUpstreamReply, RateLimited, UpstreamError
from antigv.core.events import (
    Event,
    Finish,
    FinishReason,
    ImageOutput,
    TextDelta,
    ThinkingDelta,
    ThinkingSignature,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from antigv.core.failures import FailureKind, UpstreamFailure
from antigv.protocols.openai.errors import error_body, error_status
from antigv.protocols.openai.render import FINISH_REASONS, StreamRenderer, assemble_completion, usage_object


def sse_body(*frames: str) -> bytes:
    return "".join(f"data: {frame}\n\n" for frame in frames).encode()


# PROTOCOL Appendix A.1 and A.2, verbatim.
A1_GEMINI_TOOL_CALL = sse_body(
    r'{"response": {"candidates": [{"content": {"role": "model","parts": [{"text": "**Checking wea'
    r'ther**\n\nThe user wants…","thought": true}]}}],"usageMetadata": {"promptTokenCount": 41,"to'
    r'talTokenCount": 41},"modelVersion": "gemini-3-pro-high","createTime": "2025-12-10T08:00:00.0'
    r'00000Z","responseId": "AbCdEf012345"},"traceId": "1a2b3c4d5e6f7a8b"}',
    r'{"response": {"candidates": [{"content": {"role": "model","parts": [{"functionCall": {"name"'
    r': "get_weather","args": {"city": "Paris"}},"thoughtSignature": "CiQB0e2Kb…"}]},"finishReason'
    r'": "STOP"}],"usageMetadata": {"promptTokenCount": 41,"candidatesTokenCount": 15,"thoughtsTok'
    r'enCount": 60,"totalTokenCount": 116},"modelVersion": "gemini-3-pro-high","createTime": "2025'
    r'-12-10T08:00:00.000000Z","responseId": "AbCdEf012345"},"traceId": "1a2b3c4d5e6f7a8b"}',
)
A2_CLAUDE_THINKING = sse_body(
    r'{"response": {"candidates": [{"content": {"role": "model","parts": [{"text": "Let me think a'
    r'bout","thought": true}]}}],"modelVersion": "claude-sonnet-4-5-thinking","responseId": "msg_v'
    r'rtx_01ABC"},"traceId": "9f8e7d6c5b4a3921"}',
    r'{"response": {"candidates": [{"content": {"role": "model","parts": [{"text": " this.","thoug'
    r'ht": true}]}}],"modelVersion": "claude-sonnet-4-5-thinking","responseId": "msg_vrtx_01ABC"},'
    r'"traceId": "9f8e7d6c5b4a3921"}',
    r'{"response": {"candidates": [{"content": {"role": "model","parts": [{"text": "","thought": t'
    r'rue,"thoughtSignature": "EqQBCkgIBhABGAIiQ…"}]}}],"modelVersion": "claude-sonnet-4-5-thinkin'
    r'g","responseId": "msg_vrtx_01ABC"},"traceId": "9f8e7d6c5b4a3921"}',
    r'{"response": {"candidates": [{"content": {"role": "model","parts": [{"text": "Hello"}]}}],"m'
    r'odelVersion": "claude-sonnet-4-5-thinking","responseId": "msg_vrtx_01ABC"},"traceId": "9f8e7'
    r'd6c5b4a3921"}',
    r'{"response": {"candidates": [{"content": {"role": "model","parts": [{"text": " "}]}}],"model'
    r'Version": "claude-sonnet-4-5-thinking","responseId": "msg_vrtx_01ABC"},"traceId": "9f8e7d6c5'
    r'b4a3921"}',
    r'{"response": {"candidates": [{"content": {"role": "model","parts": [{"text": "world"}]},"fin'
    r'ishReason": "STOP"}],"usageMetadata": {"promptTokenCount": 12,"candidatesTokenCount": 30,"to'
    r'talTokenCount": 42},"modelVersion": "claude-sonnet-4-5-thinking","responseId": "msg_vrtx_01A'
    r'BC"},"traceId": "9f8e7d6c5b4a3921"}',
)
MADE_UP_CALL_ID = re.compile(r"call_[0-9a-f]{24}")


def frames_of(stream: bytes) -> list[dict[str, Any]]:
    parser = SSEParser()
    return [orjson.loads(data) for data in parser.feed(stream) + parser.close()]


def frame(*parts: dict[str, Any], finish: str | None = None, usage: dict[str, int] | None = None) -> dict:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": list(parts)}}
    if finish:
        candidate["finishReason"] = finish
    response: dict[str, Any] = {"candidates": [candidate]}
    if usage:
        response["usageMetadata"] = usage
    return {"response": response, "traceId": "55650653afd3c738"}


def decoder(
    tool_names: dict[str, str] | None = None, placeholder_tools: frozenset[str] = frozenset()
) -> FrameDecoder:
    """A decoder set up as the Antigravity backend sets it up: notices as reply text raise."""
    return FrameDecoder(tool_names, placeholder_tools, PLACEHOLDER_ARGUMENT, check_first_text=reject_notices)


def translate(frames: list[dict[str, Any]], **kwargs: Any) -> tuple[FrameDecoder, list[Event]]:
    translator = decoder(**kwargs)
    events = [event for item in frames for event in translator.feed(item)]
    closing = translator.finish()
    # The closing events: the reply's usage (what .usage reads), then its end.
    assert len(closing) == 2 and closing[0] == translator.usage and isinstance(closing[1], Finish)
    return translator, events + closing


def stream_chunks(stream: bytes) -> list[Any]:
    """Each ``data:`` payload of a rendered OpenAI stream, JSON-decoded except ``[DONE]``."""
    assert stream.endswith(b"\n\n")
    payloads = [block.removeprefix(b"data: ") for block in stream[:-2].split(b"\n\n")]
    return [payload.decode() if payload == b"[DONE]" else orjson.loads(payload) for payload in payloads]


def render_body(renderer: StreamRenderer, events: list[Event]) -> bytes:
    """As the chat handler renders a reply: the start, the batches, the closing batch
    (``Usage`` and ``Finish``), then the end (usage chunk and ``[DONE]``)."""
    return renderer.start() + renderer.render(events[:-2]) + renderer.render(events[-2:]) + renderer.end()


def render_stream(events: list[Event], include_usage: bool = True) -> list[Any]:
    renderer = StreamRenderer(
        "client-model", include_usage, completion_id="chatcmpl-test", created=1700000000
    )
    return stream_chunks(render_body(renderer, events))


def message_from_stream(chunks: list[Any]) -> tuple[dict[str, Any], str]:
    """Rebuild the message the way an OpenAI client accumulates deltas."""
    message: dict[str, Any] = {
        "role": None,
        "content": "",
        "refusal": None,
        "reasoning_content": "",
        "tool_calls": [],
    }
    finish_reason = None
    for chunk in chunks:
        if chunk == "[DONE]" or not chunk["choices"]:
            continue
        choice = chunk["choices"][0]
        delta = choice["delta"]
        finish_reason = choice["finish_reason"] or finish_reason
        message["role"] = delta.get("role", message["role"])
        message["content"] += delta.get("content") or ""
        message["reasoning_content"] += delta.get("reasoning_content") or ""
        for call in delta.get("tool_calls", []):
            assert call.pop("index") == len(message["tool_calls"])
            message["tool_calls"].append(call)
    message["content"] = message["content"] or None
    for optional in ("reasoning_content", "tool_calls"):
        if not message[optional]:
            del message[optional]
    return message, finish_reason


def test_a1_gemini_thinking_and_tool_call() -> None:
    translator, events = translate(frames_of(A1_GEMINI_TOOL_CALL))
    thinking = "**Checking weather**\n\nThe user wants…"
    reasoning, call, arguments, call_end, usage, finish = events
    assert reasoning == ThinkingDelta(thinking)
    assert isinstance(call, ToolCallStart)
    assert MADE_UP_CALL_ID.fullmatch(call.id)
    assert (call.index, call.name) == (0, "get_weather")
    assert arguments == ToolCallDelta(0, '{"city":"Paris"}')
    assert call_end == ToolCallEnd(0)
    assert call.signature == "CiQB0e2Kb…"
    assert finish == Finish(FinishReason.TOOL_USE)
    assert FINISH_REASONS[finish.reason] == "tool_calls"
    # A Gemini signature rides on the call part: no thinking text to replay with it.
    assert translator.tool_signatures == {call.id: ("CiQB0e2Kb…", None)}
    assert usage == translator.usage
    assert usage == Usage(
        prompt_tokens=41, completion_tokens=75, reasoning_tokens=60, cached_tokens=0, total_tokens=116
    )
    assert usage_object(translator.usage) == {
        "prompt_tokens": 41,
        "completion_tokens": 75,
        "total_tokens": 116,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 60},
    }


def test_a1_stream_carries_index_id_and_signature() -> None:
    _, events = translate(frames_of(A1_GEMINI_TOOL_CALL))
    chunks = render_stream(events)
    tool_delta = chunks[2]["choices"][0]["delta"]
    assert tool_delta == {
        "tool_calls": [
            {
                "index": 0,
                "id": events[1].id,
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                "extra_content": {"google": {"thought_signature": "CiQB0e2Kb…"}},
            }
        ]
    }
    assert chunks[3]["choices"][0]["finish_reason"] == "tool_calls"


def test_a2_claude_stream_is_exactly_the_documented_one() -> None:
    translator, events = translate(frames_of(A2_CLAUDE_THINKING))
    head = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 1700000000}
    head["model"] = "client-model"

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        return {**head, "choices": [choice], "usage": None}

    usage = {
        "prompt_tokens": 12,
        "completion_tokens": 30,
        "total_tokens": 42,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    assert translator.usage == Usage(prompt_tokens=12, completion_tokens=30, total_tokens=42)
    assert render_stream(events) == [
        chunk({"role": "assistant", "content": ""}),
        chunk({"reasoning_content": "Let me think about"}),
        chunk({"reasoning_content": " this."}),
        chunk({"content": "Hello"}),
        chunk({"content": " "}),
        chunk({"content": "world"}),
        chunk({}, "stop"),
        {**head, "choices": [], "usage": usage},
        "[DONE]",
    ]


def test_stream_without_include_usage_has_no_usage_anywhere() -> None:
    _, events = translate(frames_of(A2_CLAUDE_THINKING))
    chunks = render_stream(events, include_usage=False)
    assert chunks[-1] == "[DONE]"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in chunk for chunk in chunks[:-1])


@pytest.mark.parametrize("stream", [A1_GEMINI_TOOL_CALL, A2_CLAUDE_THINKING], ids=["A.1", "A.2"])
def test_non_stream_body_has_the_stream_content(stream: bytes) -> None:
    translator, events = translate(frames_of(stream))
    chunks = render_stream(events)
    streamed_message, streamed_finish = message_from_stream(chunks)
    body = assemble_completion(events, "client-model", "chatcmpl-test", 1700000000)
    # The usage chunk and the body's usage both come from the Usage event.
    assert chunks[-2]["usage"] == usage_object(translator.usage)
    assert body == {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "client-model",
        "choices": [
            {"index": 0, "message": streamed_message, "finish_reason": streamed_finish, "logprobs": None}
        ],
        "usage": usage_object(translator.usage),
    }


def test_a2_non_stream_message() -> None:
    _, events = translate(frames_of(A2_CLAUDE_THINKING))
    body = assemble_completion(events, "client-model")
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Hello world",
        "refusal": None,  # required by OpenAI's schema (issue 11 item 3)
        "reasoning_content": "Let me think about this.",
    }
    assert body["choices"][0]["finish_reason"] == "stop"
    assert re.fullmatch(r"chatcmpl-\w+", body["id"])


def test_tool_call_only_reply_has_null_content() -> None:
    call = {"functionCall": {"id": "toolu_vrtx_1", "name": "ls", "args": {}}}
    _, events = translate([frame(call, finish="OTHER")])
    message = assemble_completion(events, "m")["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"] == [
        {"id": "toolu_vrtx_1", "type": "function", "function": {"name": "ls", "arguments": "{}"}}
    ]


def test_made_up_call_id_is_the_same_everywhere() -> None:
    part = {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "sig"}
    translator, events = translate([frame(part, finish="STOP")])
    assert isinstance(events[0], ToolCallStart)
    call_id = events[0].id
    assert MADE_UP_CALL_ID.fullmatch(call_id)
    streamed, _ = message_from_stream(render_stream(events))
    assembled = assemble_completion(events, "m")["choices"][0]["message"]
    assert streamed["tool_calls"][0]["id"] == assembled["tool_calls"][0]["id"] == call_id
    assert list(translator.tool_signatures) == [call_id]


def test_made_up_call_ids_differ_between_calls() -> None:
    part = {"functionCall": {"name": "f"}}
    _, events = translate([frame(part, part)])
    first, second = (event for event in events if isinstance(event, ToolCallStart))
    assert first.id != second.id


def test_parallel_calls_get_indexes_0_and_1_and_only_the_first_the_signature() -> None:
    first = {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "sig-1"}
    second = {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}}
    translator, events = translate([frame(first), frame(second, finish="STOP")])
    starts = [event for event in events if isinstance(event, ToolCallStart)]
    assert events[:6] == [
        starts[0],
        ToolCallDelta(0, '{"city":"Paris"}'),
        ToolCallEnd(0),
        starts[1],
        ToolCallDelta(1, '{"city":"Rome"}'),
        ToolCallEnd(1),
    ]
    assert [(event.index, event.signature) for event in starts] == [(0, "sig-1"), (1, None)]
    assert list(translator.tool_signatures) == [starts[0].id]
    chunks = render_stream(events)
    assert [chunk["choices"][0]["delta"]["tool_calls"][0]["index"] for chunk in chunks[1:3]] == [0, 1]
    assert "extra_content" not in chunks[2]["choices"][0]["delta"]["tool_calls"][0]


def test_claude_signature_is_captured_with_the_whole_thinking_text() -> None:
    translator, events = translate(
        [
            frame({"text": "I should ", "thought": True}),
            frame({"text": "list files.", "thought": True}),
            frame({"text": "", "thought": True, "thoughtSignature": "claude-sig"}),
            frame(
                {"functionCall": {"id": "toolu_vrtx_1", "name": "ls", "args": {"path": "/"}}}, finish="OTHER"
            ),
        ]
    )
    assert translator.tool_signatures == {"toolu_vrtx_1": ("claude-sig", "I should list files.")}
    assert events[2:] == [
        ThinkingSignature("claude-sig"),
        ToolCallStart(0, "toolu_vrtx_1", "ls", "claude-sig"),
        ToolCallDelta(0, '{"path":"/"}'),
        ToolCallEnd(0),
        Usage(),
        Finish(FinishReason.TOOL_USE),
    ]


def test_of_parallel_claude_calls_the_first_carries_the_turn_signature() -> None:
    translator, events = translate(
        [
            frame(
                {"text": "Two lookups.", "thought": True},
                {"text": "", "thought": True, "thoughtSignature": "s"},
            ),
            frame(
                {"functionCall": {"id": "toolu_a", "name": "f"}},
                {"functionCall": {"id": "toolu_b", "name": "f"}},
            ),
        ]
    )
    assert translator.tool_signatures == {"toolu_a": ("s", "Two lookups.")}
    starts = [event for event in events if isinstance(event, ToolCallStart)]
    assert [(event.id, event.signature) for event in starts] == [("toolu_a", "s"), ("toolu_b", None)]


def test_each_interleaved_thinking_block_signs_its_own_call() -> None:
    translator, _ = translate(
        [
            frame({"text": "first", "thought": True, "thoughtSignature": "sig-a"}),
            frame({"functionCall": {"id": "toolu_a", "name": "f"}}),
            frame(
                {"text": "second", "thought": True},
                {"text": "", "thought": True, "thoughtSignature": "sig-b"},
            ),
            frame({"functionCall": {"id": "toolu_b", "name": "f"}}),
        ]
    )
    assert translator.tool_signatures == {"toolu_a": ("sig-a", "first"), "toolu_b": ("sig-b", "second")}


def test_thinking_before_an_unsigned_call_is_not_signed_by_a_later_block() -> None:
    translator, _ = translate(
        [
            frame({"text": "unsigned", "thought": True}, {"functionCall": {"id": "toolu_a", "name": "f"}}),
            frame(
                {"text": "signed", "thought": True}, {"text": "", "thought": True, "thoughtSignature": "sig"}
            ),
            frame({"functionCall": {"id": "toolu_b", "name": "f"}}),
        ]
    )
    assert translator.tool_signatures == {"toolu_b": ("sig", "signed")}


def test_gemini_signature_on_an_earlier_text_part_applies_to_the_call() -> None:
    translator, events = translate(
        [
            frame({"text": "Plan.", "thought": True}),
            frame({"text": "Let me check.", "thoughtSignature": "gem-sig"}, {"functionCall": {"name": "f"}}),
        ]
    )
    assert events[1] == TextDelta("Let me check.")
    assert isinstance(events[2], ToolCallStart) and events[2].signature == "gem-sig"
    assert translator.tool_signatures == {events[2].id: ("gem-sig", None)}


def test_signature_only_parts_produce_no_event() -> None:
    translator = decoder()
    assert translator.feed(frame({"thoughtSignature": "sig"})) == []
    # A signed thought part closes its thinking block: the signature is no output a client sees.
    assert translator.feed(frame({"text": "", "thought": True, "thoughtSignature": "sig"})) == [
        ThinkingSignature("sig")
    ]
    assert not translator.saw_output


def test_a_notice_after_a_signature_only_part_is_still_caught() -> None:
    translator = decoder()
    translator.feed(frame({"text": "", "thought": True, "thoughtSignature": "sig"}))
    with pytest.raises(UpstreamError):
        translator.feed(frame({"text": "This version of Antigravity is no longer supported."}))


def test_whitespace_delta_is_kept_and_empty_text_dropped() -> None:
    translator = decoder()
    assert translator.feed(frame({"text": " "}, {"text": ""}, {"text": "\n"})) == [
        TextDelta(" "),
        TextDelta("\n"),
    ]


def test_usage_repeated_on_every_frame_is_not_summed() -> None:
    frames = [
        frame(
            {"text": "a"}, usage={"promptTokenCount": 10, "candidatesTokenCount": 1, "totalTokenCount": 11}
        ),
        frame(
            {"text": "b"}, usage={"promptTokenCount": 10, "candidatesTokenCount": 2, "totalTokenCount": 12}
        ),
        frame(
            {"text": "c"},
            finish="STOP",
            usage={"promptTokenCount": 10, "candidatesTokenCount": 3, "totalTokenCount": 13},
        ),
    ]
    translator, _ = translate(frames)
    assert translator.prompt_tokens == 10
    assert translator.completion_tokens == 3
    assert translator.usage.total_tokens == 13


def test_upstream_total_is_used_as_given() -> None:
    usage = {"promptTokenCount": 10, "candidatesTokenCount": 3, "totalTokenCount": 20}
    translator, _ = translate([frame({"text": "a"}, finish="STOP", usage=usage)])
    assert translator.usage.total_tokens == 20


def test_finish_reason_and_usage_in_separate_frames() -> None:
    usage = {
        "promptTokenCount": 7,
        "candidatesTokenCount": 3,
        "thoughtsTokenCount": 4,
        "cachedContentTokenCount": 5,
    }
    translator, events = translate(
        [frame({"text": "hi"}, {"text": ""}, finish="MAX_TOKENS"), {"response": {"usageMetadata": usage}}]
    )
    assert events == [
        TextDelta("hi"),
        Usage(prompt_tokens=7, completion_tokens=7, reasoning_tokens=4, cached_tokens=5, total_tokens=14),
        Finish(FinishReason.LENGTH),
    ]
    assert (translator.prompt_tokens, translator.completion_tokens, translator.reasoning_tokens) == (7, 7, 4)
    assert usage_object(translator.usage) == {
        "prompt_tokens": 7,
        "completion_tokens": 7,
        "total_tokens": 14,
        "prompt_tokens_details": {"cached_tokens": 5},
        "completion_tokens_details": {"reasoning_tokens": 4},
    }


def test_usage_is_zero_when_upstream_sent_none() -> None:
    translator, _ = translate([frame({"text": "hi"}, finish="STOP")])
    assert translator.usage == Usage()
    assert usage_object(translator.usage) == {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


STOP, LENGTH, CONTENT_FILTER = FinishReason.STOP, FinishReason.LENGTH, FinishReason.CONTENT_FILTER


@pytest.mark.parametrize(
    ("upstream_reason", "reason", "expected"),
    [
        ("STOP", STOP, "stop"),
        ("OTHER", STOP, "stop"),
        (None, STOP, "stop"),
        ("MAX_TOKENS", LENGTH, "length"),
        ("SAFETY", CONTENT_FILTER, "content_filter"),
        ("RECITATION", CONTENT_FILTER, "content_filter"),
        ("PROHIBITED_CONTENT", CONTENT_FILTER, "content_filter"),
        ("BLOCKLIST", CONTENT_FILTER, "content_filter"),
        ("SPII", CONTENT_FILTER, "content_filter"),
        ("MALFORMED_FUNCTION_CALL", STOP, "stop"),
    ],
)
def test_finish_reason_mapping(upstream_reason: str | None, reason: FinishReason, expected: str) -> None:
    _, events = translate([frame({"text": "x"}, finish=upstream_reason)])
    assert events[-1] == Finish(reason)
    # The wire string, both ways.
    assert render_stream(events)[-3]["choices"][0]["finish_reason"] == expected
    assert assemble_completion(events, "m")["choices"][0]["finish_reason"] == expected


def test_tool_calls_win_over_the_upstream_finish_reason() -> None:
    _, events = translate([frame({"functionCall": {"name": "f"}}, finish="MAX_TOKENS")])
    assert events[-1] == Finish(FinishReason.TOOL_USE)
    assert assemble_completion(events, "m")["choices"][0]["finish_reason"] == "tool_calls"


def test_image_becomes_markdown_in_both_renderings() -> None:
    image = {"inlineData": {"mimeType": "image/jpeg", "data": "QUJD"}}
    draft = {"inlineData": {"mimeType": "image/png", "data": "RFJBRlQ="}, "thought": True}
    translator, events = translate([frame({"text": "Here: "}, draft, image, finish="STOP")])
    assert events == [
        TextDelta("Here: "),
        ImageOutput("image/jpeg", "QUJD"),
        Usage(),
        Finish(FinishReason.STOP),
    ]
    markdown = "Here: ![image](data:image/jpeg;base64,QUJD)"
    streamed, _ = message_from_stream(render_stream(events))
    assert streamed["content"] == markdown
    assembled = assemble_completion(events, "m")["choices"][0]["message"]
    assert assembled["content"] == markdown
    assert translator.saw_output


def test_image_without_mime_type_is_taken_as_png() -> None:
    translator = decoder()
    assert translator.feed(frame({"inlineData": {"data": "QUJD"}})) == [ImageOutput("image/png", "QUJD")]


@pytest.mark.parametrize(
    "notice",
    [
        "This version of Antigravity is no longer supported. Please update to receive the latest features!",
        "Your current version of Antigravity is out of date. Please visit https://antigravity.google/download",
    ],
)
def test_client_outdated_notice_raises_instead_of_reaching_the_client(notice: str) -> None:
    translator = decoder()
    with pytest.raises(UpstreamError) as raised:
        translator.feed(frame({"text": notice}, finish="STOP"))
    assert raised.value.code == "upstream_client_outdated"
    assert not translator.saw_output


def test_tool_names_are_restored_to_the_client_spelling() -> None:
    part = {"functionCall": {"id": "c1", "name": "mcp_fs_read", "args": {}}}
    _, events = translate([frame(part)], tool_names={"mcp_fs_read": "mcp/fs read"})
    assert events[0].name == "mcp/fs read"


def test_unknown_tool_name_passes_through() -> None:
    part = {"functionCall": {"id": "c1", "name": "other", "args": {}}}
    _, events = translate([frame(part)], tool_names={"mcp_fs_read": "mcp/fs read"})
    assert events[0].name == "other"


def test_bare_response_frame_is_accepted() -> None:
    translator = decoder()
    assert translator.feed({"candidates": [{"content": {"parts": [{"text": "hi"}]}}]}) == [TextDelta("hi")]


def test_frame_without_candidates_or_content_yields_nothing() -> None:
    translator = decoder()
    assert translator.feed({"response": {}}) == []
    assert translator.feed({"response": {"candidates": [{"finishReason": "SAFETY"}]}}) == []
    assert translator.finish() == [Usage(), Finish(FinishReason.CONTENT_FILTER)]
    assert not translator.saw_output


def test_error_chunk_ends_the_stream_without_done() -> None:
    renderer = StreamRenderer("m", include_usage=True)
    chunk = renderer.error(RateLimited("slow down", retry_after=3))
    assert stream_chunks(chunk) == [
        {
            "error": {
                "message": "slow down",
                "type": "rate_limit_error",
                "code": "rate_limit_exceeded",
                "param": None,
            }
        }
    ]


def test_chunks_of_one_response_share_id_created_and_model() -> None:
    _, events = translate(frames_of(A2_CLAUDE_THINKING))
    renderer = StreamRenderer('model "quoted"', include_usage=True)
    chunks = stream_chunks(render_body(renderer, events))[:-1]
    assert {(chunk["id"], chunk["created"], chunk["model"]) for chunk in chunks} == {
        (renderer.completion_id, renderer.created, 'model "quoted"')
    }
    assert re.fullmatch(r"chatcmpl-\w+", renderer.completion_id)


def test_assembly_requires_the_finish_event() -> None:
    with pytest.raises(ValueError):
        assemble_completion([TextDelta("x")], "m")


def test_the_notices_words_later_in_an_answer_are_the_models_own() -> None:
    translator = decoder()
    translator.feed(_frame_with_text("Here is what users see: "))
    events = translator.feed(_frame_with_text("This version of Antigravity is no longer supported."))
    assert [e.text for e in events] == ["This version of Antigravity is no longer supported."]


def _frame_with_text(text: str) -> dict:
    return {"response": {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}}]}}


# --- malformed frames (issue 11 items 2, 13, 14) ------------------------------------------

MALFORMED_FRAMES = [
    {"response": "text"},
    {"response": None},
    {"response": ["a"]},
    {"response": {"candidates": "abc"}},
    {"response": {"candidates": [1]}},
    {"response": {"candidates": [{"finishReason": 7}]}},
    {"response": {"candidates": [{"content": "hello"}]}},
    {"response": {"candidates": [{"content": {"parts": {"text": "hi"}}}]}},
    {"response": {"candidates": [{"content": {"parts": ["hi"]}}]}},
    {"response": {"candidates": [{"content": {"parts": [{"text": 42}]}}]}},
    {"response": {"candidates": [{"content": {"parts": [{"text": "a", "thoughtSignature": 1}]}}]}},
    {"response": {"candidates": [{"content": {"parts": [{"functionCall": "ls"}]}}]}},
    {"response": {"candidates": [{"content": {"parts": [{"functionCall": {"name": 1}}]}}]}},
    {"response": {"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": [1]}}]}}]}},
    {"response": {"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "id": 3}}]}}]}},
    {"response": {"candidates": [{"content": {"parts": [{"inlineData": "png"}]}}]}},
    {"response": {"candidates": [{"content": {"parts": [{"inlineData": {"data": 5}}]}}]}},
    ["a", "json", "array"],
    "text",
    None,
]


@pytest.mark.parametrize("bad", MALFORMED_FRAMES, ids=repr)
def test_a_malformed_frame_is_an_upstream_error_not_a_crash(bad: Any) -> None:
    translator = decoder()
    translator.feed(_frame_with_text("Hello"))
    with pytest.raises(MalformedUpstreamReply) as caught:
        translator.feed(bad)
    error = caught.value
    assert (error_status(error), error_body(error)["error"]["type"], error.code) == (
        502,
        "upstream_error",
        "upstream_error",
    )
    assert "42" not in error.message and "hello" not in error.message.lower()  # no upstream content
    # What was read before still closes the reply, and the usage is still readable.
    assert translator.finish() == [Usage(), Finish(FinishReason.STOP)]
    assert translator.usage.total_tokens == 0


def test_tool_call_arguments_too_deep_to_encode_are_an_upstream_error() -> None:
    args: Any = {"leaf": 1}
    for _ in range(300):  # valid JSON; orjson writes at most 255 levels back
        args = {"a": args}
    part = {"functionCall": {"name": "f", "args": args}}
    with pytest.raises(MalformedUpstreamReply):
        decoder().feed(frame(part))


@pytest.mark.parametrize(
    "usage_metadata",
    [
        [1, 2],
        "lots",
        {"promptTokenCount": 3e9, "candidatesTokenCount": 5, "totalTokenCount": 3e9},
        {"promptTokenCount": "many", "candidatesTokenCount": 5},
        {"promptTokenCount": -4, "candidatesTokenCount": 5},
        {"promptTokenCount": True, "candidatesTokenCount": 5},
        {"promptTokenCount": 1.5, "candidatesTokenCount": 5},
        {"promptTokenCount": {"n": 1}, "candidatesTokenCount": 5},
        {"promptTokenCount": "99999999999999999999", "candidatesTokenCount": 5},
    ],
    ids=repr,
)
def test_a_bad_usage_count_keeps_the_reply_and_the_others_counts(usage_metadata: Any) -> None:
    translator = decoder()
    events = translator.feed(
        {"response": {**frame({"text": "hi"})["response"], "usageMetadata": usage_metadata}}
    )
    assert events == [TextDelta("hi")]
    usage = translator.usage
    assert usage.prompt_tokens == 0  # unreadable or out of bounds: not believed
    assert usage.completion_tokens == (5 if isinstance(usage_metadata, dict) else 0)
    assert usage.total_tokens == usage.completion_tokens


def test_token_counts_in_protobufs_json_forms_are_read() -> None:
    usage_metadata = {"promptTokenCount": "12", "candidatesTokenCount": 3.0, "totalTokenCount": 15}
    translator, _ = translate([frame({"text": "hi"}, usage=usage_metadata)])
    assert (translator.prompt_tokens, translator.completion_tokens) == (12, 3)


def test_counts_up_to_the_bound_are_kept() -> None:
    usage_metadata = {"promptTokenCount": MAX_TOKEN_COUNT, "candidatesTokenCount": 1}
    translator, _ = translate([frame({"text": "hi"}, usage=usage_metadata)])
    assert translator.prompt_tokens == MAX_TOKEN_COUNT


@pytest.mark.parametrize("total", [7, "7", 7.0])
def test_a_count_tokens_total_is_read_in_any_json_form(total: object) -> None:
    assert counted_total({"totalTokens": total}) == 7


@pytest.mark.parametrize("total", [None, True, -1, "-1", "\u00b2", "7 ", 1.5, MAX_TOKEN_COUNT + 1, [7]])
def test_a_count_tokens_answer_without_a_count_is_a_502(total: object) -> None:
    with pytest.raises(UpstreamFailure) as caught:
        counted_total({"totalTokens": total})
    assert (caught.value.kind, caught.value.status) == (FailureKind.SERVER_ERROR, 502)


# --- properties: whatever the upstream sends, the translator answers or says it cannot -----

_PROTOCOL_KEYS = st.sampled_from(
    [
        "response",
        "candidates",
        "content",
        "parts",
        "text",
        "thought",
        "thoughtSignature",
        "functionCall",
        "id",
        "name",
        "args",
        "inlineData",
        "mimeType",
        "data",
        "finishReason",
        "usageMetadata",
        "promptTokenCount",
        "candidatesTokenCount",
        "thoughtsTokenCount",
        "totalTokenCount",
        "cachedContentTokenCount",
    ]
)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
JSON_VALUES = st.recursive(
    _SCALARS,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(_PROTOCOL_KEYS | st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=25,
)
VALID_FRAMES = frames_of(A1_GEMINI_TOOL_CALL) + frames_of(A2_CLAUDE_THINKING)


def _paths(value: Any, path: tuple = ()) -> list[tuple]:
    found = [path]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*path, index))
    return found


@st.composite
def mutated_frames(draw: st.DrawFn) -> Any:
    """A real frame with one value anywhere in it replaced by any JSON value."""
    original = draw(st.sampled_from(VALID_FRAMES))
    path = draw(st.sampled_from(_paths(original)))
    replacement = draw(JSON_VALUES)
    if not path:
        return replacement
    mutated = orjson.loads(orjson.dumps(original))
    target = mutated
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = replacement
    return mutated


@given(st.lists(mutated_frames() | JSON_VALUES, min_size=1, max_size=5))
def test_any_json_frames_give_events_or_an_upstream_error(frames: list[Any]) -> None:
    translator = decoder({"get_weather": "get weather"})
    events: list[Event] = []
    for item in frames:
        try:
            events += translator.feed(item)
        except UpstreamError:  # MalformedUpstreamReply, or the outdated-client notice
            break
    events += translator.finish()
    usage = translator.usage
    assert all(isinstance(value, int) for value in (usage.prompt_tokens, usage.total_tokens))
    assert 0 <= usage.prompt_tokens <= MAX_TOKEN_COUNT
    assert 0 <= usage.completion_tokens <= 2 * MAX_TOKEN_COUNT
    # Whatever was read renders both ways.
    renderer = StreamRenderer("m", include_usage=True)
    stream_chunks(render_body(renderer, events))
    orjson.dumps(assemble_completion(events, "m"))
