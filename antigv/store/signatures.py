"""Thought signatures kept for replay: tool call id -> (model family, signature, thinking)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from antigv.store.db import Database


@dataclass(frozen=True, slots=True)
class StoredSignature:
    tool_call_id: str
    family: str
    signature: str
    # The thinking text the signature signs (Claude); None for Gemini.
    thinking: str | None


class SignatureRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def find(self, ids: Iterable[str]) -> list[StoredSignature]:
        rows = await self._db.all("get_signatures", ids=list(ids))
        return [
            StoredSignature(row["tool_call_id"], row["family"], row["signature"], row["thinking"])
            for row in rows
        ]

    async def store(self, family: str, entries: Mapping[str, tuple[str, str | None]]) -> None:
        """Keep ``entries`` (call id -> (signature, thinking)); a call id stored before keeps its first."""
        ids = list(entries)
        await self._db.execute(
            "store_signatures",
            ids=ids,
            families=[family] * len(ids),
            signatures=[entries[i][0] for i in ids],
            thinking=[entries[i][1] for i in ids],
        )

    async def delete_older_than(self, seconds: float) -> int:
        count: int = await self._db.execute("delete_old_signatures", max_age=seconds)
        return count
