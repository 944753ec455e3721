"""Upstream reply frames -> neutral events -> OpenAI chat completions (PROTOCOL §4, §5).

``ResponseTranslator`` turns each upstream frame into events. ``StreamRenderer`` renders
events as ``chat.completion.chunk`` SSE bytes and ``assemble_completion`` as one
``chat.completion`` body; both read the same events, so a streamed and a non-streamed
reply to the same upstream frames cannot disagree.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from antigv.errors import ApiError, UpstreamError


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallEvent:
    index: int
    id: str
    name: str
    arguments_json: str
    thought_signature: str | None = None


@dataclass(frozen=True, slots=True)
class ImageEvent:
    mime: str
    data: str


@dataclass(frozen=True, slots=True)
class Finish:
    reason: str


Event = TextDelta | ReasoningDelta | ToolCallEvent | ImageEvent | Finish

_CONTENT_FILTER_REASONS = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)

# PROTOCOL §1.3: once the server deems the User-Agent version too old it may answer with
# one of these as ordinary reply text; relaying it would hand clients a fake answer.
_CLIENT_OUTDATED_NOTICES = (
    "This version of Antigravity is no longer supported",
    "Your current version of Antigravity is out of date",
)


def new_completion_id() -> str:
    return f"chatcmpl-{secrets.token_hex(12)}"


def openai_finish_reason(upstream_reason: str | None, saw_tool_call: bool) -> str:
    # Tool-call turns end with STOP (Gemini) or OTHER (Claude): only the calls themselves tell.
    if saw_tool_call:
        return "tool_calls"
    if upstream_reason == "MAX_TOKENS":
        return "length"
    if upstream_reason in _CONTENT_FILTER_REASONS:
        return "content_filter"
    return "stop"


def image_markdown(image: ImageEvent) -> str:
    return f"![image](data:{image.mime};base64,{image.data})"


class ResponseTranslator:
    """Reads the frames of one upstream reply, in order, and keeps what outlives a frame."""

    def __init__(self, tool_names: Mapping[str, str] | None = None) -> None:
        self._tool_names = tool_names or {}
        self._usage_metadata: Mapping[str, Any] = {}
        self._upstream_finish_reason: str | None = None
        self._tool_call_count = 0
        self._saw_output = False
        self._thinking: list[str] = []
        self._pending_signature: tuple[str, str | None] | None = None
        # Tool call id -> (thought signature, the thinking text it signs): what a later request
        # needs to replay the turn (PROTOCOL §3.5). The text is None for a Gemini signature,
        # which rides on a call or text part and is replayed there, not on a thought part.
        self.tool_signatures: dict[str, tuple[str, str | None]] = {}

    def feed(self, frame: Mapping[str, Any]) -> list[Event]:
        """Events in one parsed frame, ``{"response": {...}, "traceId": ...}`` or a bare response."""
        response = frame.get("response", frame)
        usage_metadata = response.get("usageMetadata")
        if usage_metadata:
            self._usage_metadata = usage_metadata  # repeated on many frames: the last one is the total
        candidates = response.get("candidates")
        if not candidates:
            return []
        candidate = candidates[0]
        if candidate.get("finishReason"):
            self._upstream_finish_reason = candidate["finishReason"]
        parts = (candidate.get("content") or {}).get("parts") or ()
        events = [event for part in parts if (event := self._part_event(part)) is not None]
        if events:
            self._saw_output = True
        return events

    def finish(self) -> list[Event]:
        """The closing events, once the upstream reply has ended."""
        return [Finish(openai_finish_reason(self._upstream_finish_reason, self._tool_call_count > 0))]

    @property
    def saw_output(self) -> bool:
        return self._saw_output

    @property
    def prompt_tokens(self) -> int:
        return self._count("promptTokenCount")

    @property
    def reasoning_tokens(self) -> int:
        return self._count("thoughtsTokenCount")

    @property
    def completion_tokens(self) -> int:
        return self._count("candidatesTokenCount") + self.reasoning_tokens

    @property
    def usage(self) -> dict[str, Any]:
        """OpenAI ``usage`` from the last ``usageMetadata`` seen."""
        total = self._count("totalTokenCount") or self.prompt_tokens + self.completion_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": total,
            "prompt_tokens_details": {"cached_tokens": self._count("cachedContentTokenCount")},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        }

    def _count(self, field: str) -> int:
        return int(self._usage_metadata.get(field) or 0)

    def _part_event(self, part: Mapping[str, Any]) -> Event | None:
        signature = part.get("thoughtSignature")
        if "functionCall" in part:
            return self._tool_call(part["functionCall"], signature)
        event: Event | None = None
        if "inlineData" in part:
            # Image models also emit draft images while thinking; only the final one is the answer.
            if not part.get("thought"):
                inline = part["inlineData"]
                event = ImageEvent(inline.get("mimeType") or "image/png", inline.get("data") or "")
        elif part.get("text"):
            text = part["text"]
            if part.get("thought"):
                self._thinking.append(text)
                event = ReasoningDelta(text)
            else:
                # The notice is a whole reply; later in an answer the words are the model's own
                # (it may talk about Antigravity), and checking every delta costs the hot path.
                if not self._saw_output:
                    _reject_client_outdated_notice(text)
                event = TextDelta(text)
        if signature:
            # Claude signs its thinking with a trailing (empty) thought part, Gemini may sign on
            # a text part; either way the signature belongs to the next tool call.
            self._pending_signature = (signature, self._take_thinking() if part.get("thought") else None)
        return event

    def _tool_call(self, call: Mapping[str, Any], own_signature: str | None) -> ToolCallEvent:
        call_id = call.get("id") or f"call_{secrets.token_hex(12)}"  # Gemini may omit ids
        name = call.get("name") or ""
        entry = (own_signature, None) if own_signature else self._pending_signature
        if entry:
            self.tool_signatures[call_id] = entry
        # Consumed: of parallel calls only the first carries the turn's signature upstream.
        self._pending_signature = None
        self._take_thinking()
        event = ToolCallEvent(
            index=self._tool_call_count,
            id=call_id,
            name=self._tool_names.get(name, name),
            arguments_json=orjson.dumps(call.get("args") or {}).decode(),
            thought_signature=entry[0] if entry else None,
        )
        self._tool_call_count += 1
        return event

    def _take_thinking(self) -> str | None:
        """The thinking text since the last signature or call, which ends that thinking block."""
        text = "".join(self._thinking) or None
        self._thinking = []
        return text


def _reject_client_outdated_notice(text: str) -> None:
    if any(notice in text for notice in _CLIENT_OUTDATED_NOTICES):
        raise UpstreamError(
            "The upstream no longer accepts this gateway's client version; the configured "
            "User-Agent version must be raised",
            code="upstream_client_outdated",
        )


def _tool_call_object(call: ToolCallEvent) -> dict[str, Any]:
    rendered: dict[str, Any] = {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments_json},
    }
    if call.thought_signature:
        # HEAD's carrier (and Google's OpenAI layer): clients that keep it send it back.
        rendered["extra_content"] = {"google": {"thought_signature": call.thought_signature}}
    return rendered


def _delta(event: Event) -> dict[str, Any]:
    match event:
        case TextDelta(text):
            return {"content": text}
        case ReasoningDelta(text):
            return {"reasoning_content": text}
        case ToolCallEvent():
            return {"tool_calls": [{"index": event.index, **_tool_call_object(event)}]}
        case ImageEvent():
            return {"content": image_markdown(event)}
    raise TypeError(f"no delta for {event!r}")


_DONE = b"data: [DONE]\n\n"


class StreamRenderer:
    """Renders events as OpenAI ``chat.completion.chunk`` SSE bytes for one response."""

    __slots__ = ("_choice_head", "_choice_tail", "_chunk_head", "completion_id", "created", "include_usage")

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

    def render(self, events: Iterable[Event]) -> bytes:
        return b"".join(self._event_chunk(event) for event in events)

    def finish(self, events: Iterable[Event], usage: Mapping[str, Any]) -> bytes:
        """The closing events (with the ``Finish``), the usage chunk if asked for, ``[DONE]``."""
        closing = self.render(events)
        if self.include_usage:
            closing += self._chunk_head + b',"choices":[],"usage":' + orjson.dumps(usage) + b"}\n\n"
        return closing + _DONE

    def error(self, api_error: ApiError) -> bytes:
        # Like OpenAI: the error object ends the stream, no [DONE]. The openai SDK raises
        # APIError on a chunk with an "error" key, so nothing after it would be read.
        return b"data: " + orjson.dumps(api_error.body()) + b"\n\n"

    def _event_chunk(self, event: Event) -> bytes:
        if isinstance(event, Finish):
            return self._choice_chunk(b"{}", orjson.dumps(event.reason))
        return self._choice_chunk(orjson.dumps(_delta(event)), b"null")

    def _choice_chunk(self, delta_json: bytes, finish_reason_json: bytes) -> bytes:
        return self._choice_head + delta_json + b',"finish_reason":' + finish_reason_json + self._choice_tail


def assemble_completion(
    events: Iterable[Event],
    usage: Mapping[str, Any],
    model: str,
    completion_id: str | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    """The non-streamed ``chat.completion`` body for the events of a whole reply, ``Finish`` included."""
    content: list[str] = []
    reasoning: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    finish_reason = None
    for event in events:
        match event:
            case Finish(reason):
                finish_reason = reason
            case ToolCallEvent():
                tool_calls.append(_tool_call_object(event))
            case ReasoningDelta(text):
                reasoning.append(text)
            case TextDelta() | ImageEvent():
                content.append(_delta(event)["content"])
    if finish_reason is None:
        raise ValueError("the events of a whole reply end with a Finish event")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(content) or None}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": completion_id or new_completion_id(),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
        "usage": dict(usage),
    }
