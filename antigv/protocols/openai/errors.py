"""Domain errors in OpenAI's shape: ``{"error": {"message", "type", "code", "param"}}``
with the status OpenAI gives each kind (SPEC §2)."""

from __future__ import annotations

from typing import Any

from antigv.core.errors import (
    Conflict,
    ContextTooLong,
    Forbidden,
    GatewayError,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    Misconfigured,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RequestTimeout,
    ServiceUnavailable,
    Unauthorized,
    Unprocessable,
    UpstreamError,
    UpstreamTimeout,
)

# Looked up along the error's class hierarchy: a subclass shares its base's shape.
_SHAPES: dict[type[GatewayError], tuple[int, str]] = {
    InvalidRequest: (400, "invalid_request_error"),
    Unauthorized: (401, "authentication_error"),
    Forbidden: (403, "permission_error"),
    NotFound: (404, "invalid_request_error"),
    MethodNotAllowed: (405, "invalid_request_error"),
    RequestTimeout: (408, "invalid_request_error"),
    Conflict: (409, "invalid_request_error"),
    PayloadTooLarge: (413, "invalid_request_error"),
    Unprocessable: (422, "invalid_request_error"),
    RateLimited: (429, "rate_limit_error"),
    InternalError: (500, "server_error"),
    UpstreamError: (502, "upstream_error"),
    ServiceUnavailable: (503, "service_unavailable"),
    Misconfigured: (503, "service_unavailable"),
    UpstreamTimeout: (504, "upstream_error"),
    GatewayError: (500, "server_error"),
}


def _shape(error: GatewayError) -> tuple[int, str]:
    for cls in type(error).__mro__:
        shape = _SHAPES.get(cls)
        if shape is not None:
            return shape
    return _SHAPES[GatewayError]


def error_status(error: GatewayError) -> int:
    return _shape(error)[0]


def _message(error: GatewayError) -> str:
    if isinstance(error, ContextTooLong):
        # OpenAI's own wording: clients (litellm's ContextWindowExceededError among them) match it.
        return (
            f"This model's maximum context length is {error.limit} tokens. However, your messages "
            f"resulted in {error.prompt_tokens} tokens. Please reduce the length of the messages."
        )
    return error.message


def error_body(error: GatewayError) -> dict[str, Any]:
    return {
        "error": {
            "message": _message(error),
            "type": _shape(error)[1],
            "code": error.code,
            "param": error.param,
        }
    }


def openai_error(error: GatewayError) -> tuple[int, dict[str, Any]]:
    """The surface's error shape (protocols/surfaces.py)."""
    return error_status(error), error_body(error)
