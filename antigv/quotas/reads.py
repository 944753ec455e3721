"""Reading per-model quotas out of ``fetchAvailableModels`` (PROTOCOL §6)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..config import QuotasConfig
from ..translate.models import is_chat_model


@dataclass(frozen=True, slots=True)
class QuotaReading:
    model_name: str
    quota_group: str
    quota: float
    reset_time: datetime | None


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_quota_readings(data: Mapping[str, Any], groups: QuotasConfig) -> list[QuotaReading]:
    """One reading per chat model that reports quota.

    Proto3 drops zero values, so an exhausted model has ``resetTime`` but no
    ``remainingFraction``: that means 0, not 1.
    """
    found = data.get("models")
    if not isinstance(found, Mapping):
        return []
    readings = []
    for name, info in found.items():
        if not isinstance(name, str) or not is_chat_model(name) or not isinstance(info, Mapping):
            continue
        quota_info = info.get("quotaInfo")
        if not isinstance(quota_info, Mapping):
            continue
        fraction = quota_info.get("remainingFraction")
        reset = _timestamp(quota_info.get("resetTime"))
        if isinstance(fraction, int | float) and not isinstance(fraction, bool):
            quota = min(1.0, max(0.0, float(fraction)))
        elif reset is not None:
            quota = 0.0
        else:
            continue
        readings.append(QuotaReading(name, groups.group_of(name), quota, reset))
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
