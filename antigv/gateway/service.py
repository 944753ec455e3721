"""A chat request's life: choose an account, open the backend's reply, fail over, and,
however the reply ends, store its signatures, record its usage and release the account.

Surfaces call :meth:`Gateway.chat`; they only render the events. Failover happens only
before the first byte reaches the client: a reply is "opened" once the backend has
produced its first events, and only then does the surface start answering.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import structlog

from antigv.accounting.reservations import PoolReservations, Reservation
from antigv.backends.antigravity import KIND as ANTIGRAVITY
from antigv.backends.base import Account, Backend, BackendReply, Prepared
from antigv.backends.gemini_api import KIND as GEMINI_API
from antigv.config import Config
from antigv.core.conversation import ChatRequest
from antigv.core.errors import GatewayError, ModelRetired, RateLimited, UpstreamError
from antigv.core.estimate import estimate_input_tokens
from antigv.core.events import Event
from antigv.core.failures import CredentialsFailed, FailureKind, UpstreamFailure, client_error
from antigv.core.principal import Principal
from antigv.gateway.admission import KeyLimiter, Ticket, check_model
from antigv.gateway.catalogue import ModelCatalogue
from antigv.gateway.clock import SYSTEM_CLOCK, Clock
from antigv.gateway.failover import Attempts, Decision, Effect, Next, decide
from antigv.gateway.selection import AccountRouter, Ranking, no_account_error, rank_candidates
from antigv.gateway.signatures import SignatureStore
from antigv.store.accounts import AccountRepository
from antigv.store.usage import UsageRecord

if TYPE_CHECKING:
    from antigv.accounting.usage import UsageRecorder
    from antigv.ops.metrics import Metrics

log = structlog.get_logger(__name__)

# [gemini_api] prefer -> the rank of each account kind within a tier (lower first).
KIND_ORDERS: dict[str, Mapping[str, int]] = {
    "first": {GEMINI_API: 0, ANTIGRAVITY: 1},
    "last": {ANTIGRAVITY: 0, GEMINI_API: 1},
    "mixed": {},
}

# account id, failed model -> the models of its quota group (they share one bucket).
GroupModels = Callable[[int, str], Awaitable[list[str]]]


class Reply:
    """A reply whose first events are in; nothing has reached the client yet."""

    def __init__(
        self,
        *,
        request: ChatRequest,
        requested_model: str,
        account: Account,
        prepared: Prepared,
        upstream: BackendReply,
        first: Sequence[Event],
        rest: AsyncIterator[Sequence[Event]],
        started: float,
        overhead_before: float,
        signatures: Callable[[], Awaitable[None]],
    ) -> None:
        self.request = request
        # The name the client asked for, which its reply carries.
        self.requested_model = requested_model
        self.account = account
        # The upstream model id (aliases resolved): what was served and is accounted.
        self.model = prepared.model
        self.upstream = upstream
        self.started = started
        # Seconds from the request's arrival to the upstream call: the gateway's share.
        self.overhead_before = overhead_before
        self.opened_at = time.perf_counter()
        # When the upstream's last frame arrived; None until then.
        self.upstream_done: float | None = None
        self.completed = False
        self.failed = False
        self.reservation: Reservation | None = None
        # The caller's key's admission; its rate-limit headers go on the response.
        self.ticket: Ticket | None = None
        self._first = first
        self._rest = rest
        self._keep_signatures = signatures

    async def batches(self) -> AsyncIterator[Sequence[Event]]:
        """The reply's events, a batch per upstream read; the last batch holds its usage
        and end, sent only once the signatures a next turn needs are stored."""
        yield self._first
        async for events in self._rest:
            if events:
                yield events
        self.upstream_done = time.perf_counter()
        await self._keep_signatures()
        self.completed = True
        yield self.upstream.closing()

    def fail(self) -> None:
        """The surface ended the reply itself (a shutdown cut it): it is an error, not a cancel."""
        self.failed = True

    @property
    def rate_limit_headers(self) -> dict[str, str]:
        return self.ticket.headers if self.ticket is not None else {}


class Gateway:
    def __init__(
        self,
        *,
        config: Config,
        backends: Mapping[str, Backend],
        router: AccountRouter,
        accounts: AccountRepository,
        signatures: SignatureStore,
        group_models: GroupModels,
        usage: UsageRecorder,
        reservations: PoolReservations,
        metrics: Metrics,
        catalogue: ModelCatalogue,
        limiter: KeyLimiter,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._config = config
        self._policy = config.failover
        # Account kind -> the backend that serves such accounts.
        self._backends = backends
        self._kind_order = KIND_ORDERS[config.gemini_api.prefer]
        self.router = router
        self._accounts = accounts
        self._signatures = signatures
        self._group_models = group_models
        self._usage = usage
        self.reservations = reservations
        self.metrics = metrics
        self._catalogue = catalogue
        self.limiter = limiter
        self._clock = clock

    @asynccontextmanager
    async def chat(
        self, principal: Principal, request: ChatRequest, *, request_id: str, started: float, surface: str
    ) -> AsyncIterator[Reply]:
        """The opened reply; leaving the block closes it, whatever the way out.
        ``surface`` names the client protocol, for the usage log and the metrics.

        The caller's key is admitted first (its limits, gateway/admission.py): a request
        over them never reaches an account."""
        requested = request.model
        request = self._resolved(request)
        ticket = self.limiter.admit(principal, requested, request.model)
        try:
            reply = await self._open(principal, request, requested, started)
        except BaseException:
            self.limiter.finish(ticket, 0)
            raise
        reply.ticket = ticket
        status: str | None = None
        try:
            yield reply
        except (asyncio.CancelledError, ConnectionResetError):
            status = "error" if reply.failed else "cancelled"
            raise
        except BaseException:
            status = "error"
            raise
        finally:
            if status is None:
                status = "ok" if reply.completed and not reply.failed else "error"
            self._close(reply, principal, request_id, status, surface)

    async def count_tokens(self, principal: Principal, request: ChatRequest) -> tuple[int, bool]:
        """(input tokens of ``request``, whether the upstream counted them): the upstream's
        count on the account a chat would use (PROTOCOL §13.10), else the core's estimate."""
        requested = request.model
        request = self._resolved(request)
        model = request.model
        check_model(principal, requested, model)
        rows, quota_group = await self._candidates(principal, model)
        ranking = self._rank(principal, rows, quota_group)
        if ranking.accounts:
            account = ranking.accounts[0]
            backend = self._backends[account["kind"]]
            prepared = backend.prepare(request, {}, self._catalogue.info(model))
            try:
                async with asyncio.timeout(self._config.upstream.first_byte_timeout):
                    return await backend.count_tokens(account, prepared), True
            except (UpstreamFailure, CredentialsFailed, TimeoutError) as exc:
                log.info("count_tokens_estimated", model=model, error=type(exc).__name__)
        return estimate_input_tokens(request), False

    # --- choosing --------------------------------------------------------------

    def _resolved(self, request: ChatRequest) -> ChatRequest:
        """The request for the id it is served as: aliases and deprecations resolve once,
        before an account is chosen (PROTOCOL §13.4)."""
        return dataclasses.replace(request, model=self._catalogue.resolve(request.model))

    async def _candidates(self, principal: Principal, model: str) -> tuple[list[dict[str, Any]], str]:
        """The accounts that may serve ``model`` for the caller, and its quota group."""
        quota_group = self._config.quotas.group_of(model)
        rows = self._serving(await self.router.candidates(principal, model, quota_group), model)
        return rows, quota_group

    def _rank(
        self,
        principal: Principal,
        rows: list[dict[str, Any]],
        quota_group: str,
        *,
        session_key: str = "",
        exclude: frozenset[int] = frozenset(),
    ) -> Ranking:
        return rank_candidates(
            rows,
            user_id=principal.user_id,
            prefer_shared=bool(principal.prefer_shared),
            inflight=self.router.inflight,
            session_key=session_key,
            exclude=exclude,
            pool_reserved=self.reservations.reserved(principal.user_id, quota_group),
            kind_order=self._kind_order,
        )

    # --- opening -------------------------------------------------------------

    async def _open(
        self, principal: Principal, request: ChatRequest, requested: str, started: float
    ) -> Reply:
        """Try accounts until one produces a reply; raise a GatewayError if none does."""
        model = request.model
        rows, quota_group = await self._candidates(principal, model)
        # The request in each backend's form, made when an account of that kind is first tried.
        first_kind = rows[0]["kind"] if rows else ANTIGRAVITY
        prepared_by_kind = {first_kind: await self._prepare(self._backends[first_kind], request)}
        # One conversation, one digest: any kind's names the sticky account.
        session_key = prepared_by_kind[first_kind][0].session_key

        attempts = Attempts(deadline=self._clock.monotonic() + self._config.upstream.first_byte_timeout)
        last_failure: UpstreamFailure | None = None
        ranking: Ranking | None = None
        for _attempt in range(self._config.upstream.max_attempts):
            ranking = self._rank(
                principal, rows, quota_group, session_key=session_key, exclude=frozenset(attempts.tried)
            )
            if not ranking.accounts:
                break
            account = ranking.accounts[0]
            account_id = account["account_id"]
            backend = self._backends[account["kind"]]
            if account["kind"] not in prepared_by_kind:
                prepared_by_kind[account["kind"]] = await self._prepare(backend, request)
            prepared, family = prepared_by_kind[account["kind"]]
            self.router.acquire(account_id)
            held = self.reservations.reserve(principal.user_id, quota_group, account)
            try:
                reply = await self._attempt(backend, account, prepared, request, requested, started, family)
            except UpstreamFailure as failure:
                self._release(account_id, held)
                last_failure = failure
                self.metrics.upstream_errors.labels(failure.kind.value).inc()
                step = await self._after_failure(backend, account, failure, model, attempts)
            except CredentialsFailed as exc:
                self._release(account_id, held)
                last_failure = UpstreamFailure(FailureKind.UNAUTHENTICATED, 502, str(exc))
                step = Next.OTHER_ACCOUNT
            except ModelRetired as notice:
                # The retirement notice came as reply text (PROTOCOL §13.4): a clean error instead.
                self._release(account_id, held)
                raise self._catalogue.note_retired(requested, notice.replacement or "") from None
            except BaseException:
                self._release(account_id, held)
                raise
            else:
                reply.reservation = held
                if account.get("validation_url"):
                    await self._validated(account_id)
                return reply
            log.info(
                "chat_attempt_failed",
                account_id=account_id,
                kind=last_failure.kind.value,
                status=last_failure.status,
                next=step.value,
            )
            if step is Next.GIVE_UP:
                break
            self.metrics.failovers.labels(step.value).inc()
            if step is Next.OTHER_ACCOUNT:
                attempts.tried.add(account_id)
        assert ranking is not None  # max_attempts >= 1
        if last_failure is None:
            raise no_account_error(ranking, model)
        error = self._client_error(last_failure, model)
        if error.retry_after is not None and not ranking.accounts:
            # Every account is parked: the client may come back when the first one does,
            # as a later request would be told (no_account_error).
            returns = [t for t in (attempts.comeback, ranking.retry_at) if t is not None]
            if returns:
                wait = max(1.0, (min(returns) - self._clock.now()).total_seconds())
                error.retry_after = min(error.retry_after, wait)
        raise error

    def _release(self, account_id: int, held: Reservation | None) -> None:
        self.router.release(account_id)
        self.reservations.cancel(held)

    def _client_error(self, failure: UpstreamFailure, model: str) -> GatewayError:
        if failure.kind is FailureKind.NOT_FOUND and self._catalogue.knows(model):
            # PROTOCOL §13.9: a model the account lists but the chat cannot find is the
            # client-version gate (§13.1), not a missing model.
            log.error("upstream_client_outdated", model=model)
            return UpstreamError(
                "The upstream refused this gateway's client version for this model; "
                "the upstream client version must be raised",
                code="upstream_client_outdated",
            )
        if failure.kind is FailureKind.VALIDATION_REQUIRED:
            # The account is parked, not broken: the client may come back, as a later
            # request is told; only its owner sees where to verify (PROTOCOL §13.9).
            return RateLimited(
                "The account serving this request must be verified again by its owner in a browser "
                "(validation_url in /api/accounts); it is parked meanwhile",
                code="account_validation_required",
                retry_after=self._policy.validation_cooldown,
            )
        return client_error(failure)

    async def _prepare(self, backend: Backend, request: ChatRequest) -> tuple[Prepared, str]:
        """The request in ``backend``'s form, with the stored signatures it replays; and the
        signature family its replies sign for."""
        family = backend.signature_family(request.model)
        wanted = backend.wanted_signatures(request)
        stored = await self._signatures.find(family, wanted) if wanted else {}
        return backend.prepare(request, stored, self._catalogue.info(request.model)), family

    def _serving(self, rows: list[dict[str, Any]], model: str) -> list[dict[str, Any]]:
        """The candidates that can serve ``model``. Where some candidate's listing offers it,
        only those that offer it; otherwise the candidates whose listing was never read
        (a key only for a Gemini model) and, when no account lists the model at all, the rest."""
        offers = {row["account_id"]: self._catalogue.offers(row["account_id"], model) for row in rows}
        if any(offers.values()):
            return [row for row in rows if offers[row["account_id"]]]
        known = self._catalogue.knows(model)
        return [
            row
            for row in rows
            if (
                offers[row["account_id"]] is None
                and (row["kind"] == ANTIGRAVITY or model.startswith("gemini"))
            )
            or (offers[row["account_id"]] is False and not known)
        ]

    async def _attempt(
        self,
        backend: Backend,
        account: Account,
        prepared: Prepared,
        request: ChatRequest,
        requested: str,
        started: float,
        family: str,
    ) -> Reply:
        overhead_before = time.perf_counter() - started
        upstream = await backend.open(account, prepared)
        rest = upstream.batches()
        first = await self._prime(upstream, rest)
        signatures = self._signatures

        async def keep_signatures() -> None:
            # The family of the model that signed, not of the name the client asked for (an alias).
            await signatures.keep(family, upstream.signatures)

        return Reply(
            request=request,
            requested_model=requested,
            account=account,
            prepared=prepared,
            upstream=upstream,
            first=first,
            rest=rest,
            started=started,
            overhead_before=overhead_before,
            signatures=keep_signatures,
        )

    @staticmethod
    async def _prime(upstream: BackendReply, batches: AsyncIterator[Sequence[Event]]) -> Sequence[Event]:
        """Read until the first events: an error up to here may still fail over."""
        seen_reads = 0
        try:
            async for events in batches:
                seen_reads += 1
                if events:
                    return events
        except BaseException:
            upstream.close()
            raise
        if seen_reads == 0:
            upstream.close()
            raise UpstreamFailure(FailureKind.SERVER_ERROR, 502, "upstream sent an empty reply")
        return []

    async def _after_failure(
        self, backend: Backend, account: Account, failure: UpstreamFailure, model: str, attempts: Attempts
    ) -> Next:
        """Store what the failure says about the account; wait if the policy says so."""
        remaining = attempts.deadline - self._clock.monotonic()
        decision = decide(
            failure, account["account_id"], attempts, self._policy, now=self._clock.now(), remaining=remaining
        )
        if decision.repair_first and await backend.repair(account, remaining):
            return Next.SAME_ACCOUNT
        await self._apply(account["account_id"], decision, failure, model)
        if decision.wait:
            await self._clock.sleep(decision.wait)
        return decision.next

    async def _apply(self, account_id: int, decision: Decision, failure: UpstreamFailure, model: str) -> None:
        until = decision.until
        reason = failure.kind.value
        match decision.effect:
            case Effect.COOLDOWN_MODEL:
                assert until is not None
                await self._accounts.set_cooldowns(account_id, [model], until, reason)
            case Effect.COOLDOWN_GROUP:
                assert until is not None
                parked = await self._group_models(account_id, model)
                await self._accounts.set_cooldowns(account_id, parked, until, reason)
            case Effect.PARK_FOR_VALIDATION:
                assert until is not None
                await self._accounts.park_for_validation(account_id, until, failure.validation_url)
                log.warning("account_needs_validation", account_id=account_id, until=until.isoformat())
            case Effect.DISABLE:
                named = f" ({failure.reason})" if failure.reason else ""
                disabled_for = f"{reason}{named}: {failure.message}"[:500]
                await self._accounts.disable(account_id, disabled_for)
                log.warning("account_disabled", account_id=account_id, reason=disabled_for)

    async def _validated(self, account_id: int) -> None:
        """The account serves again: the verification Google asked for is done (PROTOCOL §13.9).
        Best effort: the reply is already open and must not be lost to a database hiccup."""
        try:
            await self._accounts.clear_validation(account_id)
        except GatewayError as exc:
            log.warning("account_validation_not_cleared", account_id=account_id, code=exc.code)

    # --- closing -------------------------------------------------------------

    def _close(self, reply: Reply, principal: Principal, request_id: str, status: str, surface: str) -> None:
        """Release the account and queue the usage row (never awaited by the client)."""
        reply.upstream.close()
        stream = "true" if reply.request.stream else "false"
        self.metrics.chat_requests.labels(reply.model, stream, status, surface).inc()
        account = reply.account
        self.router.release(account["account_id"])
        usage = reply.upstream.usage
        record = UsageRecord(
            request_id=request_id,
            user_id=principal.user_id,
            account_id=account["account_id"],
            model_name=reply.model,
            quota_group=self._config.quotas.group_of(reply.model),
            is_shared=account["is_shared"],
            status=status,
            latency_ms=int((time.perf_counter() - reply.started) * 1000),
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            total_tokens=usage.total_tokens,
            surface=surface,
            key_id=principal.key_id,
            quota_consumed=self._backends[account["kind"]].quota_charge(usage),
        )
        self.reservations.finished(reply.reservation, record)
        self.limiter.finish(reply.ticket, usage.prompt_tokens + usage.completion_tokens)
        self._usage.record(record)
