from __future__ import annotations

import copy
import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from antigv.config import DefaultsConfig
from antigv.errors import InvalidRequest
from antigv.translate import models
from antigv.translate.request import (
    SKIP_THOUGHT_SIGNATURE,
    ToolCallSignature,
    UpstreamRequest,
    build_upstream_request,
    parse_chat_request,
    replayed_tool_call_ids,
)

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


def chat(*messages: dict, model: str = "gemini-2.5-flash", **fields: Any) -> dict:
    return {"model": model, "messages": list(messages), **fields}


def build(
    body: dict, signatures: dict[str, ToolCallSignature] | None = None, defaults: DefaultsConfig = DEFAULTS
) -> UpstreamRequest:
    return build_upstream_request(
        parse_chat_request(body),
        project="cogent-snow-4mnnp",
        defaults=defaults,
        request_id="agent-1",
        signatures=signatures or {},
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
    "name, family",
    [
        ("claude-sonnet-4-5-thinking", "claude"),
        ("gemini-3-pro-high", "gemini"),
        ("rev19-uic3-1p", "gemini"),
        ("gpt-oss-120b-medium", "gpt-oss"),
        ("chat_20706", "other"),
    ],
)
def test_model_family(name: str, family: str) -> None:
    assert models.model_family(name) == family


@pytest.mark.parametrize(
    "name, thinks",
    [
        ("claude-sonnet-4-5-thinking", True),
        ("gemini-2.5-flash-thinking", True),
        ("gemini-2.5-pro", True),
        ("gemini-3-pro-low", True),
        ("rev19-uic3-1p", True),
        ("gpt-oss-120b-medium", True),
        ("claude-sonnet-4-5", False),
        ("gemini-2.5-flash", False),
        ("gemini-3-flash", False),
    ],
)
def test_thinking_default_follows_the_name(name: str, thinks: bool) -> None:
    assert models.thinks_by_default(name) is thinks


def test_only_chat_models_are_listed() -> None:
    names = ["gemini-3-pro-high", "chat_20706", "tab_flash_lite_preview", "claude-sonnet-4-5"]
    assert [n for n in names if models.is_chat_model(n)] == ["gemini-3-pro-high", "claude-sonnet-4-5"]


def test_flash_thinking_is_sent_as_flash_with_thinking_on() -> None:
    built = build(chat(user("hi"), model="gemini-2.5-flash-thinking"))
    assert built.model == built.body["model"] == "gemini-2.5-flash"
    assert built.thinking
    assert built.body["request"]["generationConfig"]["thinkingConfig"] == {
        "includeThoughts": True,
        "thinkingBudget": 1024,
    }


def test_other_models_are_sent_unchanged() -> None:
    assert build(chat(user("hi"), model="claude-sonnet-4-5-thinking")).model == "claude-sonnet-4-5-thinking"


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
    assert caught.value.status == 400
    assert caught.value.param == param


@pytest.mark.parametrize("body", [[], "x", None, 3])
def test_body_must_be_an_object(body: object) -> None:
    with pytest.raises(InvalidRequest):
        parse_chat_request(body)


def test_http_image_url_gets_the_documented_message() -> None:
    with pytest.raises(InvalidRequest, match="image URLs are not fetched; send a base64 data URI"):
        parse_chat_request(with_part(image({"url": "https://example.com/cat.png"})))


def test_unknown_top_level_fields_are_ignored() -> None:
    body = with_fields(
        user="u1", presence_penalty=0.5, parallel_tool_calls=False, metadata={"a": "b"}, logprobs=True
    )
    assert parse_chat_request(body) == parse_chat_request(VALID)


def test_null_means_absent_for_optional_fields() -> None:
    optional = "stream stream_options temperature top_p top_k max_tokens stop n seed response_format"
    nulls = dict.fromkeys([*optional.split(), "reasoning_effort", "tool_choice"])
    assert parse_chat_request(with_fields(**nulls)) == parse_chat_request(VALID)


def test_stream_defaults_to_false_and_include_usage_is_read() -> None:
    assert parse_chat_request(VALID).stream is False
    streaming = parse_chat_request(with_fields(stream=True, stream_options={"include_usage": True}))
    assert streaming.stream and streaming.include_usage


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
        assert error.status == 400
    else:
        build_upstream_request(req, project="p", defaults=DEFAULTS, request_id="r")


# --- envelope, system, messages ---------------------------------------------


def test_envelope_matches_protocol() -> None:
    body = build(chat(user("hi"), model="gemini-3-pro-high")).body
    assert {key: value for key, value in body.items() if key != "request"} == {
        "project": "cogent-snow-4mnnp",
        "requestId": "agent-1",
        "model": "gemini-3-pro-high",
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


def test_system_instruction_object_is_sent_even_when_empty() -> None:
    assert inner(chat(user("hi")))["systemInstruction"] == {"role": "user", "parts": [{"text": ""}]}


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


def test_orphan_tool_result_is_dropped() -> None:
    request = inner(chat(user("hi"), assistant("Hello!"), result("never-called"), user("thanks")))
    assert request["contents"] == [
        {"role": "user", "parts": [{"text": "hi"}]},
        {"role": "model", "parts": [{"text": "Hello!"}]},
        {"role": "user", "parts": [{"text": "thanks"}]},
    ]
    assert "functionResponse" not in str(request)


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


def test_claude_conversation_ends_with_a_user_turn() -> None:
    request = inner(chat(user("hi"), assistant("Once upon"), model="claude-sonnet-4-5"))
    assert request["contents"][-1] == {"role": "user", "parts": [{"text": "Continue."}]}


def test_gemini_may_end_on_a_model_turn() -> None:
    assert inner(chat(user("hi"), assistant("Once upon")))["contents"][-1]["role"] == "model"


def test_reasoning_content_is_not_replayed() -> None:
    message = {**assistant("It is sunny."), "reasoning_content": "The user wants weather."}
    request = inner(chat(user("hi"), message, user("thanks"), model="claude-sonnet-4-5-thinking"))
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
        "thinkingConfig": {"includeThoughts": False, "thinkingBudget": 0},
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
    built = build(chat(user("hi"), reasoning_effort=effort, max_tokens=60000))
    assert built.thinking
    config = built.body["request"]["generationConfig"]
    assert config["thinkingConfig"] == {"includeThoughts": True, "thinkingBudget": budget}


def test_reasoning_effort_none_turns_thinking_off() -> None:
    built = build(chat(user("hi"), model="gemini-2.5-flash-thinking", reasoning_effort="none"))
    assert not built.thinking
    assert built.body["request"]["generationConfig"]["thinkingConfig"] == {
        "includeThoughts": False,
        "thinkingBudget": 0,
    }


@pytest.mark.parametrize("model", ["gemini-2.5-pro", "gemini-3-pro-high", "gemini-3-pro-low"])
@pytest.mark.parametrize("effort", [None, "none", "minimal", "low", "medium", "high"])
def test_thinking_only_models_never_get_budget_zero(model: str, effort: str | None) -> None:
    config = generation(chat(user("hi"), model=model, reasoning_effort=effort))
    assert config["thinkingConfig"]["includeThoughts"] is True
    assert config["thinkingConfig"]["thinkingBudget"] >= 1024


@pytest.mark.parametrize("model", ["gemini-3-pro-image", "gemini-2.5-flash-image"])
def test_image_models_get_no_thinking_config(model: str) -> None:
    built = build(chat(user("draw a cat"), model=model, reasoning_effort="high"))
    assert "thinkingConfig" not in built.body["request"]["generationConfig"]
    assert not built.thinking


@pytest.mark.parametrize(
    "max_tokens, effort, expected",
    [
        (100, None, 1024 + 1024),  # thinking eats into maxOutputTokens: leave 1024 for the answer
        (50000, None, 50000),
        (1000, "high", 24576 + 1024),
    ],
)
def test_gemini_output_limit_leaves_room_after_thinking(
    max_tokens: int, effort: str | None, expected: int
) -> None:
    body = chat(user("hi"), model="gemini-3-pro-high", max_tokens=max_tokens, reasoning_effort=effort)
    assert generation(body)["maxOutputTokens"] == expected


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
    body = chat(
        user("hi"), model="claude-sonnet-4-5-thinking", max_tokens=max_tokens, reasoning_effort=effort
    )
    assert generation(body)["maxOutputTokens"] == expected


def test_claude_thinking_forces_temperature_one_without_top_p_or_top_k() -> None:
    config = generation(
        chat(user("hi"), model="claude-opus-4-5-thinking", temperature=0.2, top_p=0.5, top_k=5)
    )
    assert config["temperature"] == 1
    assert "topP" not in config and "topK" not in config


def test_claude_without_thinking_keeps_sampling_and_sends_no_thinking_config() -> None:
    built = build(chat(user("hi"), model="claude-sonnet-4-5", temperature=0.2, top_p=0.5, top_k=5))
    config = built.body["request"]["generationConfig"]
    assert not built.thinking
    assert (config["temperature"], config["topP"], config["topK"]) == (0.2, 0.5, 5)
    assert "thinkingConfig" not in config


def test_reasoning_effort_turns_thinking_on_for_a_plain_claude_model() -> None:
    built = build(chat(user("hi"), model="claude-sonnet-4-5", reasoning_effort="medium"))
    assert built.thinking
    assert built.body["request"]["generationConfig"]["thinkingConfig"]["thinkingBudget"] == 8192


def test_gpt_oss_thinks_by_default() -> None:
    assert build(chat(user("hi"), model="gpt-oss-120b-medium")).thinking


# --- thought signatures -----------------------------------------------------


def first_call_part(request: dict) -> dict:
    return request["contents"][1]["parts"][0]


def test_gemini_follow_up_replays_the_clients_signature() -> None:
    # PROTOCOL A.3: the call came back with extra_content.google.thought_signature.
    request = inner(chat(*weather_turns(call("call_7f3a", signature="CiQB0e2Kb")), model="gemini-3-pro-high"))
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
    request = inner(chat(*weather_turns(call("call_7f3a")), model="gemini-3-pro-high"))
    assert first_call_part(request)["thoughtSignature"] == SKIP_THOUGHT_SIGNATURE


def test_gemini_uses_the_stored_signature_when_the_client_dropped_it() -> None:
    stored = {"call_7f3a": ToolCallSignature(signature="CiQstored", thinking=None)}
    request = inner(chat(*weather_turns(call("call_7f3a")), model="gemini-3-pro-high"), signatures=stored)
    assert first_call_part(request)["thoughtSignature"] == "CiQstored"


def test_gemini_never_gets_a_claude_signature() -> None:
    stored = {"c1": ToolCallSignature(signature="EqClaude", thinking="Let me think.")}
    request = inner(chat(*weather_turns(call("c1")), model="gemini-3-pro-high"), signatures=stored)
    assert first_call_part(request)["thoughtSignature"] == SKIP_THOUGHT_SIGNATURE


def test_sentinel_goes_on_the_first_call_of_a_parallel_turn_only() -> None:
    request = inner(chat(*weather_turns(call("c1"), call("c2")), model="gemini-2.5-flash"))
    first, second = request["contents"][1]["parts"]
    assert first["thoughtSignature"] == SKIP_THOUGHT_SIGNATURE
    assert "thoughtSignature" not in second


def test_non_gemini_families_get_no_sentinel() -> None:
    request = inner(chat(*weather_turns(call("c1")), model="gpt-oss-120b-medium"))
    assert "thoughtSignature" not in first_call_part(request)


CLAUDE = "claude-sonnet-4-5-thinking"


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
    request = inner(chat(*weather_turns(call("c1")), model="claude-sonnet-4-5"), signatures=stored)
    assert not any("thought" in p or "thoughtSignature" in p for p in all_parts(request))


def test_replayed_ids_for_gemini_are_the_calls_without_a_carried_signature() -> None:
    req = parse_chat_request(
        chat(*weather_turns(call("c1", signature="CiQ"), call("c2")), model="gemini-3-pro-high")
    )
    assert replayed_tool_call_ids(req) == ["c2"]


def test_replayed_ids_for_claude_thinking_are_all_calls() -> None:
    req = parse_chat_request(chat(*weather_turns(call("c1", signature="Eq"), call("c2")), model=CLAUDE))
    assert replayed_tool_call_ids(req) == ["c1", "c2"]


def test_replayed_ids_for_claude_without_thinking_are_none() -> None:
    req = parse_chat_request(chat(*weather_turns(call("c1")), model="claude-sonnet-4-5"))
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
