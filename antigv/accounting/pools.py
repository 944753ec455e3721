"""Shared pools per user and quota group (SPEC §1, §6).

``max = 2 x`` the user's enabled shared accounts; the balance recovers at
``0.2 x max`` per hour and never exceeds ``max``. The database keeps all of it
right (migration 0004):

* pool rows are created by a user's first charge in a group; a missing row is a
  full pool of ``pool_max``, which is how ``account_candidates`` and
  ``pool_rows_of_user`` read it (Python only shows what they return);
* a trigger on ``accounts`` resizes the user's existing rows on every change of
  ``status``, ``is_shared`` or ``user_id`` and on insert and delete;
* recovery is by elapsed time since ``last_recovered_at`` and never moves that
  stamp backwards, so it is idempotent across runs and instances;
* charges go through ``pool_charge``: accrue recovery, subtract, floor at 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import structlog
from aiohttp import web

from antigv.appkeys import DB
from antigv.config import QuotasConfig
from antigv.store.db import Database
from antigv.store.quotas import QuotaRepository

log = structlog.get_logger(__name__)


def group_models(groups: QuotasConfig, group: str, known: Iterable[str] = ()) -> list[str]:
    """The models of a quota group: those it names, and those of ``known`` (models upstream
    reported) its patterns take. A model in no group is its own group."""
    return sorted({*groups.named_models(group), *(m for m in known if groups.group_of(m) == group)})


async def account_group_models(db: Database, groups: QuotasConfig, account_id: int, model: str) -> list[str]:
    """``model`` and the other models of its quota group the account's last read reported:
    one bucket serves them all (PROTOCOL §13.6), so a 429 parks them together."""
    group = groups.group_of(model)
    reported = await QuotaRepository(db).group_models(account_id, group)
    return [model, *(m for m in group_models(groups, group, reported) if m != model)]


@dataclass(frozen=True, slots=True)
class UserPool:
    """A user's pool in one quota group as ``GET /api/quotas/user`` shows it."""

    user_id: int
    quota_group: str
    # The models the group names, and those upstream reported that its patterns take.
    models: list[str]
    # What the configuration says (names and patterns, PROTOCOL §13.6 families).
    patterns: list[str]
    quota: float
    max_quota: float
    last_recovered_at: datetime | None
    recovery_per_hour: float


async def user_pools(quotas: QuotaRepository, groups: QuotasConfig, user_id: int) -> list[UserPool] | None:
    """The user's pool per quota group, with the recovery accrued so far.

    Listed: every configured group, then every group a usable shared account reports
    and every group the user has a row for; the balances are the SQL's. None when the
    user does not exist.
    """
    balances = await quotas.pools_of_user(user_id, list(groups.groups))
    if balances is None:
        return None
    known = await quotas.known_models()
    return [
        UserPool(
            user_id=balance.user_id,
            quota_group=balance.quota_group,
            models=group_models(groups, balance.quota_group, known),
            patterns=list(groups.groups.get(balance.quota_group, [balance.quota_group])),
            quota=balance.quota,
            max_quota=balance.max_quota,
            last_recovered_at=balance.last_recovered_at,
            recovery_per_hour=balance.recovery_per_hour,
        )
        for balance in balances
    ]


async def recover_pools(db: Database) -> int:
    """One recovery pass over every pool; returns how many rows it touched."""
    touched = await QuotaRepository(db).recover_pools()
    if touched:
        log.info("pools_recovered", rows=touched)
    return touched


async def recover_pools_task(app: web.Application) -> int:
    """Background task ``recover_pools``."""
    return await recover_pools(app[DB])


async def cli_recover_quotas(db: Database) -> dict[str, int]:
    """``antigv recover-quotas``: one recovery pass (safe beside running servers)."""
    return {"recovered_pools": await recover_pools(db)}
