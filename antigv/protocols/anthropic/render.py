"""Neutral events -> Anthropic Messages replies (issue 13).

One state machine, :class:`_Blocks`, turns events into content-block steps (start a
block, extend it, stop it); :class:`StreamRenderer` writes each step as an SSE event and
:func:`assemble_message` folds them into one ``message`` body, so a streamed and a
non-streamed reply to the same upstream frames cannot disagree.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson

from antigv.core.errors import GatewayError
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
from antigv.protocols.anthropic.errors import error_body

STOP_REASONS = {
    FinishReason.STOP: "end_turn",
    FinishReason.LENGTH: "max_tokens",
    FinishReason.TOOL_USE: "tool_use",
    FinishReason.CONTENT_FILTER: "refusal",
}
PING = b'event: ping\ndata: {"type":"ping"}\n\n'

_ALPHANUMERIC = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def new_message_id() -> str:
    return "msg_01" + "".join(secrets.choice(_ALPHANUMERIC) for _ in range(22))


def usage_object(usage: Usage) -> dict[str, int]:
    """Anthropic counts cache reads apart from the input; output includes thinking."""
    return {
        "input_tokens": max(0, usage.prompt_tokens - usage.cached_tokens),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": usage.cached_tokens,
        "output_tokens": usage.completion_tokens,
    }


# A step: ("start", index, block) | ("delta", index, delta) | ("stop", index, None).
Step = tuple[str, int, dict[str, Any] | None]


class _Blocks:
    """Content blocks in the order the events open them; at most one open at a time."""

    __slots__ = ("_count", "_kind", "_signed", "stop_reason", "usage")

    def __init__(self) -> None:
        self._count = 0
        self._kind: str | None = None  # the open block's type
        self._signed: str | None = None  # the last signature shown, not to be repeated
        self.usage = Usage()
        self.stop_reason: str | None = None

    def steps(self, event: Event) -> Iterator[Step]:
        match event:
            case TextDelta(text):
                yield from self._into("text", {"type": "text", "text": ""})
                yield ("delta", self._index, {"type": "text_delta", "text": text})
            case ThinkingDelta(text):
                yield from self._into("thinking", {"type": "thinking", "thinking": "", "signature": ""})
                yield ("delta", self._index, {"type": "thinking_delta", "thinking": text})
            case ThinkingSignature(signature):
                yield from self._sign(signature)
            case ToolCallStart():
                if event.signature and event.signature != self._signed:
                    # Gemini signs the call itself; Anthropic's clients carry signatures
                    # back in thinking blocks, so the call gets one ahead of it.
                    yield from self._sign(event.signature)
                yield from self._close()
                block = {"type": "tool_use", "id": event.id, "name": event.name, "input": {}}
                yield from self._into("tool_use", block)
            case ToolCallDelta(_, arguments):
                yield ("delta", self._index, {"type": "input_json_delta", "partial_json": arguments})
            case ToolCallEnd():
                yield from self._close()
            case ImageOutput(mime_type, data):
                # Replies have no image blocks: the image travels as a data URI in text.
                yield from self._into("text", {"type": "text", "text": ""})
                markdown = f"![image](data:{mime_type};base64,{data})"
                yield ("delta", self._index, {"type": "text_delta", "text": markdown})
            case Usage():
                self.usage = event
            case Finish(reason):
                self.stop_reason = STOP_REASONS[reason]
                yield from self._close()

    @property
    def _index(self) -> int:
        return self._count - 1

    def _sign(self, signature: str) -> Iterator[Step]:
        yield from self._into("thinking", {"type": "thinking", "thinking": "", "signature": ""})
        yield ("delta", self._index, {"type": "signature_delta", "signature": signature})
        self._signed = signature
        yield from self._close()

    def _into(self, kind: str, block: dict[str, Any]) -> Iterator[Step]:
        if self._kind == kind:
            return
        yield from self._close()
        self._kind = kind
        self._count += 1
        yield ("start", self._index, block)

    def _close(self) -> Iterator[Step]:
        if self._kind is not None:
            self._kind = None
            yield ("stop", self._index, None)


def _sse(kind: bytes, payload: dict[str, Any]) -> bytes:
    return b"event: " + kind + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class StreamRenderer:
    """Renders events as the SSE events of one Messages stream."""

    __slots__ = ("_blocks", "_input_usage", "message_id", "model")

    def __init__(self, model: str, input_usage: Callable[[], Usage], message_id: str | None = None) -> None:
        self.model = model
        self.message_id = message_id or new_message_id()
        # What the upstream has said of the prompt when the stream opens.
        self._input_usage = input_usage
        self._blocks = _Blocks()

    def open(self, first: Iterable[Event]) -> bytes:
        usage = usage_object(self._input_usage())
        usage["output_tokens"] = 0
        message = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        start = _sse(b"message_start", {"type": "message_start", "message": message})
        return start + PING + self.render(first)

    def render(self, events: Iterable[Event]) -> bytes:
        return b"".join(_step_event(step) for event in events for step in self._blocks.steps(event))

    def end(self) -> bytes:
        delta = {"stop_reason": self._blocks.stop_reason or "end_turn", "stop_sequence": None}
        usage = usage_object(self._blocks.usage)
        return _sse(b"message_delta", {"type": "message_delta", "delta": delta, "usage": usage}) + _sse(
            b"message_stop", {"type": "message_stop"}
        )

    def error(self, error: GatewayError) -> bytes:
        return _sse(b"error", error_body(error))


def _step_event(step: Step) -> bytes:
    action, index, payload = step
    if action == "delta":
        return _sse(b"content_block_delta", {"type": "content_block_delta", "index": index, "delta": payload})
    if action == "start":
        return _sse(
            b"content_block_start", {"type": "content_block_start", "index": index, "content_block": payload}
        )
    return _sse(b"content_block_stop", {"type": "content_block_stop", "index": index})


def assemble_message(events: Iterable[Event], model: str, message_id: str | None = None) -> dict[str, Any]:
    """The non-streamed ``message`` for the events of a whole reply, ``Finish`` included."""
    blocks = _Blocks()
    content: list[dict[str, Any]] = []
    arguments: dict[int, list[str]] = {}
    for event in events:
        for action, index, payload in blocks.steps(event):
            if action == "start":
                assert payload is not None
                content.append(dict(payload))
            elif action == "delta":
                assert payload is not None
                _extend(content[index], payload, arguments.setdefault(index, []))
            elif content[index]["type"] == "tool_use":
                content[index]["input"] = _input(arguments.pop(index, []))
    if blocks.stop_reason is None:
        raise ValueError("the events of a whole reply end with a Finish event")
    return {
        "id": message_id or new_message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": blocks.stop_reason,
        "stop_sequence": None,
        "usage": usage_object(blocks.usage),
    }


def _extend(block: dict[str, Any], delta: dict[str, Any], arguments: list[str]) -> None:
    kind = delta["type"]
    if kind == "text_delta":
        block["text"] += delta["text"]
    elif kind == "thinking_delta":
        block["thinking"] += delta["thinking"]
    elif kind == "signature_delta":
        block["signature"] = delta["signature"]
    else:
        arguments.append(delta["partial_json"])


def _input(arguments: list[str]) -> Any:
    text = "".join(arguments)
    return orjson.loads(text) if text else {}
