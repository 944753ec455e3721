"""Thought signatures a later turn must replay (PROTOCOL §3.5): kept in memory for this
instance and in the database for the others, written before the reply ends."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

from antigv.backends.base import ToolCallSignature
from antigv.store.signatures import SignatureRepository

CACHE_SIZE = 10_000


class SignatureStore:
    def __init__(self, repository: SignatureRepository, cache_size: int = CACHE_SIZE) -> None:
        self._repository = repository
        self._cache_size = cache_size
        # tool call id -> (model family, signature)
        self._cache: OrderedDict[str, tuple[str, ToolCallSignature]] = OrderedDict()

    async def find(self, family: str, wanted: Sequence[str]) -> dict[str, ToolCallSignature]:
        """The signatures of ``wanted`` calls made by ``family``: a signature only opens for it."""
        found: dict[str, ToolCallSignature] = {}
        for call_id in wanted:
            cached = self._cache.get(call_id)
            if cached is not None and cached[0] == family:
                found[call_id] = cached[1]
        missing = [call_id for call_id in wanted if call_id not in found]
        if missing:
            for row in await self._repository.find(missing):
                if row.family == family:
                    found[row.tool_call_id] = ToolCallSignature(row.signature, row.thinking)
        return found

    async def keep(self, family: str, captured: Mapping[str, ToolCallSignature]) -> None:
        if not captured:
            return
        for call_id, signature in captured.items():
            self._cache[call_id] = (family, signature)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        await self._repository.store(
            family, {call_id: (sig.signature, sig.thinking) for call_id, sig in captured.items()}
        )
