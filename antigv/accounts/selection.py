"""Choosing the account that serves a request (SPEC §5).

``rank_candidates`` is pure: it takes the rows of one query and what this
process knows (requests in flight), and returns the accounts to try in order,
or says why there are none.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ..db import Database
from ..errors import Forbidden, RateLimited
from ..state import Principal

# A sticky account is kept while it is at most this much busier than the idlest one.
STICKY_SLACK = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# With no better hint, a user whose pool is empty retries after this long.
POOL_RETRY_AFTER = 60.0


@dataclass(frozen=True, slots=True)
class Ranking:
    """Accounts to try, best first; when empty, why (``retry_at`` for exhaustion)."""

    accounts: list[dict[str, Any]]
    retry_at: datetime | None = None
    pool_empty: bool = False


def _blocked_until(row: Mapping[str, Any], now: datetime) -> datetime | None:
    """When an exhausted or cooling-down account comes back; None if usable now."""
    until = row.get("cooldown_until")
    if until is not None and until > now:
        return until
    quota = row.get("quota")
    reset = row.get("reset_time")
    if quota is not None and quota <= 0:
        # Exhausted until its reset time; past it, the model comes back by itself.
        if reset is None:
            return now + timedelta(hours=1)
        if reset > now:
            return reset
    token_expired = row.get("access_token_expires_at") is None or row["access_token_expires_at"] <= now
    retry_refresh = row.get("refresh_retry_at")
    if token_expired and retry_refresh is not None and retry_refresh > now:
        return retry_refresh
    return None


def _affinity(session_key: str, account_id: int) -> bytes:
    """Rendezvous hash: each conversation prefers a stable account, spread evenly."""
    return hashlib.blake2b(f"{session_key}:{account_id}".encode(), digest_size=8).digest()


def rank_candidates(
    rows: Sequence[Mapping[str, Any]],
    *,
    user_id: int | None,
    prefer_shared: bool,
    inflight: Mapping[int, int],
    session_key: str = "",
    exclude: frozenset[int] = frozenset(),
    now: datetime | None = None,
) -> Ranking:
    now = now or datetime.now(UTC)
    usable: list[dict[str, Any]] = []
    earliest: datetime | None = None
    pool_empty = False
    for row in rows:
        if row["account_id"] in exclude or row.get("quota_status", 1) == 0:
            continue
        own = user_id is not None and row["user_id"] == user_id
        # Shared accounts draw on the caller's pool (the admin has none to draw on).
        if row["is_shared"] and user_id is not None and row["pool_quota"] <= 0:
            # A pool of size 0 never refills: such accounts are not the caller's to use.
            pool_empty = pool_empty or row.get("pool_max", 1) > 0
            continue
        blocked = _blocked_until(row, now)
        if blocked is not None:
            earliest = blocked if earliest is None else min(earliest, blocked)
            continue
        usable.append(dict(row, own=own))
    if not usable:
        return Ranking([], retry_at=earliest, pool_empty=pool_empty)

    least_busy = min(inflight.get(r["account_id"], 0) for r in usable)
    sticky_id = None
    if session_key:
        sticky = max(usable, key=lambda r: _affinity(session_key, r["account_id"]))
        if inflight.get(sticky["account_id"], 0) <= least_busy + STICKY_SLACK:
            sticky_id = sticky["account_id"]

    def order(row: dict[str, Any]) -> tuple:
        # Dedicated (own, unshared) accounts first unless the user prefers the pool.
        dedicated = row["own"] and not row["is_shared"]
        tier = 0 if dedicated != prefer_shared else 1
        return (
            tier,
            row["account_id"] != sticky_id,
            inflight.get(row["account_id"], 0),
            row.get("last_used_at") or _EPOCH,
        )

    return Ranking(sorted(usable, key=order))


def no_account_error(ranking: Ranking, model: str, now: datetime | None = None) -> Exception:
    """429 with Retry-After when accounts exist but are exhausted, else 403."""
    now = now or datetime.now(UTC)
    if ranking.retry_at is not None:
        wait = max(1.0, (ranking.retry_at - now).total_seconds())
        return RateLimited(
            f"every account that may serve {model} is exhausted or cooling down; retry later",
            code="accounts_exhausted",
            retry_after=wait,
        )
    if ranking.pool_empty:
        return RateLimited(
            f"your shared quota pool for {model} is used up; it recovers hourly",
            code="pool_exhausted",
            retry_after=POOL_RETRY_AFTER,
        )
    return Forbidden(
        f"no enabled account of yours (or shared pool) can serve {model}; add an account via /api/oauth/authorize",
        code="no_account",
    )


class AccountRouter:
    """Per-process knowledge for selection: requests in flight per account."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.inflight: dict[int, int] = {}

    async def candidates(self, principal: Principal, model: str, quota_group: str) -> list[dict[str, Any]]:
        return await self._db.all(
            "account_candidates",
            model=model,
            quota_group=quota_group,
            user_id=principal.user_id,
            is_admin=principal.is_admin,
        )

    def acquire(self, account_id: int) -> None:
        self.inflight[account_id] = self.inflight.get(account_id, 0) + 1

    def release(self, account_id: int) -> None:
        left = self.inflight.get(account_id, 1) - 1
        if left:
            self.inflight[account_id] = left
        else:
            self.inflight.pop(account_id, None)
