"""Settlement: turning quota reads into per-request charges (SPEC §6).

Upstream never says what one request cost; it only reports each account's
remaining fraction per quota group. So every read of an account is compared
with the previous one, group by group, and the drop is split between the
requests served on that account and group since then, by tokens:

* ``drop = previous - new`` when positive and the previous reset time had not
  passed by this read; a rise or a reset charges nothing;
* the requests' ``quota_consumed`` is set (0 when nothing dropped), the last one
  taking the rounding remainder so the charges sum to the drop;
* requests served by a shared account charge their user's pool (never below 0);
* a drop seen while no finished request of that group awaits settlement (the
  requests that caused it are still in flight) is carried to the next read's
  requests, so charges add up to the drops observed; a carry older than
  ``CARRY_TTL`` is dropped (the quota was used outside the gateway);
* the read itself is stored, all in one transaction.

Reads of one account serialise on its row (``FOR NO KEY UPDATE``), and a read
taken before the stored one is discarded, so no drop is seen, or charged, twice.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog

from antigv.accounting.quota_reads import QuotaReading, QuotaWindow, store_params, window_params
from antigv.store.db import Database

log = structlog.get_logger(__name__)

# Longer than any request can run: a drop nobody claimed by then was not the gateway's.
CARRY_TTL = timedelta(minutes=10)


def split_drop(drop: float, tokens: Sequence[int]) -> list[float]:
    """Split ``drop`` over requests in proportion to ``tokens`` (equally if all are 0).

    The last request takes the remainder, so the parts add up to ``drop``.
    """
    if not tokens:
        return []
    if drop <= 0:
        return [0.0] * len(tokens)
    weights = [max(0, t) for t in tokens]
    total = sum(weights)
    if total == 0:
        weights = [1] * len(tokens)
        total = len(tokens)
    parts = [drop * w / total for w in weights[:-1]]
    parts.append(max(0.0, drop - sum(parts)))
    return parts


def group_drops(
    previous: dict[str, dict[str, Any]], readings: Sequence[QuotaReading], read_at: datetime
) -> dict[str, float]:
    """Per quota group in this read: how much it dropped since the previous read (>= 0)."""
    current: dict[str, float] = {}
    for reading in readings:
        group = reading.quota_group
        current[group] = min(current.get(group, reading.quota), reading.quota)
    drops: dict[str, float] = {}
    for group, quota in current.items():
        before = previous.get(group)
        if before is None:
            drops[group] = 0.0  # the first read of this group: nothing to compare with
            continue
        reset = before["reset_time"]
        if reset is not None and reset <= read_at:
            drops[group] = 0.0  # the bucket was refilled in between
            continue
        drops[group] = max(0.0, before["quota"] - quota)
    return drops


@dataclass
class Settlement:
    """What one read did; ``stale`` when a newer read had already been stored."""

    account_id: int
    stale: bool = False
    missing: bool = False
    drops: dict[str, float] = field(default_factory=dict)
    settled_rows: int = 0
    # quota_group -> drop carried to the next read (no finished request to charge yet).
    carried: dict[str, float] = field(default_factory=dict)
    # (user_id, quota_group) -> amount charged to that pool.
    pool_charges: dict[tuple[int, str], float] = field(default_factory=dict)


async def settle_read(
    db: Database,
    account_id: int,
    readings: Sequence[QuotaReading],
    read_at: datetime,
    windows: Sequence[QuotaWindow] | None = None,
) -> Settlement:
    """Store one quota read of an account and settle what it measured, in one transaction.

    ``read_at`` is when the read was started: requests that finished by then
    are the ones it measured. ``windows`` (the summary's) replace the stored ones;
    None keeps them (the summary could not be read).
    """
    result = Settlement(account_id)
    async with db.transaction() as tx:
        account = await tx.one("quota_lock_account", account_id=account_id)
        if account is None:
            result.missing = True
            return result
        fetched = account["quota_fetched_at"]
        if fetched is not None and fetched >= read_at:
            result.stale = True
            return result
        previous = {
            row["quota_group"]: row for row in await tx.all("quota_previous_reads", account_id=account_id)
        }
        result.drops = group_drops(previous, readings, read_at)
        carries = {row["quota_group"]: row for row in await tx.all("quota_carries", account_id=account_id)}
        log_ids: list[int] = []
        charges: list[float] = []
        pools: dict[tuple[int, str], float] = defaultdict(float)
        cleared: list[str] = []
        unsettled: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in await tx.all(
            "quota_unsettled_usage", account_id=account_id, groups=list(result.drops), read_at=read_at
        ):
            unsettled[row["quota_group"]].append(row)
        for group, drop in result.drops.items():
            carry = carries.get(group)
            carried = carry["amount"] if carry is not None and carry["since"] >= read_at - CARRY_TTL else 0.0
            total = drop + carried
            rows = unsettled.get(group)
            if not rows:
                if total > 0:
                    since = carry["since"] if carried else read_at
                    await tx.execute(
                        "quota_set_carry", account_id=account_id, quota_group=group, amount=total, since=since
                    )
                    result.carried[group] = total
                elif carry is not None:
                    cleared.append(group)
                continue
            if carry is not None:
                cleared.append(group)
            parts = split_drop(total, [row["total_tokens"] for row in rows])
            for row, part in zip(rows, parts, strict=True):
                log_ids.append(row["log_id"])
                charges.append(part)
                if row["is_shared"] and row["user_id"] is not None and part > 0:
                    pools[(row["user_id"], group)] += part
        if cleared:
            await tx.execute("quota_clear_carries", account_id=account_id, groups=cleared)
        if log_ids:
            await tx.execute("quota_settle_usage", log_ids=log_ids, charges=charges)
        if pools:
            keys = sorted(pools)
            await tx.all(
                "quota_charge_pools",
                user_ids=[k[0] for k in keys],
                groups=[k[1] for k in keys],
                amounts=[pools[k] for k in keys],
            )
        await tx.execute("store_quota_read", **store_params(account_id, readings, read_at))
        if windows is not None:
            await tx.execute("store_quota_windows", **window_params(account_id, windows, read_at))
        await tx.execute("quota_mark_read", account_id=account_id, read_at=read_at)
    result.settled_rows = len(log_ids)
    result.pool_charges = dict(pools)
    if any(result.drops.values()):
        log.info(
            "quota_settled",
            account_id=account_id,
            rows=len(log_ids),
            drops={g: round(d, 6) for g, d in result.drops.items() if d},
        )
    return result
