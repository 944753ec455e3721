"""``models.list`` of the Gemini API -> what the catalogue knows of each model (issue 15):
only models that can ``generateContent``, named without the ``models/`` prefix."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from antigv.backends.google.models import token_limit
from antigv.core.models import ModelInfo

_PREFIX = "models/"


def parse_models(entries: Iterable[Mapping[str, Any]]) -> dict[str, ModelInfo]:
    offered = {}
    for entry in entries:
        name = entry.get("name")
        methods = entry.get("supportedGenerationMethods")
        if not isinstance(name, str) or not isinstance(methods, list) or "generateContent" not in methods:
            continue
        model_id = name.removeprefix(_PREFIX)
        if not model_id:
            continue
        display = entry.get("displayName")
        thinking = entry.get("thinking")
        offered[model_id] = ModelInfo(
            id=model_id,
            display_name=display if isinstance(display, str) and display else model_id,
            supports_thinking=thinking if isinstance(thinking, bool) else None,
            max_output_tokens=token_limit(entry.get("outputTokenLimit")),
            max_input_tokens=token_limit(entry.get("inputTokenLimit")),
        )
    return offered
