"""Anthropic Messages request -> the core's :class:`ChatRequest` (issue 13).

:func:`parse_messages_request` validates a decoded ``/v1/messages`` body as Anthropic's
API does for the fields the upstream can serve (every problem is a 400 naming the field)
and says what it asks in the core's terms. ``cache_control``, ``metadata``,
``context_management`` and ``service_tier`` are accepted and have no effect: the
upstream has no such controls. Unknown fields are ignored. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from antigv.core.conversation import (
    ChatRequest,
    Effort,
    Generation,
    Image,
    Part,
    Text,
    Thinking,
    ThinkingRequest,
    Tool,
    ToolChoice,
    ToolResult,
    ToolUse,
    Turn,
)
from antigv.protocols.validate import (
    IMAGE_MIME_TYPES,
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

# Anthropic's smallest thinking budget.
MIN_THINKING_BUDGET = 1024
# output_config.effort -> the core's levels; "max" is the deepest the upstream offers.
_EFFORTS: dict[str, Effort] = {"low": "low", "medium": "medium", "high": "high", "max": "high"}
# Tool ids the gateway invents for calls the upstream sent without one, in Anthropic's form.
TOOL_CALL_ID_PREFIX = "toolu_"


def parse_messages_request(body: object) -> ChatRequest:
    """Validate a decoded ``/v1/messages`` body."""
    return _parse(body, counting=False)


def parse_count_tokens_request(body: object) -> ChatRequest:
    """``count_tokens`` takes the same body without ``max_tokens``."""
    return _parse(body, counting=True)


def _parse(body: object, *, counting: bool) -> ChatRequest:
    if not isinstance(body, dict):
        fail("the request body must be a JSON object", None)
    model = non_empty_string(body.get("model"), "model")
    max_tokens = positive_int(body.get("max_tokens"), "max_tokens")
    if max_tokens is None and not counting:
        fail("max_tokens: field required", "max_tokens")
    system_messages, turns = _parse_messages(body.get("messages"))
    system = (*_parse_system(body.get("system"), "system"), *system_messages)
    tools = _parse_tools(body.get("tools"))
    tool_choice = _parse_tool_choice(body.get("tool_choice"), tools)
    thinking = _parse_thinking(body.get("thinking"), body.get("output_config"), max_tokens)
    generation = Generation(
        temperature=number(body.get("temperature"), "temperature", lambda v: 0 <= v <= 1, "between 0 and 1"),
        top_p=number(body.get("top_p"), "top_p", lambda v: 0 <= v <= 1, "between 0 and 1"),
        top_k=positive_int(body.get("top_k"), "top_k"),
        max_tokens=max_tokens,
        stop=_parse_stop_sequences(body.get("stop_sequences")),
        thinking=thinking,
    )
    _check_metadata(body.get("metadata"))
    return ChatRequest(
        model=model,
        turns=turns,
        system=system,
        tools=tools,
        tool_choice=tool_choice,
        generation=generation,
        stream=boolean(body.get("stream"), "stream"),
        tool_call_id_prefix=TOOL_CALL_ID_PREFIX,
    )


def _check_metadata(value: object) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        fail("metadata must be an object", "metadata")
    optional_string(value.get("user_id"), "metadata.user_id")


def _parse_stop_sequences(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        fail("stop_sequences must be an array of strings", "stop_sequences")
    if len(value) > MAX_STOP_SEQUENCES:
        fail(f"stop_sequences may hold at most {MAX_STOP_SEQUENCES} sequences here", "stop_sequences")
    return tuple(value)


def _parse_thinking(value: object, output_config: object, max_tokens: int | None) -> ThinkingRequest:
    """``thinking`` (enabled with a budget, adaptive, disabled) and ``output_config.effort``."""
    effort = _parse_effort(output_config)
    if value is None:
        return ThinkingRequest(effort=effort)
    if not isinstance(value, dict):
        fail("thinking must be an object", "thinking")
    kind = value.get("type")
    if kind == "disabled":
        return ThinkingRequest(budget=0)
    if kind == "adaptive":
        # The model decides how much to think; Anthropic's default effort is high.
        return ThinkingRequest(effort=effort or "high")
    if kind != "enabled":
        fail("thinking.type must be 'enabled', 'adaptive' or 'disabled'", "thinking.type")
    least = f"an integer of at least {MIN_THINKING_BUDGET}"
    budget = integer(
        value.get("budget_tokens"), "thinking.budget_tokens", lambda v: v >= MIN_THINKING_BUDGET, least
    )
    if budget is None:
        fail(f"thinking.budget_tokens must be {least}", "thinking.budget_tokens")
    if max_tokens is not None and budget >= max_tokens:
        fail("max_tokens must be greater than thinking.budget_tokens", "max_tokens")
    return ThinkingRequest(budget=budget, effort=effort)


def _parse_effort(value: object) -> Effort | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        fail("output_config must be an object", "output_config")
    effort = value.get("effort")
    if effort is None:
        return None
    if not isinstance(effort, str) or effort not in _EFFORTS:
        fail(f"output_config.effort must be one of {', '.join(_EFFORTS)}", "output_config.effort")
    return _EFFORTS[effort]


# Claude Code opens its system prompt with billing metadata for Anthropic whose hash changes
# with every request: no instruction, and kept it would give each turn of a conversation
# another routing key (and cost the upstream's prompt cache).
_BILLING_HEADER = "x-anthropic-billing-header:"


def _parse_system(value: object, path: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    if not isinstance(value, list):
        fail(f"{path} must be a string or an array of text blocks", path)
    texts = []
    for index, block in enumerate(value):
        block_path = f"{path}[{index}]"
        if not isinstance(block, dict) or block.get("type") != "text":
            fail(f"{block_path} must be a text block", block_path)
        texts.append(_text(block, block_path))
    return tuple(text for text in texts if text and not text.startswith(_BILLING_HEADER))


def _parse_tools(value: object) -> tuple[Tool, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        fail("tools must be an array", "tools")
    if len(value) > MAX_TOOLS:
        fail(f"tools may hold at most {MAX_TOOLS} tools", "tools")
    tools: list[Tool] = []
    seen: set[str] = set()
    for index, raw in enumerate(value):
        path = f"tools[{index}]"
        if not isinstance(raw, dict):
            fail(f"{path} must be an object", path)
        kind = raw.get("type")
        if kind not in (None, "custom"):
            # Server tools (web search, code execution, ...) run at Anthropic, not upstream.
            fail(f"{path}.type {kind!r} is not supported: only client tools (custom) are", f"{path}.type")
        name = non_empty_string(raw.get("name"), f"{path}.name")
        if name in seen:
            fail(f"{path}.name repeats the tool name {name!r}", f"{path}.name")
        seen.add(name)
        schema = raw.get("input_schema")
        if not isinstance(schema, dict):
            fail(f"{path}.input_schema must be an object", f"{path}.input_schema")
        check_depth(schema, f"{path}.input_schema")
        description = optional_string(raw.get("description"), f"{path}.description")
        tools.append(Tool(name=name, description=description, parameters=schema))
    return tuple(tools)


def _parse_tool_choice(value: object, tools: Sequence[Tool]) -> ToolChoice:
    """``disable_parallel_tool_use`` is accepted; the upstream has no such switch."""
    if value is None:
        return ToolChoice("auto")
    if not isinstance(value, dict):
        fail("tool_choice must be an object", "tool_choice")
    boolean(value.get("disable_parallel_tool_use"), "tool_choice.disable_parallel_tool_use")
    kind = value.get("type")
    if kind == "auto":
        return ToolChoice("auto")
    if kind == "none":
        return ToolChoice("none")
    if kind == "any":
        if not tools:
            fail("tool_choice 'any' needs at least one tool in tools", "tool_choice")
        return ToolChoice("any")
    if kind == "tool":
        name = non_empty_string(value.get("name"), "tool_choice.name")
        return ToolChoice("any", named_tool(name, tools, "tool_choice.name"))
    fail("tool_choice.type must be 'auto', 'any', 'tool' or 'none'", "tool_choice.type")


def _parse_messages(value: object) -> tuple[tuple[str, ...], tuple[Turn, ...]]:
    """(system texts, turns). Claude Code puts ``system`` messages among the turns (its
    environment, for newer models); like OpenAI's system messages they instruct."""
    if not isinstance(value, list) or not value:
        fail("messages must be a non-empty array", "messages")
    if len(value) > MAX_MESSAGES:
        fail(f"messages may hold at most {MAX_MESSAGES} messages", "messages")
    # Tool uses of earlier assistant messages: every tool result must answer one.
    call_ids: set[str] = set()
    system: list[str] = []
    turns = []
    for index, raw in enumerate(value):
        path = f"messages[{index}]"
        if not isinstance(raw, dict):
            fail(f"{path} must be an object", path)
        role = raw.get("role")
        if role == "system":
            system += _parse_system(raw.get("content"), f"{path}.content")
            continue
        if role not in ("user", "assistant"):
            fail(f"{path}.role must be 'user', 'assistant' or 'system'", f"{path}.role")
        parts = _parse_content(raw.get("content"), f"{path}.content", role)
        for part_index, part in enumerate(parts):
            if isinstance(part, ToolResult) and part.tool_use_id not in call_ids:
                param = f"{path}.content[{part_index}].tool_use_id"
                fail(f"{param} matches no tool_use block of an earlier assistant message", param)
            if isinstance(part, ToolUse):
                call_ids.add(part.id)
        turns.append(Turn(role, parts))
    if not turns:
        fail("messages must hold a user or assistant message", "messages")
    return tuple(system), tuple(turns)


def _parse_content(value: object, path: str, role: str) -> tuple[Part, ...]:
    if isinstance(value, str):
        return (Text(value),)
    if not isinstance(value, list):
        fail(f"{path} must be a string or an array of content blocks", path)
    parse = _user_block if role == "user" else _assistant_block
    parts = (parse(block, f"{path}[{index}]") for index, block in enumerate(value))
    return tuple(part for part in parts if part is not None)


def _block_type(block: object, path: str) -> str:
    if not isinstance(block, dict):
        fail(f"{path} must be an object", path)
    kind = block.get("type")
    if not isinstance(kind, str):
        fail(f"{path}.type must be a string", f"{path}.type")
    return kind


def _user_block(block: object, path: str) -> Part | None:
    kind = _block_type(block, path)
    assert isinstance(block, dict)
    if kind == "text":
        return Text(_text(block, path))
    if kind == "image":
        return _image(block, path)
    if kind == "tool_result":
        return _tool_result(block, path)
    if kind in ("thinking", "redacted_thinking", "tool_use"):
        fail(f"{path}.type {kind!r} belongs in an assistant message", f"{path}.type")
    fail(f"{path}.type must be 'text', 'image' or 'tool_result'; {kind!r} is not supported", f"{path}.type")


def _assistant_block(block: object, path: str) -> Part | None:
    kind = _block_type(block, path)
    assert isinstance(block, dict)
    if kind == "text":
        return Text(_text(block, path))
    if kind == "tool_use":
        call_id = non_empty_string(block.get("id"), f"{path}.id")
        name = non_empty_string(block.get("name"), f"{path}.name")
        arguments = block.get("input")
        if not isinstance(arguments, dict):
            fail(f"{path}.input must be an object", f"{path}.input")
        check_depth(arguments, f"{path}.input")
        return ToolUse(call_id, name, arguments)
    if kind == "thinking":
        thinking = block.get("thinking")
        if not isinstance(thinking, str):
            fail(f"{path}.thinking must be a string", f"{path}.thinking")
        signature = optional_string(block.get("signature"), f"{path}.signature")
        return Thinking(thinking, signature or None)
    if kind == "redacted_thinking":
        # Encrypted thinking only Anthropic's own API can open: nothing upstream takes it.
        return None
    if kind == "image":
        fail(f"{path}: images are only accepted in user messages", f"{path}.type")
    fail(
        f"{path}.type must be 'text', 'thinking', 'redacted_thinking' or 'tool_use'; {kind!r} is not supported",
        f"{path}.type",
    )


def _text(block: Mapping[str, Any], path: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        fail(f"{path}.text must be a string", f"{path}.text")
    return text


def _image(block: Mapping[str, Any], path: str) -> Image:
    source = block.get("source")
    if not isinstance(source, dict):
        fail(f"{path}.source must be an object", f"{path}.source")
    if source.get("type") != "base64":
        fail(
            f"{path}.source.type: image URLs and files are not fetched; send a base64 source",
            f"{path}.source.type",
        )
    media_type = source.get("media_type")
    subtype = media_type[6:] if isinstance(media_type, str) and media_type.startswith("image/") else ""
    mime_type = IMAGE_MIME_TYPES.get(subtype.lower())
    if mime_type is None:
        fail(
            f"{path}.source.media_type must be image/jpeg, image/png, image/gif or image/webp",
            f"{path}.source.media_type",
        )
    data = source.get("data")
    if not isinstance(data, str) or not looks_like_base64(data):
        fail(f"{path}.source.data must be valid base64 data", f"{path}.source.data")
    return Image(mime_type, data)


def _tool_result(block: Mapping[str, Any], path: str) -> ToolResult:
    call_id = non_empty_string(block.get("tool_use_id"), f"{path}.tool_use_id")
    is_error = boolean(block.get("is_error"), f"{path}.is_error")
    content = block.get("content")
    if content is None:
        return ToolResult(call_id, (), is_error)
    if isinstance(content, str):
        return ToolResult(call_id, (Text(content),), is_error)
    if not isinstance(content, list):
        fail(f"{path}.content must be a string or an array of text and image blocks", f"{path}.content")
    parts: list[Text | Image] = []
    for index, inner in enumerate(content):
        inner_path = f"{path}.content[{index}]"
        kind = _block_type(inner, inner_path)
        assert isinstance(inner, dict)
        if kind == "text":
            parts.append(Text(_text(inner, inner_path)))
        elif kind == "image":
            parts.append(_image(inner, inner_path))
        else:
            fail(f"{inner_path}.type must be 'text' or 'image'", f"{inner_path}.type")
    return ToolResult(call_id, tuple(parts), is_error)
