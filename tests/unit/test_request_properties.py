"""Property tests: any decoded JSON body is either a 400 naming the problem or a
request whose upstream envelope can be built and encoded (issue 11 #3, #12, #17)."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from antigv.backends.antigravity.envelope import build_upstream_request
from antigv.config import DefaultsConfig
from antigv.core.errors import InvalidRequest
from antigv.protocols.openai.errors import error_status
from antigv.protocols.openai.parse import parse_chat_request

# What orjson decodes: 64-bit integers at most.
SCALARS = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=8)
JSON = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
# JSON text nested to about the depth orjson can still encode, and beyond.
DEEP_TEXT = st.integers(0, 400).map(lambda depth: '{"a": ' + "[" * depth + "1" + "]" * depth + "}")
ARGUMENTS = st.one_of(st.text(max_size=20), DEEP_TEXT, JSON.map(lambda v: orjson.dumps(v).decode()))
NAMES = st.sampled_from(["get_weather", "f", "a.b/c d", "é", ""]) | st.text(max_size=8)
FUNCTION = st.fixed_dictionaries(
    {"name": NAMES}, optional={"description": SCALARS, "parameters": JSON | st.just({"type": "object"})}
)
TOOL_CALL = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["c1", "c2", ""]) | SCALARS,
        "function": st.fixed_dictionaries({"name": NAMES}, optional={"arguments": ARGUMENTS | SCALARS}),
    },
    optional={"type": st.just("function"), "extra_content": JSON},
)
CONTENT = st.one_of(
    SCALARS,
    JSON,
    st.lists(
        st.fixed_dictionaries(
            {"type": st.sampled_from(["text", "image_url", "audio"])},
            optional={
                "text": SCALARS,
                "image_url": st.sampled_from(["data:image/png;base64,iVBORw0KGgo=", "https://x/y.png"])
                | JSON,
            },
        ),
        max_size=3,
    ),
)
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "developer", "user", "assistant", "tool", "function", "x"])},
    optional={
        "content": CONTENT,
        "tool_calls": st.lists(TOOL_CALL, max_size=3) | JSON,
        "tool_call_id": st.sampled_from(["c1", "c2"]) | SCALARS,
        "name": NAMES | SCALARS,
        "function_call": st.fixed_dictionaries({"name": NAMES}, optional={"arguments": ARGUMENTS}) | JSON,
        "refusal": SCALARS,
    },
)
CHAT_BODY = st.fixed_dictionaries(
    {
        "model": st.sampled_from(
            ["gemini-2.5-flash", "gemini-3-pro-high", "claude-sonnet-4-5", "gpt-oss-120b-medium"]
        ),
        "messages": st.lists(MESSAGE, min_size=1, max_size=6),
    },
    optional={
        "tools": st.lists(
            st.fixed_dictionaries({"type": st.just("function"), "function": FUNCTION}), max_size=3
        )
        | JSON,
        "functions": st.lists(FUNCTION, max_size=3) | JSON,
        "tool_choice": st.sampled_from(["auto", "none", "required"]) | JSON,
        "function_call": st.sampled_from(["auto", "none"]) | st.fixed_dictionaries({"name": NAMES}) | JSON,
        "response_format": st.fixed_dictionaries(
            {"type": st.sampled_from(["text", "json_object", "json_schema"])},
            optional={"json_schema": st.fixed_dictionaries({"schema": JSON})},
        )
        | JSON,
        **dict.fromkeys(
            [
                "stream",
                "stream_options",
                "temperature",
                "top_p",
                "top_k",
                "max_tokens",
                "max_completion_tokens",
                "n",
                "stop",
                "seed",
                "reasoning_effort",
                "frequency_penalty",
                "presence_penalty",
                "logprobs",
                "top_logprobs",
                "audio",
                "modalities",
            ],
            JSON,
        ),
    },
)


def check(body: Any) -> None:
    """The whole contract: a 400 naming a field, or an envelope that encodes."""
    try:
        req = parse_chat_request(body)
    except InvalidRequest as error:
        assert error_status(error) == 400
        assert error.param is None or isinstance(error.param, str)
        return
    built = build_upstream_request(req, project="p", defaults=DefaultsConfig(), request_id="r")
    orjson.dumps(built.body)


@settings(max_examples=200)
@given(JSON)
def test_any_json_value_is_a_400_or_a_request(body: Any) -> None:
    check(body)


@settings(max_examples=400)
@given(CHAT_BODY)
def test_any_chat_shaped_body_is_a_400_or_an_encodable_request(body: dict[str, Any]) -> None:
    check(body)


@st.composite
def conversations(draw: st.DrawFn) -> dict[str, Any]:
    """Well-formed conversations whose free-form JSON (arguments, schemas) is arbitrary."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": draw(st.text(max_size=8))}]
    for turn in range(draw(st.integers(0, 3))):
        arguments = draw(ARGUMENTS)
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": f"c{turn}", "type": "function", "function": {"name": "f", "arguments": arguments}}
                ],
            }
        )
        messages.append({"role": "tool", "tool_call_id": f"c{turn}", "content": draw(st.text(max_size=8))})
    schema = {"type": "object", "properties": {"x": {"enum": [draw(JSON | DEEP_TEXT.map(orjson.loads))]}}}
    return {
        "model": draw(CHAT_BODY.map(lambda body: body["model"])),
        "messages": messages,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}],
    }


@settings(max_examples=200)
@given(conversations())
def test_free_form_client_json_is_a_400_or_encodes_upstream(body: dict[str, Any]) -> None:
    check(body)
