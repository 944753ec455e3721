"""OpenAI chat-completions request -> Antigravity ``v1internal`` request (PROTOCOL §2, §3).

Two steps: :func:`parse_chat_request` validates the decoded client body into a
:class:`ChatRequest` (every problem is a 400 naming the field), and
:func:`build_upstream_request` turns that into the upstream envelope. Both are pure.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, NoReturn

import orjson

from antigv.backends.antigravity import models
from antigv.backends.google.schema import MAX_FUNCTION_NAME_LENGTH, sanitize_function_name, sanitize_schema
from antigv.config import DefaultsConfig
from antigv.core.errors import InvalidRequest
from antigv.gateway.catalogue import ModelInfo

ResponseFormat = Literal["text", "json_object", "json_schema"]
ToolChoice = Literal["auto", "none", "required"]

# "function" is the legacy (pre-tools) spelling of a tool result.
_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high")
_MAX_STOP_SEQUENCES = 5
_INT32 = (-(2**31), 2**31 - 1)
# Bounds on the work one request may cause (issue 11 #12): far above any real
# conversation, low enough that translating the largest accepted body takes milliseconds.
MAX_MESSAGES = 10_000
MAX_TOOLS = 512
# Client JSON that is re-encoded upstream (tool-call arguments, tool and response
# schemas) may nest this deep: orjson refuses to encode past 255 levels and the
# upstream envelope wraps such values in about ten more.
MAX_JSON_DEPTH = 128
# Legacy function_call ids: the legacy API had none, tool results name the function.
_LEGACY_CALL_ID = "call_legacy_{index}"

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
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
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
    # Upstream names of tools given the placeholder argument (dropped from their calls).
    placeholder_tools: frozenset[str] = frozenset()


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
    _reject_unsupported_outputs(body)
    tools = _parse_any_tools(body)
    tool_choice, forced_tool = _parse_any_tool_choice(body, tools)
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
        frequency_penalty=_penalty(body.get("frequency_penalty"), "frequency_penalty"),
        presence_penalty=_penalty(body.get("presence_penalty"), "presence_penalty"),
        tools=tools,
        tool_choice=tool_choice,
        forced_tool=forced_tool,
    )


def _penalty(value: object, param: str) -> float | None:
    return _number(value, param, lambda v: -2 <= v <= 2, "between -2 and 2")


def _reject_unsupported_outputs(body: dict[str, Any]) -> None:
    """Outputs the upstream cannot produce: a clear 400 rather than a reply without them."""
    for param in ("logprobs", "top_logprobs"):
        # false, 0 and null ask for nothing.
        if body.get(param):
            _fail(f"{param} is not supported: the upstream returns no token log probabilities", param)
    if body.get("audio") is not None:
        _fail("audio output is not supported; only text is returned", "audio")
    modalities = body.get("modalities")
    if modalities is None:
        return
    if not isinstance(modalities, list) or not all(isinstance(item, str) for item in modalities):
        _fail("modalities must be an array of strings", "modalities")
    if "audio" in modalities:
        _fail("audio output is not supported; only text is returned", "modalities")


def _too_deep(value: object) -> bool:
    """Whether ``value`` nests more than MAX_JSON_DEPTH arrays/objects (iterative: no recursion limit)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > MAX_JSON_DEPTH:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _check_depth(value: object, param: str) -> None:
    if _too_deep(value):
        _fail(f"{param} nests deeper than {MAX_JSON_DEPTH} levels", param)


def _check_arguments_depth(arguments: str, param: str) -> None:
    # Cheap filter first: a string with few brackets cannot nest deeply.
    if arguments.count("[") + arguments.count("{") <= MAX_JSON_DEPTH:
        return
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return  # unparsable arguments are sent as {} (PROTOCOL §3.1)
    _check_depth(value, param)


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
    _check_depth(schema, "response_format.json_schema.schema")
    return "json_schema", schema


def _parse_any_tools(body: dict[str, Any]) -> tuple[ToolDefinition, ...]:
    """``tools``, or the legacy ``functions`` (the same definitions without the wrapper)."""
    functions = body.get("functions")
    if functions is None:
        return _parse_tools(body.get("tools"), "tools", legacy=False)
    if body.get("tools") is not None:
        _fail("send tools or the legacy functions, not both", "functions")
    return _parse_tools(functions, "functions", legacy=True)


def _parse_tools(value: object, param: str, *, legacy: bool) -> tuple[ToolDefinition, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        _fail(f"{param} must be an array", param)
    if len(value) > MAX_TOOLS:
        _fail(f"{param} may hold at most {MAX_TOOLS} functions", param)
    tools: list[ToolDefinition] = []
    seen: set[str] = set()
    for index, raw in enumerate(value):
        path = f"{param}[{index}]"
        if not isinstance(raw, dict):
            _fail(f"{path} must be an object", path)
        if legacy:
            function, function_path = raw, path
        else:
            if raw.get("type") != "function":
                _fail(f"{path}.type must be 'function'; other tool types are not supported", f"{path}.type")
            function, function_path = raw.get("function"), f"{path}.function"
            if not isinstance(function, dict):
                _fail(f"{function_path} must be an object", function_path)
        tool = _parse_function(function, function_path)
        if tool.name in seen:
            _fail(f"{function_path}.name repeats the tool name {tool.name!r}", f"{function_path}.name")
        seen.add(tool.name)
        tools.append(tool)
    return tuple(tools)


def _parse_function(function: dict[str, Any], path: str) -> ToolDefinition:
    name = _non_empty_string(function.get("name"), f"{path}.name")
    parameters = function.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        _fail(f"{path}.parameters must be an object", f"{path}.parameters")
    _check_depth(parameters, f"{path}.parameters")
    description = _optional_string(function.get("description"), f"{path}.description")
    return ToolDefinition(name=name, description=description, parameters=parameters)


def _parse_any_tool_choice(
    body: dict[str, Any], tools: Sequence[ToolDefinition]
) -> tuple[ToolChoice, str | None]:
    """``tool_choice``, or the legacy ``function_call`` ("none", "auto" or ``{name}``)."""
    function_call = body.get("function_call")
    if function_call is None:
        return _parse_tool_choice(body.get("tool_choice"), tools)
    if body.get("tool_choice") is not None:
        _fail("send tool_choice or the legacy function_call, not both", "function_call")
    if function_call in ("none", "auto"):
        return _parse_tool_choice(function_call, tools)
    if not isinstance(function_call, dict):
        _fail("function_call must be 'none', 'auto' or {name}", "function_call")
    name = _non_empty_string(function_call.get("name"), "function_call.name")
    return "required", _named_tool(name, tools, "function_call.name")


def _named_tool(name: str, tools: Sequence[ToolDefinition], param: str) -> str:
    if all(tool.name != name for tool in tools):
        _fail(f"{param.split('.')[0]} names {name!r}, which is not among the tools", param)
    return name


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
        return "required", _named_tool(name, tools, "tool_choice.function.name")
    _fail(
        "tool_choice must be 'none', 'auto', 'required' or {type: 'function', function: {name}}",
        "tool_choice",
    )


def _parse_messages(value: object) -> tuple[Message, ...]:
    if not isinstance(value, list) or not value:
        _fail("messages must be a non-empty array", "messages")
    if len(value) > MAX_MESSAGES:
        _fail(f"messages may hold at most {MAX_MESSAGES} messages", "messages")
    # Tool calls of earlier assistant messages: every tool result must answer one.
    call_ids: set[str] = set()
    # Function name -> id of its latest call, for legacy results, which carry only the name.
    latest_calls: dict[str, str] = {}
    messages = []
    for index, raw in enumerate(value):
        message = _parse_message(raw, f"messages[{index}]", index, latest_calls)
        if message.role == "tool" and message.tool_call_id not in call_ids:
            param = f"messages[{index}].tool_call_id"
            _fail(f"{param} matches no tool call of an earlier assistant message", param)
        for call in message.tool_calls:
            call_ids.add(call.id)
            latest_calls[call.name] = call.id
        messages.append(message)
    return tuple(messages)


def _parse_message(raw: object, path: str, index: int, latest_calls: Mapping[str, str]) -> Message:
    if not isinstance(raw, dict):
        _fail(f"{path} must be an object", path)
    role = raw.get("role")
    if not isinstance(role, str) or role not in _ROLES:
        _fail(f"{path}.role must be one of {', '.join(_ROLES)}", f"{path}.role")
    content = _parse_content(raw.get("content"), f"{path}.content", images_allowed=role == "user")
    if role == "assistant":
        refusal = _optional_string(raw.get("refusal"), f"{path}.refusal")
        if refusal and not any(isinstance(part, TextPart) and part.text.strip() for part in content):
            # A refused turn keeps its words: the model should see what it said.
            content = (*content, TextPart(refusal))
        tool_calls = _parse_tool_calls(raw.get("tool_calls"), f"{path}.tool_calls")
        legacy_call = _parse_legacy_function_call(raw.get("function_call"), f"{path}.function_call", index)
        if legacy_call is not None:
            tool_calls = (*tool_calls, legacy_call)
        return Message(role, content, tool_calls=tool_calls)
    if role == "tool":
        return Message(
            role, content, tool_call_id=_non_empty_string(raw.get("tool_call_id"), f"{path}.tool_call_id")
        )
    if role == "function":
        name = _non_empty_string(raw.get("name"), f"{path}.name")
        if name not in latest_calls:
            _fail(f"{path}.name matches no function call of an earlier assistant message", f"{path}.name")
        return Message("tool", content, tool_call_id=latest_calls[name])
    return Message(role, content)


def _parse_legacy_function_call(value: object, path: str, index: int) -> ToolCall | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        _fail(f"{path} must be an object", path)
    name = _non_empty_string(value.get("name"), f"{path}.name")
    arguments = _optional_string(value.get("arguments"), f"{path}.arguments") or ""
    _check_arguments_depth(arguments, f"{path}.arguments")
    return ToolCall(_LEGACY_CALL_ID.format(index=index), name, arguments)


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
        _check_arguments_depth(arguments or "", f"{call_path}.function.arguments")
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
# reasoning_effort -> thinkingBudget or thinkingLevel, as the family's row of the
# thinking table says (PROTOCOL §13.5); a family thinking by default without an
# effort gets DEFAULT_THINKING_BUDGET, or no level (the model's own depth).
DEFAULT_THINKING_BUDGET = 1024
_EFFORT_BUDGETS = {"minimal": 1024, "low": 1024, "medium": 8192, "high": 24576}
# Gemini Pro takes no "minimal" level (CPA-0822 registry: 3.1 Pro low|medium|high), every
# thinking Gemini takes "low".
_EFFORT_LEVELS = {"minimal": "low", "low": "low", "medium": "medium", "high": "high"}
# Claude's smallest budget (PROTOCOL §3.4); below it thinking is left off.
_MIN_CLAUDE_BUDGET = 1024
# Room left for the visible answer: Claude needs maxOutputTokens > budget, and
# Gemini spends thinking inside maxOutputTokens.
_MIN_ANSWER_TOKENS = 1024
# Claude rejects empty text; Gemini gets the same so both see one conversation.
_EMPTY_USER_TEXT = "."
# Claude and Gemini >= 3.6 refuse a conversation that ends on a model turn (no prefill);
# every family gets the same user turn after one (PROTOCOL §13.5).
_CONTINUE_TEXT = "Continue."
# PROTOCOL §13.3: the image_gen request id ends in a fixed step number.
_IMAGE_REQUEST_ID = "image_gen/{ms}/{uuid}/12"
_NO_SIGNATURES: Mapping[str, ToolCallSignature] = MappingProxyType({})


class _ToolNames:
    """Upstream-safe, collision-free function names, remembered both ways."""

    def __init__(self) -> None:
        self.originals: dict[str, str] = {}
        self._upstream: dict[str, str] = {}
        # Base name -> the last suffix tried, so many names that sanitize alike stay linear.
        self._suffixes: dict[str, int] = {}

    def upstream(self, original: str) -> str:
        name = self._upstream.get(original)
        if name is None:
            base = name = sanitize_function_name(original)
            suffix = self._suffixes.get(base, 1)
            while name in self.originals:
                suffix += 1
                tail = f"_{suffix}"
                name = base[: MAX_FUNCTION_NAME_LENGTH - len(tail)] + tail
            self._suffixes[base] = suffix
            self._upstream[original] = name
            self.originals[name] = original
        return name


@dataclass(frozen=True, slots=True)
class _Thinking:
    """Thinking on, at this depth: a thinkingLevel, a thinkingBudget, or neither (the default)."""

    level: str | None = None
    budget: int | None = None


def new_request_id(model: str) -> str:
    """``agent-<uuid>`` for chat; image models take the ``image_gen`` form (PROTOCOL §13.3)."""
    if models.is_image_model(model):
        return _IMAGE_REQUEST_ID.format(ms=int(time.time() * 1000), uuid=uuid.uuid4())
    return f"agent-{uuid.uuid4()}"


def replayed_tool_call_ids(
    req: ChatRequest, rules: Mapping[models.ThinkingFamily, models.ThinkingRule] = models.THINKING_RULES
) -> list[str]:
    """Ids of history tool calls whose signature must come from the server-side store.

    Claude needs the signed thinking text, which no client carries back, so every
    call is looked up while thinking is requested; other families only miss the
    calls that came back without ``extra_content``.
    """
    calls = [call for message in req.messages for call in message.tool_calls]
    if models.model_family(req.model) == "claude":
        wanted = calls if _requested_thinking(req, rules, None) is not None else []
    else:
        wanted = [call for call in calls if call.thought_signature is None]
    return list(dict.fromkeys(call.id for call in wanted))


def build_upstream_request(
    req: ChatRequest,
    *,
    project: str | None,
    defaults: DefaultsConfig,
    request_id: str,
    signatures: Mapping[str, ToolCallSignature] = _NO_SIGNATURES,
    model_info: ModelInfo | None = None,
    thinking_rules: Mapping[models.ThinkingFamily, models.ThinkingRule] = models.THINKING_RULES,
) -> UpstreamRequest:
    """The ``v1internal`` envelope for ``req`` (PROTOCOL §2.1, §13.3).

    ``req.model`` is the id to send (aliases already resolved); ``model_info`` is what
    the live catalogue says about it; ``project`` None leaves the key out.
    """
    upstream_model = req.model
    family = models.model_family(upstream_model)
    names = _ToolNames()
    declarations = [_declaration(tool, names) for tool in req.tools]
    placeholder_tools = frozenset()
    if models.needs_placeholder_argument(upstream_model):
        placeholder_tools = _add_placeholder_arguments(declarations)
    call_signatures = {} if family == "claude" else _function_call_signatures(req.messages, signatures)
    contents = _contents(req.messages, names, call_signatures)

    thinking = _requested_thinking(req, thinking_rules, model_info)
    if family == "claude":
        if thinking is not None and not _start_tool_turns_with_thinking(contents, signatures):
            thinking = None
    elif models.requires_thought_signature(upstream_model):
        _sign_first_function_calls(contents)
    if contents[-1]["role"] == "model":
        contents.append({"role": "user", "parts": [{"text": _CONTINUE_TEXT}]})

    system_text = _system_text(req.messages, defaults)
    first_user_text = next((m.text for m in req.messages if m.role == "user"), "")
    digest = hashlib.sha256((first_user_text + system_text).encode("utf-8", "surrogatepass")).digest()
    limit = models.output_limit(upstream_model, model_info.max_output_tokens if model_info else None)

    request: dict[str, Any] = {"contents": contents}
    if models.is_image_model(upstream_model):
        # PROTOCOL §13.3: only candidateCount (and imageConfig); no system text, tools or sampling.
        request["generationConfig"] = {"candidateCount": 1}
        request_type = "image_gen"
    else:
        # PROTOCOL §13.3: a systemInstruction only when there is system text.
        if system_text:
            request["systemInstruction"] = {"role": "user", "parts": [{"text": system_text}]}
        if declarations:
            request["tools"] = [{"functionDeclarations": declarations}]
            request["toolConfig"] = {"functionCallingConfig": _function_calling_config(req, names)}
        request["generationConfig"] = _generation_config(req, defaults, thinking, limit)
        request["sessionId"] = "-" + str(int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF)
        request_type = "agent"

    body: dict[str, Any] = {}
    if project:  # PROTOCOL §13.3: never "", left out when unknown
        body["project"] = project
    body.update(
        requestId=request_id,
        request=request,
        model=upstream_model,
        userAgent="antigravity",
        requestType=request_type,
    )
    return UpstreamRequest(
        body=body,
        model=upstream_model,
        thinking="thinkingConfig" in request["generationConfig"],
        tool_names=names.originals,
        session_key=digest.hex(),
        placeholder_tools=placeholder_tools,
    )


def _requested_thinking(
    req: ChatRequest,
    rules: Mapping[models.ThinkingFamily, models.ThinkingRule],
    info: ModelInfo | None,
) -> _Thinking | None:
    """Whether the model thinks for ``req``, and how deep; None means thinking off (PROTOCOL §13.5).

    Off sends no thinkingConfig at all: Gemini >= 3 answers ``thinkingBudget: 0`` with a 400.
    """
    if models.is_image_model(req.model) or (info is not None and info.supports_thinking is False):
        return None
    effort = req.reasoning_effort
    if effort == "none":
        return None
    rule = rules[models.thinking_family(req.model)]
    if effort is None:
        if not models.thinks_by_default(req.model, rules):
            return None
        return _Thinking(budget=DEFAULT_THINKING_BUDGET) if rule.depth == "budget" else _Thinking()
    if rule.depth == "level":
        return _Thinking(level=_EFFORT_LEVELS[effort])
    return _Thinking(budget=_EFFORT_BUDGETS[effort])


def _system_text(messages: Sequence[Message], defaults: DefaultsConfig) -> str:
    texts = [m.text for m in messages if m.role in ("system", "developer")]
    return "\n\n".join(texts) if texts else defaults.system_instruction


def _declaration(tool: ToolDefinition, names: _ToolNames) -> dict[str, Any]:
    declaration: dict[str, Any] = {"name": names.upstream(tool.name)}
    if tool.description is not None:
        declaration["description"] = tool.description
    declaration["parameters"] = sanitize_schema(tool.parameters)
    return declaration


def _add_placeholder_arguments(declarations: list[dict[str, Any]]) -> frozenset[str]:
    """Give each parameterless tool the placeholder argument; the names of those tools.

    PROTOCOL §13.5: Claude's VALIDATED mode wants a required property; the response side
    drops the argument from these tools' calls.
    """
    added = set()
    for declaration in declarations:
        parameters = declaration["parameters"]
        if not parameters.get("properties"):
            declaration["parameters"] = {
                **parameters,
                "type": "object",
                "properties": {
                    models.PLACEHOLDER_ARGUMENT: {"type": "string", "description": "Why the tool is called"}
                },
                "required": [models.PLACEHOLDER_ARGUMENT],
            }
            added.add(declaration["name"])
    return frozenset(added)


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


# One turn being built: its role, its tool results, its other parts.
_Turn = tuple[str, list[dict[str, Any]], list[dict[str, Any]]]


def _contents(
    messages: Sequence[Message], names: _ToolNames, call_signatures: Mapping[str, str]
) -> list[dict[str, Any]]:
    call_names = {call.id: call.name for message in messages for call in message.tool_calls}
    turns: list[_Turn] = []
    for message in messages:
        if message.role == "user":
            _append(turns, "user", _user_parts(message))
        elif message.role == "assistant":
            _append(turns, "model", _model_parts(message, names, call_signatures))
        elif message.role == "tool" and message.tool_call_id in call_names:
            response = {
                "id": message.tool_call_id,
                "name": names.upstream(call_names[message.tool_call_id]),
                "response": {"output": message.text},
            }
            _append(turns, "user", [{"functionResponse": response}])
    # Tool results must directly follow the call turn, ahead of any user text.
    contents = [{"role": role, "parts": results + others} for role, results, others in turns]
    # Both families want the conversation to open with a user turn.
    if not contents or contents[0]["role"] == "model":
        contents.insert(0, {"role": "user", "parts": [{"text": _EMPTY_USER_TEXT}]})
    return contents


def _append(turns: list[_Turn], role: str, parts: list[dict[str, Any]]) -> None:
    """Add parts to the last turn when it has ``role`` (so roles alternate), else open one.

    Appending keeps the work linear in the number of messages (issue 11 #12).
    """
    if not parts:
        return
    if not turns or turns[-1][0] != role:
        turns.append((role, [], []))
    _, results, others = turns[-1]
    for part in parts:
        (results if "functionResponse" in part else others).append(part)


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


# Families whose generationConfig takes frequencyPenalty/presencePenalty: Gemini's does
# (GCLI VertexGenerationConfig, PROTOCOL §2); Anthropic's API has none and gpt-oss is
# unverified, so those go without.
_PENALTY_FAMILIES = frozenset({"gemini"})


def _generation_config(
    req: ChatRequest, defaults: DefaultsConfig, thinking: _Thinking | None, limit: int | None
) -> dict[str, Any]:
    max_tokens = defaults.max_tokens if req.max_tokens is None else req.max_tokens
    config: dict[str, Any] = {
        "temperature": defaults.temperature if req.temperature is None else req.temperature,
        "topP": defaults.top_p if req.top_p is None else req.top_p,
        "topK": defaults.top_k if req.top_k is None else req.top_k,
        # PROTOCOL §13.5: more than the model's limit is a 400, so ask for at most that.
        "maxOutputTokens": max_tokens if limit is None else min(max_tokens, limit),
        "candidateCount": 1,
    }
    if req.stop:
        config["stopSequences"] = list(req.stop)
    if req.seed is not None:
        config["seed"] = req.seed
    if models.model_family(req.model) in _PENALTY_FAMILIES:
        if req.frequency_penalty is not None:
            config["frequencyPenalty"] = req.frequency_penalty
        if req.presence_penalty is not None:
            config["presencePenalty"] = req.presence_penalty
    if req.response_format != "text":
        config["responseMimeType"] = "application/json"
    if req.response_schema is not None:
        config["responseSchema"] = sanitize_schema(req.response_schema)
    if thinking is not None:
        _apply_thinking(config, req.model, thinking, limit)
    return config


def _apply_thinking(config: dict[str, Any], model: str, thinking: _Thinking, limit: int | None) -> None:
    """Add the thinkingConfig, with room for the answer within ``limit`` (PROTOCOL §13.5, §3.4)."""
    claude = models.model_family(model) == "claude"
    thinking_config: dict[str, Any] = {"includeThoughts": True}
    if thinking.level is not None:
        thinking_config["thinkingLevel"] = thinking.level
    if thinking.budget is not None:
        budget = thinking.budget
        requested = config["maxOutputTokens"]
        if claude:
            if requested <= budget:
                requested = budget + max(_MIN_ANSWER_TOKENS, requested)
        else:
            requested = max(requested, budget + _MIN_ANSWER_TOKENS)
        if limit is not None and requested > limit:
            requested = limit
            budget = min(budget, limit - _MIN_ANSWER_TOKENS)
        if budget < (_MIN_CLAUDE_BUDGET if claude else 1):
            return  # no room to think within the limit
        config["maxOutputTokens"] = requested
        thinking_config["thinkingBudget"] = budget
    config["thinkingConfig"] = thinking_config
    if claude:
        # Anthropic allows only temperature 1 and no top_p/top_k while thinking.
        config["temperature"] = 1
        del config["topP"], config["topK"]
