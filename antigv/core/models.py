"""What the gateway knows of one upstream model, from the upstream's own listing."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ModelInfo:
    id: str
    display_name: str
    supports_thinking: bool | None
    max_output_tokens: int | None
    max_input_tokens: int | None = None
