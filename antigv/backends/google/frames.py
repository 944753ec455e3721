"""Google ``generateContent`` reply frames -> neutral events (PROTOCOL §4, §5).

Shared by the Google-family backends: ``FrameDecoder`` reads the frames of one reply
in order, yields core events and keeps what outlives a frame (usage, the signatures
a later turn must replay).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from typing import Any

import orjson
import structlog

from antigv.core.errors import MalformedUpstreamReply
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
from antigv.core.failures import FailureKind, UpstreamFailure

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


def finish_reason(upstream_reason: str | None, saw_tool_call: bool) -> FinishReason:
    # Tool-call turns end with STOP (Gemini) or OTHER (Claude): only the calls themselves tell.
    if saw_tool_call:
        return FinishReason.TOOL_USE
    if upstream_reason == "MAX_TOKENS":
        return FinishReason.LENGTH
    if upstream_reason in _CONTENT_FILTER_REASONS:
        return FinishReason.CONTENT_FILTER
    return FinishReason.STOP


class FrameDecoder:
    """Reads the frames of one upstream reply, in order, and keeps what outlives a frame.

    Every read checks its type: a frame of the wrong shape raises
    :class:`MalformedUpstreamReply` (a 502 before the first byte, an SSE error after it),
    never a TypeError from deep inside (PROTOCOL §4).
    """

    def __init__(
        self,
        tool_names: Mapping[str, str] | None = None,
        placeholder_tools: frozenset[str] = frozenset(),
        placeholder_argument: str = "",
        check_first_text: Callable[[str], None] | None = None,
        tool_call_id_prefix: str = "call_",
    ) -> None:
        self._tool_names = tool_names or {}
        self._tool_call_id_prefix = tool_call_id_prefix
        # The backend's test of a reply's first text: a notice sent as an answer raises.
        self._check_first_text = check_first_text
        # Tools whose calls carry the placeholder argument the request added (PROTOCOL §13.5).
        self._placeholder_tools = placeholder_tools
        self._placeholder_argument = placeholder_argument
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
            events.extend(self._part_events(part))
        # A signature alone is no output: the notice check waits for the first text.
        if events and not all(isinstance(event, ThinkingSignature) for event in events):
            self._saw_output = True
        return events

    def finish(self) -> list[Event]:
        """The closing events, once the upstream reply has ended: its usage, then its end."""
        reason = finish_reason(self._upstream_finish_reason, self._tool_call_count > 0)
        return [self.usage, Finish(reason)]

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
    def usage(self) -> Usage:
        """The counts of the last ``usageMetadata`` seen."""
        total = self._count("totalTokenCount") or self.prompt_tokens + self.completion_tokens
        return Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            reasoning_tokens=self.reasoning_tokens,
            cached_tokens=self._count("cachedContentTokenCount"),
            total_tokens=total,
        )

    def _count(self, field: str) -> int:
        if self._counts is None:
            self._counts = _valid_counts(self._usage_metadata)
        return self._counts.get(field, 0)

    def _part_events(self, part: dict[str, Any]) -> list[Event]:
        signature = part.get("thoughtSignature")
        if signature is not None and not isinstance(signature, str):
            raise _malformed("thoughtSignature")
        if "functionCall" in part:
            return self._tool_call(part["functionCall"], signature)
        thought = part.get("thought")
        events: list[Event] = []
        if "inlineData" in part:
            # Image models also emit draft images while thinking; only the final one is the answer.
            if not thought:
                events.append(_image_event(part["inlineData"]))
        elif text := part.get("text"):
            if not isinstance(text, str):
                raise _malformed("text")
            if thought:
                self._thinking.append(text)
                events.append(ThinkingDelta(text))
            else:
                # The notice is a whole reply; later in an answer the words are the model's own
                # (it may talk about Antigravity), and checking every delta costs the hot path.
                if not self._saw_output and self._check_first_text is not None:
                    self._check_first_text(text)
                events.append(TextDelta(text))
        if signature:
            # Claude signs its thinking with a trailing (empty) thought part, Gemini may sign on
            # a text part; either way the signature belongs to the next tool call.
            self._pending_signature = (signature, self._take_thinking() if thought else None)
            if thought:
                events.append(ThinkingSignature(signature))
        return events

    def _tool_call(self, call: Any, own_signature: str | None) -> list[Event]:
        if not isinstance(call, dict):
            raise _malformed("functionCall")
        call_id = (
            call.get("id") or f"{self._tool_call_id_prefix}{secrets.token_hex(12)}"
        )  # Gemini may omit ids
        name = call.get("name") or ""
        args = call.get("args") or {}
        if not (isinstance(call_id, str) and isinstance(name, str) and isinstance(args, dict)):
            raise _malformed("functionCall")
        if name in self._placeholder_tools:
            args = {key: value for key, value in args.items() if key != self._placeholder_argument}
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
        index = self._tool_call_count
        self._tool_call_count += 1
        name = self._tool_names.get(name, name)
        return [
            ToolCallStart(index, call_id, name, entry[0] if entry else None),
            ToolCallDelta(index, arguments_json),
            ToolCallEnd(index),
        ]

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
        count = token_count(value)
        if count is None:
            log.warning("upstream_usage_invalid", field=field)
        else:
            counts[field] = count
    return counts


def counted_total(answer: dict[str, Any]) -> int:
    """``totalTokens`` of a ``countTokens`` answer (PROTOCOL §13.10); a 502 without one."""
    total = token_count(answer.get("totalTokens"))
    if total is None:
        raise UpstreamFailure(FailureKind.SERVER_ERROR, 502, "countTokens answered without totalTokens")
    return total


def token_count(value: Any) -> int | None:
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


def _image_event(inline: Any) -> ImageOutput:
    if not isinstance(inline, dict):
        raise _malformed("inlineData")
    mime = inline.get("mimeType") or "image/png"
    data = inline.get("data") or ""
    if not (isinstance(mime, str) and isinstance(data, str)):
        raise _malformed("inlineData")
    return ImageOutput(mime, data)


def _malformed(where: str) -> MalformedUpstreamReply:
    log.warning("upstream_reply_malformed", field=where)
    return MalformedUpstreamReply(where)
