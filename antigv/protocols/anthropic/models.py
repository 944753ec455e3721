"""The model list in Anthropic's shape (``GET /v1/models`` from a client that sends
``anthropic-version``; protocols/model_listing.py): a page of ``{"type": "model", "id",
"display_name", "created_at"}`` with ``first_id``, ``last_id`` and ``has_more``, paged by
``limit`` (default 20, at most 1000), ``after_id`` and ``before_id`` as Anthropic's API is."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from antigv.core.errors import InvalidRequest
from antigv.core.models import ListedModel
from antigv.protocols.web import parse_int

DEFAULT_LIMIT = 20
MAX_LIMIT = 1000


def model_object(model: ListedModel) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "type": "model",
        "id": model.id,
        "display_name": model.display_name,
        "created_at": datetime.fromtimestamp(model.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    # What the upstream says of the model's limits, where it says it.
    if model.max_input_tokens is not None:
        entry["max_input_tokens"] = model.max_input_tokens
    if model.max_output_tokens is not None:
        entry["max_tokens"] = model.max_output_tokens
    return entry


def model_page(models: Sequence[ListedModel], query: Mapping[str, str]) -> dict[str, Any]:
    limit = parse_int(query.get("limit"), "limit", default=DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
    after, before = query.get("after_id"), query.get("before_id")
    if after is not None and before is not None:
        raise InvalidRequest("before_id: cannot be used together with after_id", param="before_id")
    ids = [model.id for model in models]
    if before is not None:
        end = _position(ids, before, "before_id")
        start = max(0, end - limit)
        has_more = start > 0
    else:
        start = _position(ids, after, "after_id") + 1 if after is not None else 0
        end = min(len(ids), start + limit)
        has_more = end < len(ids)
    page = models[start:end]
    return {
        "data": [model_object(model) for model in page],
        "first_id": page[0].id if page else None,
        "last_id": page[-1].id if page else None,
        "has_more": has_more,
    }


def _position(ids: list[str], cursor: str, param: str) -> int:
    try:
        return ids.index(cursor)
    except ValueError:
        raise InvalidRequest(f"{param}: {cursor!r} is not a model of this list", param=param) from None
