"""Users and their API keys: shared by the HTTP handlers, the key lookup and the CLI."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from antigv.core.errors import NotFound
from antigv.store.db import Database, row_as
from antigv.store.keys import display_prefix, key_digest, new_api_key

# Limits of the API and the CLI alike (one place, so both take the same input).
NAME_MAX_LEN = 200
LIST_LIMIT_DEFAULT = 100
LIST_LIMIT_MAX = 1000
LIST_OFFSET_MAX = 2**62


@dataclass(frozen=True, slots=True)
class User:
    """A user as the API shows it: never the key or its digest."""

    user_id: int
    name: str
    status: int
    prefer_shared: int
    key_prefix: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class UserWithKey(User):
    """A user with a key just made: ``api_key`` is shown this once and never stored."""

    api_key: str


@dataclass(frozen=True, slots=True)
class UserPage:
    users: tuple[User, ...]
    total: int
    limit: int
    offset: int


@dataclass(frozen=True, slots=True)
class KeyHolder:
    """What an API key resolves to: its user and the key itself; the caller decides what
    a disabled user or a revoked or expired key may do."""

    user_id: int
    name: str
    status: int
    prefer_shared: int
    key_id: int
    key_status: int
    expires_at: datetime | None
    rpm: int | None
    tpm: int | None
    max_concurrency: int | None
    allowed_models: list[str] | None
    monthly_token_budget: int | None


def _columns(row: Mapping[str, Any] | None) -> dict[str, Any]:
    """A user row's shown columns (those of :class:`User`); a missing row is a 404."""
    if row is None:
        raise NotFound("user not found")
    return {column.name: row[column.name] for column in fields(User)}


class UserRepository:
    """The ``users`` table. A missing user is :class:`NotFound` (404), whoever asks."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, name: str, prefer_shared: int = 0) -> UserWithKey:
        key = new_api_key()
        row = await self._db.one(
            "create_user",
            name=name,
            key_hash=key_digest(key),
            key_prefix=display_prefix(key),
            prefer_shared=prefer_shared,
        )
        return UserWithKey(**_columns(row), api_key=key)

    async def get(self, user_id: int) -> User:
        return User(**_columns(await self._db.one("get_user", user_id=user_id)))

    async def page(self, limit: int, offset: int) -> UserPage:
        rows = await self._db.all("list_users", limit=limit, offset=offset)
        total = await self._db.one("count_users")
        return UserPage(
            users=tuple(User(**_columns(row)) for row in rows),
            total=total["total"] if total else 0,
            limit=limit,
            offset=offset,
        )

    async def by_key_digest(self, digest: bytes) -> KeyHolder | None:
        row = await self._db.one("key_by_hash", key_hash=digest)
        return None if row is None else row_as(KeyHolder, row)

    async def regenerate_key(self, user_id: int) -> UserWithKey:
        """The old key stops matching; evicting the caches that still hold it is the caller's job."""
        key = new_api_key()
        row = await self._db.one(
            "set_user_key", user_id=user_id, key_hash=key_digest(key), key_prefix=display_prefix(key)
        )
        return UserWithKey(**_columns(row), api_key=key)

    async def set_status(self, user_id: int, status: int) -> User:
        return User(**_columns(await self._db.one("set_user_status", user_id=user_id, status=status)))

    async def set_preference(self, user_id: int, prefer_shared: int) -> User:
        row = await self._db.one("set_user_preference", user_id=user_id, prefer_shared=prefer_shared)
        return User(**_columns(row))

    async def delete(self, user_id: int) -> None:
        if await self._db.one("delete_user", user_id=user_id) is None:
            raise NotFound("user not found")
