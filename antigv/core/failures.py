"""What can go wrong upstream, in no backend's terms, and what the client is told of it.

A backend classifies each failed attempt into an :class:`UpstreamFailure`; the gateway's
failover policy decides from its ``kind`` what to do next (gateway/failover.py), and
:func:`client_error` says what a surface shows when no attempt succeeds.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from antigv.core.errors import (
    ContextTooLong,
    GatewayError,
    InvalidRequest,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
)


class FailureKind(enum.Enum):
    QUOTA_EXHAUSTED = "quota_exhausted"
    # A window of this account's quota for this one model is spent (a Gemini API key's
    # per-model requests or tokens per minute or day); its other models still serve.
    MODEL_QUOTA_EXHAUSTED = "model_quota_exhausted"
    RATE_LIMITED = "rate_limited"
    CAPACITY = "capacity"
    UNAUTHENTICATED = "unauthenticated"
    PERMISSION_DENIED = "permission_denied"
    ACCOUNT_BLOCKED = "account_blocked"
    VALIDATION_REQUIRED = "validation_required"
    PROJECT_INVALID = "project_invalid"
    INVALID_REQUEST = "invalid_request"
    NOT_FOUND = "not_found"
    SERVER_ERROR = "server_error"
    NETWORK = "network"
    TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class ContextOverflow:
    """An INVALID_REQUEST that says the input is longer than the model takes, and by how much."""

    prompt_tokens: int
    limit: int


@dataclass(eq=False)
class UpstreamFailure(Exception):
    """One failed upstream attempt. ``message`` is the upstream's text, for logs, not clients."""

    kind: FailureKind
    status: int
    message: str
    reason: str | None = None
    retry_after: float | None = None
    reset_at: datetime | None = None
    # VALIDATION_REQUIRED: where the account's owner re-verifies it in a browser (PROTOCOL §13.9).
    validation_url: str | None = None
    context_overflow: ContextOverflow | None = None

    def __str__(self) -> str:
        return f"{self.kind.name} (HTTP {self.status}): {self.message}"


class CredentialsFailed(Exception):
    """The account's credentials could not be had (revoked, or refreshing keeps failing).

    The backend has already recorded what that means for the account; the gateway
    tries another one and stores nothing more.
    """


_UPSTREAM_ERROR_MESSAGES = {
    FailureKind.UNAUTHENTICATED: "The upstream rejected the account's credentials",
    FailureKind.PERMISSION_DENIED: "The upstream denied the account access",
    FailureKind.ACCOUNT_BLOCKED: "The upstream account is blocked",
    FailureKind.VALIDATION_REQUIRED: "The upstream account needs to be verified by its owner",
    FailureKind.PROJECT_INVALID: "The upstream rejected the account's project",
    FailureKind.SERVER_ERROR: "The upstream failed (HTTP {status})",
    FailureKind.NETWORK: "The upstream could not be reached",
}


def client_error(failure: UpstreamFailure) -> GatewayError:
    """What the client sees. Only a rejected request echoes the upstream's words: other
    messages could name an account, a project or a shared user's quota."""
    kind = failure.kind
    if kind is FailureKind.INVALID_REQUEST:
        overflow = failure.context_overflow
        if overflow is not None:
            return ContextTooLong(prompt_tokens=overflow.prompt_tokens, limit=overflow.limit)
        return InvalidRequest(failure.message, code="upstream_invalid_request")
    if kind is FailureKind.NOT_FOUND:
        return NotFound("The model does not exist or is not available upstream", code="model_not_found")
    if kind in (FailureKind.QUOTA_EXHAUSTED, FailureKind.MODEL_QUOTA_EXHAUSTED):
        return RateLimited(
            "The upstream quota for this model is exhausted",
            code="quota_exhausted",
            retry_after=failure.retry_after,
        )
    if kind is FailureKind.RATE_LIMITED:
        return RateLimited("The upstream is rate limiting requests", retry_after=failure.retry_after)
    if kind is FailureKind.CAPACITY:
        error_class = ServiceUnavailable if failure.status == 503 else RateLimited
        return error_class(
            "The upstream has no capacity for this model right now",
            code="model_capacity_exhausted",
            retry_after=failure.retry_after,
        )
    if kind is FailureKind.TIMEOUT:
        return UpstreamTimeout("The upstream did not answer in time")
    return UpstreamError(_UPSTREAM_ERROR_MESSAGES[kind].format(status=failure.status))
