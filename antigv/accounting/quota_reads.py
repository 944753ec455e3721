"""Reading quotas out of ``fetchAvailableModels`` (PROTOCOL §6) and
``retrieveUserQuotaSummary`` (PROTOCOL §13.6)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from antigv.backends.google.models import is_chat_model
from antigv.config import QuotasConfig
from antigv.store.quotas import StoredWindow

# PROTOCOL §13.6: fetchAvailableModels' fraction is the 5-hour window, and free
# "starter" accounts get none for Claude/GPT (the "3p" bucket) even when unused.
FIVE_HOUR_WINDOW = "5h"
STARTER_BUCKET = "3p"


@dataclass(frozen=True, slots=True)
class QuotaReading:
    model_name: str
    quota_group: str
    quota: float
    reset_time: datetime | None


@dataclass(frozen=True, slots=True)
class QuotaWindow:
    """One window of a family bucket: ``gemini-weekly`` is bucket ``gemini``, window ``weekly``."""

    bucket_id: str
    bucket: str
    window: str
    # The quota group this window limits; None for a bucket no group maps to (shown only).
    quota_group: str | None
    quota: float
    reset_time: datetime | None


def is_free_tier(tier: str) -> bool:
    """A free account: its stored tier says so (paid tiers never do, PROTOCOL §7.3)."""
    return "free" in tier.lower()


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _fraction(info: Mapping[str, Any]) -> tuple[float | None, datetime | None]:
    """(remaining fraction, reset) of a ``quotaInfo`` or a summary bucket.

    Proto3 drops zero values, so an exhausted one has ``resetTime`` but no
    ``remainingFraction``: that means 0, not 1. Neither: nothing is known (None).
    """
    fraction = info.get("remainingFraction")
    reset = _timestamp(info.get("resetTime"))
    if isinstance(fraction, int | float) and not isinstance(fraction, bool):
        return min(1.0, max(0.0, float(fraction))), reset
    return (0.0 if reset is not None else None), reset


def parse_quota_windows(data: Mapping[str, Any], groups: QuotasConfig) -> list[QuotaWindow]:
    """The windows of ``retrieveUserQuotaSummary``: ``{"groups": [{"buckets": [{"bucketId",
    "window", "remainingFraction", "resetTime"}]}]}``. A bucket without an id is skipped;
    a missing window is read from the id's suffix (``3p-5h`` -> ``5h``)."""
    found: dict[str, QuotaWindow] = {}
    summary_groups = data.get("groups")
    for group in summary_groups if isinstance(summary_groups, list) else ():
        buckets = group.get("buckets") if isinstance(group, Mapping) else None
        for bucket in buckets if isinstance(buckets, list) else ():
            if not isinstance(bucket, Mapping):
                continue
            bucket_id = bucket.get("bucketId")
            if not isinstance(bucket_id, str) or not bucket_id or bucket_id in found:
                continue
            window = bucket.get("window")
            if not isinstance(window, str) or not window:
                window = bucket_id.rpartition("-")[2]
            family = bucket_id.removesuffix(f"-{window}") or bucket_id
            quota, reset = _fraction(bucket)
            if quota is None:
                continue  # no window open
            found[bucket_id] = QuotaWindow(
                bucket_id, family, window, groups.group_of_bucket(family), quota, reset
            )
    return list(found.values())


def parse_quota_readings(
    data: Mapping[str, Any],
    groups: QuotasConfig,
    *,
    free_tier: bool = False,
    windows: Sequence[QuotaWindow] = (),
) -> list[QuotaReading]:
    """One reading per chat model that reports quota.

    A missing fraction with a reset time is 0 (PROTOCOL §6), except on a free tier
    for the models of the ``3p`` bucket, where the summary's 5-hour figure wins
    when there is one (the "starter" shape of PROTOCOL §13.6).
    """
    found = data.get("models")
    if not isinstance(found, Mapping):
        return []
    starter: dict[str, QuotaWindow] = {}
    if free_tier:
        starter = {
            w.quota_group: w
            for w in windows
            if w.bucket == STARTER_BUCKET and w.window == FIVE_HOUR_WINDOW and w.quota_group is not None
        }
    readings = []
    for name, info in found.items():
        if not isinstance(name, str) or not is_chat_model(name) or not isinstance(info, Mapping):
            continue
        quota_info = info.get("quotaInfo")
        if not isinstance(quota_info, Mapping):
            continue
        group = groups.group_of(name)
        quota, reset = _fraction(quota_info)
        figure = starter.get(group)
        if figure is not None and not isinstance(quota_info.get("remainingFraction"), int | float):
            quota, reset = figure.quota, figure.reset_time or reset
        if quota is None:
            continue
        readings.append(QuotaReading(name, group, quota, reset))
    return readings


def store_params(account_id: int, readings: Sequence[QuotaReading], read_at: datetime) -> dict[str, Any]:
    """Parameters of the ``store_quota_read`` query."""
    return {
        "account_id": account_id,
        "read_at": read_at,
        "models": [r.model_name for r in readings],
        "groups": [r.quota_group for r in readings],
        "quotas": [r.quota for r in readings],
        "resets": [r.reset_time for r in readings],
    }


def stored_window(stored: StoredWindow) -> QuotaWindow:
    """A window as the last summary read stored it."""
    return QuotaWindow(
        stored.bucket_id, stored.bucket, stored.window, stored.quota_group, stored.quota, stored.reset_time
    )


def window_params(account_id: int, windows: Sequence[QuotaWindow], read_at: datetime) -> dict[str, Any]:
    """Parameters of the ``store_quota_windows`` query."""
    return {
        "account_id": account_id,
        "read_at": read_at,
        "bucket_ids": [w.bucket_id for w in windows],
        "buckets": [w.bucket for w in windows],
        "windows": [w.window for w in windows],
        "groups": [w.quota_group for w in windows],
        "quotas": [w.quota for w in windows],
        "resets": [w.reset_time for w in windows],
    }
