"""Google accounts: what the account endpoints show and change, and the state the gateway writes.

Every admin method takes ``user_id``: None (the admin) reaches any account, a user only
their own; another user's account is None, exactly like one that does not exist. Pool
maxima follow the accounts table by themselves (a trigger), so nothing here touches them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

from antigv.store.db import Database


@dataclass(frozen=True, slots=True)
class Cooldown:
    model_name: str
    until: datetime
    reason: str


@dataclass(frozen=True, slots=True)
class Account:
    """An account as its owner and the admin see it (SPEC §9).

    No token column is a field, so none can leak into a view built from it.
    """

    account_id: int
    user_id: int
    email: str
    name: str
    is_shared: int
    status: int
    disabled_reason: str | None
    project_id: str
    tier: str
    access_token_expires_at: datetime | None
    last_used_at: datetime | None
    created_at: datetime
    updated_at: datetime
    # Where the owner re-verifies an account Google asked to validate (PROTOCOL §13.9); else None.
    validation_url: str | None
    # The active ones, by model.
    cooldowns: tuple[Cooldown, ...]
    # antigravity (a Google account by OAuth) | gemini_api (a Gemini API key; issue 15).
    kind: str = "antigravity"

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Account:
        """One row of the account queries (``get_account`` and friends), whose cooldowns come as
        parallel arrays so their times keep their type."""
        cooldowns = tuple(
            Cooldown(model, until, reason)
            for model, until, reason in zip(
                row["cooldown_models"] or (),
                row["cooldown_untils"] or (),
                row["cooldown_reasons"] or (),
                strict=True,
            )
        )
        return cls(
            account_id=row["account_id"],
            user_id=row["user_id"],
            email=row["email"],
            name=row["name"],
            is_shared=row["is_shared"],
            status=row["status"],
            disabled_reason=row["disabled_reason"],
            project_id=row["project_id"],
            tier=row["tier"],
            access_token_expires_at=row["access_token_expires_at"],
            last_used_at=row["last_used_at"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            validation_url=row["validation_url"],
            cooldowns=cooldowns,
            kind=row["kind"],
        )


class UsableAccount(TypedDict):
    """An enabled account a caller may use, with what a token needs (a row of
    ``account_candidates``; the token client reads it as a mapping)."""

    account_id: int
    user_id: int
    is_shared: int
    kind: str
    # The sealed Gemini API key of a gemini_api account ('' for the others).
    api_key: str
    project_id: str
    access_token: str
    access_token_expires_at: datetime | None


def _account(row: Mapping[str, Any] | None) -> Account | None:
    return None if row is None else Account.from_row(row)


class AccountRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    # --- the account endpoints ---------------------------------------------------

    async def owned_by(self, user_id: int | None) -> list[Account]:
        """Every account of ``user_id``; every account at all for None."""
        return [Account.from_row(row) for row in await self._db.all("list_accounts", user_id=user_id)]

    async def get(self, account_id: int, *, user_id: int | None) -> Account | None:
        return _account(await self._db.one("get_account", account_id=account_id, user_id=user_id))

    async def set_status(
        self, account_id: int, *, user_id: int | None, status: int, reason: str
    ) -> Account | None:
        """Enable (which clears ``reason`` and the refresh back-off) or disable for ``reason``."""
        row = await self._db.one(
            "set_account_status", account_id=account_id, user_id=user_id, status=status, reason=reason
        )
        return _account(row)

    async def rename(self, account_id: int, *, user_id: int | None, name: str) -> Account | None:
        row = await self._db.one("set_account_name", account_id=account_id, user_id=user_id, name=name)
        return _account(row)

    async def set_shared(self, account_id: int, *, user_id: int | None, is_shared: int) -> Account | None:
        row = await self._db.one(
            "set_account_type", account_id=account_id, user_id=user_id, is_shared=is_shared
        )
        return _account(row)

    async def delete(self, account_id: int, *, user_id: int | None) -> bool:
        """Quotas and cooldowns go with the account; its usage rows stay, detached."""
        return await self._db.one("delete_account", account_id=account_id, user_id=user_id) is not None

    async def usable_by(self, user_id: int | None, *, is_admin: bool) -> list[UsableAccount]:
        """The enabled accounts a caller may use: its own and the shared ones (the admin: all)."""
        rows = await self._db.all(
            "account_candidates", model="", quota_group="", user_id=user_id, is_admin=is_admin
        )
        return [
            UsableAccount(
                account_id=row["account_id"],
                user_id=row["user_id"],
                is_shared=row["is_shared"],
                kind=row["kind"],
                api_key=row["api_key"],
                project_id=row["project_id"],
                access_token=row["access_token"],
                access_token_expires_at=row["access_token_expires_at"],
            )
            for row in rows
        ]

    # --- state the request path writes --------------------------------------------

    async def set_cooldowns(self, account_id: int, models: list[str], until: datetime, reason: str) -> None:
        """Park the account for ``models`` (a quota group shares one bucket) until ``until``;
        a longer cooldown already set stays."""
        await self._db.execute(
            "set_cooldowns", account_id=account_id, models=models, until=until, reason=reason
        )

    async def park_for_validation(self, account_id: int, until: datetime, validation_url: str | None) -> None:
        """Every model waits until ``until`` (PROTOCOL §13.9); a None URL keeps the stored one."""
        await self._db.execute(
            "park_account_for_validation", account_id=account_id, until=until, validation_url=validation_url
        )

    async def clear_validation(self, account_id: int) -> None:
        await self._db.execute("clear_account_validation", account_id=account_id)

    async def disable(self, account_id: int, reason: str) -> None:
        """Stop an enabled account for a reason its owner is shown."""
        await self._db.execute("disable_account", account_id=account_id, reason=reason)

    async def set_project(self, account_id: int, project_id: str) -> None:
        await self._db.execute("set_project", account_id=account_id, project_id=project_id)

    async def enabled_kinds(self) -> dict[int, str]:
        """Every enabled account's kind, by id."""
        return {row["account_id"]: row["kind"] for row in await self._db.all("enabled_account_ids")}

    async def sealed_api_key(self, account_id: int) -> str | None:
        row = await self._db.one("account_api_key", account_id=account_id)
        return None if row is None else str(row["api_key"])

    async def add_gemini_key(
        self, *, user_id: int, fingerprint: str, name: str, is_shared: int, sealed_key: str, tier: str
    ) -> int | None:
        """A Gemini API key as an account; None when that key is an account already."""
        row = await self._db.one(
            "insert_gemini_key_account",
            user_id=user_id,
            fingerprint=fingerprint,
            name=name,
            is_shared=is_shared,
            api_key=sealed_key,
            tier=tier,
        )
        return None if row is None else int(row["account_id"])
