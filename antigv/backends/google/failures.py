"""Triage of upstream failures (PROTOCOL §8).

``classify_error`` turns a non-2xx Google reply into an :class:`UpstreamFailure` that says
what went wrong and how long to wait; the gateway's failover policy decides from its
``kind`` what to do (gateway/failover.py), and ``core.failures.client_error`` what the
client sees. Shared by the Google-family backends.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

from antigv.core.failures import ContextOverflow, FailureKind, UpstreamFailure

THROTTLE_KINDS = frozenset(
    {
        FailureKind.QUOTA_EXHAUSTED,
        FailureKind.MODEL_QUOTA_EXHAUSTED,
        FailureKind.RATE_LIMITED,
        FailureKind.CAPACITY,
    }
)

# The upstream says "reset after 0s" or a few milliseconds for limits that are still in
# force; retrying at once only earns another 429 (ACP floors such delays at 2 s too).
MIN_THROTTLE_DELAY = 2.0
# No quota window is longer than a week (PROTOCOL §13): a longer delay is garbage, and a
# huge one would overflow the reset time's datetime.
MAX_DELAY = 7 * 24 * 3600.0

_BODY_EXCERPT_CHARS = 500
# PROTOCOL §13.9 (ACP rate-limit-state.js): a ban is a 403 whose text carries BOTH phrases.
_BAN_PHRASES = ("has been disabled", "violation of terms of service")
# 429 reasons that mean this account's quota is gone until a reset; INSUFFICIENT_G1_CREDITS_BALANCE:
# its AI credits are spent (PROTOCOL §13.9, CPA-0822 credits).
_QUOTA_REASONS = frozenset({"QUOTA_EXHAUSTED", "INSUFFICIENT_G1_CREDITS_BALANCE"})
# A 503 that says this in its text is a capacity shortage like MODEL_CAPACITY_EXHAUSTED (§13.9).
_NO_CAPACITY = "no capacity available"
_MAX_VALIDATION_URL = 2048
_SECONDS_PER_UNIT = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # micro sign
    "μs": 1e-6,  # Greek mu; Go accepts both
    "ms": 1e-3,  # before "m" and "s": regex alternation takes the first unit that matches
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_NUMBER = r"\d+\.?\d*|\.\d+"
_DURATION_UNIT = "|".join(_SECONDS_PER_UNIT)
_DURATION_TERM = re.compile(f"({_DURATION_NUMBER})({_DURATION_UNIT})")
_DELAY_IN_TEXT = re.compile(
    rf"(?:reset after|resets in)\s+((?:(?:{_DURATION_NUMBER})(?:{_DURATION_UNIT}))+)", re.IGNORECASE
)


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration string such as ``"4h30m28.06s"`` or ``"976.066617ms"``."""
    body = text.strip()
    sign = -1.0 if body.startswith("-") else 1.0
    if body[:1] in "+-":
        body = body[1:]
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(f"not a duration: {text!r}")
    seconds = 0.0
    position = 0
    while position < len(body):
        term = _DURATION_TERM.match(body, position)
        if term is None:
            raise ValueError(f"not a duration: {text!r}")
        seconds += float(term.group(1)) * _SECONDS_PER_UNIT[term.group(2)]
        position = term.end()
    return sign * seconds


# (HTTP status, status text, ErrorInfo reason, message, details) -> the failure's kind.
KindRule = Callable[[int, str, "str | None", str, list[dict[str, Any]]], FailureKind]


def classify_error(
    status: int,
    body: bytes,
    headers: Mapping[str, str] | None = None,
    now: datetime | None = None,
    *,
    kind_of: KindRule | None = None,
) -> UpstreamFailure:
    """Classify one upstream error reply. ``headers`` keys are matched case-insensitively;
    ``kind_of`` is the backend's reading of the structured fields (Antigravity's by default)."""
    now = now or datetime.now(UTC)
    error = error_object(body)
    if error is None:
        message = body.decode("utf-8", "replace").strip()[:_BODY_EXCERPT_CHARS]
        error = {}
    else:
        message = _display_message(error)
    details = error_details(error)
    if status < 400 and isinstance(error.get("code"), int):
        status = error["code"]  # an error frame inside a 200 stream carries the real status
    reason = _error_info_reason(details)
    status_text = str(error.get("status") or "")
    if kind_of is None:
        kind = _kind(status, status_text, reason, message)
    else:
        kind = kind_of(status, status_text, reason, message, details)
    retry_after, reset_at = _delay(details, message, headers or {}, now)
    if retry_after is not None and not retry_after <= MAX_DELAY:  # NaN too
        retry_after = MAX_DELAY
    if retry_after is not None and kind in THROTTLE_KINDS:
        retry_after = max(retry_after, MIN_THROTTLE_DELAY)
    if reset_at is None and retry_after is not None:
        reset_at = now + timedelta(seconds=retry_after)
    validation_url = _validation_url(details) if kind is FailureKind.VALIDATION_REQUIRED else None
    overflow = context_overflow(message) if kind is FailureKind.INVALID_REQUEST else None
    return UpstreamFailure(
        kind, status, message, reason, retry_after, reset_at, validation_url, context_overflow=overflow
    )


# A request longer than the model takes, as Google (Gemini API and Vertex: "The input token
# count (N) exceeds the maximum number of tokens allowed (M).") and Anthropic through Vertex
# ("prompt is too long: N tokens > M maximum", PROTOCOL §8.2) word it.
_CONTEXT_OVERFLOWS = (
    re.compile(r"input token count \((\d+)\) exceeds the maximum number of tokens allowed \((\d+)\)", re.I),
    re.compile(r"prompt is too long: (\d+) tokens > (\d+) maximum", re.I),
)


def context_overflow(message: str) -> ContextOverflow | None:
    """How far a rejected request's input went past the model's limit, if that is what it says."""
    for pattern in _CONTEXT_OVERFLOWS:
        found = pattern.search(message)
        if found is not None:
            return ContextOverflow(prompt_tokens=int(found.group(1)), limit=int(found.group(2)))
    return None


def error_details(error: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``details`` objects of a Google error (``google.rpc.*`` messages)."""
    raw = error.get("details")
    return [d for d in raw if isinstance(d, dict)] if isinstance(raw, list) else []


def error_object(body: bytes) -> dict[str, Any] | None:
    """The ``error`` member of an object or ``[{"error": ...}]`` body; None if there is none."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(document, list):
        document = next((item for item in document if isinstance(item, dict)), None)
    if not isinstance(document, dict):
        return None
    error = document.get("error")
    if isinstance(error, dict):
        return error
    if isinstance(error, str):  # OAuth style: {"error": "invalid_grant", "error_description": ...}
        return {"message": document.get("error_description") or error}
    return None


def _display_message(error: Mapping[str, Any]) -> str:
    """The error message; for Claude, the Anthropic message embedded in it as a JSON string."""
    message = str(error.get("message") or "")
    if not message.lstrip().startswith("{"):
        return message
    try:
        embedded = orjson.loads(message)
    except orjson.JSONDecodeError:
        return message
    inner = embedded.get("error") if isinstance(embedded, dict) else None
    if isinstance(inner, dict) and isinstance(inner.get("message"), str):
        return inner["message"]
    return message


def _error_info_reason(details: list[dict[str, Any]]) -> str | None:
    for detail in details:
        if str(detail.get("@type", "")).endswith("ErrorInfo") and detail.get("reason"):
            return str(detail["reason"])
    return None


def _kind(status: int, status_text: str, reason: str | None, message: str) -> FailureKind:
    """The kind, decided by the HTTP status, the status text and the ErrorInfo reason.

    The message may quote the user's prompt or schema (issue 11 item 15), so it only ever
    narrows what the structured fields decided, never turns a request's own error into one
    that parks or disables a (maybe shared) account.
    """
    if reason == "MODEL_CAPACITY_EXHAUSTED":
        return FailureKind.CAPACITY
    if reason == "VALIDATION_REQUIRED":
        return FailureKind.VALIDATION_REQUIRED
    if status == 429:
        return FailureKind.QUOTA_EXHAUSTED if reason in _QUOTA_REASONS else FailureKind.RATE_LIMITED
    if status == 400:
        if reason == "RESOURCE_PROJECT_INVALID":
            return FailureKind.PROJECT_INVALID
        # A body that is not Google's JSON has only its whole text to go by.
        if (
            status_text == "RESOURCE_EXHAUSTED"
            or reason in _QUOTA_REASONS
            or reason == "RATE_LIMIT_EXCEEDED"
            or (not status_text and message.strip() == "RESOURCE_EXHAUSTED")
        ):
            return FailureKind.QUOTA_EXHAUSTED
        return FailureKind.INVALID_REQUEST
    if status == 401:
        return FailureKind.UNAUTHENTICATED
    if status == 403:
        lowered = message.lower()
        if all(phrase in lowered for phrase in _BAN_PHRASES):
            return FailureKind.ACCOUNT_BLOCKED
        return FailureKind.PERMISSION_DENIED
    if status == 404:
        return FailureKind.NOT_FOUND
    if status == 503 and _NO_CAPACITY in message.lower():
        return FailureKind.CAPACITY
    if status == 408 or status >= 500 or status < 400:
        return FailureKind.SERVER_ERROR
    return FailureKind.INVALID_REQUEST


def _validation_url(details: list[dict[str, Any]]) -> str | None:
    """``metadata.validation_url`` of the VALIDATION_REQUIRED ErrorInfo, if it is a plain https URL
    (it is shown to the account's owner)."""
    for detail in details:
        metadata = detail.get("metadata")
        if detail.get("reason") != "VALIDATION_REQUIRED" or not isinstance(metadata, dict):
            continue
        url = metadata.get("validation_url") or metadata.get("validationUrl")
        if (
            isinstance(url, str)
            and url.startswith("https://")
            and len(url) <= _MAX_VALIDATION_URL
            and url.isprintable()
            and " " not in url
        ):
            return url
    return None


def _delay(
    details: list[dict[str, Any]], message: str, headers: Mapping[str, str], now: datetime
) -> tuple[float | None, datetime | None]:
    """(seconds to wait, reset instant) from the first source that has one, in PROTOCOL §8.2 order."""
    metadata: Mapping[str, Any] = {}
    retry_delay = None
    for detail in details:
        type_url = str(detail.get("@type", ""))
        if type_url.endswith("RetryInfo"):
            retry_delay = detail.get("retryDelay")
        elif type_url.endswith("ErrorInfo") and isinstance(detail.get("metadata"), dict):
            metadata = detail["metadata"]
    reset_at = _parse_timestamp(metadata.get("quotaResetTimeStamp"))
    for duration in (retry_delay, metadata.get("quotaResetDelay")):
        seconds = _parse_duration_or_none(duration)
        if seconds is not None:
            return max(seconds, 0.0), reset_at
    if reset_at is not None:
        return max((reset_at - now).total_seconds(), 0.0), reset_at
    in_text = _DELAY_IN_TEXT.search(message)
    if in_text is not None:
        return parse_go_duration(in_text.group(1)), None
    return _retry_after_header(headers, now), None


def _parse_duration_or_none(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_go_duration(value)
    except ValueError:
        return None


def _parse_timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return _as_utc_if_naive(parsed)


def _retry_after_header(headers: Mapping[str, str], now: datetime) -> float | None:
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max((_as_utc_if_naive(when) - now).total_seconds(), 0.0)


def _as_utc_if_naive(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
