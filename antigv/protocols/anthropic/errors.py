"""Domain errors in Anthropic's shape: ``{"type": "error", "error": {"type", "message"}}``,
with the statuses the OpenAI surface gives each kind (issue 13)."""

from __future__ import annotations

from typing import Any

from antigv.core.errors import (
    ContextTooLong,
    Forbidden,
    GatewayError,
    InvalidRequest,
    Misconfigured,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
)
from antigv.protocols.openai.errors import error_status

# Looked up along the error's class hierarchy; what no entry names is an api_error.
_TYPES: dict[type[GatewayError], str] = {
    InvalidRequest: "invalid_request_error",
    Unauthorized: "authentication_error",
    Forbidden: "permission_error",
    NotFound: "not_found_error",
    PayloadTooLarge: "request_too_large",
    RateLimited: "rate_limit_error",
    Misconfigured: "api_error",
    ServiceUnavailable: "overloaded_error",
}


def _type(error: GatewayError) -> str:
    for cls in type(error).__mro__:
        kind = _TYPES.get(cls)
        if kind is not None:
            return kind
    # 405, 408, 409 and 422 are the client's too; 5xx are the server's.
    return "invalid_request_error" if error_status(error) < 500 else "api_error"


def _message(error: GatewayError) -> str:
    if isinstance(error, ContextTooLong):
        # Anthropic's own wording: Claude Code reads it as "compact the conversation".
        return f"prompt is too long: {error.prompt_tokens} tokens > {error.limit} maximum"
    return error.message


def error_body(error: GatewayError) -> dict[str, Any]:
    return {"type": "error", "error": {"type": _type(error), "message": _message(error)}}


def anthropic_error(error: GatewayError) -> tuple[int, dict[str, Any]]:
    """The surface's error shape (protocols/surfaces.py)."""
    return error_status(error), error_body(error)
