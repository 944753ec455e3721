"""What the gateway knows of one upstream model, from the upstream's own listing, and what
it shows of one."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ModelInfo:
    id: str
    display_name: str
    supports_thinking: bool | None
    max_output_tokens: int | None
    max_input_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class ListedModel:
    """A model as ``/v1/models`` shows it, in any surface's shape."""

    id: str
    display_name: str
    # When the list was read (Unix seconds): the upstream says no release date.
    created: int
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
