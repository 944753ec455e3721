"""Reading model quotas from upstream: on demand, after requests, and when stale.

A read is ``fetchAvailableModels`` plus ``retrieveUserQuotaSummary`` (quotas/fetch.py).

No request ever waits on a quota read. After a usage batch is written, each
account in it gets a read scheduled (debounced: at most one read per account
per ``interval`` seconds, the first one ``min_delay`` after the batch), run as
a tracked asyncio task that shutdown cancels. The background task
``read_stale_quotas`` reads accounts whose read is old, or whose finished
requests no read has settled yet (another instance went away first).

Every read goes through :func:`settle_read`, which stores it and charges what
it measured in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web

from antigv.accounting.quota_reads import is_free_tier, stored_window
from antigv.accounting.settlement import Settlement, settle_read
from antigv.appkeys import CATALOGUE, CONFIG, DB, QUOTAS, RESERVATIONS, TOKENS, UPSTREAM, USAGE
from antigv.backends.antigravity import KIND as ANTIGRAVITY
from antigv.backends.antigravity.client import UpstreamClient
from antigv.backends.antigravity.oauth import discover_project
from antigv.backends.antigravity.quota import fetch_quotas
from antigv.backends.antigravity.tokens import AccountRevoked, RefreshFailed, TokenManager
from antigv.config import QuotasConfig
from antigv.core.errors import GatewayError
from antigv.core.failures import UpstreamFailure
from antigv.ops.tasks import cancel_and_wait
from antigv.store.accounts import AccountRepository
from antigv.store.crypto import TokenCipherError
from antigv.store.db import Database
from antigv.store.quotas import QuotaAccount, QuotaRepository
from antigv.store.singleflight import SingleFlight
from antigv.store.usage import UsageRecord

log = structlog.get_logger(__name__)

# After requests: the first read this long after the usage batch, then at most one per
# interval, so a finished request is read within 10 s (SPEC §6) counting the usage flush.
READ_DELAY = 1.0
READ_INTERVAL = 9.0
# The background loop reads an account whose read is older than this.
BACKGROUND_STALE_AFTER = 300.0
# ... or whose requests have waited this long for a read to settle them.
SETTLE_AFTER = 30.0
# An account whose read failed is not read again in the background for this long.
FAILURE_BACKOFF = 300.0
# An account without a project asks onboardUser again at most this often (seconds).
ONBOARD_RECHECK = 600.0
STALE_BATCH = 100
STALE_CONCURRENCY = 8


class QuotaService:
    def __init__(
        self,
        db: Database,
        tokens: TokenManager,
        upstream: UpstreamClient,
        groups: QuotasConfig,
        *,
        min_delay: float = READ_DELAY,
        interval: float = READ_INTERVAL,
    ) -> None:
        self._db = db
        self._quotas = QuotaRepository(db)
        self._accounts = AccountRepository(db)
        self._tokens = tokens
        self._upstream = upstream
        self._groups = groups
        self.min_delay = min_delay
        self.interval = interval
        self._reads: SingleFlight[int, Settlement | None] = SingleFlight()
        self._waiting: set[int] = set()
        self._last_started: dict[int, float] = {}
        self._failed_until: dict[int, float] = {}
        self._summary_failing: set[int] = set()
        self._onboard_checked: dict[int, float] = {}  # account id -> monotonic time
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        # Called with (account id, fetchAvailableModels answer) after each read: the model
        # catalogue learns from reads already made (PROTOCOL §13.11).
        self.model_listeners: list[Callable[[int, Mapping[str, Any]], None]] = []
        # Called with (account id, read_at) once a read is stored: the requests written by
        # then are charged (pool reservations end with it).
        self.settle_listeners: list[Callable[[int, datetime], None]] = []

    # --- one read ------------------------------------------------------------

    async def read(self, account_id: int) -> Settlement | None:
        """Read one account's quotas now and settle them; concurrent callers share one read.

        Returns None when the account is gone or disabled, or the read failed
        (logged; nothing changes).
        """
        return await self._reads.run(account_id, lambda: self._read(account_id))

    async def _read(self, account_id: int) -> Settlement | None:
        account = await self._quotas.account(account_id)
        # Only a Google account has quota fractions to read (PROTOCOL §13.4, §13.6). A Gemini
        # API key has none, and no OAuth token: a refresh for it fails with invalid_grant,
        # which would disable the key. Its usage is charged as it is written.
        if account is None or account["status"] != 1 or account["kind"] != ANTIGRAVITY:
            return None
        read_at = datetime.now(UTC)
        try:
            token = await self._tokens.access_token(account)
            project_id = account["project_id"] or await self._onboard(account, token)
            fetched = await fetch_quotas(self._upstream, token, project_id, self._groups)
        except (AccountRevoked, RefreshFailed, UpstreamFailure, TokenCipherError) as exc:
            self._failed_until[account_id] = time.monotonic() + FAILURE_BACKOFF
            log.warning(
                "quota_read_failed", account_id=account_id, error=type(exc).__name__, detail=str(exc)[:200]
            )
            return None
        self._failed_until.pop(account_id, None)
        for listener in self.model_listeners:
            listener(account_id, fetched.models)
        stored = []
        if fetched.summary_failure is not None:
            # The read still counts; the stored windows stay (PROTOCOL §13.6). Logged once per outage.
            if account_id not in self._summary_failing:
                self._summary_failing.add(account_id)
                failure = fetched.summary_failure
                log.warning(
                    "quota_summary_failed",
                    account_id=account_id,
                    kind=failure.kind.value,
                    status=failure.status,
                )
            if is_free_tier(account["tier"]):
                stored = [stored_window(w) for w in await self._quotas.windows(account_id)]
        else:
            self._summary_failing.discard(account_id)
        readings = fetched.readings(self._groups, account["tier"], stored)
        settled = await settle_read(self._db, account_id, readings, read_at, fetched.windows)
        if not (settled.stale or settled.missing):
            for listener in self.settle_listeners:
                listener(account_id, read_at)
        return settled

    async def _onboard(self, account: QuotaAccount, token: str) -> str:
        """A (paid) account kept without a project is onboarded again, at most every
        ``ONBOARD_RECHECK`` seconds, one poll at a time (PROTOCOL §13.7); '' while none."""
        account_id = account["account_id"]
        now = time.monotonic()
        if self._onboard_checked.get(account_id, -ONBOARD_RECHECK) + ONBOARD_RECHECK > now:
            return ""
        self._onboard_checked[account_id] = now
        try:
            found = await discover_project(self._upstream, token, polls=1, delay=0)
        except GatewayError as exc:
            log.info("project_onboarding_failed", account_id=account_id, code=exc.code)
            return ""
        if found.project_id:
            await self._accounts.set_project(account_id, found.project_id)
            log.info("account_onboarded", account_id=account_id)
        return found.project_id

    # --- after requests --------------------------------------------------------

    def schedule(self, account_id: int) -> None:
        """Read this account soon, at most once per ``interval``; never blocks."""
        if self._closed or account_id in self._waiting:
            return  # a read that has not started yet will see this request too
        now = time.monotonic()
        last = self._last_started.get(account_id)
        delay = self.min_delay if last is None else max(self.min_delay, last + self.interval - now)
        self._waiting.add(account_id)
        self._spawn(self._delayed_read(account_id, delay), f"quota-read-{account_id}")

    def on_usage_batch(self, batch: Iterable[UsageRecord]) -> None:
        """``UsageRecorder`` listener: schedule a read of every account whose requests in the
        batch a read must settle (not those charged as they were written)."""
        for account_id in {
            r.account_id for r in batch if r.account_id is not None and r.quota_consumed is None
        }:
            self.schedule(account_id)

    async def _delayed_read(self, account_id: int, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
        finally:
            self._waiting.discard(account_id)
        self._last_started[account_id] = time.monotonic()
        try:
            await self.read(account_id)
        except GatewayError as exc:  # the database is down: the background loop catches up
            log.warning("quota_read_deferred", account_id=account_id, error=exc.message)
        except Exception:
            log.exception("quota_read_crashed", account_id=account_id)

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- background ------------------------------------------------------------

    async def read_stale(self, *, stale_after: float = BACKGROUND_STALE_AFTER) -> int:
        """Read the accounts that need it; returns how many reads were stored."""
        stale = await self._quotas.stale_accounts(
            stale_after=stale_after, settle_after=SETTLE_AFTER, limit=STALE_BATCH
        )
        now = time.monotonic()
        due = [a for a in stale if self._failed_until.get(a, 0) <= now]
        if not due:
            return 0
        gate = asyncio.Semaphore(STALE_CONCURRENCY)

        async def one(account_id: int) -> bool:
            async with gate:
                result = await self.read(account_id)
            return result is not None and not result.stale and not result.missing

        done = await asyncio.gather(*(one(a) for a in due), return_exceptions=True)
        for account_id, outcome in zip(due, done, strict=True):
            if isinstance(outcome, BaseException):
                log.warning("quota_read_crashed", account_id=account_id, error=type(outcome).__name__)
        return sum(1 for outcome in done if outcome is True)

    async def close(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            await cancel_and_wait(task)

    @property
    def pending_reads(self) -> int:
        return len(self._tasks)


async def quota_service(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx (after ``_services``): the service, hooked to the usage writer."""
    service = QuotaService(app[DB], app[TOKENS], app[UPSTREAM], app[CONFIG].quotas)
    app[QUOTAS] = service
    listeners = app[USAGE].listeners
    listeners.append(service.on_usage_batch)
    service.model_listeners.append(app[CATALOGUE].learn)
    service.settle_listeners.append(app[RESERVATIONS].on_settled)
    yield
    with contextlib.suppress(ValueError):
        listeners.remove(service.on_usage_batch)
    await service.close()


async def read_stale_quotas(app: web.Application) -> int:
    """Background task ``read_stale_quotas``."""
    return await app[QUOTAS].read_stale()
