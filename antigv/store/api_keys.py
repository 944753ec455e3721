"""A user's API keys and their limits (issue 14), and the per-instance activity the key
limiter reconciles through the database."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from antigv.core.errors import NotFound
from antigv.store.db import Database, row_as
from antigv.store.keys import display_prefix, key_digest, new_api_key

# The fields of a key a caller may set; each None clears that limit.
LIMIT_FIELDS = ("expires_at", "rpm", "tpm", "max_concurrency", "allowed_models", "monthly_token_budget")
EDITABLE_FIELDS = ("name", "status", *LIMIT_FIELDS, "limits_locked")


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key as the API shows it: never the secret or its digest."""

    key_id: int
    user_id: int
    name: str
    key_prefix: str
    is_primary: bool
    status: int
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    rpm: int | None
    tpm: int | None
    max_concurrency: int | None
    allowed_models: list[str] | None
    monthly_token_budget: int | None
    limits_locked: int


@dataclass(frozen=True, slots=True)
class ApiKeyWithSecret(ApiKey):
    """A key just made: ``api_key`` is shown this once and never stored."""

    api_key: str


@dataclass(frozen=True, slots=True)
class MonthUsage:
    requests: int
    tokens: int


@dataclass(frozen=True, slots=True)
class OthersActivity:
    """What the other instances did with some keys: per key, (bucket, requests, tokens)
    and requests in flight; and the month (its first day, tokens) of budgeted keys."""

    buckets: dict[int, list[tuple[int, int, int]]]
    inflight: dict[int, int]
    months: dict[int, tuple[date | None, int]]


class ApiKeyRepository:
    """The ``api_keys`` table. Another user's key, or none, is :class:`NotFound` (404)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, user_id: int, name: str, fields: Mapping[str, Any]) -> ApiKeyWithSecret:
        secret = new_api_key()
        row = await self._db.one(
            "create_key",
            user_id=user_id,
            name=name,
            key_hash=key_digest(secret),
            key_prefix=display_prefix(secret),
            **{field: fields.get(field) for field in LIMIT_FIELDS},
            limits_locked=fields.get("limits_locked", 0),
        )
        if row is None:
            raise NotFound("user not found")
        return ApiKeyWithSecret(**{**row, "api_key": secret})

    async def of_user(self, user_id: int | None) -> list[ApiKey]:
        return [row_as(ApiKey, row) for row in await self._db.all("list_keys", user_id=user_id)]

    async def get(self, key_id: int) -> ApiKey:
        row = await self._db.one("get_key", key_id=key_id)
        if row is None:
            raise NotFound("key not found")
        return row_as(ApiKey, row)

    async def update(self, key_id: int, changes: Mapping[str, Any]) -> tuple[ApiKey, bytes]:
        """Write the fields ``changes`` names (a None value clears a limit); the key as it is
        now, and its digest for the caches that still hold the old one."""
        params: dict[str, Any] = {"key_id": key_id}
        for field in EDITABLE_FIELDS:
            params[f"set_{field}"] = field in changes
            params[field] = changes.get(field)
        row = await self._db.one("update_key", **params)
        if row is None:
            raise NotFound("key not found")
        return row_as(ApiKey, row), bytes(row["key_hash"])

    async def delete(self, key_id: int) -> bytes:
        """Delete the key; its digest, for the caches that still hold it."""
        row = await self._db.one("delete_key", key_id=key_id)
        if row is None:
            raise NotFound("key not found")
        return bytes(row["key_hash"])

    async def month_usage(self, key_id: int) -> MonthUsage:
        row = await self._db.one("key_month_usage", key_id=key_id)
        assert row is not None  # an aggregate without GROUP BY always has its row
        return row_as(MonthUsage, row)

    # --- the limiter's reconciliation --------------------------------------------

    async def reconcile(
        self,
        instance: str,
        unsent: Mapping[tuple[int, int], tuple[int, int]],
        inflight: Mapping[int, int],
        *,
        key_ids: Sequence[int],
        since: int,
        fresh: float,
        budgeted: Sequence[int],
    ) -> OthersActivity:
        """One round trip: report this instance's ``unsent`` (key id, bucket) -> (requests,
        tokens) and its requests ``inflight`` per key; read the others' activity of
        ``key_ids`` since bucket ``since`` and the month's tokens of the ``budgeted`` keys."""
        reported = list(unsent)
        rows = await self._db.all(
            "reconcile_keys",
            instance=instance,
            activity_keys=[key for key, _ in reported],
            buckets=[bucket for _, bucket in reported],
            requests=[unsent[k][0] for k in reported],
            tokens=[unsent[k][1] for k in reported],
            capped_keys=list(inflight),
            inflight=list(inflight.values()),
            key_ids=list(key_ids),
            since=since,
            fresh=fresh,
            budgeted_keys=list(budgeted),
        )
        found = OthersActivity({}, {}, {})
        for row in rows:
            key_id = row["key_id"]
            if row["what"] == "bucket":
                found.buckets.setdefault(key_id, []).append((row["bucket"], row["requests"], row["tokens"]))
            elif row["what"] == "inflight":
                found.inflight[key_id] = row["requests"]
            else:
                found.months[key_id] = (row["month_start"], row["tokens"])
        return found

    async def delete_old_activity(self, before: int) -> None:
        await self._db.execute("delete_old_key_activity", before=before)
