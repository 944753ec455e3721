"""A chat request in no client protocol's shape: what every surface parses into and
every backend encodes from. Pure data: no I/O, no protocol names."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class Text:
    text: str


@dataclass(frozen=True, slots=True)
class Image:
    mime_type: str
    data: str  # base64, shape-checked by the surface that parsed it


@dataclass(frozen=True, slots=True)
class Thinking:
    """A reasoning block the model wrote earlier; ``signature`` lets it be replayed."""

    text: str
    signature: str | None = None


@dataclass(frozen=True, slots=True)
class ToolUse:
    id: str
    name: str
    input: Mapping[str, Any]
    # The thought signature the client carried back for this call, if any.
    signature: str | None = None


@dataclass(frozen=True, slots=True)
class ToolResult:
    tool_use_id: str
    content: tuple[Text | Image, ...] = ()
    is_error: bool = False

    @property
    def text(self) -> str:
        return "\n".join(part.text for part in self.content if isinstance(part, Text))


Part = Text | Image | Thinking | ToolUse | ToolResult
Role = Literal["user", "assistant"]


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of the conversation. Tool results travel in user turns."""

    role: Role
    parts: tuple[Part, ...] = ()

    @property
    def text(self) -> str:
        return "\n".join(part.text for part in self.parts if isinstance(part, Text))

    @property
    def tool_uses(self) -> tuple[ToolUse, ...]:
        return tuple(part for part in self.parts if isinstance(part, ToolUse))


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str | None = None
    # A JSON schema, as the client wrote it.
    parameters: Mapping[str, Any] | None = None


ToolMode = Literal["auto", "none", "any"]


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """``any`` with a ``name``: that tool must be called."""

    mode: ToolMode = "auto"
    name: str | None = None


Effort = Literal["none", "minimal", "low", "medium", "high"]


@dataclass(frozen=True, slots=True)
class ThinkingRequest:
    """How much the client wants the model to think: a level, a token budget, or both
    unset (the model's own default). ``effort="none"`` or ``budget=0`` turns it off."""

    effort: Effort | None = None
    budget: int | None = None

    @property
    def off(self) -> bool:
        return self.effort == "none" or self.budget == 0


@dataclass(frozen=True, slots=True)
class Generation:
    """Sampling and output parameters; None leaves the choice to the gateway's defaults."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    json_output: bool = False
    response_schema: Mapping[str, Any] | None = None
    thinking: ThinkingRequest = field(default_factory=ThinkingRequest)


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    turns: tuple[Turn, ...]
    # System instructions, in order; each one message's text.
    system: tuple[str, ...] = ()
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice = field(default_factory=ToolChoice)
    generation: Generation = field(default_factory=Generation)
    stream: bool = False
    # How the ids the gateway invents for tool calls the upstream left unnamed begin, as the
    # client's protocol writes them (OpenAI "call_", Anthropic "toolu_").
    tool_call_id_prefix: str = "call_"

    def tool_uses(self) -> list[ToolUse]:
        return [use for turn in self.turns for use in turn.tool_uses]
