"""The background task loop: token refresh, quota reads, pool recovery, clean-ups.

Each task runs on its own schedule. A task marked ``once_per_cluster`` takes a lease
row in ``task_leases`` for its run, so several instances on one database never run it
at the same time. The lease is taken, renewed and released by short statements: no
pooled connection is held while the task calls Google or the upstream (issue 11 #16).
A task that fails is logged and runs again next round; it never stops the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from aiohttp import web

from antigv.appkeys import CONFIG, DB, TASKS
from antigv.core.errors import GatewayError, ServiceUnavailable
from antigv.store.db import Database

log = structlog.get_logger(__name__)

TaskFunction = Callable[[web.Application], Awaitable[object]]


async def cancel_and_wait(task: asyncio.Task, *, every: float = 0.1) -> None:
    """Cancel ``task`` and return once it has ended, whatever it was doing.

    One ``cancel()`` is not enough on Python 3.11: ``asyncio.wait_for``, which
    aiopg awaits on every query, swallows a cancellation that lands in the same
    loop turn as its result, and a loop task then runs on (and ``await task``
    waits for good). So the cancellation is repeated until the task is done.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=every)
    if not task.cancelled() and task.exception() is not None:
        log.error("task_failed_before_stop", task=task.get_name(), error=repr(task.exception()))


# A lease outlives its holder by at most this long; the holder renews it well before.
LEASE_SECONDS = 60.0
LEASE_RENEW_EVERY = 20.0


@dataclass
class Task:
    name: str
    run: TaskFunction
    # Seconds between runs; None follows [tasks] interval.
    every: float | None = None
    once_per_cluster: bool = True
    next_run: float = field(default=0.0, compare=False)


async def run_locked(db: Database, name: str, action: Callable[[], Awaitable[object]]) -> bool:
    """Run ``action`` under the task's lease; False if another instance holds it."""
    holder = secrets.token_hex(8)
    if await db.one("take_task_lease", name=name, holder=holder, seconds=LEASE_SECONDS) is None:
        return False
    renewer = asyncio.create_task(_renew_lease(db, name, holder), name=f"lease-{name}")
    try:
        await action()
    finally:
        await cancel_and_wait(renewer)
        # When the database is gone the lease runs out by itself.
        with contextlib.suppress(GatewayError):
            await db.execute("release_task_lease", name=name, holder=holder)
    return True


async def _renew_lease(db: Database, name: str, holder: str) -> None:
    while True:
        await asyncio.sleep(LEASE_RENEW_EVERY)
        try:
            if not await db.execute("renew_task_lease", name=name, holder=holder, seconds=LEASE_SECONDS):
                log.warning("task_lease_lost", task=name)
                return
        except GatewayError as exc:
            log.warning("task_lease_not_renewed", task=name, code=exc.code)


class TaskLoop:
    def __init__(self, app: web.Application) -> None:
        self._app = app
        self.tasks: dict[str, Task] = {}
        # Set while the database is out: the outage is logged once when it starts and
        # once when it ends, not by every task every round (issue 11 #10).
        self._database_down = False

    def add(self, task: Task) -> None:
        self.tasks[task.name] = task

    async def run_once(self, name: str) -> bool:
        """Run one task now (the CLI's entry point). False if another instance was running it."""
        task = self.tasks[name]
        if not task.once_per_cluster:
            await task.run(self._app)
            return True
        return await run_locked(self._app[DB], name, lambda: task.run(self._app))

    async def _tick(self) -> None:
        interval = self._app[CONFIG].tasks.interval
        for task in list(self.tasks.values()):
            now = time.monotonic()
            if now < task.next_run:
                continue
            task.next_run = now + (task.every or interval)
            try:
                await self.run_once(task.name)
                # Only a task that took its lock has been through the database.
                if self._database_down and task.once_per_cluster:
                    self._database_down = False
                    log.info("database_available", task=task.name)
            except asyncio.CancelledError:
                raise
            except ServiceUnavailable:
                # Readiness and every request report the outage too; the loop says it once.
                if not self._database_down:
                    self._database_down = True
                    log.warning("database_unavailable", task=task.name, hint="background tasks wait for it")
            except GatewayError as exc:
                # A typed error already says what is wrong; a traceback would add nothing.
                log.warning("task_failed", task=task.name, code=exc.code, error=exc.message)
            except Exception:
                log.exception("task_failed", task=task.name)

    async def run_forever(self) -> None:
        interval = self._app[CONFIG].tasks.interval
        while True:
            await self._tick()
            await asyncio.sleep(min(interval, 1.0))


async def task_loop(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: run the loop while the app serves (if enabled)."""
    runner = None
    if app[CONFIG].tasks.enabled:
        runner = asyncio.create_task(app[TASKS].run_forever(), name="antigv-tasks")
    yield
    if runner is not None:
        await cancel_and_wait(runner)
