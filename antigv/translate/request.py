"""OpenAI chat-completions request -> Antigravity ``v1internal`` request (PROTOCOL §2, §3).

Two steps: :func:`parse_chat_request` validates the decoded client body into a
:class:`ChatRequest` (every problem is a 400 naming the field), and
:func:`build_upstream_request` turns that into the upstream envelope. Both are pure.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, NoReturn

import orjson

from antigv.config import DefaultsConfig
from antigv.errors import InvalidRequest
from antigv.translate import models
from antigv.translate.schema import MAX_FUNCTION_NAME_LENGTH, sanitize_function_name, sanitize_schema

ResponseFormat = Literal["text", "json_object", "json_schema"]
ToolChoice = Literal["auto", "none", "required"]

_ROLES = ("system", "developer", "user", "assistant", "tool")
_REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high")
_MAX_STOP_SEQUENCES = 5
_INT32 = (-(2**31), 2**31 - 1)

_DATA_URI_HEADER = re.compile(r"data:image/([A-Za-z0-9.+-]+);base64,")
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_IMAGE_MIME_TYPES = {
    "jpeg": "image/jpeg",
    "jpg": "image/jpeg",
    "png": "image/png",
    "gif": "image/gif",
    "webp": "image/webp",
}


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True)
class ImagePart:
    mime_type: str
    data: str  # base64, shape-checked only


ContentPart = TextPart | ImagePart


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str
    # extra_content.google.thought_signature, as emitted on our responses.
    thought_signature: str | None = None


@dataclass(frozen=True)
class Message:
    role: str
    content: tuple[ContentPart, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    @property
    def text(self) -> str:
        return "\n".join(part.text for part in self.content if isinstance(part, TextPart))


@dataclass(frozen=True)
class ToolDefinition:
    name: str
    description: str | None = None
    parameters: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: tuple[Message, ...]
    stream: bool = False
    include_usage: bool = False
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    response_format: ResponseFormat = "text"
    response_schema: Mapping[str, Any] | None = None
    reasoning_effort: str | None = None
    tools: tuple[ToolDefinition, ...] = ()
    tool_choice: ToolChoice = "auto"
    # Set when tool_choice names one function; tool_choice is then "required".
    forced_tool: str | None = None


@dataclass(frozen=True)
class ToolCallSignature:
    """A thought signature remembered server-side for one tool call."""

    signature: str
    # The exact thinking text that preceded the call (Claude); None for Gemini.
    thinking: str | None


@dataclass(frozen=True)
class UpstreamRequest:
    body: dict[str, Any]
    model: str
    thinking: bool
    # Upstream (sanitized) function name -> the client's name.
    tool_names: dict[str, str]
    # Hex sha256 of the conversation's opening; for sticky account routing.
    session_key: str


# ---------------------------------------------------------------------------
# Validation


def _fail(message: str, param: str | None) -> NoReturn:
    raise InvalidRequest(message, param=param)


def _number(value: object, param: str, accept: Callable[[float], bool], expected: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not accept(value):
        _fail(f"{param} must be {expected}", param)
    return value


def _int(value: object, param: str, accept: Callable[[int], bool], expected: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not accept(value):
        _fail(f"{param} must be {expected}", param)
    return value


def _positive_int(value: object, param: str) -> int | None:
    return _int(value, param, lambda v: v > 0, "a positive integer")


def _bool(value: object, param: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        _fail(f"{param} must be a boolean", param)
    return value


def _non_empty_string(value: object, param: str) -> str:
    if not isinstance(value, str) or not value:
        _fail(f"{param} must be a non-empty string", param)
    return value


def _optional_string(value: object, param: str) -> str | None:
    if value is not None and not isinstance(value, str):
        _fail(f"{param} must be a string", param)
    return value


def parse_chat_request(body: object) -> ChatRequest:
    """Validate a decoded chat-completions body. Unknown fields are ignored."""
    if not isinstance(body, dict):
        _fail("the request body must be a JSON object", None)
    model = _non_empty_string(body.get("model"), "model")
    tools = _parse_tools(body.get("tools"))
    tool_choice, forced_tool = _parse_tool_choice(body.get("tool_choice"), tools)
    response_format, response_schema = _parse_response_format(body.get("response_format"))
    max_tokens = _positive_int(body.get("max_tokens"), "max_tokens")
    max_completion_tokens = _positive_int(body.get("max_completion_tokens"), "max_completion_tokens")
    _int(body.get("n"), "n", lambda v: v == 1, "1 (several choices are not supported)")
    return ChatRequest(
        model=model,
        messages=_parse_messages(body.get("messages")),
        stream=_bool(body.get("stream"), "stream"),
        include_usage=_parse_include_usage(body.get("stream_options")),
        temperature=_number(body.get("temperature"), "temperature", lambda v: 0 <= v <= 2, "between 0 and 2"),
        top_p=_number(body.get("top_p"), "top_p", lambda v: 0 < v <= 1, "greater than 0 and at most 1"),
        top_k=_positive_int(body.get("top_k"), "top_k"),
        max_tokens=max_completion_tokens if max_completion_tokens is not None else max_tokens,
        stop=_parse_stop(body.get("stop")),
        seed=_int(body.get("seed"), "seed", lambda v: _INT32[0] <= v <= _INT32[1], "a 32-bit integer"),
        response_format=response_format,
        response_schema=response_schema,
        reasoning_effort=_parse_reasoning_effort(body.get("reasoning_effort")),
        tools=tools,
        tool_choice=tool_choice,
        forced_tool=forced_tool,
    )


def _parse_include_usage(options: object) -> bool:
    if options is None:
        return False
    if not isinstance(options, dict):
        _fail("stream_options must be an object", "stream_options")
    return _bool(options.get("include_usage"), "stream_options.include_usage")


def _parse_stop(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if (
        isinstance(value, list)
        and len(value) <= _MAX_STOP_SEQUENCES
        and all(isinstance(item, str) for item in value)
    ):
        return tuple(value)
    _fail(f"stop must be a string or an array of at most {_MAX_STOP_SEQUENCES} strings", "stop")


def _parse_reasoning_effort(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value not in _REASONING_EFFORTS:
        _fail(f"reasoning_effort must be one of {', '.join(_REASONING_EFFORTS)}", "reasoning_effort")
    return value


def _parse_response_format(value: object) -> tuple[ResponseFormat, Mapping[str, Any] | None]:
    if value is None:
        return "text", None
    if not isinstance(value, dict):
        _fail("response_format must be an object", "response_format")
    kind = value.get("type")
    if kind == "text":
        return "text", None
    if kind == "json_object":
        return "json_object", None
    if kind != "json_schema":
        _fail("response_format.type must be text, json_object or json_schema", "response_format.type")
    spec = value.get("json_schema")
    if not isinstance(spec, dict):
        _fail("response_format.json_schema must be an object", "response_format.json_schema")
    schema = spec.get("schema")
    if not isinstance(schema, dict):
        _fail("response_format.json_schema.schema must be an object", "response_format.json_schema.schema")
    return "json_schema", schema


def _parse_tools(value: object) -> tuple[ToolDefinition, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        _fail("tools must be an array", "tools")
    tools: list[ToolDefinition] = []
    for index, raw in enumerate(value):
        path = f"tools[{index}]"
        if not isinstance(raw, dict):
            _fail(f"{path} must be an object", path)
        if raw.get("type") != "function":
            _fail(f"{path}.type must be 'function'; other tool types are not supported", f"{path}.type")
        function = raw.get("function")
        if not isinstance(function, dict):
            _fail(f"{path}.function must be an object", f"{path}.function")
        name = _non_empty_string(function.get("name"), f"{path}.function.name")
        if any(tool.name == name for tool in tools):
            _fail(f"{path}.function.name repeats the tool name {name!r}", f"{path}.function.name")
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            _fail(f"{path}.function.parameters must be an object", f"{path}.function.parameters")
        description = _optional_string(function.get("description"), f"{path}.function.description")
        tools.append(ToolDefinition(name=name, description=description, parameters=parameters))
    return tuple(tools)


def _parse_tool_choice(value: object, tools: Sequence[ToolDefinition]) -> tuple[ToolChoice, str | None]:
    if value is None:
        return "auto", None
    if value == "none":
        return "none", None
    if value == "auto":
        return "auto", None
    if value == "required":
        if not tools:
            _fail("tool_choice 'required' needs at least one tool in tools", "tool_choice")
        return "required", None
    if isinstance(value, dict) and value.get("type") == "function":
        function = value.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        name = _non_empty_string(name, "tool_choice.function.name")
        if all(tool.name != name for tool in tools):
            _fail(f"tool_choice names {name!r}, which is not among tools", "tool_choice.function.name")
        return "required", name
    _fail(
        "tool_choice must be 'none', 'auto', 'required' or {type: 'function', function: {name}}",
        "tool_choice",
    )


def _parse_messages(value: object) -> tuple[Message, ...]:
    if not isinstance(value, list) or not value:
        _fail("messages must be a non-empty array", "messages")
    return tuple(_parse_message(raw, f"messages[{index}]") for index, raw in enumerate(value))


def _parse_message(raw: object, path: str) -> Message:
    if not isinstance(raw, dict):
        _fail(f"{path} must be an object", path)
    role = raw.get("role")
    if not isinstance(role, str) or role not in _ROLES:
        _fail(f"{path}.role must be one of {', '.join(_ROLES)}", f"{path}.role")
    content = _parse_content(raw.get("content"), f"{path}.content", images_allowed=role == "user")
    if role == "assistant":
        return Message(
            role, content, tool_calls=_parse_tool_calls(raw.get("tool_calls"), f"{path}.tool_calls")
        )
    if role == "tool":
        return Message(
            role, content, tool_call_id=_non_empty_string(raw.get("tool_call_id"), f"{path}.tool_call_id")
        )
    return Message(role, content)


def _parse_content(value: object, path: str, *, images_allowed: bool) -> tuple[ContentPart, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (TextPart(value),)
    if not isinstance(value, list):
        _fail(f"{path} must be a string, an array of content parts or null", path)
    return tuple(_parse_part(raw, f"{path}[{index}]", images_allowed) for index, raw in enumerate(value))


def _parse_part(raw: object, path: str, images_allowed: bool) -> ContentPart:
    if not isinstance(raw, dict):
        _fail(f"{path} must be an object", path)
    kind = raw.get("type")
    if kind == "text":
        text = raw.get("text")
        if not isinstance(text, str):
            _fail(f"{path}.text must be a string", f"{path}.text")
        return TextPart(text)
    if kind == "image_url":
        if not images_allowed:
            _fail(f"{path}: images are only accepted in user messages", f"{path}.type")
        return _parse_image(raw.get("image_url"), f"{path}.image_url")
    _fail(f"{path}.type must be 'text' or 'image_url'", f"{path}.type")


def _parse_image(value: object, path: str) -> ImagePart:
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str):
        _fail(f"{path} must be a data URI string or an object with a url", path)
    if url[:8].lower().startswith(("http://", "https://")):
        _fail("image URLs are not fetched; send a base64 data URI", path)
    header = _DATA_URI_HEADER.match(url)
    if header is None:
        _fail(f"{path} must be a data:image/<type>;base64,<data> URI", path)
    mime_type = _IMAGE_MIME_TYPES.get(header.group(1).lower())
    if mime_type is None:
        _fail(f"image/{header.group(1)} is not supported; send jpeg, png, gif or webp", path)
    data = url[header.end() :]
    if not _looks_like_base64(data):
        _fail(f"{path} does not hold valid base64 data", path)
    return ImagePart(mime_type, data)


def _looks_like_base64(data: str) -> bool:
    """Length, alphabet and padding only: decoding megabytes on every request costs too much."""
    if not data or len(data) % 4 or not data.isascii():
        return False
    encoded = data.encode("ascii")
    # bytes.translate is several times faster than a regex over megabytes.
    padding = encoded.translate(None, _BASE64_ALPHABET)
    return padding in (b"", b"=", b"==") and encoded.endswith(padding)


def _parse_tool_calls(value: object, path: str) -> tuple[ToolCall, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        _fail(f"{path} must be an array", path)
    calls = []
    for index, raw in enumerate(value):
        call_path = f"{path}[{index}]"
        if not isinstance(raw, dict):
            _fail(f"{call_path} must be an object", call_path)
        call_id = _non_empty_string(raw.get("id"), f"{call_path}.id")
        function = raw.get("function")
        if not isinstance(function, dict):
            _fail(f"{call_path}.function must be an object", f"{call_path}.function")
        name = _non_empty_string(function.get("name"), f"{call_path}.function.name")
        arguments = _optional_string(function.get("arguments"), f"{call_path}.function.arguments")
        calls.append(ToolCall(call_id, name, arguments or "", _carried_thought_signature(raw)))
    return tuple(calls)


def _carried_thought_signature(call: dict[str, Any]) -> str | None:
    extra = call.get("extra_content")
    google = extra.get("google") if isinstance(extra, dict) else None
    signature = google.get("thought_signature") if isinstance(google, dict) else None
    return signature if isinstance(signature, str) and signature else None


# ---------------------------------------------------------------------------
# Translation

SKIP_THOUGHT_SIGNATURE = "skip_thought_signature_validator"
DEFAULT_THINKING_BUDGET = 1024
_EFFORT_BUDGETS = {"minimal": 1024, "low": 1024, "medium": 8192, "high": 24576}
# Room left for the visible answer: Claude needs maxOutputTokens > budget, and
# Gemini spends thinking inside maxOutputTokens.
_MIN_ANSWER_TOKENS = 1024
# Claude rejects empty text; Gemini gets the same so both see one conversation.
_EMPTY_USER_TEXT = "."
# Claude refuses a conversation that ends on a model turn (no prefill).
_CONTINUE_TEXT = "Continue."
_NO_SIGNATURES: Mapping[str, ToolCallSignature] = MappingProxyType({})


class _ToolNames:
    """Upstream-safe, collision-free function names, remembered both ways."""

    def __init__(self) -> None:
        self.originals: dict[str, str] = {}
        self._upstream: dict[str, str] = {}

    def upstream(self, original: str) -> str:
        name = self._upstream.get(original)
        if name is None:
            base = name = sanitize_function_name(original)
            suffix = 1
            while name in self.originals:
                suffix += 1
                tail = f"_{suffix}"
                name = base[: MAX_FUNCTION_NAME_LENGTH - len(tail)] + tail
            self._upstream[original] = name
            self.originals[name] = original
        return name


def replayed_tool_call_ids(req: ChatRequest) -> list[str]:
    """Ids of history tool calls whose signature must come from the server-side store.

    Claude needs the signed thinking text, which no client carries back, so every
    call is looked up while thinking is requested; other families only miss the
    calls that came back without ``extra_content``.
    """
    calls = [call for message in req.messages for call in message.tool_calls]
    if models.model_family(req.model) == "claude":
        wanted = calls if _requested_thinking_budget(req) is not None else []
    else:
        wanted = [call for call in calls if call.thought_signature is None]
    return list(dict.fromkeys(call.id for call in wanted))


def build_upstream_request(
    req: ChatRequest,
    *,
    project: str,
    defaults: DefaultsConfig,
    request_id: str,
    signatures: Mapping[str, ToolCallSignature] = _NO_SIGNATURES,
) -> UpstreamRequest:
    """The ``v1internal`` envelope for ``req`` (PROTOCOL §2.1)."""
    upstream_model = models.upstream_model(req.model)
    family = models.model_family(req.model)
    names = _ToolNames()
    declarations = [_declaration(tool, names) for tool in req.tools]
    call_signatures = {} if family == "claude" else _function_call_signatures(req.messages, signatures)
    contents = _contents(req.messages, names, call_signatures)

    budget = _requested_thinking_budget(req)
    if family == "claude":
        if budget is not None and not _start_tool_turns_with_thinking(contents, signatures):
            budget = None
        if contents[-1]["role"] == "model":
            contents.append({"role": "user", "parts": [{"text": _CONTINUE_TEXT}]})
    elif models.requires_thought_signature(req.model):
        _sign_first_function_calls(contents)

    system_text = _system_text(req.messages, defaults)
    first_user_text = next((m.text for m in req.messages if m.role == "user"), "")
    digest = hashlib.sha256((first_user_text + system_text).encode("utf-8", "surrogatepass")).digest()

    request: dict[str, Any] = {
        "contents": contents,
        "systemInstruction": {"role": "user", "parts": [{"text": system_text}]},
    }
    if declarations:
        request["tools"] = [{"functionDeclarations": declarations}]
        request["toolConfig"] = {"functionCallingConfig": _function_calling_config(req, names)}
    request["generationConfig"] = _generation_config(req, defaults, budget)
    request["sessionId"] = "-" + str(int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF)

    body = {
        "project": project,
        "requestId": request_id,
        "request": request,
        "model": upstream_model,
        "userAgent": "antigravity",
        "requestType": "agent",
    }
    return UpstreamRequest(
        body=body,
        model=upstream_model,
        thinking=budget is not None,
        tool_names=names.originals,
        session_key=digest.hex(),
    )


def _requested_thinking_budget(req: ChatRequest) -> int | None:
    """The budget the model and ``reasoning_effort`` ask for; None means thinking off."""
    if not models.accepts_thinking_config(req.model):
        return None
    effort = req.reasoning_effort
    if effort is None:
        return DEFAULT_THINKING_BUDGET if models.thinks_by_default(req.model) else None
    if effort == "none":
        return _EFFORT_BUDGETS["minimal"] if models.is_thinking_only(req.model) else None
    return _EFFORT_BUDGETS[effort]


def _system_text(messages: Sequence[Message], defaults: DefaultsConfig) -> str:
    texts = [m.text for m in messages if m.role in ("system", "developer")]
    return "\n\n".join(texts) if texts else defaults.system_instruction


def _declaration(tool: ToolDefinition, names: _ToolNames) -> dict[str, Any]:
    declaration: dict[str, Any] = {"name": names.upstream(tool.name)}
    if tool.description is not None:
        declaration["description"] = tool.description
    declaration["parameters"] = sanitize_schema(tool.parameters)
    return declaration


def _function_calling_config(req: ChatRequest, names: _ToolNames) -> dict[str, Any]:
    if req.forced_tool is not None:
        return {"mode": "ANY", "allowedFunctionNames": [names.upstream(req.forced_tool)]}
    return {"mode": {"auto": "VALIDATED", "none": "NONE", "required": "ANY"}[req.tool_choice]}


def _function_call_signatures(
    messages: Sequence[Message], stored: Mapping[str, ToolCallSignature]
) -> dict[str, str]:
    """Signatures for non-Claude function-call parts: the client's copy, else the store's."""
    found: dict[str, str] = {}
    for call in (call for message in messages for call in message.tool_calls):
        if call.thought_signature is not None:
            found[call.id] = call.thought_signature
        else:
            entry = stored.get(call.id)
            # An entry with thinking text is a Claude signature, which other families reject.
            if entry is not None and entry.thinking is None:
                found[call.id] = entry.signature
    return found


def _contents(
    messages: Sequence[Message], names: _ToolNames, call_signatures: Mapping[str, str]
) -> list[dict[str, Any]]:
    call_names = {call.id: call.name for message in messages for call in message.tool_calls}
    contents: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "user":
            _append(contents, "user", _user_parts(message))
        elif message.role == "assistant":
            parts = _model_parts(message, names, call_signatures)
            if parts:
                _append(contents, "model", parts)
        elif message.role == "tool" and message.tool_call_id in call_names:
            response = {
                "id": message.tool_call_id,
                "name": names.upstream(call_names[message.tool_call_id]),
                "response": {"output": message.text},
            }
            _append(contents, "user", [{"functionResponse": response}])
    # Both families want the conversation to open with a user turn.
    if not contents or contents[0]["role"] == "model":
        contents.insert(0, {"role": "user", "parts": [{"text": _EMPTY_USER_TEXT}]})
    return contents


def _append(contents: list[dict[str, Any]], role: str, parts: list[dict[str, Any]]) -> None:
    """Add a turn, merging into the previous one of the same role so roles alternate."""
    if contents and contents[-1]["role"] == role:
        # Tool results must directly follow the call turn, ahead of any user text.
        merged = contents[-1]["parts"] + parts
        contents[-1]["parts"] = sorted(merged, key=lambda part: "functionResponse" not in part)
    else:
        contents.append({"role": role, "parts": parts})


def _user_parts(message: Message) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for part in message.content:
        if isinstance(part, ImagePart):
            parts.append({"inlineData": {"mimeType": part.mime_type, "data": part.data}})
        elif part.text.strip():
            parts.append({"text": part.text})
    return parts or [{"text": _EMPTY_USER_TEXT}]


def _model_parts(
    message: Message, names: _ToolNames, call_signatures: Mapping[str, str]
) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [
        {"text": part.text} for part in message.content if isinstance(part, TextPart) and part.text.strip()
    ]
    for call in message.tool_calls:
        function_call = {"id": call.id, "name": names.upstream(call.name), "args": _arguments(call.arguments)}
        part: dict[str, Any] = {"functionCall": function_call}
        if call.id in call_signatures:
            part["thoughtSignature"] = call_signatures[call.id]
        parts.append(part)
    return parts


def _arguments(text: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _sign_first_function_calls(contents: list[dict[str, Any]]) -> None:
    for content in contents:
        first_call = next((part for part in content["parts"] if "functionCall" in part), None)
        if first_call is not None:
            first_call.setdefault("thoughtSignature", SKIP_THOUGHT_SIGNATURE)


def _start_tool_turns_with_thinking(
    contents: list[dict[str, Any]], stored: Mapping[str, ToolCallSignature]
) -> bool:
    """Open each replayed tool-call turn with its signed thinking, as Claude demands.

    Returns False, changing nothing, when any such turn has no stored Claude
    signature; the caller must then switch thinking off.
    """
    turns = []
    for content in contents:
        call_ids = [part["functionCall"]["id"] for part in content["parts"] if "functionCall" in part]
        if not call_ids:
            continue
        entry = next(
            (
                entry
                for entry in map(stored.get, call_ids)
                if entry is not None and entry.thinking is not None
            ),
            None,
        )
        if entry is None:
            return False
        turns.append((content, entry))
    for content, entry in turns:
        content["parts"].insert(
            0, {"thought": True, "text": entry.thinking, "thoughtSignature": entry.signature}
        )
    return True


def _generation_config(req: ChatRequest, defaults: DefaultsConfig, budget: int | None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "temperature": defaults.temperature if req.temperature is None else req.temperature,
        "topP": defaults.top_p if req.top_p is None else req.top_p,
        "topK": defaults.top_k if req.top_k is None else req.top_k,
        "maxOutputTokens": defaults.max_tokens if req.max_tokens is None else req.max_tokens,
        "candidateCount": 1,
    }
    if req.stop:
        config["stopSequences"] = list(req.stop)
    if req.seed is not None:
        config["seed"] = req.seed
    if req.response_format != "text":
        config["responseMimeType"] = "application/json"
    if req.response_schema is not None:
        config["responseSchema"] = sanitize_schema(req.response_schema)
    _apply_thinking(config, req.model, budget)
    return config


def _apply_thinking(config: dict[str, Any], model: str, budget: int | None) -> None:
    claude = models.model_family(model) == "claude"
    if budget is None:
        # Gemini 2.5 Flash thinks unless told not to; Claude is off without a config.
        if not claude and models.accepts_thinking_config(model):
            config["thinkingConfig"] = {"includeThoughts": False, "thinkingBudget": 0}
        return
    config["thinkingConfig"] = {"includeThoughts": True, "thinkingBudget": budget}
    requested = config["maxOutputTokens"]
    if claude:
        if requested <= budget:
            config["maxOutputTokens"] = budget + max(_MIN_ANSWER_TOKENS, requested)
        # Anthropic allows only temperature 1 and no top_p/top_k while thinking.
        config["temperature"] = 1
        del config["topP"], config["topK"]
    else:
        config["maxOutputTokens"] = max(requested, budget + _MIN_ANSWER_TOKENS)
