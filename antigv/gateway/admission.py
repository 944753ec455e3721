"""Per-key limits (issue 14): requests and tokens per minute, requests in flight, a model
allow-list and a monthly token budget, enforced before a reply is opened.

Admission never waits on the database. Each instance counts its own traffic exactly
(a sliding minute) and learns the other instances' from PostgreSQL at most every
``keys.reconcile_interval`` seconds: their requests and tokens in 10-second buckets,
their requests in flight, and the month's tokens the usage writer keeps per key. So a
limit holds across instances within what they admit in one reconcile interval (and one
bucket's rounding of the minute); a cap on requests in flight holds exactly per instance
and within one interval across them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import partial

import structlog

from antigv.core.errors import Forbidden, GatewayError, RateLimited
from antigv.core.principal import KeyLimits, Principal
from antigv.gateway.clock import Clock
from antigv.ops.tasks import cancel_and_wait
from antigv.store.api_keys import ApiKeyRepository

log = structlog.get_logger(__name__)

WINDOW = 60.0
BUCKET = 10  # seconds per bucket of the other instances' activity
# A key not used for this long is no longer reconciled (its state is dropped).
_IDLE = 2 * WINDOW
# Reconciles between deletions of buckets older than the window.
_CLEANUP_EVERY = 60


def _bucket(at: float) -> int:
    return int(at // BUCKET)


def _month_start(at: datetime) -> date:
    return date(at.year, at.month, 1)


def _next_month(at: datetime) -> datetime:
    year, month = (at.year + 1, 1) if at.month == 12 else (at.year, at.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)


def duration(seconds: float) -> str:
    """OpenAI's form of a reset time: ``20ms``, ``1.5s``, ``1m0s``."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text


@dataclass(slots=True)
class _Window:
    """What one key used within the last minute, this instance's exactly and the others'
    by bucket: counts kept as entries come and go, so admission costs the same however
    busy the key is."""

    used: int
    # When the last entry leaves the window (the limit is back to its initial state).
    empty_at: float
    # (when it leaves the window, how much), oldest first: read only to refuse.
    entries: Callable[[], list[tuple[float, int]]]

    def wait_below(self, limit: int, now: float) -> float:
        """Seconds until the use falls below ``limit`` as entries leave the window."""
        used = self.used
        for leaves, amount in sorted(self.entries()):
            used -= amount
            if used < limit:
                return leaves - now
        return WINDOW


@dataclass(slots=True)
class _Key:
    """One key's traffic as this instance knows it."""

    limits: KeyLimits
    last_active: float
    # Wall-clock times of this instance's admissions within the last minute.
    requests: deque[float] = field(default_factory=deque)
    # (time, tokens) of this instance's finished requests within the last minute, and their sum.
    tokens: deque[tuple[float, int]] = field(default_factory=deque)
    token_sum: int = 0
    inflight: int = 0
    # bucket -> [requests, tokens] not yet reported to the other instances.
    unsent: dict[int, list[int]] = field(default_factory=dict)
    # The other instances': (bucket, requests, tokens) (at most a minute's buckets), and
    # requests in flight.
    others: list[tuple[int, int, int]] = field(default_factory=list)
    others_inflight: int = 0
    # The month's tokens as the database last said (for ``month``), and this
    # instance's finished since that read.
    month: date | None = None
    month_read: int = 0
    month_local: int = 0

    def prune(self, now: float) -> None:
        start = now - WINDOW
        while self.requests and self.requests[0] <= start:
            self.requests.popleft()
        while self.tokens and self.tokens[0][0] <= start:
            self.token_sum -= self.tokens.popleft()[1]

    def _others(self, now: float, position: int) -> list[tuple[float, int]]:
        """The others' buckets still in the window: (when they leave it, the amount)."""
        found = []
        for entry in self.others:
            leaves = (entry[0] + 1) * BUCKET + WINDOW
            if leaves > now and entry[position]:
                found.append((leaves, entry[position]))
        return found

    def request_window(self, now: float) -> _Window:
        last = self.requests[-1] if self.requests else None
        return self._window(
            now, 1, len(self.requests), last, lambda: [(at + WINDOW, 1) for at in self.requests]
        )

    def token_window(self, now: float) -> _Window:
        last = self.tokens[-1][0] if self.tokens else None
        return self._window(now, 2, self.token_sum, last, lambda: [(at + WINDOW, n) for at, n in self.tokens])

    def _window(
        self,
        now: float,
        position: int,
        used: int,
        last_at: float | None,
        local: Callable[[], list[tuple[float, int]]],
    ) -> _Window:
        """This instance's ``used`` (its newest entry at ``last_at``) and the others' buckets
        at ``position`` (1 requests, 2 tokens) over the window."""
        others = self._others(now, position)
        last = last_at + WINDOW if last_at is not None else now
        return _Window(
            used + sum(n for _, n in others),
            max([last, *(leaves for leaves, _ in others)]),
            lambda: local() + others,
        )


def check_model(principal: Principal, requested: str, served: str) -> None:
    """Forbidden unless the key may use ``requested`` (or the id it is served as)."""
    if not principal.limits.allows(requested, served):
        raise Forbidden(f"this API key may not use the model {requested!r}", code="model_not_allowed")


@dataclass(slots=True)
class Ticket:
    """An admitted request: released once with the tokens it used."""

    key_id: int
    state: _Key
    # x-ratelimit-* headers, OpenAI's names (both surfaces send them).
    headers: dict[str, str]
    done: bool = False


class KeyLimiter:
    def __init__(self, clock: Clock, keys: ApiKeyRepository, *, interval: float) -> None:
        self._clock = clock
        self._repository = keys
        self._interval = interval
        # This process's name among the instances sharing the database.
        self.instance = secrets.token_hex(8)
        self._keys: dict[int, _Key] = {}
        self._runs = 0
        self._failing = False

    def _now(self) -> tuple[datetime, float]:
        now = self._clock.now()
        return now, now.timestamp()

    # --- the request path ----------------------------------------------------------

    def admit(self, principal: Principal, requested: str, served: str) -> Ticket | None:
        """Admit a request on ``principal``'s key for ``requested`` (served as ``served``);
        raises Forbidden for a model the key may not use, RateLimited over a limit."""
        check_model(principal, requested, served)
        limits = principal.limits
        if principal.key_id is None or not limits.counted:
            return None
        wall, now = self._now()
        state = self._keys.get(principal.key_id)
        if state is None:
            state = self._keys[principal.key_id] = _Key(limits, now)
        state.limits, state.last_active = limits, now
        state.prune(now)
        requests, tokens = state.request_window(now), state.token_window(now)
        # Refused, the request is not counted; admitted, it is (and leaves the window last).
        # The refusal's headers are made only when there is one.
        refused = partial(self._headers, limits, requests.used, requests.empty_at, tokens, now)
        self._check(limits, state, wall, requests, tokens, now, refused)
        headers = self._headers(limits, requests.used + 1, now + WINDOW, tokens, now)
        state.requests.append(now)
        state.inflight += 1
        state.unsent.setdefault(_bucket(now), [0, 0])[0] += 1
        return Ticket(principal.key_id, state, headers)

    def _check(
        self,
        limits: KeyLimits,
        state: _Key,
        wall: datetime,
        requests: _Window,
        tokens: _Window,
        now: float,
        headers: Callable[[], dict[str, str]],
    ) -> None:
        budget = limits.monthly_token_budget
        if budget is not None:
            month = _month_start(wall)
            spent = (state.month_read if state.month == month else 0) + state.month_local
            if spent >= budget:
                raise self._limited(
                    f"this API key's monthly token budget ({budget}) is spent until the month turns (UTC)",
                    "monthly_budget_exhausted",
                    (_next_month(wall) - wall).total_seconds(),
                    headers(),
                )
        cap = limits.max_concurrency
        if cap is not None and state.inflight + state.others_inflight >= cap:
            # Nobody knows when a request in flight ends: ask again in a second.
            raise self._limited(
                f"this API key allows {cap} requests in flight", "concurrency_limit", 1.0, headers()
            )
        if limits.rpm is not None and requests.used >= limits.rpm:
            wait = requests.wait_below(limits.rpm, now)
            raise self._limited(
                f"this API key allows {limits.rpm} requests per minute",
                "rate_limit_requests",
                wait,
                headers(),
            )
        if limits.tpm is not None and tokens.used >= limits.tpm:
            wait = tokens.wait_below(limits.tpm, now)
            raise self._limited(
                f"this API key allows {limits.tpm} tokens per minute", "rate_limit_tokens", wait, headers()
            )

    @staticmethod
    def _limited(message: str, code: str, wait: float, headers: dict[str, str]) -> RateLimited:
        error = RateLimited(message, code=code, retry_after=max(wait, 0.001))
        error.headers = headers
        return error

    @staticmethod
    def _headers(
        limits: KeyLimits, used_requests: int, requests_empty_at: float, tokens: _Window, now: float
    ) -> dict[str, str]:
        """OpenAI's rate-limit headers; a reset is when the window is back to empty."""
        headers: dict[str, str] = {}
        if limits.rpm is not None:
            headers["x-ratelimit-limit-requests"] = str(limits.rpm)
            headers["x-ratelimit-remaining-requests"] = str(max(0, limits.rpm - used_requests))
            headers["x-ratelimit-reset-requests"] = duration(requests_empty_at - now)
        if limits.tpm is not None:
            headers["x-ratelimit-limit-tokens"] = str(limits.tpm)
            headers["x-ratelimit-remaining-tokens"] = str(max(0, limits.tpm - tokens.used))
            headers["x-ratelimit-reset-tokens"] = duration(tokens.empty_at - now)
        return headers

    def finish(self, ticket: Ticket | None, tokens: int) -> None:
        """The request ended, having used ``tokens`` (prompt + completion)."""
        if ticket is None or ticket.done:
            return
        ticket.done = True
        state = ticket.state
        state.inflight -= 1
        if tokens > 0:
            _, now = self._now()
            state.tokens.append((now, tokens))
            state.token_sum += tokens
            state.unsent.setdefault(_bucket(now), [0, 0])[1] += tokens
            state.month_local += tokens
            state.last_active = now

    # --- reconciliation --------------------------------------------------------------

    async def reconcile(self) -> None:
        """Tell the other instances this one's traffic, and learn theirs (one round)."""
        _, now = self._now()
        for key_id in [k for k, s in self._keys.items() if s.inflight == 0 and now - s.last_active > _IDLE]:
            del self._keys[key_id]
        if not self._keys:
            return
        keys = dict(self._keys)
        unsent = {
            (key_id, bucket): (n[0], n[1]) for key_id, s in keys.items() for bucket, n in s.unsent.items()
        }
        for state in keys.values():
            state.unsent = {}
        try:
            others = await self._repository.reconcile(
                self.instance,
                unsent,
                {key_id: s.inflight for key_id, s in keys.items() if s.limits.max_concurrency is not None},
                key_ids=list(keys),
                since=_bucket(now - WINDOW) - 1,
                fresh=max(5.0, 5 * self._interval),
                budgeted=[key_id for key_id, s in keys.items() if s.limits.monthly_token_budget is not None],
            )
        except GatewayError as exc:
            # Unreported counts go with the next round; meanwhile each instance enforces alone.
            for (key_id, bucket), (n_requests, n_tokens) in unsent.items():
                counts = keys[key_id].unsent.setdefault(bucket, [0, 0])
                counts[0] += n_requests
                counts[1] += n_tokens
            if not self._failing:
                log.warning("key_limits_not_reconciled", error=exc.code)
            self._failing = True
            return
        for key_id, state in keys.items():
            state.others = others.buckets.get(key_id, [])
            state.others_inflight = others.inflight.get(key_id, 0)
            if key_id in others.months:
                state.month, state.month_read = others.months[key_id]
                state.month_local = 0
        if self._failing:
            log.info("key_limits_reconciled_again")
        self._failing = False
        self._runs += 1
        if self._runs % _CLEANUP_EVERY == 0:
            with contextlib.suppress(GatewayError):  # the next cleanup takes what this one left
                await self._repository.delete_old_activity(before=_bucket(now - WINDOW) - 2)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.reconcile()
            except Exception:
                log.exception("key_limits_reconcile_failed")

    def forget(self, key_ids: Iterable[int]) -> None:
        """Drop what is known of these keys (deleted)."""
        for key_id in key_ids:
            self._keys.pop(key_id, None)


@contextlib.asynccontextmanager
async def reconciling(limiter: KeyLimiter) -> AsyncIterator[None]:
    """The reconcile loop for the app's life."""
    task = asyncio.get_running_loop().create_task(limiter.run(), name="key-limits")
    try:
        yield
    finally:
        await cancel_and_wait(task)
