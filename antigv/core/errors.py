"""Typed errors. Handlers raise these; one middleware turns them into responses.

Every error reaches the client in OpenAI's shape:
``{"error": {"message", "type", "code", "param"}}`` (SPEC §2).
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error with a defined HTTP status and OpenAI-style body."""

    status: int = 500
    error_type: str = "server_error"
    default_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code if code is not None else self.default_code
        self.param = param
        self.retry_after = retry_after
        # Extra response headers (e.g. Allow on a 405).
        self.headers: dict[str, str] = {}
        # The connection cannot carry another request (a body left unread or undecodable).
        self.close_connection = False

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "code": self.code,
                "param": self.param,
            }
        }


class InvalidRequest(ApiError):
    status = 400
    error_type = "invalid_request_error"
    default_code = "invalid_request"


class NotFound(ApiError):
    status = 404
    error_type = "invalid_request_error"
    default_code = "not_found"


class MethodNotAllowed(ApiError):
    status = 405
    error_type = "invalid_request_error"
    default_code = "method_not_allowed"


class Conflict(ApiError):
    status = 409
    error_type = "invalid_request_error"
    default_code = "conflict"


class PayloadTooLarge(ApiError):
    status = 413
    error_type = "invalid_request_error"
    default_code = "request_too_large"


class Unprocessable(ApiError):
    status = 422
    error_type = "invalid_request_error"
    default_code = "unprocessable"


class Unauthorized(ApiError):
    status = 401
    error_type = "authentication_error"
    default_code = "invalid_api_key"


class Forbidden(ApiError):
    status = 403
    error_type = "permission_error"
    default_code = "forbidden"


class RateLimited(ApiError):
    """429; ``retry_after`` (seconds) becomes the ``Retry-After`` header."""

    status = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class UpstreamError(ApiError):
    status = 502
    error_type = "upstream_error"
    default_code = "upstream_error"


class MalformedUpstreamReply(UpstreamError):
    """A reply frame that breaks the upstream's own protocol (PROTOCOL §4).

    The upstream's fault, not the account's: failover gives up without a cooldown.
    ``where`` names the field for the logs; the value is never kept (it may quote the prompt).
    """

    def __init__(self, where: str) -> None:
        super().__init__("The upstream sent a reply the gateway could not read")
        self.where = where


class RequestTimeout(ApiError):
    status = 408
    error_type = "invalid_request_error"
    default_code = "request_timeout"


class UpstreamTimeout(ApiError):
    status = 504
    error_type = "upstream_error"
    default_code = "upstream_timeout"


class ServiceUnavailable(ApiError):
    status = 503
    error_type = "service_unavailable"
    default_code = "service_unavailable"


class InternalError(ApiError):
    status = 500
    error_type = "server_error"
    default_code = "internal_error"
