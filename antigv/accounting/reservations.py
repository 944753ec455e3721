"""Pool reservations: admission counts what this instance admitted but nobody charged yet
(SPEC §5, §6; issue 11 item 25).

A request served by a shared account is charged to its user's pool only when a later
quota read of the account settles it, seconds after admission. Admission that looked
at the balance alone let a burst through on a balance its charges, once settled,
overdrew many times (2.7x). So when this instance admits a request to a shared
account it reserves an estimate of the request's cost, and admission sees the balance
minus what is reserved (``rank_candidates(pool_reserved=...)``). All in memory: no
extra round trip on the request path.

A reservation ends:

* when its attempt fails before a reply (nothing will be charged);
* when the quota read that settles its request is stored: its usage row was written
  before the read started, so the charge is in the balance now (and the cached
  candidate rows holding the old balance were dropped by the same write);
* or ``SETTLED_ELSEWHERE_AFTER`` seconds after the request finished, when no read of
  this instance settled it (another instance did, or reads failed). An unfinished
  request's reservation lasts at most ``UNFINISHED_MAX_AGE``.

The estimate, per quota group, is the mean charge of the last ``ESTIMATE_SAMPLE``
settled shared requests, refreshed every ``ESTIMATE_EVERY`` seconds in the background
on every instance, never below ``ESTIMATE_FLOOR``; ``ESTIMATE_DEFAULT`` until a group
has history. Admission wants the balance net of reservations to be worth a request
(``POOL_ADMISSION_MIN``), so one instance overdraws a pool by at most the one request
it admitted last (give or take the estimate's error). Instances do not see each
other's reservations: a burst spread over k instances may draw up to k times that.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from antigv.appkeys import QUOTA_REPO, RESERVATIONS
from antigv.store.usage import UsageRecord

# A request's cost in "account fractions" before a group has settled history (1% of a bucket).
ESTIMATE_DEFAULT = 0.01
# Upstream reports fractions in coarse steps; many requests settle at 0 and the next at a step.
ESTIMATE_FLOOR = 0.001
ESTIMATE_SAMPLE = 2000
ESTIMATE_EVERY = 60.0
SETTLED_ELSEWHERE_AFTER = 90.0
UNFINISHED_MAX_AGE = 3600.0


@dataclass(eq=False, slots=True)
class Reservation:
    user_id: int
    quota_group: str
    account_id: int
    amount: float
    created: float
    finished: float | None = None
    # The finished request's usage row, until it is written.
    record: UsageRecord | None = None
    # When that row was written (UTC): a read started later settles it.
    written_at: datetime | None = None


class PoolReservations:
    """This instance's reservations per (user, quota group), and the cost estimates."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.estimates: dict[str, float] = {}
        self._pools: dict[tuple[int, str], list[Reservation]] = {}
        # Finished requests whose usage rows are not written yet, by the record's identity.
        self._unwritten: dict[int, Reservation] = {}

    def estimate(self, quota_group: str) -> float:
        return self.estimates.get(quota_group, ESTIMATE_DEFAULT)

    def set_estimates(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """From ``pool_cost_estimates``; a group without recent history goes back to the default."""
        self.estimates = {row["quota_group"]: max(ESTIMATE_FLOOR, float(row["per_request"])) for row in rows}

    def reserved(self, user_id: int | None, quota_group: str) -> float:
        """What this instance has admitted on the pool and nobody has charged yet."""
        if user_id is None:
            return 0.0
        held = self._pools.get((user_id, quota_group))
        if not held:
            return 0.0
        now = self._clock()
        live = [r for r in held if not self._expired(r, now)]
        if len(live) != len(held):
            self._keep(held, live)
        return sum(r.amount for r in live)

    def reserve(
        self, user_id: int | None, quota_group: str, account: Mapping[str, Any]
    ) -> Reservation | None:
        """Admission to ``account``: a reservation when it draws on the caller's pool."""
        if user_id is None or not account["is_shared"]:
            return None  # dedicated accounts are only recorded; the admin has no pool
        reservation = Reservation(
            user_id, quota_group, account["account_id"], self.estimate(quota_group), self._clock()
        )
        self._pools.setdefault((user_id, quota_group), []).append(reservation)
        return reservation

    def cancel(self, reservation: Reservation | None) -> None:
        """The attempt failed before a reply: nothing will be charged."""
        if reservation is not None:
            held = self._pools.get((reservation.user_id, reservation.quota_group), [])
            self._keep(held, [r for r in held if r is not reservation])

    def finished(self, reservation: Reservation | None, record: UsageRecord) -> None:
        """The request is over; its charge comes with the read that settles ``record``."""
        if reservation is not None:
            reservation.finished = self._clock()
            reservation.record = record
            self._unwritten[id(record)] = reservation

    def on_usage_batch(self, batch: Iterable[UsageRecord]) -> None:
        """``UsageRecorder`` listener: these rows are in the database now."""
        written = datetime.now(UTC)
        for record in batch:
            reservation = self._unwritten.get(id(record))
            if reservation is not None and reservation.record is record:
                del self._unwritten[id(record)]
                reservation.record = None
                reservation.written_at = written
                if record.quota_consumed is not None:
                    # Charged as it was written: no read will come to settle it.
                    self.cancel(reservation)

    def on_settled(self, account_id: int, read_at: datetime) -> None:
        """``QuotaService`` listener: a read of ``account_id`` started at ``read_at`` is stored,
        with the charges of every row written before it."""
        for held in list(self._pools.values()):
            self._keep(
                held,
                [
                    r
                    for r in held
                    if not (
                        r.account_id == account_id and r.written_at is not None and r.written_at <= read_at
                    )
                ],
            )

    def _expired(self, reservation: Reservation, now: float) -> bool:
        if reservation.finished is not None:
            return now - reservation.finished > SETTLED_ELSEWHERE_AFTER
        return now - reservation.created > UNFINISHED_MAX_AGE

    def _keep(self, held: list[Reservation], live: list[Reservation]) -> None:
        """Replace one pool's reservations ``held`` by the subset ``live``."""
        if len(live) == len(held):
            return
        for gone in set(held) - set(live):
            if gone.record is not None:
                self._unwritten.pop(id(gone.record), None)
        if not held:
            return
        key = (held[0].user_id, held[0].quota_group)
        if live:
            self._pools[key] = live
        else:
            self._pools.pop(key, None)


async def refresh_estimates(app: web.Application) -> int:
    """Background task ``pool_estimates`` (every instance keeps its own)."""
    rows = await app[QUOTA_REPO].cost_estimates(ESTIMATE_SAMPLE)
    app[RESERVATIONS].set_estimates(rows)
    return len(rows)
