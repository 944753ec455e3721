"""Choosing the account that serves a request (SPEC §5).

``rank_candidates`` is pure: it takes the rows of one query and what this
process knows (requests in flight), and returns the accounts to try in order,
or says why there are none.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from antigv.core.errors import AccountsExhausted, GatewayError, NoAccount, PoolExhausted
from antigv.core.principal import Principal
from antigv.store.db import Database
from antigv.store.singleflight import SingleFlight

# A sticky account is kept while it is at most this much busier than the idlest one.
STICKY_SLACK = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CACHE_ENTRIES = 10_000
# Recovery is continuous, so an emptied pool is "positive" a moment later; admission
# waits for a balance worth a request (1% of one account's quota).
POOL_ADMISSION_MIN = 0.01


@dataclass(frozen=True, slots=True)
class Ranking:
    """Accounts to try, best first; when empty, why (``retry_at`` for exhaustion)."""

    # Rows of the routing query; the one that serves is updated in place (a moved project).
    accounts: list[dict[str, Any]]
    retry_at: datetime | None = None
    # Seconds until the caller's pool is worth a request again; None if it is not empty.
    pool_wait: float | None = None


def _blocked_until(row: Mapping[str, Any], now: datetime) -> datetime | None:
    """When an exhausted or cooling-down account comes back (the latest of its reasons);
    None if usable now."""
    reasons = [row.get("cooldown_until")]
    # Exhausted until its reset time; past it, the model comes back by itself. A reset
    # nobody told us about is looked at again in an hour.
    quota = row.get("quota")
    if quota is not None and quota <= 0:
        reasons.append(row.get("reset_time") or now + timedelta(hours=1))
    # Every window of the model's family bucket must be above 0 (PROTOCOL §13.6).
    if row.get("window_exhausted"):
        reasons.append(row.get("window_reset") or now + timedelta(hours=1))
    token_expired = row.get("access_token_expires_at") is None or row["access_token_expires_at"] <= now
    if token_expired:
        reasons.append(row.get("refresh_retry_at"))
    latest = max((r for r in reasons if r is not None), default=None)
    return latest if latest is not None and latest > now else None


def _affinity(session_key: str, account_id: int) -> bytes:
    """Rendezvous hash: each conversation prefers a stable account, spread evenly."""
    return hashlib.blake2b(f"{session_key}:{account_id}".encode(), digest_size=8).digest()


def rank_candidates(
    rows: Sequence[dict[str, Any]],
    *,
    user_id: int | None,
    prefer_shared: bool,
    inflight: Mapping[int, int],
    session_key: str = "",
    exclude: frozenset[int] = frozenset(),
    pool_reserved: float = 0.0,
    now: datetime | None = None,
    kind_order: Mapping[str, int] | None = None,
) -> Ranking:
    """``pool_reserved``: what this instance already admitted on the caller's pool for this
    quota group and nobody charged yet (quotas/reservations.py); admission counts it spent.
    ``kind_order`` ranks account kinds within a tier ([gemini_api] prefer); none: mixed."""
    now = now or datetime.now(UTC)
    # Dedicated (own, unshared) accounts first unless the user prefers the pool.
    tiers: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
    earliest: datetime | None = None
    pool_wait: float | None = None
    for row in rows:
        if row["account_id"] in exclude or row.get("quota_status", 1) == 0:
            continue
        # Shared accounts draw on the caller's pool (the admin has none to draw on).
        if row["is_shared"] and user_id is not None:
            balance = row["pool_quota"] - pool_reserved
            if balance < POOL_ADMISSION_MIN:
                # A pool of size 0 never refills: such accounts are not the caller's to use.
                if row["pool_max"] > 0:
                    pool_wait = (POOL_ADMISSION_MIN - balance) / row["pool_refill_per_second"]
                continue
        blocked = _blocked_until(row, now)
        if blocked is not None:
            earliest = blocked if earliest is None else min(earliest, blocked)
            continue
        dedicated = row["user_id"] == user_id and not row["is_shared"]
        tiers[0 if dedicated != prefer_shared else 1].append(row)
    if not tiers[0] and not tiers[1]:
        return Ranking([], retry_at=earliest, pool_wait=pool_wait)
    ranked = []
    for tier in tiers:
        if kind_order:
            # Each kind in its turn, spread within itself.
            for rank in sorted(set(kind_order.values())):
                same = [row for row in tier if kind_order.get(row.get("kind", "")) == rank]
                ranked += _spread(same, inflight, session_key)
            ranked += _spread(
                [row for row in tier if row.get("kind", "") not in kind_order], inflight, session_key
            )
        else:
            ranked += _spread(tier, inflight, session_key)
    return Ranking(ranked)


def _spread(
    tier: list[dict[str, Any]], inflight: Mapping[int, int], session_key: str
) -> list[dict[str, Any]]:
    """One tier in order: the conversation's sticky account unless it is busier than
    the others, then the least busy and least recently used."""
    if not tier:
        return tier
    busy = {row["account_id"]: inflight.get(row["account_id"], 0) for row in tier}
    ordered = sorted(tier, key=lambda r: (busy[r["account_id"]], r.get("last_used_at") or _EPOCH))
    if session_key and len(tier) > 1:
        sticky = max(tier, key=lambda r: _affinity(session_key, r["account_id"]))
        if busy[sticky["account_id"]] <= busy[ordered[0]["account_id"]] + STICKY_SLACK:
            ordered.remove(sticky)
            ordered.insert(0, sticky)
    return ordered


def no_account_error(ranking: Ranking, model: str, now: datetime | None = None) -> GatewayError:
    """429 with Retry-After when accounts exist but are exhausted, else 403."""
    now = now or datetime.now(UTC)
    if ranking.retry_at is not None:
        wait = max(1.0, (ranking.retry_at - now).total_seconds())
        return AccountsExhausted(
            f"every account that may serve {model} is exhausted or cooling down; retry later",
            retry_after=wait,
        )
    if ranking.pool_wait is not None:
        return PoolExhausted(
            f"your shared quota pool for {model} is used up; it recovers continuously",
            retry_after=max(1.0, ranking.pool_wait),
        )
    return NoAccount(
        f"no enabled account of yours (or shared pool) can serve {model}; add an account via /api/oauth/authorize"
    )


# (user_id, is_admin, model, quota_group): what one account_candidates read depends on.
_CandidatesKey = tuple[int | None, bool, str, str]


class AccountRouter:
    """Per-process knowledge for selection: requests in flight per account, and the
    candidate rows of recent requests.

    Reusing a candidate list for ``cache_ttl`` seconds takes the account query off
    most requests (it was the largest cost of the hot path). Every query that changes
    what the list holds is marked ``-- invalidates: account_candidates`` in ``sql/``,
    and the database layer drops this cache once such a change commits, so this
    process's next request sees its own changes at once, whichever code made them.
    Changes made by other instances are seen within ``cache_ttl``.
    """

    TOPIC = "account_candidates"

    def __init__(self, db: Database, cache_ttl: float = 0.0) -> None:
        self._db = db
        self._cache_ttl = cache_ttl
        self._cache: dict[_CandidatesKey, tuple[float, list[dict[str, Any]]]] = {}
        # Bumped by every invalidation: a read that overlapped one is not cached,
        # since it may have seen the database from before the change.
        self._generation = 0
        # Requests that miss together share one read (a refill under load).
        self._reads: SingleFlight[_CandidatesKey, list[dict[str, Any]]] = SingleFlight()
        self.inflight: dict[int, int] = {}
        db.watch(self.TOPIC, self.invalidate)

    async def candidates(self, principal: Principal, model: str, quota_group: str) -> list[dict[str, Any]]:
        key = (principal.user_id, principal.is_admin, model, quota_group)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and now - cached[0] < self._cache_ttl:
            return cached[1]
        return await self._reads.run(key, lambda: self._read(key, now))

    async def _read(self, key: _CandidatesKey, now: float) -> list[dict[str, Any]]:
        user_id, is_admin, model, quota_group = key
        generation = self._generation
        rows = await self._db.all(
            "account_candidates", model=model, quota_group=quota_group, user_id=user_id, is_admin=is_admin
        )
        if self._cache_ttl > 0 and generation == self._generation:
            if len(self._cache) > _CACHE_ENTRIES:
                self._cache.clear()
            self._cache[key] = (now, rows)
        return rows

    def invalidate(self) -> None:
        self._generation += 1
        self._cache.clear()
        self._reads.forget()

    def acquire(self, account_id: int) -> None:
        self.inflight[account_id] = self.inflight.get(account_id, 0) + 1

    def release(self, account_id: int) -> None:
        left = self.inflight.get(account_id, 1) - 1
        if left:
            self.inflight[account_id] = left
        else:
            self.inflight.pop(account_id, None)
