"""The model list in OpenAI's shape (``GET /v1/models``, protocols/model_listing.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from antigv.core.models import ListedModel


def model_object(model: ListedModel) -> dict[str, Any]:
    return {"id": model.id, "object": "model", "created": model.created, "owned_by": "google"}


def model_list(models: Sequence[ListedModel]) -> dict[str, Any]:
    return {"object": "list", "data": [model_object(model) for model in models]}
