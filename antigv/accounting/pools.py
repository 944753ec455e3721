"""Shared pools per user and quota group (SPEC §1, §6).

``max = 2 x`` the user's enabled shared accounts; the balance recovers at
``0.2 x max`` per hour and never exceeds ``max``. The database keeps all of it
right (migration 0004):

* pool rows are created by a user's first charge in a group; a missing row is a
  full pool, which is how ``account_candidates`` reads it;
* a trigger on ``accounts`` resizes the user's existing rows on every change of
  ``status``, ``is_shared`` or ``user_id`` and on insert and delete;
* recovery is by elapsed time since ``last_recovered_at`` and never moves that
  stamp backwards, so it is idempotent across runs and instances;
* charges go through ``pool_charge``: accrue recovery, subtract, floor at 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import structlog
from aiohttp import web

from antigv.appkeys import DB
from antigv.config import QuotasConfig
from antigv.store.db import Database

log = structlog.get_logger(__name__)

# Recovery per hour, as a share of max; the SQL function pool_recovered says the same.
RECOVERY_PER_HOUR = 0.2


def group_models(groups: QuotasConfig, group: str, known: Iterable[str] = ()) -> list[str]:
    """The models of a quota group: those it names, and those of ``known`` (models upstream
    reported) its patterns take. A model in no group is its own group."""
    return sorted({*groups.named_models(group), *(m for m in known if groups.group_of(m) == group)})


async def account_group_models(db: Database, groups: QuotasConfig, account_id: int, model: str) -> list[str]:
    """``model`` and the other models of its quota group the account's last read reported:
    one bucket serves them all (PROTOCOL §13.6), so a 429 parks them together."""
    group = groups.group_of(model)
    rows = await db.all("quota_group_models", account_id=account_id, quota_group=group)
    return [model, *(m for m in group_models(groups, group, (r["model_name"] for r in rows)) if m != model)]


async def user_pools(db: Database, groups: QuotasConfig, user_id: int) -> list[dict[str, Any]] | None:
    """The user's pool per quota group, with the recovery accrued so far.

    Listed: every configured group, every group a usable shared account reports,
    and every group the user has a row for. A group without a row is full.
    None when the user does not exist.
    """
    summary = await db.one("pool_user_summary", user_id=user_id)
    if summary is None:
        return None
    rows = {row["quota_group"]: row for row in await db.all("pool_rows_of_user", user_id=user_id)}
    known = [row["model_name"] for row in await db.all("quota_known_models")]
    names = list(groups.groups)
    for extra in sorted({*summary["shared_groups"], *rows} - set(names)):
        names.append(extra)
    pools = []
    for group in names:
        row = rows.get(group)
        if row is None:
            row = {
                "user_id": user_id,
                "quota_group": group,
                "quota": summary["max_quota"],
                "max_quota": summary["max_quota"],
                "last_recovered_at": None,
            }
        pools.append(
            {
                "user_id": row["user_id"],
                "quota_group": group,
                "models": group_models(groups, group, known),
                # What the configuration says (names and patterns, PROTOCOL §13.6 families).
                "patterns": list(groups.groups.get(group, [group])),
                "quota": float(row["quota"]),
                "max_quota": float(row["max_quota"]),
                "last_recovered_at": row["last_recovered_at"],
            }
        )
    return pools


async def recover_pools(db: Database) -> int:
    """One recovery pass over every pool; returns how many rows it touched."""
    touched = await db.execute("pool_recover")
    if touched:
        log.info("pools_recovered", rows=touched)
    return touched


async def recover_pools_task(app: web.Application) -> int:
    """Background task ``recover_pools``."""
    return await recover_pools(app[DB])


async def cli_recover_quotas(db: Database) -> dict[str, int]:
    """``antigv recover-quotas``: one recovery pass (safe beside running servers)."""
    return {"recovered_pools": await recover_pools(db)}
