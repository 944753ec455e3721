"""The parts of a Google ``generateContent`` request shared by the Google-family backends:
the conversation as ``contents``, tool declarations with upstream-safe names (PROTOCOL §3).
Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from antigv.backends.google.schema import MAX_FUNCTION_NAME_LENGTH, sanitize_function_name, sanitize_schema
from antigv.core.conversation import Image, Text, Thinking, Tool, ToolResult, ToolUse, Turn

# Claude rejects empty text; Gemini gets the same so both see one conversation.
EMPTY_USER_TEXT = "."


class ToolNames:
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


def tool_declaration(tool: Tool, names: ToolNames) -> dict[str, Any]:
    declaration: dict[str, Any] = {"name": names.upstream(tool.name)}
    if tool.description is not None:
        declaration["description"] = tool.description
    declaration["parameters"] = sanitize_schema(tool.parameters)
    return declaration


# One turn being built: its role, its tool results, its other parts.
_Turn = tuple[str, list[dict[str, Any]], list[dict[str, Any]]]


def encode_contents(
    turns: Sequence[Turn],
    names: ToolNames,
    call_signatures: Mapping[str, str],
    *,
    signed_thoughts: bool = False,
) -> list[dict[str, Any]]:
    """``contents`` for ``turns``; ``call_signatures`` maps a tool call id to the signature
    its functionCall part carries. With ``signed_thoughts`` (Claude, PROTOCOL §3.5) a
    tool-call turn opens with the signed thinking the client carried back, if any."""
    call_names = {use.id: use.name for turn in turns for use in turn.tool_uses}
    built: list[_Turn] = []
    for turn in turns:
        if turn.role == "user":
            _append(built, "user", _user_parts(turn, names, call_names))
        else:
            _append(built, "model", _model_parts(turn, names, call_signatures, signed_thoughts))
    # Tool results must directly follow the call turn, ahead of any user text.
    contents = [{"role": role, "parts": results + others} for role, results, others in built]
    # Both families want the conversation to open with a user turn.
    if not contents or contents[0]["role"] == "model":
        contents.insert(0, {"role": "user", "parts": [{"text": EMPTY_USER_TEXT}]})
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


def signed_thinking(turn: Turn) -> Thinking | None:
    """The first thinking block of ``turn`` that carries its signature."""
    return next((part for part in turn.parts if isinstance(part, Thinking) and part.signature), None)


def _user_parts(turn: Turn, names: ToolNames, call_names: Mapping[str, str]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    has_results = False
    for part in turn.parts:
        if isinstance(part, ToolResult):
            has_results = True
            if part.tool_use_id in call_names:
                # Google's convention: "output" for a result, "error" for a failure.
                response = {
                    "id": part.tool_use_id,
                    "name": names.upstream(call_names[part.tool_use_id]),
                    "response": {"error" if part.is_error else "output": part.text},
                }
                parts.append({"functionResponse": response})
                # Images a tool returned follow its response in the same turn.
                parts.extend(_image_part(image) for image in part.content if isinstance(image, Image))
        elif isinstance(part, Image):
            parts.append(_image_part(part))
        elif isinstance(part, Text) and part.text.strip():
            parts.append({"text": part.text})
    return parts if parts or has_results else [{"text": EMPTY_USER_TEXT}]


def _image_part(image: Image) -> dict[str, Any]:
    return {"inlineData": {"mimeType": image.mime_type, "data": image.data}}


def _model_parts(
    turn: Turn, names: ToolNames, call_signatures: Mapping[str, str], signed_thoughts: bool
) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    if signed_thoughts and turn.tool_uses:
        thought = signed_thinking(turn)
        if thought is not None:
            parts.append({"thought": True, "text": thought.text, "thoughtSignature": thought.signature})
    parts += [{"text": part.text} for part in turn.parts if isinstance(part, Text) and part.text.strip()]
    for use in turn.parts:
        if not isinstance(use, ToolUse):
            continue
        function_call = {"id": use.id, "name": names.upstream(use.name), "args": dict(use.input)}
        part: dict[str, Any] = {"functionCall": function_call}
        if use.id in call_signatures:
            part["thoughtSignature"] = call_signatures[use.id]
        parts.append(part)
    return parts
