"""One quota read of an account from upstream: ``fetchAvailableModels`` (per-model
5-hour fractions, PROTOCOL §6) and, beside it, ``retrieveUserQuotaSummary`` (the
5-hour and weekly windows of the family buckets, PROTOCOL §13.6).

The summary is extra: when it fails the read still counts, without windows
(``windows`` None), and whoever stores the read keeps the windows it had.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from antigv.accounting.quota_reads import (
    QuotaReading,
    QuotaWindow,
    is_free_tier,
    parse_quota_readings,
    parse_quota_windows,
)
from antigv.backends.antigravity.client import UpstreamClient
from antigv.config import QuotasConfig
from antigv.core.failures import UpstreamFailure


@dataclass(frozen=True, slots=True)
class UpstreamQuotas:
    models: Mapping[str, Any]
    # None: the summary could not be read (``summary_failure`` says why).
    windows: list[QuotaWindow] | None
    summary_failure: UpstreamFailure | None = None

    def readings(
        self, groups: QuotasConfig, tier: str, stored_windows: Sequence[QuotaWindow] = ()
    ) -> list[QuotaReading]:
        """The per-model readings; the free-tier rule uses this read's windows, or the
        stored ones when the summary failed."""
        windows = self.windows if self.windows is not None else stored_windows
        return parse_quota_readings(self.models, groups, free_tier=is_free_tier(tier), windows=windows)


async def fetch_quotas(
    upstream: UpstreamClient, access_token: str, project_id: str, groups: QuotasConfig
) -> UpstreamQuotas:
    """Both calls at once; raises the UpstreamFailure of ``fetchAvailableModels`` only."""
    models, summary = await asyncio.gather(
        upstream.available_models(access_token, project_id),
        upstream.quota_summary(access_token, project_id),
        return_exceptions=True,
    )
    if isinstance(models, BaseException):
        raise models
    if isinstance(summary, UpstreamFailure):
        return UpstreamQuotas(models, None, summary)
    if isinstance(summary, BaseException):
        raise summary
    return UpstreamQuotas(models, parse_quota_windows(summary, groups))
