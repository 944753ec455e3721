from __future__ import annotations

import copy
import hashlib
import re
import time
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from antigv.backends.antigravity.envelope import build_upstream_request, new_request_id
from antigv.backends.base import ToolCallSignature
from antigv.backends.google import models
from antigv.backends.google.generation import SKIP_THOUGHT_SIGNATURE, UpstreamRequest, replayed_tool_call_ids
from antigv.config import DefaultsConfig
from antigv.core.errors import InvalidRequest
from antigv.core.models import ModelInfo
from antigv.protocols.openai.errors import error_status
from antigv.protocols.openai.parse import include_usage, parse_chat_request
from antigv.protocols.validate import MAX_JSON_DEPTH, MAX_MESSAGES, MAX_TOOLS

DEFAULTS = DefaultsConfig()
PNG = "iVBORw0KGgo="
WEATHER_PARAMS = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Get weather", "parameters": WEATHER_PARAMS},
}


def tool(name: str, parameters: dict | None = None) -> dict:
    function: dict[str, Any] = {"name": name}
    if parameters is not None:
        function["parameters"] = parameters
    return {"type": "function", "function": function}


def user(content: object) -> dict:
    return {"role": "user", "content": content}


def call(
    call_id: str,
    name: str = "get_weather",
    arguments: str = '{"city": "Paris"}',
    signature: str | None = None,
):
    tool_call: dict[str, Any] = {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }
    if signature is not None:
        tool_call["extra_content"] = {"google": {"thought_signature": signature}}
    return tool_call


def assistant(content: object = None, *calls: dict) -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = list(calls)
    return message


def result(call_id: str, content: str = "22C, sunny") -> dict:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def chat(*messages: dict, model: str = "gemini-3-flash", **fields: Any) -> dict:
    return {"model": model, "messages": list(messages), **fields}


def build(
    body: dict,
    signatures: dict[str, ToolCallSignature] | None = None,
    defaults: DefaultsConfig = DEFAULTS,
    model_info: ModelInfo | None = None,
    thinking: dict[str, dict[str, Any]] | None = None,
    project: str | None = "cogent-snow-4mnnp",
) -> UpstreamRequest:
    return build_upstream_request(
        parse_chat_request(body),
        project=project,
        defaults=defaults,
        request_id="agent-1",
        signatures=signatures or {},
        model_info=model_info,
        thinking_rules=models.thinking_rules(thinking or {}),
    )


def inner(body: dict, **kwargs: Any) -> dict:
    return build(body, **kwargs).body["request"]


def generation(body: dict, **kwargs: Any) -> dict:
    return inner(body, **kwargs)["generationConfig"]


def weather_turns(first_call: dict, *more_calls: dict) -> list[dict]:
    calls = (first_call, *more_calls)
    return [user("Weather in Paris?"), assistant(None, *calls), *(result(c["id"]) for c in calls)]


def all_parts(request: dict) -> list[dict]:
    return [part for content in request["contents"] for part in content["parts"]]


# --- models -----------------------------------------------------------------


@pytest.mark.parametrize(
    "name, family, thinking_family",
    [
        ("claude-opus-4-6-thinking", "claude", "claude"),
        ("gemini-pro-agent", "gemini", "gemini"),  # unversioned: today's Gemini
        ("gemini-3.7-flash-high", "gemini", "gemini"),
        ("gemini-4-pro", "gemini", "gemini"),
        ("gemini-2.5-flash", "gemini", "gemini-2"),
        ("gpt-oss-120b-medium", "gpt-oss", "gpt-oss"),
        ("chat_20706", "other", "other"),
    ],
)
def test_model_family(name: str, family: str, thinking_family: str) -> None:
    assert models.model_family(name) == family
    assert models.thinking_family(name) == thinking_family


@pytest.mark.parametrize(
    "name, thinks",
    [
        ("claude-opus-4-6-thinking", True),  # the upstream's thinking variant
        ("gpt-oss-120b-medium", True),
        ("claude-sonnet-4-6", False),
        ("gemini-pro-agent", False),  # thinks at its own default, without a thinkingConfig
        ("gemini-3-flash", False),
        ("gemini-3.8-flash-tiered", False),
    ],
)
def test_thinking_default_follows_the_family(name: str, thinks: bool) -> None:
    assert models.thinks_by_default(name) is thinks


def test_only_chat_models_are_listed() -> None:
    names = ["gemini-pro-agent", "chat_20706", "tab_flash_lite_preview", "claude-sonnet-4-6"]
    assert [n for n in names if models.is_chat_model(n)] == ["gemini-pro-agent", "claude-sonnet-4-6"]


def test_models_are_sent_unchanged() -> None:
    # Aliases resolve before translation (antigv.gateway.catalogue); the translator sends the id it gets.
    for name in ("claude-opus-4-6-thinking", "gemini-pro-agent", "gemini-2.5-flash-thinking"):
        assert build(chat(user("hi"), model=name)).body["model"] == name


# --- validation -------------------------------------------------------------

VALID = chat(user("hi"), tools=[WEATHER_TOOL])


def with_fields(**fields: Any) -> dict:
    return {**VALID, **fields}


def with_message(message: object) -> dict:
    return with_fields(messages=[message])


def with_part(part: object, role: str = "user") -> dict:
    return with_message({"role": role, "content": [{"type": "text", "text": "look"}, part]})


def image(url: object) -> dict:
    return {"type": "image_url", "image_url": url}


INVALID_BODIES = [
    (with_fields(model=""), "model"),
    (with_fields(model=5), "model"),
    ({"messages": [user("hi")]}, "model"),
    (with_fields(messages=[]), "messages"),
    (with_fields(messages="hi"), "messages"),
    ({"model": "m"}, "messages"),
    (with_message("hi"), "messages[0]"),
    (with_message({"role": "bot", "content": "x"}), "messages[0].role"),
    (with_message({"role": ["user"], "content": "x"}), "messages[0].role"),
    (with_message({"content": "x"}), "messages[0].role"),
    (with_message(user(5)), "messages[0].content"),
    (with_message(user({"text": "x"})), "messages[0].content"),
    (with_message(user(["x"])), "messages[0].content[0]"),
    (with_part({"type": "input_audio"}), "messages[0].content[1].type"),
    (with_part({"type": "text", "text": None}), "messages[0].content[1].text"),
    (with_part(image({"url": "https://example.com/cat.png"})), "messages[0].content[1].image_url"),
    (with_part(image("http://example.com/cat.png")), "messages[0].content[1].image_url"),
    (with_part(image("data:image/svg+xml;base64,PHN2Zz4=")), "messages[0].content[1].image_url"),
    (with_part(image("data:application/pdf;base64,JVBERg==")), "messages[0].content[1].image_url"),
    (with_part(image("data:image/png;base64,")), "messages[0].content[1].image_url"),
    (with_part(image("data:image/png;base64,abc")), "messages[0].content[1].image_url"),
    (with_part(image("data:image/png;base64,ab$d")), "messages[0].content[1].image_url"),
    (with_part(image("data:image/png;base64,ab=d")), "messages[0].content[1].image_url"),
    (with_part(image("data:image/png;base64,a===")), "messages[0].content[1].image_url"),
    (with_part(image("data:image/png;base64,abéd")), "messages[0].content[1].image_url"),
    (with_part(image("data:image/png,iVBORw0KGgo=")), "messages[0].content[1].image_url"),
    (with_part(image({"url": 5})), "messages[0].content[1].image_url"),
    (with_part(image(None)), "messages[0].content[1].image_url"),
    (with_part(image(f"data:image/png;base64,{PNG}"), role="system"), "messages[0].content[1].type"),
    (with_part(image(f"data:image/png;base64,{PNG}"), role="assistant"), "messages[0].content[1].type"),
    (with_message({"role": "tool", "content": "x"}), "messages[0].tool_call_id"),
    (with_message({"role": "assistant", "tool_calls": {"id": "a"}}), "messages[0].tool_calls"),
    (with_message(assistant(None, "call")), "messages[0].tool_calls[0]"),
    (with_message(assistant(None, {"function": {"name": "f"}})), "messages[0].tool_calls[0].id"),
    (with_message(assistant(None, {"id": "a"})), "messages[0].tool_calls[0].function"),
    (with_message(assistant(None, {"id": "a", "function": {}})), "messages[0].tool_calls[0].function.name"),
    (
        with_message(assistant(None, {"id": "a", "function": {"name": "f", "arguments": {"x": 1}}})),
        "messages[0].tool_calls[0].function.arguments",
    ),
    (with_fields(stream="yes"), "stream"),
    (with_fields(stream_options=True), "stream_options"),
    (with_fields(stream_options={"include_usage": "yes"}), "stream_options.include_usage"),
    (with_fields(temperature=2.5), "temperature"),
    (with_fields(temperature=-0.1), "temperature"),
    (with_fields(temperature="1"), "temperature"),
    (with_fields(temperature=True), "temperature"),
    (with_fields(top_p=0), "top_p"),
    (with_fields(top_p=1.5), "top_p"),
    (with_fields(top_k=0), "top_k"),
    (with_fields(top_k=2.5), "top_k"),
    (with_fields(max_tokens=0), "max_tokens"),
    (with_fields(max_tokens="100"), "max_tokens"),
    (with_fields(max_tokens=100.0), "max_tokens"),
    (with_fields(max_completion_tokens=-1), "max_completion_tokens"),
    (with_fields(stop=["a", "b", "c", "d", "e", "f"]), "stop"),
    (with_fields(stop=[1]), "stop"),
    (with_fields(stop=5), "stop"),
    (with_fields(n=2), "n"),
    (with_fields(n="1"), "n"),
    (with_fields(seed="7"), "seed"),
    (with_fields(seed=2**40), "seed"),
    (with_fields(seed=1.5), "seed"),
    (with_fields(response_format="json"), "response_format"),
    (with_fields(response_format={"type": "xml"}), "response_format.type"),
    (with_fields(response_format={"type": "json_schema"}), "response_format.json_schema"),
    (
        with_fields(response_format={"type": "json_schema", "json_schema": {"name": "x"}}),
        "response_format.json_schema.schema",
    ),
    (with_fields(reasoning_effort="extreme"), "reasoning_effort"),
    (with_fields(reasoning_effort=["high"]), "reasoning_effort"),
    (with_fields(tools={"type": "function"}), "tools"),
    (with_fields(tools=["get_weather"]), "tools[0]"),
    (with_fields(tools=[{"type": "web_search"}]), "tools[0].type"),
    (with_fields(tools=[{"type": "function"}]), "tools[0].function"),
    (with_fields(tools=[{"type": "function", "function": {"name": ""}}]), "tools[0].function.name"),
    (
        with_fields(tools=[{"type": "function", "function": {"name": "f", "parameters": "x"}}]),
        "tools[0].function.parameters",
    ),
    (
        with_fields(tools=[{"type": "function", "function": {"name": "f", "description": 5}}]),
        "tools[0].function.description",
    ),
    (with_fields(tools=[WEATHER_TOOL, WEATHER_TOOL]), "tools[1].function.name"),
    (with_fields(tool_choice="sometimes"), "tool_choice"),
    (with_fields(tool_choice={"type": "code"}), "tool_choice"),
    (
        with_fields(tool_choice={"type": "function", "function": {"name": "nope"}}),
        "tool_choice.function.name",
    ),
    (with_fields(tool_choice={"type": "function", "function": {}}), "tool_choice.function.name"),
    (with_fields(tools=None, tool_choice="required"), "tool_choice"),
]


@pytest.mark.parametrize("body, param", INVALID_BODIES)
def test_invalid_input_is_a_400_naming_the_field(body: dict, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_chat_request(body)
    assert error_status(caught.value) == 400
    assert caught.value.param == param


@pytest.mark.parametrize("body", [[], "x", None, 3])
def test_body_must_be_an_object(body: object) -> None:
    with pytest.raises(InvalidRequest):
        parse_chat_request(body)


def test_http_image_url_gets_the_documented_message() -> None:
    with pytest.raises(InvalidRequest, match="image URLs are not fetched; send a base64 data URI"):
        parse_chat_request(with_part(image({"url": "https://example.com/cat.png"})))


def test_unknown_top_level_fields_are_ignored() -> None:
    body = with_fields(user="u1", parallel_tool_calls=False, metadata={"a": "b"}, logprobs=False)
    assert parse_chat_request(body) == parse_chat_request(VALID)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "bot"}], "stream": "yes"}, "messages[0].role"),
        ({"messages": [{"role": "bot"}], "stream_options": 1}, "messages[0].role"),
        ({"messages": [user("hi")], "reasoning_effort": "max", "presence_penalty": 9}, "reasoning_effort"),
    ],
)
def test_the_first_faulty_field_is_the_one_named(body: dict, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_chat_request({"model": "gemini-2.5-flash", **body})
    assert caught.value.param == param


def test_null_means_absent_for_optional_fields() -> None:
    optional = "stream stream_options temperature top_p top_k max_tokens stop n seed response_format"
    legacy = "functions function_call frequency_penalty presence_penalty audio modalities"
    nulls = dict.fromkeys([*optional.split(), *legacy.split(), "reasoning_effort", "tool_choice"])
    assert parse_chat_request(with_fields(**nulls)) == parse_chat_request(VALID)
    assert include_usage(with_fields(**nulls)) is include_usage(VALID) is False


def test_stream_defaults_to_false_and_include_usage_is_read() -> None:
    assert parse_chat_request(VALID).stream is False
    assert include_usage(VALID) is False
    body = with_fields(stream=True, stream_options={"include_usage": True})
    assert parse_chat_request(body).stream and include_usage(body) is True


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)
FIELDS = ["model", "messages", "stream", "temperature", "top_p", "max_tokens", "stop", "tools", "tool_choice"]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([*FIELDS, "messages.0", "messages.0.content", "messages.1.tool_calls"]),
    JSON_VALUES,
)
def test_wrong_json_types_are_400s_never_crashes(field: str, value: object) -> None:
    body = copy.deepcopy(chat(user("hi"), assistant(None, call("c1")), result("c1"), tools=[WEATHER_TOOL]))
    target: Any = body
    *path, last = field.split(".")
    for key in path:
        target = target[int(key)] if isinstance(target, list) else target[key]
    target[int(last) if isinstance(target, list) else last] = value
    try:
        req = parse_chat_request(body)
    except InvalidRequest as error:
        assert error_status(error) == 400
    else:
        build_upstream_request(req, project="p", defaults=DEFAULTS, request_id="r")


# --- envelope, system, messages ---------------------------------------------


def test_envelope_matches_protocol() -> None:
    body = build(chat(user("hi"), model="gemini-pro-agent")).body
    assert {key: value for key, value in body.items() if key != "request"} == {
        "project": "cogent-snow-4mnnp",
        "requestId": "agent-1",
        "model": "gemini-pro-agent",
        "userAgent": "antigravity",
        "requestType": "agent",
    }
    assert "safetySettings" not in body["request"]


def test_system_and_developer_messages_become_the_system_instruction() -> None:
    request = inner(
        chat(
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
            user("hi"),
        )
    )
    assert request["systemInstruction"] == {
        "role": "user",
        "parts": [{"text": "Be brief.\n\nUse metric units."}],
    }
    assert request["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]


def test_configured_system_instruction_applies_when_client_sends_none() -> None:
    request = inner(chat(user("hi")), defaults=DefaultsConfig(system_instruction="You are antigv."))
    assert request["systemInstruction"]["parts"] == [{"text": "You are antigv."}]


def test_no_system_instruction_without_system_text() -> None:
    # PROTOCOL §13.3: only when there is system text.
    assert "systemInstruction" not in inner(chat(user("hi")))
    assert "systemInstruction" not in inner(chat({"role": "system", "content": ""}, user("hi")))


def test_project_is_left_out_when_unknown() -> None:
    # PROTOCOL §13.3: never "project": "".
    for project in (None, ""):
        assert "project" not in build(chat(user("hi")), project=project).body


def test_user_images_become_inline_data_without_reencoding() -> None:
    data = "R0lGODlhAQABAAAAACw="
    request = inner(
        chat(
            user(
                [
                    {"type": "text", "text": "What is this?"},
                    image({"url": f"data:image/jpg;base64,{PNG}"}),
                    image(f"data:image/gif;base64,{data}"),
                ]
            )
        )
    )
    assert request["contents"][0]["parts"] == [
        {"text": "What is this?"},
        {"inlineData": {"mimeType": "image/jpeg", "data": PNG}},
        {"inlineData": {"mimeType": "image/gif", "data": data}},
    ]


@pytest.mark.parametrize("content", [None, "", "   ", [], [{"type": "text", "text": ""}]])
def test_empty_user_text_becomes_a_dot(content: object) -> None:
    assert inner(chat(user(content)))["contents"] == [{"role": "user", "parts": [{"text": "."}]}]


def test_assistant_text_and_tool_calls_share_one_model_turn() -> None:
    request = inner(chat(user("hi"), assistant("Let me check.", call("c1")), result("c1")))
    assert request["contents"][1] == {
        "role": "model",
        "parts": [
            {"text": "Let me check."},
            {
                "functionCall": {"id": "c1", "name": "get_weather", "args": {"city": "Paris"}},
                "thoughtSignature": SKIP_THOUGHT_SIGNATURE,
            },
        ],
    }


@pytest.mark.parametrize("arguments", ["{not json", "", "[1, 2]", '"Paris"'])
def test_unusable_tool_call_arguments_become_an_empty_object(arguments: str) -> None:
    request = inner(chat(user("hi"), assistant(None, call("c1", arguments=arguments)), result("c1")))
    assert request["contents"][1]["parts"][0]["functionCall"]["args"] == {}


@pytest.mark.parametrize("content", [None, "", [], "  "])
def test_empty_assistant_turns_are_dropped_and_users_merged(content: object) -> None:
    request = inner(chat(user("one"), assistant(content), user("two")))
    assert request["contents"] == [{"role": "user", "parts": [{"text": "one"}, {"text": "two"}]}]


def test_consecutive_assistant_messages_are_merged() -> None:
    request = inner(chat(user("hi"), assistant("Checking."), assistant(None, call("c1")), result("c1")))
    assert [c["role"] for c in request["contents"]] == ["user", "model", "user"]
    assert [next(iter(p)) for p in request["contents"][1]["parts"]] == ["text", "functionCall"]


def test_parallel_tool_results_share_one_user_turn_with_recovered_names() -> None:
    request = inner(
        chat(
            user("Paris and Rome?"),
            assistant(None, call("c1"), call("c2", name="get_time", arguments='{"tz": "CET"}')),
            {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "10:00"}]},
            result("c1", "22C"),
            tools=[WEATHER_TOOL, tool("get_time")],
        )
    )
    assert request["contents"][2] == {
        "role": "user",
        "parts": [
            {"functionResponse": {"id": "c2", "name": "get_time", "response": {"output": "10:00"}}},
            {"functionResponse": {"id": "c1", "name": "get_weather", "response": {"output": "22C"}}},
        ],
    }


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        (
            [user("hi"), assistant("Hello!"), result("never-called"), user("thanks")],
            "messages[2].tool_call_id",
        ),
        # A result ahead of its call answers nothing yet.
        ([user("hi"), result("c1"), assistant(None, call("c1"))], "messages[1].tool_call_id"),
    ],
)
def test_orphan_tool_result_is_a_400_naming_it(messages: list[dict], param: str) -> None:
    # As OpenAI does: a result that answers no earlier call is a client bug, not data to drop.
    with pytest.raises(InvalidRequest, match="matches no tool call") as caught:
        parse_chat_request(chat(*messages))
    assert caught.value.param == param


def test_tool_results_lead_a_merged_user_turn() -> None:
    # Tool results must directly follow the call turn, even if the client put text first.
    request = inner(chat(user("hi"), assistant(None, call("c1")), user("also this"), result("c1")))
    assert [next(iter(p)) for p in request["contents"][2]["parts"]] == ["functionResponse", "text"]


def test_conversation_starts_with_a_user_turn() -> None:
    request = inner(chat({"role": "system", "content": "s"}, assistant("Hi, how can I help?"), user("hi")))
    assert [c["role"] for c in request["contents"]] == ["user", "model", "user"]
    assert request["contents"][0]["parts"] == [{"text": "."}]


def test_contents_are_never_empty() -> None:
    request = inner(chat({"role": "system", "content": "Write a haiku."}))
    assert request["contents"] == [{"role": "user", "parts": [{"text": "."}]}]


@pytest.mark.parametrize(
    "model", ["claude-sonnet-4-6", "gemini-3.7-flash-high", "gemini-3-flash", "gpt-oss-120b-medium"]
)
def test_every_conversation_ends_with_a_user_turn(model: str) -> None:
    # PROTOCOL §13.5: Claude and Gemini >= 3.6 refuse prefill; every family gets the same turn.
    request = inner(chat(user("hi"), assistant("Once upon"), model=model))
    assert request["contents"][-2] == {"role": "model", "parts": [{"text": "Once upon"}]}
    assert request["contents"][-1] == {"role": "user", "parts": [{"text": "Continue."}]}


def test_reasoning_content_is_not_replayed() -> None:
    message = {**assistant("It is sunny."), "reasoning_content": "The user wants weather."}
    request = inner(chat(user("hi"), message, user("thanks"), model="claude-opus-4-6-thinking"))
    assert not any(part.get("thought") for part in all_parts(request))
    assert "The user wants weather." not in str(request)


# --- tools ------------------------------------------------------------------


def test_tools_become_one_declaration_entry() -> None:
    strict = {
        "type": "function",
        "function": {"name": "lookup", "strict": True, "parameters": WEATHER_PARAMS},
    }
    request = inner(chat(user("hi"), tools=[WEATHER_TOOL, tool("now"), strict]))
    assert request["tools"] == [
        {
            "functionDeclarations": [
                {"name": "get_weather", "description": "Get weather", "parameters": WEATHER_PARAMS},
                {"name": "now", "parameters": {"type": "object", "properties": {}}},
                {"name": "lookup", "parameters": WEATHER_PARAMS},
            ]
        }
    ]


def test_claude_tools_without_parameters_get_the_placeholder_argument() -> None:
    # PROTOCOL §13.5: Claude's VALIDATED mode wants a required property.
    empty = {"type": "object", "properties": {}}
    body = chat(user("hi"), model="claude-sonnet-4-6", tools=[WEATHER_TOOL, tool("now"), tool("ping", empty)])
    built = build(body)
    declarations = built.body["request"]["tools"][0]["functionDeclarations"]
    assert declarations[0]["parameters"] == WEATHER_PARAMS
    for declaration in declarations[1:]:
        assert declaration["parameters"]["required"] == ["reason"]
        assert declaration["parameters"]["properties"]["reason"]["type"] == "string"
    assert built.placeholder_tools == {"now", "ping"}
    # A tool with a real "reason" argument keeps it.
    own = {"type": "object", "properties": {"reason": {"type": "string"}}, "required": ["reason"]}
    assert (
        build(chat(user("hi"), model="claude-sonnet-4-6", tools=[tool("why", own)])).placeholder_tools
        == set()
    )
    # Other families keep the empty schema.
    gemini = build(chat(user("hi"), tools=[tool("now")]))
    assert gemini.body["request"]["tools"][0]["functionDeclarations"][0]["parameters"] == empty
    assert gemini.placeholder_tools == frozenset()


def test_tool_schemas_are_sanitized() -> None:
    params = {"$schema": "x", "type": "object", "properties": {"unit": {"const": "C", "default": "C"}}}
    declaration = inner(chat(user("hi"), tools=[tool("t", params)]))["tools"][0]["functionDeclarations"][0]
    assert declaration["parameters"] == {"type": "object", "properties": {"unit": {"enum": ["C"]}}}


def test_no_tools_means_no_tool_fields() -> None:
    request = inner(chat(user("hi")))
    assert "tools" not in request and "toolConfig" not in request


@pytest.mark.parametrize(
    "tool_choice, config",
    [
        (None, {"mode": "VALIDATED"}),
        ("auto", {"mode": "VALIDATED"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        (
            {"type": "function", "function": {"name": "files/read"}},
            {"mode": "ANY", "allowedFunctionNames": ["files_read"]},
        ),
    ],
)
def test_tool_choice_modes(tool_choice: object, config: dict) -> None:
    body = chat(user("hi"), tools=[WEATHER_TOOL, tool("files/read")], tool_choice=tool_choice)
    assert inner(body)["toolConfig"] == {"functionCallingConfig": config}


def test_function_names_are_sanitized_everywhere_and_mapped_back() -> None:
    built = build(
        chat(
            user("read it"),
            assistant(None, call("c1", name="files/read", arguments="{}")),
            result("c1", "text"),
            tools=[tool("files/read"), tool("run command")],
        )
    )
    request = built.body["request"]
    assert [d["name"] for d in request["tools"][0]["functionDeclarations"]] == ["files_read", "run_command"]
    assert request["contents"][1]["parts"][0]["functionCall"]["name"] == "files_read"
    assert request["contents"][2]["parts"][0]["functionResponse"]["name"] == "files_read"
    assert built.tool_names == {"files_read": "files/read", "run_command": "run command"}


def test_names_that_sanitize_alike_stay_distinct() -> None:
    built = build(chat(user("hi"), tools=[tool("a/b"), tool("a b"), tool("a_b")]))
    declared = [d["name"] for d in built.body["request"]["tools"][0]["functionDeclarations"]]
    assert len(set(declared)) == 3
    assert [built.tool_names[name] for name in declared] == ["a/b", "a b", "a_b"]


# --- generation config ------------------------------------------------------


def test_defaults_apply_when_the_client_sends_nothing() -> None:
    defaults = DefaultsConfig(temperature=0.7, top_p=0.9, top_k=40, max_tokens=4000)
    config = generation(chat(user("hi")), defaults=defaults)
    assert config == {
        "temperature": 0.7,
        "topP": 0.9,
        "topK": 40,
        "maxOutputTokens": 4000,
        "candidateCount": 1,
    }


def test_client_sampling_values_override_defaults() -> None:
    config = generation(chat(user("hi"), temperature=0.2, top_p=0.5, top_k=7, max_tokens=3000))
    sampling = {key: config[key] for key in ("temperature", "topP", "topK", "maxOutputTokens")}
    assert sampling == {"temperature": 0.2, "topP": 0.5, "topK": 7, "maxOutputTokens": 3000}


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    config = generation(chat(user("hi"), max_tokens=3000, max_completion_tokens=5000))
    assert config["maxOutputTokens"] == 5000


def test_stop_sequences_come_only_from_the_client() -> None:
    assert "stopSequences" not in generation(chat(user("hi")))
    assert generation(chat(user("hi"), stop="END"))["stopSequences"] == ["END"]
    assert generation(chat(user("hi"), stop=["a", "b"]))["stopSequences"] == ["a", "b"]


def test_seed_is_passed_through() -> None:
    assert "seed" not in generation(chat(user("hi")))
    assert generation(chat(user("hi"), seed=42))["seed"] == 42


def test_json_object_asks_for_json() -> None:
    config = generation(chat(user("hi"), response_format={"type": "json_object"}))
    assert config["responseMimeType"] == "application/json"
    assert "responseSchema" not in config


def test_json_schema_sends_the_sanitized_schema() -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 0}},
        "additionalProperties": False,
    }
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "count", "strict": True, "schema": schema},
    }
    config = generation(chat(user("hi"), response_format=response_format))
    assert config["responseMimeType"] == "application/json"
    assert config["responseSchema"] == {"type": "object", "properties": {"n": {"type": "integer"}}}


def test_text_response_format_changes_nothing() -> None:
    assert "responseMimeType" not in generation(chat(user("hi"), response_format={"type": "text"}))


# --- thinking ---------------------------------------------------------------


@pytest.mark.parametrize(
    "effort, budget", [("minimal", 1024), ("low", 1024), ("medium", 8192), ("high", 24576)]
)
def test_reasoning_effort_sets_the_budget(effort: str, budget: int) -> None:
    built = build(chat(user("hi"), model="claude-sonnet-4-6", reasoning_effort=effort, max_tokens=60000))
    assert built.thinking
    config = built.body["request"]["generationConfig"]
    assert config["thinkingConfig"] == {"includeThoughts": True, "thinkingBudget": budget}


@pytest.mark.parametrize("model", ["gemini-pro-agent", "claude-opus-4-6-thinking", "gpt-oss-120b-medium"])
def test_reasoning_effort_none_turns_thinking_off(model: str) -> None:
    built = build(chat(user("hi"), model=model, reasoning_effort="none"))
    assert not built.thinking
    assert "thinkingConfig" not in built.body["request"]["generationConfig"]


GEMINI_3 = [
    "gemini-pro-agent",
    "gemini-3.1-pro-low",
    "gemini-3-flash",
    "gemini-3.7-flash-high",
    "gemini-4-pro",
]


@pytest.mark.parametrize("model", GEMINI_3)
def test_gemini_3_without_reasoning_effort_sends_no_thinking_config(model: str) -> None:
    # PROTOCOL §13.5: "off" is no thinkingConfig; thinkingBudget 0 is a 400 on Pro and newer Flash.
    built = build(chat(user("hi"), model=model))
    assert "thinkingConfig" not in built.body["request"]["generationConfig"]
    assert not built.thinking


@pytest.mark.parametrize("model", GEMINI_3)
@pytest.mark.parametrize("effort", ["minimal", "low", "medium", "high"])
def test_gemini_3_reasoning_effort_sends_a_thinking_level(model: str, effort: str) -> None:
    built = build(chat(user("hi"), model=model, reasoning_effort=effort))
    assert built.thinking
    assert built.body["request"]["generationConfig"]["thinkingConfig"] == {
        "includeThoughts": True,
        "thinkingLevel": "low" if effort == "minimal" else effort,  # Pro takes no "minimal"
    }


@pytest.mark.parametrize("model", [*GEMINI_3, "gemini-2.5-flash"])
@pytest.mark.parametrize("effort", [None, "none", "minimal", "low", "medium", "high"])
def test_gemini_never_gets_budget_zero(model: str, effort: str | None) -> None:
    for thinking in ({}, {"gemini": {"depth": "budget"}, "gemini-2": {"depth": "budget"}}):
        config = generation(chat(user("hi"), model=model, reasoning_effort=effort), thinking=thinking)
        assert config.get("thinkingConfig", {}).get("thinkingBudget") != 0


def test_the_thinking_table_is_overridable_per_family() -> None:
    thinking = {"gemini": {"depth": "budget", "default": True}}
    config = generation(chat(user("hi"), model="gemini-3.7-flash-high"), thinking=thinking)
    assert config["thinkingConfig"] == {"includeThoughts": True, "thinkingBudget": 1024}
    config = generation(
        chat(user("hi"), model="gemini-3.7-flash-high", reasoning_effort="medium"), thinking=thinking
    )
    assert config["thinkingConfig"] == {"includeThoughts": True, "thinkingBudget": 8192}
    # A family thinking by default at "level" depth leaves the depth to the model.
    config = generation(chat(user("hi"), model="gemini-3-flash"), thinking={"gemini": {"default": True}})
    assert config["thinkingConfig"] == {"includeThoughts": True}


def test_a_model_the_catalogue_says_cannot_think_gets_no_thinking_config() -> None:
    info = ModelInfo("gemini-3.1-flash-lite", "Gemini 3.1 Flash Lite", False, 65536)
    built = build(chat(user("hi"), model="gemini-3.1-flash-lite", reasoning_effort="high"), model_info=info)
    assert "thinkingConfig" not in built.body["request"]["generationConfig"]
    assert not built.thinking


@pytest.mark.parametrize(
    "model, limit, expected",
    [
        ("gemini-pro-agent", None, 65536),  # fallbacks when the catalogue has no limit
        ("claude-sonnet-4-6", None, 64000),
        ("gemini-3-flash", 65535, 65535),  # the catalogue's limit
        ("gpt-oss-120b-medium", 32768, 32768),
        ("gpt-oss-120b-medium", None, 500000),  # nothing known: sent as asked
    ],
)
def test_max_tokens_is_clamped_to_the_models_limit(model: str, limit: int | None, expected: int) -> None:
    # PROTOCOL §13.5: more than the model's maxOutputTokens is a 400.
    info = ModelInfo(model, model, None, limit) if limit else None
    body = chat(user("hi"), model=model, max_tokens=500000, reasoning_effort="none")
    assert generation(body, model_info=info)["maxOutputTokens"] == expected


def test_claude_thinking_fits_within_the_limit() -> None:
    body = chat(user("hi"), model="claude-opus-4-6-thinking", max_tokens=500000, reasoning_effort="high")
    config = generation(body)
    assert config["maxOutputTokens"] == 64000
    assert config["thinkingConfig"] == {"includeThoughts": True, "thinkingBudget": 24576}
    # A limit too small for the answer and Claude's smallest budget: no thinking at all.
    info = ModelInfo("claude-opus-4-6-thinking", "Claude", True, 1500)
    built = build(body, model_info=info)
    assert built.body["request"]["generationConfig"]["maxOutputTokens"] == 1500
    assert "thinkingConfig" not in built.body["request"]["generationConfig"] and not built.thinking
    # Room for a smaller budget: it shrinks, leaving 1024 tokens for the answer.
    info = ModelInfo("claude-opus-4-6-thinking", "Claude", True, 8192)
    config = generation(body, model_info=info)
    assert config["maxOutputTokens"] == 8192 and config["thinkingConfig"]["thinkingBudget"] == 8192 - 1024


def test_image_models_take_the_image_gen_form() -> None:
    # PROTOCOL §13.3: requestType image_gen, only candidateCount; no system text, tools or sampling.
    body = chat(
        {"role": "system", "content": "Be nice."},
        user("draw a cat"),
        model="gemini-3.1-flash-image",
        reasoning_effort="high",
        temperature=0.3,
        tools=[WEATHER_TOOL],
    )
    req = parse_chat_request(body)
    built = build_upstream_request(
        req, project="p", defaults=DEFAULTS, request_id=new_request_id(req.model), signatures={}
    )
    assert built.body["requestType"] == "image_gen"
    assert re.fullmatch(r"image_gen/\d{13}/[0-9a-f-]{36}/12", built.body["requestId"])
    assert built.body["request"] == {
        "contents": [{"role": "user", "parts": [{"text": "draw a cat"}]}],
        "generationConfig": {"candidateCount": 1},
    }
    assert not built.thinking
    assert new_request_id("gemini-3-flash").startswith("agent-")


@pytest.mark.parametrize(
    "max_tokens, effort, expected",
    [
        (100, "low", 1024 + 1024),  # thinking eats into maxOutputTokens: leave 1024 for the answer
        (50000, "low", 50000),
        (1000, "high", 24576 + 1024),
    ],
)
def test_gemini_budget_leaves_room_for_the_answer(max_tokens: int, effort: str | None, expected: int) -> None:
    body = chat(user("hi"), model="gemini-pro-agent", max_tokens=max_tokens, reasoning_effort=effort)
    assert generation(body, thinking={"gemini": {"depth": "budget"}})["maxOutputTokens"] == expected


@pytest.mark.parametrize(
    "max_tokens, effort, expected",
    [
        (500, None, 1024 + 1024),  # at most the budget: budget + max(1024, requested)
        (1024, None, 1024 + 1024),
        (8192, "high", 24576 + 8192),
        (4000, None, 4000),  # already above the budget
    ],
)
def test_claude_output_limit_exceeds_the_budget(max_tokens: int, effort: str | None, expected: int) -> None:
    body = chat(user("hi"), model="claude-opus-4-6-thinking", max_tokens=max_tokens, reasoning_effort=effort)
    assert generation(body)["maxOutputTokens"] == expected


def test_claude_thinking_forces_temperature_one_without_top_p_or_top_k() -> None:
    config = generation(
        chat(user("hi"), model="claude-opus-4-6-thinking", temperature=0.2, top_p=0.5, top_k=5)
    )
    assert config["temperature"] == 1
    assert "topP" not in config and "topK" not in config


def test_claude_without_thinking_keeps_sampling_and_sends_no_thinking_config() -> None:
    built = build(chat(user("hi"), model="claude-sonnet-4-6", temperature=0.2, top_p=0.5, top_k=5))
    config = built.body["request"]["generationConfig"]
    assert not built.thinking
    assert (config["temperature"], config["topP"], config["topK"]) == (0.2, 0.5, 5)
    assert "thinkingConfig" not in config


def test_reasoning_effort_turns_thinking_on_for_a_plain_claude_model() -> None:
    built = build(chat(user("hi"), model="claude-sonnet-4-6", reasoning_effort="medium"))
    assert built.thinking
    assert built.body["request"]["generationConfig"]["thinkingConfig"]["thinkingBudget"] == 8192


def test_gpt_oss_thinks_by_default() -> None:
    assert build(chat(user("hi"), model="gpt-oss-120b-medium")).thinking


# --- thought signatures -----------------------------------------------------


def first_call_part(request: dict) -> dict:
    return request["contents"][1]["parts"][0]


def test_gemini_follow_up_replays_the_clients_signature() -> None:
    # PROTOCOL A.3: the call came back with extra_content.google.thought_signature.
    request = inner(chat(*weather_turns(call("call_7f3a", signature="CiQB0e2Kb")), model="gemini-pro-agent"))
    assert request["contents"][1] == {
        "role": "model",
        "parts": [
            {
                "functionCall": {"id": "call_7f3a", "name": "get_weather", "args": {"city": "Paris"}},
                "thoughtSignature": "CiQB0e2Kb",
            }
        ],
    }
    assert request["contents"][2] == {
        "role": "user",
        "parts": [
            {
                "functionResponse": {
                    "id": "call_7f3a",
                    "name": "get_weather",
                    "response": {"output": "22C, sunny"},
                }
            }
        ],
    }


def test_gemini_follow_up_without_signature_uses_the_sentinel() -> None:
    request = inner(chat(*weather_turns(call("call_7f3a")), model="gemini-pro-agent"))
    assert first_call_part(request)["thoughtSignature"] == SKIP_THOUGHT_SIGNATURE


def test_gemini_uses_the_stored_signature_when_the_client_dropped_it() -> None:
    stored = {"call_7f3a": ToolCallSignature(signature="CiQstored", thinking=None)}
    request = inner(chat(*weather_turns(call("call_7f3a")), model="gemini-pro-agent"), signatures=stored)
    assert first_call_part(request)["thoughtSignature"] == "CiQstored"


def test_gemini_never_gets_a_claude_signature() -> None:
    stored = {"c1": ToolCallSignature(signature="EqClaude", thinking="Let me think.")}
    request = inner(chat(*weather_turns(call("c1")), model="gemini-pro-agent"), signatures=stored)
    assert first_call_part(request)["thoughtSignature"] == SKIP_THOUGHT_SIGNATURE


def test_sentinel_goes_on_the_first_call_of_a_parallel_turn_only() -> None:
    request = inner(chat(*weather_turns(call("c1"), call("c2")), model="gemini-3-flash"))
    first, second = request["contents"][1]["parts"]
    assert first["thoughtSignature"] == SKIP_THOUGHT_SIGNATURE
    assert "thoughtSignature" not in second


def test_non_gemini_families_get_no_sentinel() -> None:
    request = inner(chat(*weather_turns(call("c1")), model="gpt-oss-120b-medium"))
    assert "thoughtSignature" not in first_call_part(request)


CLAUDE = "claude-opus-4-6-thinking"


def test_claude_tool_turn_starts_with_the_stored_signed_thinking() -> None:
    stored = {
        "c1": ToolCallSignature(signature="EqSig", thinking="I should call the tool."),
        "c2": ToolCallSignature(signature="EqSig", thinking="I should call the tool."),
    }
    built = build(chat(*weather_turns(call("c1"), call("c2")), model=CLAUDE), signatures=stored)
    parts = built.body["request"]["contents"][1]["parts"]
    assert built.thinking
    assert parts[0] == {"thought": True, "text": "I should call the tool.", "thoughtSignature": "EqSig"}
    assert [next(iter(p)) for p in parts[1:]] == ["functionCall", "functionCall"]
    assert not any("thoughtSignature" in p for p in parts[1:])


@pytest.mark.parametrize(
    "signature, stored",
    [
        (None, {}),
        ("EqFromClient", {}),  # the carrier holds no thinking text, so it cannot be replayed
        (None, {"c1": ToolCallSignature(signature="CiQgemini", thinking=None)}),  # other family
    ],
)
def test_claude_without_stored_thinking_turns_thinking_off(signature: str | None, stored: dict) -> None:
    built = build(chat(*weather_turns(call("c1", signature=signature)), model=CLAUDE), signatures=stored)
    request = built.body["request"]
    assert not built.thinking
    assert "thinkingConfig" not in request["generationConfig"]
    assert not any("thought" in p or "thoughtSignature" in p for p in all_parts(request))


def test_claude_turns_thinking_off_if_any_tool_turn_lacks_thinking() -> None:
    stored = {"c1": ToolCallSignature(signature="EqSig", thinking="First thought.")}
    body = chat(
        *weather_turns(call("c1")),
        assistant(None, call("c2")),
        result("c2"),
        model=CLAUDE,
    )
    built = build(body, signatures=stored)
    assert not built.thinking
    assert not any(p.get("thought") for p in all_parts(built.body["request"]))


def test_claude_without_thinking_sends_no_thought_parts() -> None:
    stored = {"c1": ToolCallSignature(signature="EqSig", thinking="A thought.")}
    request = inner(chat(*weather_turns(call("c1")), model="claude-sonnet-4-6"), signatures=stored)
    assert not any("thought" in p or "thoughtSignature" in p for p in all_parts(request))


def test_replayed_ids_for_gemini_are_the_calls_without_a_carried_signature() -> None:
    req = parse_chat_request(
        chat(*weather_turns(call("c1", signature="CiQ"), call("c2")), model="gemini-pro-agent")
    )
    assert replayed_tool_call_ids(req) == ["c2"]


def test_replayed_ids_for_claude_thinking_are_all_calls() -> None:
    req = parse_chat_request(chat(*weather_turns(call("c1", signature="Eq"), call("c2")), model=CLAUDE))
    assert replayed_tool_call_ids(req) == ["c1", "c2"]


def test_replayed_ids_for_claude_without_thinking_are_none() -> None:
    req = parse_chat_request(chat(*weather_turns(call("c1")), model="claude-sonnet-4-6"))
    assert replayed_tool_call_ids(req) == []


# --- session ----------------------------------------------------------------


def expected_session(first_user_text: str, system: str) -> tuple[str, str]:
    digest = hashlib.sha256((first_user_text + system).encode()).digest()
    return "-" + str(int.from_bytes(digest[:8], "big") & 0x7FFFFFFFFFFFFFFF), digest.hex()


def test_session_id_hashes_first_user_text_and_system() -> None:
    built = build(chat({"role": "system", "content": "Be brief."}, user("Weather in Paris?")))
    session_id, session_key = expected_session("Weather in Paris?", "Be brief.")
    assert built.body["request"]["sessionId"] == session_id
    assert built.session_key == session_key


def test_session_id_is_stable_across_turns_of_one_conversation() -> None:
    first = build(chat(user("Weather in Paris?")))
    later = build(chat(*weather_turns(call("c1")), assistant("22C."), user("And Rome?")))
    other = build(chat(user("Weather in Rome?")))
    assert first.session_key == later.session_key != other.session_key
    assert first.body["request"]["sessionId"] == later.body["request"]["sessionId"]


def test_building_does_not_mutate_the_client_body() -> None:
    body = chat(
        {"role": "system", "content": "s"},
        *weather_turns(call("c1", signature="CiQ")),
        tools=[WEATHER_TOOL],
        response_format={"type": "json_schema", "json_schema": {"schema": {"$defs": {}, "type": "object"}}},
    )
    original = copy.deepcopy(body)
    build(body)
    assert body == original


# --- issue 11: legacy functions, penalties, unsupported outputs, refusals ----------------


def legacy_call(name: str = "get_weather", arguments: str = '{"city": "Paris"}') -> dict:
    return {"role": "assistant", "content": None, "function_call": {"name": name, "arguments": arguments}}


def legacy_result(name: str = "get_weather", content: str = "22C, sunny") -> dict:
    return {"role": "function", "name": name, "content": content}


def test_legacy_functions_become_the_same_declarations_as_tools() -> None:
    legacy = inner(chat(user("hi"), functions=[WEATHER_TOOL["function"]]))
    modern = inner(chat(user("hi"), tools=[WEATHER_TOOL]))
    assert legacy["tools"] == modern["tools"]
    assert legacy["toolConfig"] == modern["toolConfig"]


@pytest.mark.parametrize(
    ("function_call", "config"),
    [
        ("auto", {"mode": "VALIDATED"}),
        ("none", {"mode": "NONE"}),
        ({"name": "get_weather"}, {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}),
    ],
)
def test_legacy_function_call_becomes_the_tool_choice(function_call: object, config: dict) -> None:
    body = chat(user("hi"), functions=[WEATHER_TOOL["function"]], function_call=function_call)
    assert inner(body)["toolConfig"] == {"functionCallingConfig": config}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"functions": [WEATHER_TOOL["function"]], "tools": [WEATHER_TOOL]}, "functions"),
        ({"tools": [WEATHER_TOOL], "tool_choice": "auto", "function_call": "auto"}, "function_call"),
        ({"functions": [WEATHER_TOOL["function"]], "function_call": {"name": "nope"}}, "function_call.name"),
        ({"functions": [WEATHER_TOOL["function"]], "function_call": "required"}, "function_call"),
        ({"functions": [{"description": "no name"}]}, "functions[0].name"),
        ({"functions": {"name": "x"}}, "functions"),
        ({"functions": [WEATHER_TOOL["function"], WEATHER_TOOL["function"]]}, "functions[1].name"),
    ],
)
def test_bad_legacy_functions_are_400s_naming_the_field(fields: dict, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_chat_request(chat(user("hi"), **fields))
    assert caught.value.param == param


def test_legacy_function_turns_become_a_call_and_its_result() -> None:
    body = chat(
        user("Weather in Paris?"),
        legacy_call(),
        legacy_result(),
        functions=[WEATHER_TOOL["function"]],
    )
    call_turn, result_turn = inner(body)["contents"][1:]
    call_part = call_turn["parts"][0]["functionCall"]
    response = result_turn["parts"][0]["functionResponse"]
    assert call_turn["role"] == "model" and result_turn["role"] == "user"
    assert call_part["name"] == response["name"] == "get_weather"
    assert call_part["args"] == {"city": "Paris"}
    assert call_part["id"] == response["id"]
    assert response["response"] == {"output": "22C, sunny"}


def test_legacy_results_answer_the_latest_call_of_that_name() -> None:
    body = chat(
        user("Paris, then Rome"),
        legacy_call(),
        legacy_result(content="22C"),
        legacy_call(arguments='{"city": "Rome"}'),
        legacy_result(content="25C"),
    )
    contents = inner(body)["contents"]
    calls = [p["functionCall"]["id"] for c in contents for p in c["parts"] if "functionCall" in p]
    results = [p["functionResponse"]["id"] for c in contents for p in c["parts"] if "functionResponse" in p]
    assert calls == results and len(set(calls)) == 2


def test_a_legacy_result_may_answer_a_tool_call_by_its_name() -> None:
    contents = inner(chat(user("hi"), assistant(None, call("c1")), legacy_result()))["contents"]
    assert contents[2]["parts"][0]["functionResponse"]["id"] == "c1"


@pytest.mark.parametrize(
    ("message", "param"),
    [
        (legacy_result(name="never_called"), "messages[1].name"),
        ({"role": "function", "content": "x"}, "messages[1].name"),
        ({"role": "assistant", "function_call": "get_weather"}, "messages[1].function_call"),
        ({"role": "assistant", "function_call": {"arguments": "{}"}}, "messages[1].function_call.name"),
    ],
)
def test_bad_legacy_messages_are_400s_naming_the_field(message: dict, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_chat_request(chat(user("hi"), message))
    assert caught.value.param == param


@pytest.mark.parametrize("model", ["gemini-3-flash", "gemini-pro-agent"])
def test_penalties_reach_gemini(model: str) -> None:
    config = generation(chat(user("hi"), model=model, frequency_penalty=0.5, presence_penalty=-1.25))
    assert config["frequencyPenalty"] == 0.5
    assert config["presencePenalty"] == -1.25


@pytest.mark.parametrize("model", ["claude-sonnet-4-6", "claude-opus-4-6-thinking", "gpt-oss-120b-medium"])
def test_penalties_are_not_sent_to_families_without_them(model: str) -> None:
    config = generation(chat(user("hi"), model=model, frequency_penalty=0.5, presence_penalty=0.5))
    assert "frequencyPenalty" not in config and "presencePenalty" not in config


def test_no_penalty_sends_no_penalty_field() -> None:
    config = generation(chat(user("hi")))
    assert "frequencyPenalty" not in config and "presencePenalty" not in config


@pytest.mark.parametrize("param", ["frequency_penalty", "presence_penalty"])
@pytest.mark.parametrize("value", [-2.5, 2.01, "1", True, [1]])
def test_penalties_out_of_range_are_400s(param: str, value: object) -> None:
    with pytest.raises(InvalidRequest, match="between -2 and 2") as caught:
        parse_chat_request(with_fields(**{param: value}))
    assert caught.value.param == param


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 2}, "logprobs"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"modalities": "audio"}, "modalities"),
    ],
)
def test_outputs_the_upstream_cannot_give_are_400s_naming_them(fields: dict, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_chat_request(with_fields(**fields))
    assert caught.value.param == param


@pytest.mark.parametrize(
    "fields", [{"logprobs": False}, {"top_logprobs": 0}, {"modalities": ["text"]}, {"audio": None}]
)
def test_outputs_switched_off_are_accepted(fields: dict) -> None:
    assert parse_chat_request(with_fields(**fields)) == parse_chat_request(VALID)


def test_an_assistant_refusal_stays_in_the_conversation() -> None:
    refused = {"role": "assistant", "content": None, "refusal": "I can't help with that."}
    contents = inner(chat(user("do something bad"), refused, user("ok, something else")))["contents"]
    assert contents[1] == {"role": "model", "parts": [{"text": "I can't help with that."}]}


def test_a_refusal_does_not_duplicate_content_text() -> None:
    message = {"role": "assistant", "content": "Sorry.", "refusal": "Sorry."}
    contents = inner(chat(user("hi"), message, user("ok")))["contents"]
    assert contents[1]["parts"] == [{"text": "Sorry."}]


def test_a_refusal_must_be_a_string() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_chat_request(chat(user("hi"), {"role": "assistant", "refusal": 1}))
    assert caught.value.param == "messages[1].refusal"


# --- issue 11: bounded, linear work per request -----------------------------------


def test_too_many_messages_is_a_400() -> None:
    messages = [user("hi")] * (MAX_MESSAGES + 1)
    with pytest.raises(InvalidRequest, match=str(MAX_MESSAGES)) as caught:
        parse_chat_request(chat(*messages))
    assert caught.value.param == "messages"


@pytest.mark.parametrize("field", ["tools", "functions"])
def test_too_many_tools_is_a_400(field: str) -> None:
    functions = [{"name": f"f{i}"} for i in range(MAX_TOOLS + 1)]
    tools = functions if field == "functions" else [{"type": "function", "function": f} for f in functions]
    with pytest.raises(InvalidRequest, match=str(MAX_TOOLS)) as caught:
        parse_chat_request(chat(user("hi"), **{field: tools}))
    assert caught.value.param == field


def test_the_largest_accepted_request_translates_in_linear_time() -> None:
    # Same-role messages of three parts each merge into one turn. Re-sorting the growing
    # turn on every merge took tens of seconds; appending takes milliseconds.
    parts = [{"type": "text", "text": f"part {i}"} for i in range(3)]
    merged = MAX_MESSAGES - 3
    body = chat(*[user(parts)] * merged, assistant(None, call("c1")), result("c1"), user("more"))
    started = time.perf_counter()
    contents = inner(body)["contents"]
    elapsed = time.perf_counter() - started
    assert [len(turn["parts"]) for turn in contents] == [3 * merged, 1, 2]
    assert "functionResponse" in contents[2]["parts"][0]
    assert elapsed < 2.0, f"{elapsed:.2f}s"


def test_many_tool_names_that_sanitize_alike_stay_distinct() -> None:
    tools = [tool("a" + chr(0x100 + i)) for i in range(MAX_TOOLS)]
    declarations = inner(chat(user("hi"), tools=tools))["tools"][0]["functionDeclarations"]
    assert len({d["name"] for d in declarations}) == MAX_TOOLS


# --- issue 11: client JSON too deep to re-encode -----------------------------------


def nested(depth: int) -> object:
    """``depth`` arrays and objects, one inside the other."""
    value: object = 1
    for level in range(depth):
        value = {"a": value} if level % 2 else [value]
    return value


# Deeper than orjson can encode, so written by hand.
DEEP_ARGUMENTS = '{"a": ' + "[" * 300 + "1" + "]" * 300 + "}"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (
            chat(user("hi"), assistant(None, call("c1", arguments=DEEP_ARGUMENTS)), result("c1")),
            "messages[1].tool_calls[0].function.arguments",
        ),
        (chat(user("hi"), legacy_call(arguments=DEEP_ARGUMENTS)), "messages[1].function_call.arguments"),
        (
            chat(user("hi"), tools=[tool("f", {"type": "object", "enum": [nested(300)]})]),
            "tools[0].function.parameters",
        ),
        (
            chat(user("hi"), functions=[{"name": "f", "parameters": {"default": nested(300)}}]),
            "functions[0].parameters",
        ),
        (
            chat(
                user("hi"),
                response_format={"type": "json_schema", "json_schema": {"schema": {"enum": [nested(300)]}}},
            ),
            "response_format.json_schema.schema",
        ),
    ],
)
def test_client_json_too_deep_to_encode_is_a_400(body: dict, param: str) -> None:
    with pytest.raises(InvalidRequest, match=f"deeper than {MAX_JSON_DEPTH}") as caught:
        parse_chat_request(body)
    assert caught.value.param == param


def test_client_json_at_the_depth_limit_encodes_upstream() -> None:
    arguments = orjson.dumps(nested(MAX_JSON_DEPTH - 1)).decode()
    deep_enum = {
        "type": "object",
        "properties": {"x": {"type": "string", "enum": [nested(MAX_JSON_DEPTH - 8)]}},
    }
    body = chat(
        user("hi"),
        assistant(None, call("c1", arguments=f'{{"a": {arguments}}}')),
        result("c1"),
        tools=[tool("get_weather", deep_enum)],
        response_format={"type": "json_schema", "json_schema": {"schema": deep_enum}},
    )
    orjson.dumps(build(body).body)
