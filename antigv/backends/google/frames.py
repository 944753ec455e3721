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
import structlog

from antigv.backends.antigravity.models import PLACEHOLDER_ARGUMENT
from antigv.core.errors import ApiError, MalformedUpstreamReply, UpstreamError
from antigv.gateway.catalogue import ModelRetired, retirement_replacement


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

log = structlog.get_logger(__name__)

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
    """Reads the frames of one upstream reply, in order, and keeps what outlives a frame.

    Every read checks its type: a frame of the wrong shape raises
    :class:`MalformedUpstreamReply` (a 502 before the first byte, an SSE error after it),
    never a TypeError from deep inside (PROTOCOL §4).
    """

    def __init__(
        self, tool_names: Mapping[str, str] | None = None, placeholder_tools: frozenset[str] = frozenset()
    ) -> None:
        self._tool_names = tool_names or {}
        # Tools whose calls carry the placeholder argument the request added (PROTOCOL §13.5).
        self._placeholder_tools = placeholder_tools
        # Repeated on many frames, cumulative: the last one is the total. Its counts are
        # checked when read, not on every frame of the hot path.
        self._usage_metadata: dict[str, Any] = {}
        self._counts: dict[str, int] | None = {}
        self._upstream_finish_reason: str | None = None
        self._tool_call_count = 0
        self._saw_output = False
        self._thinking: list[str] = []
        self._pending_signature: tuple[str, str | None] | None = None
        # Tool call id -> (thought signature, the thinking text it signs): what a later request
        # needs to replay the turn (PROTOCOL §3.5). The text is None for a Gemini signature,
        # which rides on a call or text part and is replayed there, not on a thought part.
        self.tool_signatures: dict[str, tuple[str, str | None]] = {}

    def feed(self, frame: Any) -> list[Event]:
        """Events in one parsed frame, ``{"response": {...}, "traceId": ...}`` or a bare response."""
        response = frame.get("response", frame) if isinstance(frame, dict) else frame
        if not isinstance(response, dict):
            raise _malformed("response")
        usage_metadata = response.get("usageMetadata")
        if usage_metadata:
            if isinstance(usage_metadata, dict):
                self._usage_metadata = usage_metadata
                self._counts = None
            else:
                log.warning("upstream_usage_invalid", field="usageMetadata")
        candidates = response.get("candidates")
        if not candidates:
            return []
        if not isinstance(candidates, list) or not isinstance(candidate := candidates[0], dict):
            raise _malformed("candidates")
        finish_reason = candidate.get("finishReason")
        if finish_reason:
            if not isinstance(finish_reason, str):
                raise _malformed("finishReason")
            self._upstream_finish_reason = finish_reason
        content = candidate.get("content")
        if not content:
            return []
        if not isinstance(content, dict):
            raise _malformed("content")
        parts = content.get("parts")
        if not parts:
            return []
        if not isinstance(parts, list):
            raise _malformed("parts")
        events = []
        for part in parts:
            if not isinstance(part, dict):
                raise _malformed("part")
            event = self._part_event(part)
            if event is not None:
                events.append(event)
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
        if self._counts is None:
            self._counts = _valid_counts(self._usage_metadata)
        return self._counts.get(field, 0)

    def _part_event(self, part: dict[str, Any]) -> Event | None:
        signature = part.get("thoughtSignature")
        if signature is not None and not isinstance(signature, str):
            raise _malformed("thoughtSignature")
        if "functionCall" in part:
            return self._tool_call(part["functionCall"], signature)
        thought = part.get("thought")
        event: Event | None = None
        if "inlineData" in part:
            # Image models also emit draft images while thinking; only the final one is the answer.
            if not thought:
                event = _image_event(part["inlineData"])
        elif text := part.get("text"):
            if not isinstance(text, str):
                raise _malformed("text")
            if thought:
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
            self._pending_signature = (signature, self._take_thinking() if thought else None)
        return event

    def _tool_call(self, call: Any, own_signature: str | None) -> ToolCallEvent:
        if not isinstance(call, dict):
            raise _malformed("functionCall")
        call_id = call.get("id") or f"call_{secrets.token_hex(12)}"  # Gemini may omit ids
        name = call.get("name") or ""
        args = call.get("args") or {}
        if not (isinstance(call_id, str) and isinstance(name, str) and isinstance(args, dict)):
            raise _malformed("functionCall")
        if name in self._placeholder_tools:
            args = {key: value for key, value in args.items() if key != PLACEHOLDER_ARGUMENT}
        try:
            arguments_json = orjson.dumps(args).decode()
        except orjson.JSONEncodeError:
            # Valid JSON orjson cannot write back: nested over 255 levels, or a huge integer.
            raise _malformed("functionCall.args") from None
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
            arguments_json=arguments_json,
            thought_signature=entry[0] if entry else None,
        )
        self._tool_call_count += 1
        return event

    def _take_thinking(self) -> str | None:
        """The thinking text since the last signature or call, which ends that thinking block."""
        text = "".join(self._thinking) or None
        self._thinking = []
        return text


_COUNT_FIELDS = (
    "promptTokenCount",
    "candidatesTokenCount",
    "thoughtsTokenCount",
    "totalTokenCount",
    "cachedContentTokenCount",
)
# Far above any model's window (a few million tokens), and low enough that the sums stored
# with it (completion, total) stay within the usage table's integer columns.
MAX_TOKEN_COUNT = 100_000_000


def _valid_counts(usage_metadata: dict[str, Any]) -> dict[str, int]:
    """The counts of one ``usageMetadata``. A bad count is left out (read as 0) rather than
    failing the reply or the usage row, which the database would refuse (issue 11 item 14)."""
    counts = {}
    for field in _COUNT_FIELDS:
        value = usage_metadata.get(field)
        if value is None:
            continue
        count = _token_count(value)
        if count is None:
            log.warning("upstream_usage_invalid", field=field)
        else:
            counts[field] = count
    return counts


def _token_count(value: Any) -> int | None:
    """An upstream token count, or None when it is not one: JSON numbers, or digit strings
    (protobuf's JSON form of 64-bit integers), from 0 to ``MAX_TOKEN_COUNT``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        count = value
    elif isinstance(value, float) and value.is_integer():
        count = int(value)
    elif isinstance(value, str) and value.isascii() and value.isdigit():
        count = int(value) if len(value) <= 9 else MAX_TOKEN_COUNT + 1
    else:
        return None
    return count if 0 <= count <= MAX_TOKEN_COUNT else None


def _image_event(inline: Any) -> ImageEvent:
    if not isinstance(inline, dict):
        raise _malformed("inlineData")
    mime = inline.get("mimeType") or "image/png"
    data = inline.get("data") or ""
    if not (isinstance(mime, str) and isinstance(data, str)):
        raise _malformed("inlineData")
    return ImageEvent(mime, data)


def _malformed(where: str) -> MalformedUpstreamReply:
    log.warning("upstream_reply_malformed", field=where)
    return MalformedUpstreamReply(where)


def _reject_client_outdated_notice(text: str) -> None:
    replacement = retirement_replacement(text)
    if replacement is not None:  # PROTOCOL §13.4: the model is retired, not answering
        raise ModelRetired(None, replacement or None)
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
    # ``refusal`` is required by OpenAI's schema; the upstream has no refusal channel (PROTOCOL §4).
    message: dict[str, Any] = {"role": "assistant", "content": "".join(content) or None, "refusal": None}
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
