"""The Messages surface's translators (issue 13): any decoded body is a 400 naming the
problem or a request whose upstream envelope builds; any reply's events give the same
message streamed (folded as the SDK folds it) and not streamed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from antigv.backends.antigravity.envelope import build_upstream_request
from antigv.config import DefaultsConfig
from antigv.core.conversation import Image, Text, Thinking, ToolResult, ToolUse
from antigv.core.errors import (
    GatewayError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    UpstreamError,
)
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
from antigv.protocols.anthropic.errors import anthropic_error
from antigv.protocols.anthropic.parse import parse_count_tokens_request, parse_messages_request
from antigv.protocols.anthropic.render import StreamRenderer, assemble_message
from tests.upstream_double import TINY_PNG

DEFAULTS = DefaultsConfig()
SCALARS = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=8)
JSON = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=10,
)
IMAGE = st.fixed_dictionaries(
    {"type": st.just("image")},
    optional={
        "source": st.fixed_dictionaries(
            {"type": st.sampled_from(["base64", "url"])},
            optional={
                "media_type": st.sampled_from(["image/png", "image/tiff", "png"]) | SCALARS,
                "data": st.sampled_from([TINY_PNG, "not base64!"]) | SCALARS,
            },
        )
        | JSON
    },
)
TEXT = st.fixed_dictionaries({"type": st.just("text")}, optional={"text": SCALARS, "cache_control": JSON})
IDS = st.sampled_from(["toolu_1", "toolu_2", ""]) | SCALARS
BLOCK = st.one_of(
    TEXT,
    IMAGE,
    st.fixed_dictionaries(
        {"type": st.just("tool_use")},
        optional={"id": IDS, "name": st.sampled_from(["get_weather", "a.b c"]) | SCALARS, "input": JSON},
    ),
    st.fixed_dictionaries(
        {"type": st.just("tool_result")},
        optional={
            "tool_use_id": IDS,
            "content": SCALARS | st.lists(TEXT | IMAGE, max_size=2) | JSON,
            "is_error": SCALARS,
        },
    ),
    st.fixed_dictionaries(
        {"type": st.just("thinking")}, optional={"thinking": SCALARS, "signature": SCALARS}
    ),
    st.fixed_dictionaries({"type": st.just("redacted_thinking")}, optional={"data": SCALARS}),
    JSON,
)
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system"])},
    optional={"content": st.text(max_size=5) | st.lists(BLOCK, max_size=3) | JSON},
)
TOOL = st.fixed_dictionaries(
    {"name": st.sampled_from(["get_weather", "Read", "mcp__x__y"]) | SCALARS},
    optional={
        "input_schema": JSON | st.just({"type": "object"}),
        "description": SCALARS,
        "type": st.sampled_from(["custom", "bash_20250124"]),
    },
)
BODY = st.fixed_dictionaries(
    {"model": st.sampled_from(["claude-sonnet-4-6", "gemini-pro-agent", "gemini-3-flash"]) | SCALARS},
    optional={
        "max_tokens": st.integers(-5, 70000) | SCALARS,
        "messages": st.lists(MESSAGE, max_size=5) | JSON,
        "system": st.text(max_size=5) | st.lists(TEXT, max_size=2) | JSON,
        "tools": st.lists(TOOL, max_size=3) | JSON,
        "tool_choice": st.fixed_dictionaries(
            {"type": st.sampled_from(["auto", "any", "tool", "none", "x"])}, optional={"name": SCALARS}
        )
        | JSON,
        "thinking": st.fixed_dictionaries(
            {"type": st.sampled_from(["enabled", "adaptive", "disabled", "x"])},
            optional={"budget_tokens": st.integers(0, 70000) | SCALARS},
        )
        | JSON,
        "output_config": st.fixed_dictionaries(
            {}, optional={"effort": st.sampled_from(["low", "max", "x"]) | SCALARS}
        )
        | JSON,
        "stop_sequences": st.lists(st.text(max_size=3), max_size=7) | JSON,
        "temperature": SCALARS,
        "top_p": SCALARS,
        "top_k": SCALARS,
        "stream": SCALARS,
        "metadata": JSON,
    },
)


@settings(max_examples=400, deadline=None)
@given(BODY)
def test_any_body_is_a_400_or_an_envelope_that_encodes(body: dict[str, Any]) -> None:
    for parse in (parse_messages_request, parse_count_tokens_request):
        try:
            request = parse(body)
        except InvalidRequest as error:
            assert error.message
            assert anthropic_error(error)[0] == 400
            continue
        envelope = build_upstream_request(request, project="p", defaults=DEFAULTS, request_id="agent-1")
        orjson.dumps(envelope.body)


def test_a_claude_code_style_body_parses_into_the_core() -> None:
    request = parse_messages_request(
        {
            "model": "claude-opus-4-6",
            "max_tokens": 32000,
            "stream": True,
            "thinking": {"type": "adaptive"},
            "output_config": {"effort": "medium"},
            "system": [
                {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}
            ],
            "metadata": {"user_id": "user_x"},
            "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
            "tools": [
                {
                    "name": "Read",
                    "description": "Read a file",
                    "input_schema": {"type": "object", "properties": {}},
                }
            ],
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "read a.txt", "cache_control": {"type": "ephemeral"}}
                    ],
                },
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "I should read it.", "signature": "sig-1"},
                        {"type": "redacted_thinking", "data": "opaque"},
                        {
                            "type": "tool_use",
                            "id": "toolu_1",
                            "name": "Read",
                            "input": {"file_path": "/tmp/a.txt"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_1",
                            "content": [{"type": "text", "text": "hello"}],
                        },
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_1",
                            "content": "again",
                            "is_error": True,
                        },
                    ],
                },
            ],
        }
    )
    assert request.stream and request.system == ("You are Claude Code.",)
    assert request.generation.thinking.effort == "medium" and request.generation.max_tokens == 32000
    assert request.tool_call_id_prefix == "toolu_"
    assistant = request.turns[1]
    assert assistant.parts == (
        Thinking("I should read it.", "sig-1"),
        ToolUse("toolu_1", "Read", {"file_path": "/tmp/a.txt"}),
    )
    assert request.turns[2].parts == (
        ToolResult("toolu_1", (Text("hello"),)),
        ToolResult("toolu_1", (Text("again"),), is_error=True),
    )


def test_images_and_thinking_kinds() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": TINY_PNG}}
    request = parse_messages_request(
        {
            "model": "m",
            "max_tokens": 5000,
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "messages": [{"role": "user", "content": [image]}],
        }
    )
    assert request.turns[0].parts == (Image("image/jpeg", TINY_PNG),)
    assert request.generation.thinking.budget == 2048
    off = parse_messages_request(
        {
            "model": "m",
            "max_tokens": 5,
            "thinking": {"type": "disabled"},
            "messages": [{"role": "user", "content": "x"}],
        }
    )
    assert off.generation.thinking.off


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (InvalidRequest("x"), 400, "invalid_request_error"),
        (NotFound("x"), 404, "not_found_error"),
        (PayloadTooLarge("x"), 413, "request_too_large"),
        (RateLimited("x", retry_after=3), 429, "rate_limit_error"),
        (UpstreamError("x"), 502, "api_error"),
        (GatewayError("x"), 500, "api_error"),
    ],
)
def test_error_shapes(error: GatewayError, status: int, kind: str) -> None:
    assert anthropic_error(error) == (status, {"type": "error", "error": {"type": kind, "message": "x"}})


# --------------------------------------------------------------------------- replies


@st.composite
def replies(draw: st.DrawFn) -> list[Event]:
    """A reply's events in an order a Google backend decodes them."""
    events: list[Event] = []
    calls = 0
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["text", "thinking", "signature", "call", "image"]))
        if kind == "text":
            events.append(TextDelta(draw(st.text(min_size=1, max_size=5))))
        elif kind == "thinking":
            events.append(ThinkingDelta(draw(st.text(min_size=1, max_size=5))))
        elif kind == "signature":
            events.append(ThinkingSignature(draw(st.text(min_size=1, max_size=5))))
        elif kind == "image":
            events.append(ImageOutput("image/png", TINY_PNG))
        else:
            arguments = orjson.dumps(
                draw(st.dictionaries(st.text(max_size=3), st.integers(-(2**63), 2**63 - 1), max_size=2))
            ).decode()
            signature = draw(st.none() | st.text(min_size=1, max_size=4))
            events += [
                ToolCallStart(calls, f"toolu_{calls}", "get_weather", signature),
                ToolCallDelta(calls, arguments),
                ToolCallEnd(calls),
            ]
            calls += 1
    usage = Usage(
        prompt_tokens=draw(st.integers(0, 99)), completion_tokens=3, cached_tokens=0, total_tokens=9
    )
    reason = FinishReason.TOOL_USE if calls else draw(st.sampled_from(list(FinishReason)))
    return [*events, usage, Finish(reason)]


def fold_stream(raw: bytes) -> dict[str, Any]:
    """What the SDK's stream accumulator builds from the SSE events."""
    message: dict[str, Any] = {}
    partial: dict[int, str] = {}
    for event in raw.decode().strip().split("\n\n"):
        name, data = event.split("\n")
        payload = orjson.loads(data.removeprefix("data: "))
        assert name == f"event: {payload['type']}"
        match payload["type"]:
            case "message_start":
                message = payload["message"]
            case "content_block_start":
                assert payload["index"] == len(message["content"])
                message["content"].append(payload["content_block"])
            case "content_block_delta":
                block, delta = message["content"][payload["index"]], payload["delta"]
                if delta["type"] == "text_delta":
                    block["text"] += delta["text"]
                elif delta["type"] == "thinking_delta":
                    block["thinking"] += delta["thinking"]
                elif delta["type"] == "signature_delta":
                    block["signature"] = delta["signature"]
                else:
                    partial[payload["index"]] = partial.get(payload["index"], "") + delta["partial_json"]
            case "content_block_stop":
                if payload["index"] in partial:
                    message["content"][payload["index"]]["input"] = orjson.loads(
                        partial.pop(payload["index"])
                    )
            case "message_delta":
                message.update(payload["delta"])
                message["usage"].update(payload["usage"])
    return message


@settings(max_examples=300, deadline=None)
@given(replies())
def test_streamed_and_whole_messages_agree(events: list[Event]) -> None:
    usage = next(event for event in events if isinstance(event, Usage))
    renderer = StreamRenderer("m", lambda: usage, message_id="msg_1")
    split = len(events) // 2
    raw = renderer.open(events[:split]) + renderer.render(events[split:]) + renderer.end()
    assert fold_stream(raw) == assemble_message(events, "m", message_id="msg_1")


def test_gemini_call_signature_is_a_thinking_block_before_the_call_and_claude_s_is_not_repeated() -> None:
    gemini = [
        ToolCallStart(0, "toolu_a", "f", "g-sig"),
        ToolCallDelta(0, "{}"),
        ToolCallEnd(0),
        Usage(),
        Finish(FinishReason.TOOL_USE),
    ]
    content = assemble_message(gemini, "m")["content"]
    assert content == [
        {"type": "thinking", "thinking": "", "signature": "g-sig"},
        {"type": "tool_use", "id": "toolu_a", "name": "f", "input": {}},
    ]
    claude = [
        ThinkingDelta("hm"),
        ThinkingSignature("c-sig"),
        ToolCallStart(0, "toolu_b", "f", "c-sig"),
        ToolCallDelta(0, '{"a":1}'),
        ToolCallEnd(0),
        Usage(),
        Finish(FinishReason.TOOL_USE),
    ]
    content = assemble_message(claude, "m")["content"]
    assert content == [
        {"type": "thinking", "thinking": "hm", "signature": "c-sig"},
        {"type": "tool_use", "id": "toolu_b", "name": "f", "input": {"a": 1}},
    ]


def test_usage_counts_cache_reads_apart() -> None:
    message = assemble_message(
        [
            Usage(prompt_tokens=100, completion_tokens=7, cached_tokens=40, total_tokens=107),
            Finish(FinishReason.STOP),
        ],
        "m",
    )
    assert message["usage"] == {
        "input_tokens": 60,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 40,
        "output_tokens": 7,
    }
    assert message["content"] == [] and message["stop_reason"] == "end_turn"


FIXTURES = Path(__file__).parent.parent / "fixtures" / "claude_code"


@pytest.mark.parametrize("name", sorted(path.stem for path in FIXTURES.glob("*.json")))
def test_what_claude_code_sends_parses_and_encodes(name: str) -> None:
    """Whole requests captured from Claude Code 2.1.332 (tests/fixtures/claude_code/README.md)."""
    body = orjson.loads((FIXTURES / f"{name}.json").read_bytes())["body"]
    request = parse_messages_request(body)
    assert request.stream and request.tools and request.turns[0].role == "user"
    # Billing metadata is no instruction; system messages among the turns are.
    assert not any(text.startswith("x-anthropic-billing-header") for text in request.system)
    in_turns = [m for m in body["messages"] if m["role"] == "system"]
    assert len(request.turns) == len(body["messages"]) - len(in_turns)
    assert len(request.system) == len(body["system"]) - 1 + len(in_turns)
    envelope = build_upstream_request(request, project="p", defaults=DEFAULTS, request_id="agent-1")
    declarations = envelope.body["request"]["tools"][0]["functionDeclarations"]
    assert len(declarations) == len(body["tools"])
    assert "$schema" not in orjson.dumps(declarations).decode()
