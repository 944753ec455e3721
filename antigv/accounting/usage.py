"""Usage rows: queued by the request path, written in batches off it.

A request never waits on its usage row. Rows reach the database within
``FLUSH_INTERVAL`` seconds (one statement per batch) and the queue is flushed
on shutdown. A write the database cannot take now keeps the rows for the next
round; a row it refuses is dropped alone, never with its batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import psycopg2
import structlog
from aiohttp import web

from antigv.appkeys import CONFIG, DB, METRICS, USAGE, USAGE_REPO
from antigv.core.errors import ServiceUnavailable
from antigv.ops.metrics import Metrics
from antigv.store.db import Database
from antigv.store.usage import UsageRecord, UsageRepository

log = structlog.get_logger(__name__)

FLUSH_INTERVAL = 0.25
BATCH_SIZE = 500
# Retention deletes this many rows per statement, and at most this many statements a run.
PURGE_BATCH = 10_000
PURGE_MAX_BATCHES = 100
# Beyond this many unwritten rows (a long database outage) the oldest are dropped.
MAX_BACKLOG = 100_000


class UsageRecorder:
    def __init__(
        self, db: Database, interval: float = FLUSH_INTERVAL, metrics: Metrics | None = None
    ) -> None:
        self._usage = UsageRepository(db)
        self._metrics = metrics
        self._interval = interval
        self._pending: list[UsageRecord] = []
        self._wakeup = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self._closing = False
        # Called with each written batch (quota reads after requests hook in here).
        self.listeners: list[Callable[[list[UsageRecord]], None]] = []

    def record(self, record: UsageRecord) -> None:
        self._pending.append(record)
        if len(self._pending) >= BATCH_SIZE:
            self._wakeup.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> int:
        """Write everything queued; returns how many rows were written.

        A batch the database refuses for what a row holds (a value out of range, a broken
        constraint) is halved, in order, until the refusing row stands alone: that row is
        dropped and counted, the rest of its batch is written (issue 11 item 14).
        """
        written = 0
        async with self._flush_lock:
            size = BATCH_SIZE
            while self._pending:
                batch = self._pending[:size]
                try:
                    await self._usage.insert_batch(batch)
                except ServiceUnavailable:
                    log.warning("usage_flush_deferred", rows=len(self._pending))
                    del self._pending[: max(0, len(self._pending) - MAX_BACKLOG)]
                    return written
                except (psycopg2.DataError, psycopg2.IntegrityError) as exc:
                    if len(batch) > 1:
                        size = len(batch) // 2
                    else:
                        self._drop(batch, exc)
                    continue
                except psycopg2.Error as exc:
                    # Not about one row; a batch the database refuses would block every later one.
                    self._drop(batch, exc)
                    continue
                del self._pending[: len(batch)]
                written += len(batch)
                size = min(BATCH_SIZE, size * 2)
                for listener in self.listeners:
                    try:
                        listener(batch)
                    except Exception:
                        log.exception("usage_listener_failed")
        return written

    def _drop(self, batch: list[UsageRecord], exc: psycopg2.Error) -> None:
        del self._pending[: len(batch)]
        log.error("usage_rows_dropped", rows=len(batch), error=type(exc).__name__, pgcode=exc.pgcode)
        if self._metrics is not None:
            self._metrics.usage_rows_dropped.inc(len(batch))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage-writer")

    async def close(self) -> None:
        """Let the round in progress finish, then write whatever is left.

        No cancellation: a batch cut off mid-INSERT may have been committed
        and would be written a second time by the final flush.
        """
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        await self.flush()

    async def _run(self) -> None:
        while not self._closing:
            try:
                await asyncio.wait_for(self._wakeup.wait(), self._interval)
            except TimeoutError:
                pass
            self._wakeup.clear()
            try:
                await self.flush()
            except Exception:
                # A bug in one round must not stop usage from being written for good.
                log.exception("usage_writer_failed")


async def usage_writer(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the writer task; on shutdown the queue is flushed."""
    recorder = UsageRecorder(app[DB], metrics=app[METRICS])
    app[USAGE] = recorder
    recorder.start()
    yield
    await recorder.close()


async def purge_old_usage(app: web.Application) -> int:
    """Background task: delete usage rows past ``tasks.usage_retention_days``; returns how many."""
    days = app[CONFIG].tasks.usage_retention_days
    if days <= 0:
        return 0
    deleted = 0
    for _ in range(PURGE_MAX_BATCHES):
        count = await app[USAGE_REPO].delete_old(max_age=days * 86400, batch=PURGE_BATCH)
        deleted += count
        if count < PURGE_BATCH:
            break
    if deleted:
        log.info("usage_rows_purged", rows=deleted, older_than_days=days)
    return deleted
