"""The Gemini API's error replies -> core failure kinds (issue 15; Google's "Rate limits"
and "Troubleshooting" pages of the Gemini API reference).

- 429 ``RESOURCE_EXHAUSTED`` names the spent quota in a ``google.rpc.QuotaFailure``
  (``quotaId`` such as ``GenerateRequestsPerMinutePerProjectPerModel-FreeTier``) and
  when to retry in a ``google.rpc.RetryInfo``: that key is parked for that model alone
  until the window passes; a per-day quota until the next midnight Pacific time, when
  Google resets it.
- 400 ``API_KEY_INVALID`` and 403 (``PERMISSION_DENIED``, e.g. ``CONSUMER_SUSPENDED``)
  are the key's own fault: the account is disabled with the reason. Any other 400 is
  the request's, which never disables a key.
- 503 "overloaded" is capacity; other 5xx and network errors fail over as for any account.

Google's messages may quote the key: every message is redacted before it goes anywhere.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from antigv.backends.google.failures import classify_error, error_details, error_object
from antigv.core.failures import FailureKind, UpstreamFailure

# Google's API keys: "AIza" and 35 more URL-safe characters.
_KEY_PATTERN = re.compile(r"AIza[0-9A-Za-z_\-]{35}")
_PACIFIC = ZoneInfo("America/Los_Angeles")
# Reasons that are the key's, not the request's.
_KEY_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_SERVICE_BLOCKED"})


def redact(text: str, key: str | None = None) -> str:
    """``text`` without any API key in it (the account's own, and anything shaped like one)."""
    if key:
        text = text.replace(key, "[key]")
    return _KEY_PATTERN.sub("[key]", text)


def _kind(
    status: int, status_text: str, reason: str | None, message: str, details: list[dict[str, Any]]
) -> FailureKind:
    if status == 429 or status_text == "RESOURCE_EXHAUSTED":
        return FailureKind.MODEL_QUOTA_EXHAUSTED
    if reason in _KEY_REASONS or status in (401, 403):
        return FailureKind.ACCOUNT_BLOCKED
    if status == 404:
        return FailureKind.NOT_FOUND
    if status == 503:
        return FailureKind.CAPACITY
    if status == 408 or status >= 500 or status < 400:
        return FailureKind.SERVER_ERROR
    return FailureKind.INVALID_REQUEST


def quota_ids(details: list[dict[str, Any]]) -> list[str]:
    """The ``quotaId`` of each violation of a ``google.rpc.QuotaFailure``."""
    found = []
    for detail in details:
        if str(detail.get("@type", "")).endswith("QuotaFailure"):
            for violation in detail.get("violations") or ():
                if isinstance(violation, dict) and isinstance(violation.get("quotaId"), str):
                    found.append(violation["quotaId"])
    return found


def pacific_day(now: datetime) -> tuple[datetime, datetime]:
    """(the last, the next) midnight in Pacific time around ``now``, in UTC: Google's day of
    per-day quotas. A day across a clock change has 23 or 25 hours: built from dates, not
    by adding 24 hours."""
    local = now.astimezone(_PACIFIC).date()
    start = datetime(local.year, local.month, local.day, tzinfo=_PACIFIC)
    tomorrow = local + timedelta(days=1)
    end = datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=_PACIFIC)
    return start.astimezone(UTC), end.astimezone(UTC)


def classify(
    status: int,
    body: bytes,
    headers: dict[str, str] | None = None,
    *,
    key: str | None = None,
    now: datetime | None = None,
) -> UpstreamFailure:
    now = now or datetime.now(UTC)
    failure = classify_error(status, body, headers, now, kind_of=_kind)
    failure.message = redact(failure.message, key)
    if failure.kind is FailureKind.MODEL_QUOTA_EXHAUSTED:
        error = error_object(body) or {}
        ids = quota_ids(error_details(error))
        failure.reason = ids[0] if ids else failure.reason
        if any("PerDay" in quota_id for quota_id in ids):
            failure.reset_at = pacific_day(now)[1]
            failure.retry_after = (failure.reset_at - now).total_seconds()
    return failure
