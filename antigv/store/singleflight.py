"""One database read per cache key at a time.

When a cached entry expires under load, every request that arrives while its refill
is in flight would otherwise run the same query (at 64 concurrent streams, several
per expiry: the bench measured 5 account reads a second for a 1 s cache). Callers
that miss while a read of the same key runs await that read instead.

The read runs as a task of its own, so a caller that is cancelled (its client went
away) does not cancel the read the others wait for. ``forget`` starts afresh: a
caller that arrives after a cache was invalidated must not get a read that began
before the change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._reads: dict[K, asyncio.Task[V]] = {}

    async def run(self, key: K, read: Callable[[], Awaitable[V]]) -> V:
        task = self._reads.get(key)
        if task is None:
            task = asyncio.ensure_future(read())
            self._reads[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(task)

    def forget(self, key: K | None = None) -> None:
        """Let the next caller of ``key`` (of every key, when None) read anew."""
        if key is None:
            self._reads.clear()
        else:
            self._reads.pop(key, None)

    def _finished(self, key: K, task: asyncio.Task[V]) -> None:
        if self._reads.get(key) is task:
            del self._reads[key]
        if not task.cancelled():
            # Retrieved here so that a read whose every caller went away logs no
            # "exception was never retrieved"; the callers still get it raised.
            task.exception()
