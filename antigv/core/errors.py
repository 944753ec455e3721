"""Domain errors: what went wrong, in no surface's terms.

Services raise these; each client surface renders them in its own shape and status
(protocols/openai/errors.py for OpenAI's, SPEC §2). ``code`` is the stable,
machine-readable name clients match on.
"""

from __future__ import annotations


class GatewayError(Exception):
    """The base of every error a client is shown; a bare one is an internal error."""

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


class InvalidRequest(GatewayError):
    default_code = "invalid_request"


class ContextTooLong(InvalidRequest):
    """The conversation holds more input tokens than the model takes. Clients match this
    (OpenAI's ``context_length_exceeded``, Anthropic's "prompt is too long") to trim or
    compact and try again, so each surface words it as its own API does."""

    default_code = "context_length_exceeded"

    def __init__(self, *, prompt_tokens: int, limit: int) -> None:
        super().__init__(
            f"the conversation has {prompt_tokens} input tokens, more than the model's {limit}",
            param="messages",
        )
        self.prompt_tokens = prompt_tokens
        self.limit = limit


class NotFound(GatewayError):
    default_code = "not_found"


class MethodNotAllowed(GatewayError):
    default_code = "method_not_allowed"


class Conflict(GatewayError):
    default_code = "conflict"


class PayloadTooLarge(GatewayError):
    default_code = "request_too_large"


class Unprocessable(GatewayError):
    default_code = "unprocessable"


class Unauthorized(GatewayError):
    default_code = "invalid_api_key"


class Forbidden(GatewayError):
    default_code = "forbidden"


class RateLimited(GatewayError):
    """429; ``retry_after`` (seconds) becomes the ``Retry-After`` header."""

    default_code = "rate_limit_exceeded"


class AccountsExhausted(RateLimited):
    """Every account that may serve the model is exhausted or cooling down."""

    default_code = "accounts_exhausted"


class PoolExhausted(RateLimited):
    """The caller's share of the shared accounts is used up for now."""

    default_code = "pool_exhausted"


class NoAccount(Forbidden):
    """No account the caller may use serves the model at all."""

    default_code = "no_account"


class UpstreamError(GatewayError):
    default_code = "upstream_error"


class MalformedUpstreamReply(UpstreamError):
    """A reply frame that breaks the upstream's own protocol (PROTOCOL §4).

    The upstream's fault, not the account's: failover gives up without a cooldown.
    ``where`` names the field for the logs; the value is never kept (it may quote the prompt).
    """

    def __init__(self, where: str) -> None:
        super().__init__("The upstream sent a reply the gateway could not read")
        self.where = where


class RequestTimeout(GatewayError):
    default_code = "request_timeout"


class UpstreamTimeout(GatewayError):
    default_code = "upstream_timeout"


class ServiceUnavailable(GatewayError):
    default_code = "service_unavailable"


class Misconfigured(GatewayError):
    """The gateway cannot serve until its operator fixes its configuration."""

    default_code = "misconfigured"


class InternalError(GatewayError):
    default_code = "internal_error"


class ModelRetired(NotFound):
    """404 for a model the upstream has retired; names the replacement when one is known."""

    default_code = "model_retired"

    def __init__(self, model: str | None, replacement: str | None) -> None:
        message = f"The model {model!r} has been retired upstream" if model else "The model has been retired"
        message += f"; use {replacement!r} instead" if replacement else " and has no known replacement"
        super().__init__(message, param="model")
        self.model = model
        self.replacement = replacement
