"""What a reply is made of, as it arrives: a stream of neutral events every backend
decodes into and every surface renders from. Pure data."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class FinishReason(enum.Enum):
    STOP = "stop"
    LENGTH = "length"
    TOOL_USE = "tool_use"
    CONTENT_FILTER = "content_filter"


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ThinkingDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ThinkingSignature:
    """Closes the thinking block before it: the signature that lets it be replayed."""

    signature: str


@dataclass(frozen=True, slots=True)
class ToolCallStart:
    index: int
    id: str
    name: str
    # The thought signature a client should carry back with this call (Gemini).
    signature: str | None = None


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    index: int
    arguments_json: str


@dataclass(frozen=True, slots=True)
class ToolCallEnd:
    index: int


@dataclass(frozen=True, slots=True)
class ImageOutput:
    mime_type: str
    data: str  # base64


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    # Includes the reasoning tokens.
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    total_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Finish:
    reason: FinishReason


Event = (
    TextDelta
    | ThinkingDelta
    | ThinkingSignature
    | ToolCallStart
    | ToolCallDelta
    | ToolCallEnd
    | ImageOutput
    | Usage
    | Finish
)
