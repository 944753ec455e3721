"""Cloud Code's ``v1internal`` envelope around the ``GenerateContentRequest``
(PROTOCOL §2.1, §13.3): the project, a request id, the session id and the request type.
Pure.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from antigv.backends.base import ToolCallSignature
from antigv.backends.google import models
from antigv.backends.google.generation import NO_SIGNATURES, UpstreamRequest, build_generate_request
from antigv.config import DefaultsConfig
from antigv.core.conversation import ChatRequest
from antigv.core.models import ModelInfo

# PROTOCOL §13.3: the image_gen request id ends in a fixed step number.
_IMAGE_REQUEST_ID = "image_gen/{ms}/{uuid}/12"
# Cloud Code's mode for tool_choice "auto" (PROTOCOL §13.5).
_AUTO_CALLING_MODE = "VALIDATED"


def new_request_id(model: str) -> str:
    """``agent-<uuid>`` for chat; image models take the ``image_gen`` form (PROTOCOL §13.3)."""
    if models.is_image_model(model):
        return _IMAGE_REQUEST_ID.format(ms=int(time.time() * 1000), uuid=uuid.uuid4())
    return f"agent-{uuid.uuid4()}"


def build_upstream_request(
    req: ChatRequest,
    *,
    project: str | None,
    defaults: DefaultsConfig,
    request_id: str,
    signatures: Mapping[str, ToolCallSignature] = NO_SIGNATURES,
    model_info: ModelInfo | None = None,
    thinking_rules: Mapping[models.ThinkingFamily, models.ThinkingRule] = models.THINKING_RULES,
) -> UpstreamRequest:
    """The ``v1internal`` envelope for ``req`` (PROTOCOL §2.1, §13.3); ``project`` None
    leaves the key out."""
    generated = build_generate_request(
        req,
        defaults=defaults,
        auto_calling_mode=_AUTO_CALLING_MODE,
        signatures=signatures,
        model_info=model_info,
        thinking_rules=thinking_rules,
    )
    request = generated.body
    image = models.is_image_model(generated.model)
    if not image:
        # Stable per conversation, for prompt-cache continuity (PROTOCOL §2.1 sessionId, as CPA/ACP).
        opening = int.from_bytes(bytes.fromhex(generated.session_key)[:8], "big")
        request["sessionId"] = "-" + str(opening & 0x7FFF_FFFF_FFFF_FFFF)
    body: dict[str, Any] = {}
    if project:  # PROTOCOL §13.3: never "", left out when unknown
        body["project"] = project
    body.update(
        requestId=request_id,
        request=request,
        model=generated.model,
        userAgent="antigravity",
        requestType="image_gen" if image else "agent",
    )
    return replace(generated, body=body)
