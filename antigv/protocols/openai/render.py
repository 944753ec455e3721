"""Neutral events -> OpenAI chat completions (SPEC §3).

``StreamRenderer`` renders events as ``chat.completion.chunk`` SSE bytes and
``assemble_completion`` as one ``chat.completion`` body; both read the same events, so
a streamed and a non-streamed reply to the same upstream frames cannot disagree.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
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
    ToolCallDelta,
    ToolCallStart,
    Usage,
)
from antigv.protocols.openai.errors import error_body

FINISH_REASONS = {
    FinishReason.STOP: "stop",
    FinishReason.LENGTH: "length",
    FinishReason.TOOL_USE: "tool_calls",
    FinishReason.CONTENT_FILTER: "content_filter",
}


def new_completion_id() -> str:
    return f"chatcmpl-{secrets.token_hex(12)}"


def image_markdown(image: ImageOutput) -> str:
    return f"![image](data:{image.mime_type};base64,{image.data})"


def usage_object(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def _tool_call_object(start: ToolCallStart, arguments: str) -> dict[str, Any]:
    rendered: dict[str, Any] = {
        "id": start.id,
        "type": "function",
        "function": {"name": start.name, "arguments": arguments},
    }
    if start.signature:
        # HEAD's carrier (and Google's OpenAI layer): clients that keep it send it back.
        rendered["extra_content"] = {"google": {"thought_signature": start.signature}}
    return rendered


_DONE = b"data: [DONE]\n\n"


class StreamRenderer:
    """Renders events as OpenAI ``chat.completion.chunk`` SSE bytes for one response.

    A tool call's start and its first arguments become one chunk, as OpenAI sends a call
    whose arguments arrive whole; later argument deltas get chunks of their own.
    """

    __slots__ = (
        "_choice_head",
        "_choice_tail",
        "_chunk_head",
        "_open_calls",
        "_usage",
        "completion_id",
        "created",
        "include_usage",
    )

    def __init__(
        self,
        model: str,
        include_usage: bool,
        completion_id: str | None = None,
        created: int | None = None,
    ) -> None:
        self.completion_id = completion_id or new_completion_id()
        self.created = int(time.time()) if created is None else created
        self.include_usage = include_usage
        self._open_calls: dict[int, ToolCallStart] = {}
        self._usage = Usage()
        # Every chunk shares its head and tail: serialise them once, only the delta per chunk.
        envelope = orjson.dumps(
            {
                "id": self.completion_id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": model,
            }
        )
        self._chunk_head = b"data: " + envelope[:-1]
        self._choice_head = self._chunk_head + b',"choices":[{"index":0,"delta":'
        # With include_usage OpenAI sends "usage": null on every chunk but the usage chunk.
        self._choice_tail = b',"logprobs":null}]' + (b',"usage":null' if include_usage else b"") + b"}\n\n"

    def start(self) -> bytes:
        return self._choice_chunk(b'{"role":"assistant","content":""}', b"null")

    def open(self, first: Iterable[Event]) -> bytes:
        return self.start() + self.render(first)

    def render(self, events: Iterable[Event]) -> bytes:
        return b"".join(self._event_chunk(event) for event in events)

    def end(self) -> bytes:
        """After the ``Finish``: the usage chunk if asked for, then ``[DONE]``."""
        if self.include_usage:
            usage = orjson.dumps(usage_object(self._usage))
            return self._chunk_head + b',"choices":[],"usage":' + usage + b"}\n\n" + _DONE
        return _DONE

    def error(self, error: GatewayError) -> bytes:
        # Like OpenAI: the error object ends the stream, no [DONE]. The openai SDK raises
        # APIError on a chunk with an "error" key, so nothing after it would be read.
        return b"data: " + orjson.dumps(error_body(error)) + b"\n\n"

    def _event_chunk(self, event: Event) -> bytes:
        match event:
            case TextDelta(text):
                delta: dict[str, Any] = {"content": text}
            case ThinkingDelta(text):
                delta = {"reasoning_content": text}
            case ImageOutput():
                delta = {"content": image_markdown(event)}
            case ToolCallStart():
                self._open_calls[event.index] = event
                return b""
            case ToolCallDelta(index, arguments):
                start = self._open_calls.pop(index, None)
                call = {"index": index, "function": {"arguments": arguments}}
                if start is not None:
                    call = {"index": index, **_tool_call_object(start, arguments)}
                delta = {"tool_calls": [call]}
            case Finish(reason):
                return self._choice_chunk(b"{}", orjson.dumps(FINISH_REASONS[reason]))
            case Usage():
                self._usage = event
                return b""
            case _:  # thinking signatures and call ends have no place in a chunk
                return b""
        return self._choice_chunk(orjson.dumps(delta), b"null")

    def _choice_chunk(self, delta_json: bytes, finish_reason_json: bytes) -> bytes:
        return self._choice_head + delta_json + b',"finish_reason":' + finish_reason_json + self._choice_tail


def assemble_completion(
    events: Iterable[Event],
    model: str,
    completion_id: str | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    """The non-streamed ``chat.completion`` body for the events of a whole reply, ``Finish`` included."""
    content: list[str] = []
    reasoning: list[str] = []
    calls: dict[int, tuple[ToolCallStart, list[str]]] = {}
    usage = Usage()
    finish: FinishReason | None = None
    for event in events:
        match event:
            case TextDelta(text):
                content.append(text)
            case ImageOutput():
                content.append(image_markdown(event))
            case ThinkingDelta(text):
                reasoning.append(text)
            case ToolCallStart():
                calls[event.index] = (event, [])
            case ToolCallDelta(index, arguments):
                calls[index][1].append(arguments)
            case Usage():
                usage = event
            case Finish(reason):
                finish = reason
    if finish is None:
        raise ValueError("the events of a whole reply end with a Finish event")
    # ``refusal`` is required by OpenAI's schema; the upstream has no refusal channel (PROTOCOL §4).
    message: dict[str, Any] = {"role": "assistant", "content": "".join(content) or None, "refusal": None}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if calls:
        message["tool_calls"] = [_tool_call_object(start, "".join(parts)) for start, parts in calls.values()]
    return {
        "id": completion_id or new_completion_id(),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": FINISH_REASONS[finish], "logprobs": None}
        ],
        "usage": usage_object(usage),
    }
