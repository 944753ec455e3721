"""What one failed upstream attempt means for the account and for the request: one
table, read by one pure function (PROTOCOL §8; the kinds are core/failures.py's).

Failover happens only before the first byte reaches the client. The gateway applies
the :class:`Decision` (account state writes, a wait, the next candidate); the
timings come from ``[failover]`` in config.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from antigv.config import FailoverConfig
from antigv.core.failures import FailureKind, UpstreamFailure


class Next(enum.Enum):
    SAME_ACCOUNT = "same"
    OTHER_ACCOUNT = "other"
    GIVE_UP = "give_up"


class Effect(enum.Enum):
    """What the failure says about the account, to be stored."""

    NONE = "none"
    # The failed model is parked until ``Decision.until``.
    COOLDOWN_MODEL = "cooldown_model"
    # Every model of the failed model's quota group is parked: they share the bucket.
    COOLDOWN_GROUP = "cooldown_group"
    # The whole account waits for its owner to verify it (PROTOCOL §13.9).
    PARK_FOR_VALIDATION = "park_for_validation"
    DISABLE = "disable"


@dataclass(frozen=True, slots=True)
class _Rule:
    next: Next
    effect: Effect = Effect.NONE
    # The FailoverConfig field holding the cooldown, when the failure names no end.
    cooldown: str | None = None
    # The backend may repair the account first (a moved project, PROTOCOL §8.3).
    repair_first: bool = False
    # The failure names when the account serves again (a quota's reset): the cooldown ends
    # then, and the request's other attempts wait for it too.
    named_reset: bool = False


# Kinds absent here are decided by their own rules below (rate limits and capacity).
_RULES: Mapping[FailureKind, _Rule] = {
    FailureKind.QUOTA_EXHAUSTED: _Rule(
        Next.OTHER_ACCOUNT, Effect.COOLDOWN_GROUP, "quota_cooldown", named_reset=True
    ),
    FailureKind.MODEL_QUOTA_EXHAUSTED: _Rule(
        Next.OTHER_ACCOUNT, Effect.COOLDOWN_MODEL, "quota_cooldown", named_reset=True
    ),
    FailureKind.VALIDATION_REQUIRED: _Rule(
        Next.OTHER_ACCOUNT, Effect.PARK_FOR_VALIDATION, "validation_cooldown"
    ),
    FailureKind.PROJECT_INVALID: _Rule(Next.OTHER_ACCOUNT, Effect.DISABLE, repair_first=True),
    FailureKind.ACCOUNT_BLOCKED: _Rule(Next.OTHER_ACCOUNT, Effect.DISABLE),
    FailureKind.PERMISSION_DENIED: _Rule(
        Next.OTHER_ACCOUNT, Effect.COOLDOWN_MODEL, "permission_cooldown", repair_first=True
    ),
    FailureKind.UNAUTHENTICATED: _Rule(Next.OTHER_ACCOUNT, Effect.COOLDOWN_MODEL, "unauthenticated_cooldown"),
    FailureKind.SERVER_ERROR: _Rule(Next.OTHER_ACCOUNT),
    FailureKind.NETWORK: _Rule(Next.OTHER_ACCOUNT),
    # The version gate or the model: the same on every account and host (PROTOCOL §13.9).
    FailureKind.NOT_FOUND: _Rule(Next.GIVE_UP),
    # The request itself, or a wait the client already sat through.
    FailureKind.INVALID_REQUEST: _Rule(Next.GIVE_UP),
    FailureKind.TIMEOUT: _Rule(Next.GIVE_UP),
}


@dataclass(frozen=True, slots=True)
class Decision:
    next: Next
    effect: Effect = Effect.NONE
    # When the effect's cooldown or parking ends.
    until: datetime | None = None
    # Seconds to wait before the next attempt.
    wait: float = 0.0
    # Ask the backend to repair the account; if it can, the same account is tried again.
    repair_first: bool = False


@dataclass
class Attempts:
    """What one request's attempts have learnt so far."""

    # The monotonic moment by which the client must have its first byte.
    deadline: float
    tried: set[int] = field(default_factory=set)
    waited: set[int] = field(default_factory=set)
    capacity_waits: int = 0
    # The earliest moment an account parked by these attempts comes back.
    comeback: datetime | None = None

    def parked_until(self, until: datetime) -> None:
        self.comeback = until if self.comeback is None else min(self.comeback, until)


def decide(
    failure: UpstreamFailure,
    account_id: int,
    attempts: Attempts,
    policy: FailoverConfig,
    *,
    now: datetime,
    remaining: float,
) -> Decision:
    """The decision for ``failure`` on ``account_id``; notes in ``attempts`` what it spent."""
    kind = failure.kind
    if kind is FailureKind.RATE_LIMITED:
        delay = failure.retry_after or policy.rate_limit_wait
        if delay <= min(policy.short_rate_limit, remaining) and account_id not in attempts.waited:
            attempts.waited.add(account_id)
            return Decision(Next.SAME_ACCOUNT, wait=delay)
        parked = now + timedelta(seconds=delay)
        attempts.parked_until(parked)
        return Decision(Next.OTHER_ACCOUNT, Effect.COOLDOWN_MODEL, parked)
    if kind is FailureKind.CAPACITY:
        # Server-wide: other accounts would fail the same way, so wait instead of burning them.
        backoff = policy.capacity_backoff
        if attempts.capacity_waits >= len(backoff) or backoff[attempts.capacity_waits] > remaining:
            return Decision(Next.GIVE_UP)
        wait = backoff[attempts.capacity_waits]
        attempts.capacity_waits += 1
        return Decision(Next.SAME_ACCOUNT, wait=wait)
    rule = _RULES[kind]
    until: datetime | None = None
    if rule.cooldown is not None:
        named = failure.reset_at if rule.named_reset else None
        until = named or now + timedelta(seconds=getattr(policy, rule.cooldown))
        if rule.effect in (Effect.COOLDOWN_GROUP, Effect.PARK_FOR_VALIDATION) or rule.named_reset:
            attempts.parked_until(until)
    return Decision(rule.next, rule.effect, until, repair_first=rule.repair_first and remaining > 0)
