"""Users and their API keys: shared by the HTTP handlers and the CLI."""

from __future__ import annotations

from typing import Any

from antigv.core.errors import NotFound
from antigv.store.db import Database
from antigv.store.keys import display_prefix, key_digest, new_api_key

# Limits of the API and the CLI alike (one place, so both take the same input).
NAME_MAX_LEN = 200
LIST_LIMIT_DEFAULT = 100
LIST_LIMIT_MAX = 1000
LIST_OFFSET_MAX = 2**62


def user_view(row: dict[str, Any]) -> dict[str, Any]:
    """A user as the API shows it: never the key or its digest."""
    return {
        "user_id": row["user_id"],
        "name": row["name"],
        "status": row["status"],
        "prefer_shared": row["prefer_shared"],
        "key_prefix": row["key_prefix"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _found(row: dict[str, Any] | None) -> dict[str, Any]:
    if row is None:
        raise NotFound("user not found")
    return row


async def create_user(db: Database, name: str, prefer_shared: int = 0) -> dict[str, Any]:
    """Create a user; the result carries ``api_key``, shown this once."""
    key = new_api_key()
    row = await db.one(
        "create_user",
        name=name,
        key_hash=key_digest(key),
        key_prefix=display_prefix(key),
        prefer_shared=prefer_shared,
    )
    return {**user_view(_found(row)), "api_key": key}


async def get_user(db: Database, user_id: int) -> dict[str, Any]:
    return user_view(_found(await db.one("get_user", user_id=user_id)))


async def list_users(db: Database, limit: int, offset: int) -> dict[str, Any]:
    rows = await db.all("list_users", limit=limit, offset=offset)
    total = await db.one("count_users")
    return {
        "users": [user_view(r) for r in rows],
        "total": total["total"] if total else 0,
        "limit": limit,
        "offset": offset,
    }


async def regenerate_key(db: Database, user_id: int) -> dict[str, Any]:
    key = new_api_key()
    row = await db.one(
        "set_user_key", user_id=user_id, key_hash=key_digest(key), key_prefix=display_prefix(key)
    )
    return {**user_view(_found(row)), "api_key": key}


async def set_status(db: Database, user_id: int, status: int) -> dict[str, Any]:
    return user_view(_found(await db.one("set_user_status", user_id=user_id, status=status)))


async def set_preference(db: Database, user_id: int, prefer_shared: int) -> dict[str, Any]:
    return user_view(
        _found(await db.one("set_user_preference", user_id=user_id, prefer_shared=prefer_shared))
    )


async def delete_user(db: Database, user_id: int) -> None:
    _found(await db.one("delete_user", user_id=user_id))
