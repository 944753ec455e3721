"""OpenAI chat-completions request -> the core's :class:`ChatRequest` (SPEC §3).

:func:`parse_chat_request` validates the decoded client body (every problem is a 400
naming the field) and says what it asks in the core's terms. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, cast

import orjson

from antigv.core.conversation import (
    ChatRequest,
    Effort,
    Generation,
    Image,
    Text,
    ThinkingRequest,
    Tool,
    ToolChoice,
    ToolResult,
    ToolUse,
    Turn,
)
from antigv.protocols.validate import (
    IMAGE_MIME_TYPES,
    MAX_JSON_DEPTH,
    MAX_MESSAGES,
    MAX_STOP_SEQUENCES,
    MAX_TOOLS,
    boolean,
    check_depth,
    fail,
    integer,
    looks_like_base64,
    named_tool,
    non_empty_string,
    number,
    optional_string,
    positive_int,
)

# "function" is the legacy (pre-tools) spelling of a tool result.
_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high")
_INT32 = (-(2**31), 2**31 - 1)
# Legacy function_call ids: the legacy API had none, tool results name the function.
_LEGACY_CALL_ID = "call_legacy_{index}"

_DATA_URI_HEADER = re.compile(r"data:image/([A-Za-z0-9.+-]+);base64,")


def parse_chat_request(body: object) -> ChatRequest:
    """Validate a decoded chat-completions body. Unknown fields are ignored."""
    if not isinstance(body, dict):
        fail("the request body must be a JSON object", None)
    model = non_empty_string(body.get("model"), "model")
    _reject_unsupported_outputs(body)
    tools = _parse_any_tools(body)
    tool_choice = _parse_any_tool_choice(body, tools)
    json_output, response_schema = _parse_response_format(body.get("response_format"))
    max_tokens = positive_int(body.get("max_tokens"), "max_tokens")
    max_completion_tokens = positive_int(body.get("max_completion_tokens"), "max_completion_tokens")
    integer(body.get("n"), "n", lambda v: v == 1, "1 (several choices are not supported)")
    # Fields are checked in this order, so a body with several faults names the same one as before.
    system, turns = _parse_messages(body.get("messages"))
    stream = boolean(body.get("stream"), "stream")
    include_usage(body)
    temperature = number(body.get("temperature"), "temperature", lambda v: 0 <= v <= 2, "between 0 and 2")
    top_p = number(body.get("top_p"), "top_p", lambda v: 0 < v <= 1, "greater than 0 and at most 1")
    top_k = positive_int(body.get("top_k"), "top_k")
    stop = _parse_stop(body.get("stop"))
    seed = integer(body.get("seed"), "seed", lambda v: _INT32[0] <= v <= _INT32[1], "a 32-bit integer")
    effort = _parse_reasoning_effort(body.get("reasoning_effort"))
    generation = Generation(
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        max_tokens=max_completion_tokens if max_completion_tokens is not None else max_tokens,
        stop=stop,
        seed=seed,
        frequency_penalty=_penalty(body.get("frequency_penalty"), "frequency_penalty"),
        presence_penalty=_penalty(body.get("presence_penalty"), "presence_penalty"),
        json_output=json_output,
        response_schema=response_schema,
        thinking=ThinkingRequest(effort=effort),
    )
    return ChatRequest(
        model=model,
        turns=turns,
        system=system,
        tools=tools,
        tool_choice=tool_choice,
        generation=generation,
        stream=stream,
    )


def include_usage(body: dict[str, Any]) -> bool:
    """``stream_options.include_usage``: whether a stream ends with a usage chunk."""
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        fail("stream_options must be an object", "stream_options")
    return boolean(options.get("include_usage"), "stream_options.include_usage")


def _penalty(value: object, param: str) -> float | None:
    return number(value, param, lambda v: -2 <= v <= 2, "between -2 and 2")


def _reject_unsupported_outputs(body: dict[str, Any]) -> None:
    """Outputs the upstream cannot produce: a clear 400 rather than a reply without them."""
    for param in ("logprobs", "top_logprobs"):
        # false, 0 and null ask for nothing.
        if body.get(param):
            fail(f"{param} is not supported: the upstream returns no token log probabilities", param)
    if body.get("audio") is not None:
        fail("audio output is not supported; only text is returned", "audio")
    modalities = body.get("modalities")
    if modalities is None:
        return
    if not isinstance(modalities, list) or not all(isinstance(item, str) for item in modalities):
        fail("modalities must be an array of strings", "modalities")
    if "audio" in modalities:
        fail("audio output is not supported; only text is returned", "modalities")


def _check_arguments_depth(arguments: str, param: str) -> None:
    # Cheap filter first: a string with few brackets cannot nest deeply.
    if arguments.count("[") + arguments.count("{") <= MAX_JSON_DEPTH:
        return
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return  # unparsable arguments are sent as {} (PROTOCOL §3.1)
    check_depth(value, param)


def _parse_stop(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if (
        isinstance(value, list)
        and len(value) <= MAX_STOP_SEQUENCES
        and all(isinstance(item, str) for item in value)
    ):
        return tuple(value)
    fail(f"stop must be a string or an array of at most {MAX_STOP_SEQUENCES} strings", "stop")


def _parse_reasoning_effort(value: object) -> Effort | None:
    if value is None:
        return None
    if not isinstance(value, str) or value not in _REASONING_EFFORTS:
        fail(f"reasoning_effort must be one of {', '.join(_REASONING_EFFORTS)}", "reasoning_effort")
    return cast(Effort, value)


def _parse_response_format(value: object) -> tuple[bool, Mapping[str, Any] | None]:
    """(JSON output, its schema) from ``response_format``."""
    if value is None:
        return False, None
    if not isinstance(value, dict):
        fail("response_format must be an object", "response_format")
    kind = value.get("type")
    if kind == "text":
        return False, None
    if kind == "json_object":
        return True, None
    if kind != "json_schema":
        fail("response_format.type must be text, json_object or json_schema", "response_format.type")
    spec = value.get("json_schema")
    if not isinstance(spec, dict):
        fail("response_format.json_schema must be an object", "response_format.json_schema")
    schema = spec.get("schema")
    if not isinstance(schema, dict):
        fail("response_format.json_schema.schema must be an object", "response_format.json_schema.schema")
    check_depth(schema, "response_format.json_schema.schema")
    return True, schema


def _parse_any_tools(body: dict[str, Any]) -> tuple[Tool, ...]:
    """``tools``, or the legacy ``functions`` (the same definitions without the wrapper)."""
    functions = body.get("functions")
    if functions is None:
        return _parse_tools(body.get("tools"), "tools", legacy=False)
    if body.get("tools") is not None:
        fail("send tools or the legacy functions, not both", "functions")
    return _parse_tools(functions, "functions", legacy=True)


def _parse_tools(value: object, param: str, *, legacy: bool) -> tuple[Tool, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        fail(f"{param} must be an array", param)
    if len(value) > MAX_TOOLS:
        fail(f"{param} may hold at most {MAX_TOOLS} functions", param)
    tools: list[Tool] = []
    seen: set[str] = set()
    for index, raw in enumerate(value):
        path = f"{param}[{index}]"
        if not isinstance(raw, dict):
            fail(f"{path} must be an object", path)
        if legacy:
            function, function_path = raw, path
        else:
            if raw.get("type") != "function":
                fail(f"{path}.type must be 'function'; other tool types are not supported", f"{path}.type")
            function, function_path = raw.get("function"), f"{path}.function"
            if not isinstance(function, dict):
                fail(f"{function_path} must be an object", function_path)
        tool = _parse_function(function, function_path)
        if tool.name in seen:
            fail(f"{function_path}.name repeats the tool name {tool.name!r}", f"{function_path}.name")
        seen.add(tool.name)
        tools.append(tool)
    return tuple(tools)


def _parse_function(function: dict[str, Any], path: str) -> Tool:
    name = non_empty_string(function.get("name"), f"{path}.name")
    parameters = function.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        fail(f"{path}.parameters must be an object", f"{path}.parameters")
    check_depth(parameters, f"{path}.parameters")
    description = optional_string(function.get("description"), f"{path}.description")
    return Tool(name=name, description=description, parameters=parameters)


def _parse_any_tool_choice(body: dict[str, Any], tools: Sequence[Tool]) -> ToolChoice:
    """``tool_choice``, or the legacy ``function_call`` ("none", "auto" or ``{name}``)."""
    function_call = body.get("function_call")
    if function_call is None:
        return _parse_tool_choice(body.get("tool_choice"), tools)
    if body.get("tool_choice") is not None:
        fail("send tool_choice or the legacy function_call, not both", "function_call")
    if function_call in ("none", "auto"):
        return _parse_tool_choice(function_call, tools)
    if not isinstance(function_call, dict):
        fail("function_call must be 'none', 'auto' or {name}", "function_call")
    name = non_empty_string(function_call.get("name"), "function_call.name")
    return ToolChoice("any", named_tool(name, tools, "function_call.name"))


def _parse_tool_choice(value: object, tools: Sequence[Tool]) -> ToolChoice:
    if value is None or value == "auto":
        return ToolChoice("auto")
    if value == "none":
        return ToolChoice("none")
    if value == "required":
        if not tools:
            fail("tool_choice 'required' needs at least one tool in tools", "tool_choice")
        return ToolChoice("any")
    if isinstance(value, dict) and value.get("type") == "function":
        function = value.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        name = non_empty_string(name, "tool_choice.function.name")
        return ToolChoice("any", named_tool(name, tools, "tool_choice.function.name"))
    fail(
        "tool_choice must be 'none', 'auto', 'required' or {type: 'function', function: {name}}",
        "tool_choice",
    )


def _parse_messages(value: object) -> tuple[tuple[str, ...], tuple[Turn, ...]]:
    """(system texts, turns): system and developer messages instruct, the others converse."""
    if not isinstance(value, list) or not value:
        fail("messages must be a non-empty array", "messages")
    if len(value) > MAX_MESSAGES:
        fail(f"messages may hold at most {MAX_MESSAGES} messages", "messages")
    # Tool calls of earlier assistant messages: every tool result must answer one.
    call_ids: set[str] = set()
    # Function name -> id of its latest call, for legacy results, which carry only the name.
    latest_calls: dict[str, str] = {}
    system: list[str] = []
    turns: list[Turn] = []
    for index, raw in enumerate(value):
        message = _parse_message(raw, f"messages[{index}]", index, latest_calls)
        if isinstance(message, str):
            system.append(message)
            continue
        for part in message.parts:
            if isinstance(part, ToolResult) and part.tool_use_id not in call_ids:
                param = f"messages[{index}].tool_call_id"
                fail(f"{param} matches no tool call of an earlier assistant message", param)
        for call in message.tool_uses:
            call_ids.add(call.id)
            latest_calls[call.name] = call.id
        turns.append(message)
    return tuple(system), tuple(turns)


def _parse_message(raw: object, path: str, index: int, latest_calls: Mapping[str, str]) -> Turn | str:
    """A turn, or the text of a system message."""
    if not isinstance(raw, dict):
        fail(f"{path} must be an object", path)
    role = raw.get("role")
    if not isinstance(role, str) or role not in _ROLES:
        fail(f"{path}.role must be one of {', '.join(_ROLES)}", f"{path}.role")
    content = _parse_content(raw.get("content"), f"{path}.content", images_allowed=role == "user")
    if role in ("system", "developer"):
        return "\n".join(part.text for part in content if isinstance(part, Text))
    if role == "assistant":
        refusal = optional_string(raw.get("refusal"), f"{path}.refusal")
        if refusal and not any(isinstance(part, Text) and part.text.strip() for part in content):
            # A refused turn keeps its words: the model should see what it said.
            content = (*content, Text(refusal))
        tool_calls = _parse_tool_calls(raw.get("tool_calls"), f"{path}.tool_calls")
        legacy_call = _parse_legacy_function_call(raw.get("function_call"), f"{path}.function_call", index)
        if legacy_call is not None:
            tool_calls = (*tool_calls, legacy_call)
        return Turn("assistant", (*content, *tool_calls))
    if role == "tool":
        call_id = non_empty_string(raw.get("tool_call_id"), f"{path}.tool_call_id")
        return Turn("user", (ToolResult(call_id, content),))
    if role == "function":
        name = non_empty_string(raw.get("name"), f"{path}.name")
        if name not in latest_calls:
            fail(f"{path}.name matches no function call of an earlier assistant message", f"{path}.name")
        return Turn("user", (ToolResult(latest_calls[name], content),))
    return Turn("user", content)


def _parse_legacy_function_call(value: object, path: str, index: int) -> ToolUse | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        fail(f"{path} must be an object", path)
    name = non_empty_string(value.get("name"), f"{path}.name")
    arguments = optional_string(value.get("arguments"), f"{path}.arguments") or ""
    _check_arguments_depth(arguments, f"{path}.arguments")
    return ToolUse(_LEGACY_CALL_ID.format(index=index), name, _arguments(arguments))


def _parse_content(value: object, path: str, *, images_allowed: bool) -> tuple[Text | Image, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (Text(value),)
    if not isinstance(value, list):
        fail(f"{path} must be a string, an array of content parts or null", path)
    return tuple(_parse_part(raw, f"{path}[{index}]", images_allowed) for index, raw in enumerate(value))


def _parse_part(raw: object, path: str, images_allowed: bool) -> Text | Image:
    if not isinstance(raw, dict):
        fail(f"{path} must be an object", path)
    kind = raw.get("type")
    if kind == "text":
        text = raw.get("text")
        if not isinstance(text, str):
            fail(f"{path}.text must be a string", f"{path}.text")
        return Text(text)
    if kind == "image_url":
        if not images_allowed:
            fail(f"{path}: images are only accepted in user messages", f"{path}.type")
        return _parse_image(raw.get("image_url"), f"{path}.image_url")
    fail(f"{path}.type must be 'text' or 'image_url'", f"{path}.type")


def _parse_image(value: object, path: str) -> Image:
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str):
        fail(f"{path} must be a data URI string or an object with a url", path)
    if url[:8].lower().startswith(("http://", "https://")):
        fail("image URLs are not fetched; send a base64 data URI", path)
    header = _DATA_URI_HEADER.match(url)
    if header is None:
        fail(f"{path} must be a data:image/<type>;base64,<data> URI", path)
    mime_type = IMAGE_MIME_TYPES.get(header.group(1).lower())
    if mime_type is None:
        fail(f"image/{header.group(1)} is not supported; send jpeg, png, gif or webp", path)
    data = url[header.end() :]
    if not looks_like_base64(data):
        fail(f"{path} does not hold valid base64 data", path)
    return Image(mime_type, data)


def _parse_tool_calls(value: object, path: str) -> tuple[ToolUse, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        fail(f"{path} must be an array", path)
    calls = []
    for index, raw in enumerate(value):
        call_path = f"{path}[{index}]"
        if not isinstance(raw, dict):
            fail(f"{call_path} must be an object", call_path)
        call_id = non_empty_string(raw.get("id"), f"{call_path}.id")
        function = raw.get("function")
        if not isinstance(function, dict):
            fail(f"{call_path}.function must be an object", f"{call_path}.function")
        name = non_empty_string(function.get("name"), f"{call_path}.function.name")
        arguments = optional_string(function.get("arguments"), f"{call_path}.function.arguments")
        _check_arguments_depth(arguments or "", f"{call_path}.function.arguments")
        calls.append(ToolUse(call_id, name, _arguments(arguments or ""), _carried_thought_signature(raw)))
    return tuple(calls)


def _carried_thought_signature(call: dict[str, Any]) -> str | None:
    extra = call.get("extra_content")
    google = extra.get("google") if isinstance(extra, dict) else None
    signature = google.get("thought_signature") if isinstance(google, dict) else None
    return signature if isinstance(signature, str) and signature else None


def _arguments(text: str) -> dict[str, Any]:
    """The call's arguments as an object; unparsable ones are sent as {} (PROTOCOL §3.1)."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
