"""The ``/api/*`` envelope for errors: OpenAI's error object with ``"success": false`` (SPEC §2)."""

from __future__ import annotations

from typing import Any

from antigv.core.errors import GatewayError
from antigv.protocols.openai.errors import openai_error

PREFIX = "/api/"


def admin_error(error: GatewayError) -> tuple[int, dict[str, Any]]:
    status, body = openai_error(error)
    return status, {"success": False, **body}
