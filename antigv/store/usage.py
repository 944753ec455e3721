"""The usage log: one row per finished request, read by the usage endpoints."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from antigv.store.db import Database, row_as


@dataclass(slots=True)
class UsageRecord:
    """A finished request, as the request path queues it for the log."""

    request_id: str
    user_id: int | None
    account_id: int | None
    model_name: str
    quota_group: str
    is_shared: int
    status: str  # ok | error | cancelled
    latency_ms: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0
    # The client protocol it came through: chat_completions | messages.
    surface: str = "chat_completions"
    # The API key it was made with; None for the admin key.
    key_id: int | None = None
    # Known at once for accounts that report no quota (a Gemini API key's tokens against its
    # daily allowance); None: a quota read settles it later.
    quota_consumed: float | None = None
    consumed_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True, slots=True)
class UsageRow:
    """A logged request as the usage endpoints show it."""

    log_id: int
    # None once the user or the account is deleted: the row stays, detached.
    user_id: int | None
    account_id: int | None
    model_name: str
    quota_group: str
    is_shared: int
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    total_tokens: int
    # None until a quota read settles it.
    quota_consumed: float | None
    status: str
    latency_ms: int
    consumed_at: datetime
    surface: str
    key_id: int | None


@dataclass(frozen=True, slots=True)
class UsageStats:
    total_requests: int
    total_tokens: int
    total_quota_consumed: float
    avg_quota_consumed: float
    settled_requests: int
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class UsageDay:
    """One model's requests on one UTC day, summed."""

    day: date
    model_name: str
    requests: int
    # Requests whose status is not "ok".
    errors: int
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    total_tokens: int
    quota_consumed: float
    # Of ``requests``, those a quota read has settled (``quota_consumed`` sums theirs).
    settled_requests: int
    # Summed, so that a mean over any set of days and models stays exact.
    latency_ms_total: int


def batch_params(records: Sequence[UsageRecord]) -> dict[str, list[Any]]:
    """Parameters of ``insert_usage_batch``: one array per column."""
    return {
        "request_ids": [r.request_id for r in records],
        "user_ids": [r.user_id for r in records],
        "account_ids": [r.account_id for r in records],
        "models": [r.model_name for r in records],
        "quota_groups": [r.quota_group for r in records],
        "shared": [r.is_shared for r in records],
        "prompt_tokens": [r.prompt_tokens for r in records],
        "completion_tokens": [r.completion_tokens for r in records],
        "reasoning_tokens": [r.reasoning_tokens for r in records],
        "total_tokens": [r.total_tokens for r in records],
        "statuses": [r.status for r in records],
        "latencies": [r.latency_ms for r in records],
        "consumed_at": [r.consumed_at for r in records],
        "surfaces": [r.surface for r in records],
        "key_ids": [r.key_id for r in records],
        "quota_consumed": [r.quota_consumed for r in records],
    }


class UsageRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert_batch(self, records: Sequence[UsageRecord]) -> None:
        """One statement for the batch, which also stamps the accounts' last use; rows whose
        user or account was deleted meanwhile are kept, detached."""
        await self._db.execute("insert_usage_batch", **batch_params(records))
        # Rows settled at once charge their users' pools now (the shared ones only, SPEC §6).
        charges: dict[tuple[int, str], float] = {}
        for r in records:
            if r.quota_consumed and r.is_shared and r.user_id is not None:
                charges[(r.user_id, r.quota_group)] = (
                    charges.get((r.user_id, r.quota_group), 0.0) + r.quota_consumed
                )
        if charges:
            await self._db.all(
                "quota_charge_pools",
                user_ids=[user for user, _ in charges],
                groups=[group for _, group in charges],
                amounts=list(charges.values()),
            )

    async def rows(
        self,
        *,
        user_id: int | None,
        start: datetime | None,
        end: datetime | None,
        limit: int,
        key_id: int | None = None,
        before_id: int | None = None,
    ) -> list[UsageRow]:
        """Newest first; every user's for ``user_id`` None, every key's for ``key_id`` None;
        ``end`` is exclusive; with ``before_id``, only rows listed after that one."""
        rows = await self._db.all(
            "usage_rows",
            user_id=user_id,
            key_id=key_id,
            start=start,
            end=end,
            limit=limit,
            before_id=before_id,
        )
        return [row_as(UsageRow, row) for row in rows]

    async def stats(
        self,
        *,
        user_id: int | None,
        models: list[str],
        start: datetime | None,
        end: datetime | None,
        key_id: int | None = None,
    ) -> UsageStats:
        """Over the requests for any of ``models`` (a model and the id it is served as)."""
        row = await self._db.one(
            "usage_stats", user_id=user_id, key_id=key_id, models=models, start=start, end=end
        )
        assert row is not None  # an aggregate without GROUP BY always has its row
        return row_as(UsageStats, row)

    async def daily(
        self, *, user_id: int | None, start: datetime | None, end: datetime | None, key_id: int | None = None
    ) -> list[UsageDay]:
        """Per UTC day and model, oldest day first; filtered as ``rows``."""
        rows = await self._db.all("usage_daily", user_id=user_id, key_id=key_id, start=start, end=end)
        return [row_as(UsageDay, row) for row in rows]

    async def delete_old(self, *, max_age: float, batch: int) -> int:
        """Delete up to ``batch`` rows older than ``max_age`` seconds; how many went."""
        return await self._db.execute("delete_old_usage", max_age=max_age, batch=batch)
