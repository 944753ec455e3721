"""Stored quota reads, their windows and the shared pools (SPEC §6, §9; PROTOCOL §13.6).

Settlement writes reads and charges in one transaction of its own
(accounting/settlement.py); this is everything else that reads or changes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

from antigv.store.db import Database, row_as


class QuotaAccount(TypedDict):
    """The account a quota read is for, with what a token needs (the token client reads it
    as a mapping) and its tier."""

    account_id: int
    user_id: int
    is_shared: int
    status: int
    project_id: str
    tier: str
    access_token: str
    access_token_expires_at: datetime | None
    quota_fetched_at: datetime | None
    kind: str


@dataclass(frozen=True, slots=True)
class ModelQuota:
    """One model's stored quota on one account."""

    account_id: int
    model_name: str
    quota_group: str
    quota: float
    reset_time: datetime | None
    # 0: switched off by hand; reads leave it off.
    status: int
    last_fetched_at: datetime


@dataclass(frozen=True, slots=True)
class LowQuota(ModelQuota):
    """A model quota below a threshold, with whose account it is."""

    user_id: int
    email: str
    is_shared: int


@dataclass(frozen=True, slots=True)
class StoredWindow:
    """One stored window of a family bucket (``gemini-weekly``: bucket ``gemini``, window ``weekly``)."""

    bucket: str
    bucket_id: str
    # The quota group the window limits; None for a bucket no group maps to.
    quota_group: str | None
    window: str
    quota: float
    reset_time: datetime | None
    last_fetched_at: datetime


@dataclass(frozen=True, slots=True)
class SharedTotal:
    """One model over every enabled shared account's switched-on quota."""

    model_name: str
    quota_group: str
    total_quota: float
    earliest_reset_time: datetime | None
    available_accounts: int
    total_accounts: int


@dataclass(frozen=True, slots=True)
class PoolBalance:
    """A user's pool in one quota group, with the recovery accrued so far."""

    user_id: int
    quota_group: str
    quota: float
    max_quota: float
    # None for a group the user has not drawn on yet (a full pool).
    last_recovered_at: datetime | None
    # Quota regained per hour (SPEC §6: a share of max_quota).
    recovery_per_hour: float


class CostEstimate(TypedDict):
    """The mean charge of recent settled shared requests in one quota group."""

    quota_group: str
    per_request: float
    requests: int


class QuotaRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    # --- stored reads --------------------------------------------------------------

    async def account(self, account_id: int) -> QuotaAccount | None:
        row = await self._db.one("quota_account", account_id=account_id)
        if row is None:
            return None
        return QuotaAccount(
            account_id=row["account_id"],
            user_id=row["user_id"],
            is_shared=row["is_shared"],
            status=row["status"],
            project_id=row["project_id"],
            tier=row["tier"],
            access_token=row["access_token"],
            access_token_expires_at=row["access_token_expires_at"],
            quota_fetched_at=row["quota_fetched_at"],
            kind=row["kind"],
        )

    async def usage_since(self, account_id: int, since: datetime) -> dict[str, Any]:
        """Requests, tokens and quota consumed on one account since ``since``."""
        row = await self._db.one("account_usage_since", account_id=account_id, since=since)
        assert row is not None  # an aggregate without GROUP BY always has its row
        return dict(row)

    async def model_quotas(self, account_id: int) -> list[ModelQuota]:
        rows = await self._db.all("quota_rows_of_account", account_id=account_id)
        return [row_as(ModelQuota, row) for row in rows]

    async def windows(self, account_id: int) -> list[StoredWindow]:
        """By bucket, the 5-hour window before the weekly one."""
        rows = await self._db.all("quota_windows_of_account", account_id=account_id)
        return [
            StoredWindow(
                bucket=row["bucket"],
                bucket_id=row["bucket_id"],
                quota_group=row["quota_group"],
                window=row["window_name"],
                quota=row["quota"],
                reset_time=row["reset_time"],
                last_fetched_at=row["last_fetched_at"],
            )
            for row in rows
        ]

    async def set_model_status(self, account_id: int, model: str, status: int) -> ModelQuota | None:
        """Switch one model of an account off (0) or on (1); None when no read reported it."""
        row = await self._db.one("quota_set_model_status", account_id=account_id, model=model, status=status)
        return None if row is None else row_as(ModelQuota, row)

    async def group_models(self, account_id: int, quota_group: str) -> list[str]:
        """The models the account's stored read puts in ``quota_group``."""
        rows = await self._db.all("quota_group_models", account_id=account_id, quota_group=quota_group)
        return [row["model_name"] for row in rows]

    async def known_models(self) -> list[str]:
        """Every model some account's stored read reported."""
        return [row["model_name"] for row in await self._db.all("quota_known_models")]

    async def shared_totals(self) -> list[SharedTotal]:
        return [row_as(SharedTotal, row) for row in await self._db.all("quota_shared_totals")]

    async def low(self, threshold: float) -> list[LowQuota]:
        """Switched-on quotas of enabled accounts below ``threshold``, lowest first."""
        return [row_as(LowQuota, row) for row in await self._db.all("quota_low", threshold=threshold)]

    async def stale_accounts(self, *, stale_after: float, settle_after: float, limit: int) -> list[int]:
        """Enabled accounts whose read is older than ``stale_after`` seconds, or whose finished
        requests have waited ``settle_after`` seconds for a read to settle them; oldest first."""
        rows = await self._db.all(
            "quota_stale_accounts", stale_after=stale_after, settle_after=settle_after, limit=limit
        )
        return [row["account_id"] for row in rows]

    # --- shared pools ----------------------------------------------------------------

    async def pools_of_user(self, user_id: int, groups: list[str]) -> list[PoolBalance] | None:
        """The user's pool in each of ``groups`` and in every other group it could draw on or
        has drawn on (SQL decides the balances); None when the user does not exist."""
        rows = await self._db.all("pool_rows_of_user", user_id=user_id, groups=groups)
        if not rows:
            return None
        return [row_as(PoolBalance, row) for row in rows if row["quota_group"] is not None]

    async def recover_pools(self) -> int:
        """One recovery pass over every pool; how many rows it touched."""
        return await self._db.execute("pool_recover")

    async def cost_estimates(self, sample: int) -> list[CostEstimate]:
        """Per quota group, over the newest ``sample`` settled shared requests."""
        rows = await self._db.all("pool_cost_estimates", sample=sample)
        return [
            CostEstimate(
                quota_group=row["quota_group"], per_request=row["per_request"], requests=row["requests"]
            )
            for row in rows
        ]
