"""The chat proxy's orchestration: choose an account, call upstream, fail over.

Failover happens only before the first byte reaches the client: a reply is
"opened" once the upstream stream has produced its first translated events,
and only then does the handler start answering.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

import orjson
import structlog
from aiohttp import web

from antigv.accounting.pools import account_group_models
from antigv.accounting.reservations import PoolReservations, Reservation
from antigv.accounting.usage import UsageRecord, UsageRecorder
from antigv.backends.antigravity import models
from antigv.backends.antigravity.client import UpstreamClient, UpstreamStream
from antigv.backends.antigravity.identity import ClientIdentity
from antigv.backends.antigravity.oauth import discover_project
from antigv.backends.antigravity.tokens import AccountRevoked, RefreshFailed, TokenManager
from antigv.backends.google.failures import FailureKind, UpstreamFailure, to_api_error
from antigv.backends.google.frames import Event, ResponseTranslator
from antigv.config import Config
from antigv.core.errors import ApiError, InvalidRequest, RateLimited, UpstreamError
from antigv.gateway.catalogue import ModelCatalogue, ModelRetired
from antigv.gateway.selection import AccountRouter, no_account_error, rank_candidates
from antigv.ops.metrics import Metrics
from antigv.protocols.openai.parse import (
    ChatRequest,
    ToolCallSignature,
    UpstreamRequest,
    build_upstream_request,
    new_request_id,
    replayed_tool_call_ids,
)
from antigv.store.db import Database

log = structlog.get_logger(__name__)

# A rate limit this short is waited out on the same account.
SHORT_RATE_LIMIT = 5.0
# Cooldowns for failures that say nothing about when to come back.
PERMISSION_COOLDOWN = timedelta(minutes=10)
# VALIDATION_REQUIRED parks the whole account this long (PROTOCOL §13.9; AGM: 10 minutes).
VALIDATION_COOLDOWN = timedelta(minutes=10)
UNAUTHENTICATED_COOLDOWN = timedelta(minutes=5)
DEFAULT_QUOTA_COOLDOWN = timedelta(hours=1)
CAPACITY_BACKOFF = (1.0, 2.0, 4.0, 8.0)
# An account's project is asked for again at most this often (seconds, per instance).
PROJECT_RECHECK = 600.0
_SIGNATURE_CACHE_SIZE = 10_000


def _encode_body(body: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:
        # JSON the client could send but orjson cannot write back: nested deeper than 255
        # levels once wrapped (tool-call arguments, schemas), or an integer beyond 64 bits.
        raise InvalidRequest(
            "the request cannot be forwarded: its JSON nests more than 255 levels deep "
            "or holds an integer beyond 64 bits",
            code="request_not_encodable",
        ) from None


class _Next(Enum):
    SAME_ACCOUNT = "same"
    OTHER_ACCOUNT = "other"
    GIVE_UP = "give_up"


@dataclass
class _Attempts:
    """What one request's attempts have learnt so far."""

    deadline: float
    tried: set[int] = field(default_factory=set)
    waited: set[int] = field(default_factory=set)
    capacity_waits: Iterator[float] = field(default_factory=lambda: iter(CAPACITY_BACKOFF))
    # The earliest moment an account parked by these attempts comes back.
    comeback: datetime | None = None

    def parked_until(self, until: datetime) -> None:
        self.comeback = until if self.comeback is None else min(self.comeback, until)


@dataclass
class OpenedReply:
    """An upstream reply that has produced its first events; nothing sent yet."""

    account: dict[str, Any]
    upstream: UpstreamRequest
    stream: UpstreamStream
    batches: AsyncIterator[list[dict[str, Any]]]
    translator: ResponseTranslator
    first_events: list[Event]
    started: float
    # Seconds from the request's arrival to the upstream call: the gateway's share.
    overhead_before: float
    opened_at: float = field(default_factory=time.perf_counter)
    # What admission reserved on the caller's pool, until the request is charged.
    reservation: Reservation | None = None


class ChatService:
    def __init__(
        self,
        *,
        config: Config,
        db: Database,
        router: AccountRouter,
        tokens: TokenManager,
        upstream: UpstreamClient,
        usage: UsageRecorder,
        reservations: PoolReservations,
        metrics: Metrics,
        catalogue: ModelCatalogue,
        identity: ClientIdentity,
    ) -> None:
        self._config = config
        self._catalogue = catalogue
        self._identity = identity
        self._thinking_rules = models.thinking_rules(config.models.thinking)
        self._db = db
        self.router = router
        self._tokens = tokens
        self._upstream = upstream
        self._usage = usage
        self.reservations = reservations
        self.metrics = metrics
        # tool call id -> (model family, signature); the database holds the same for other instances.
        self._signatures: OrderedDict[str, tuple[str, ToolCallSignature]] = OrderedDict()
        self._project_checked: dict[int, float] = {}  # account id -> monotonic time

    # --- opening a reply -----------------------------------------------------

    async def open(self, principal: Any, req: ChatRequest, started: float) -> OpenedReply:
        """Try accounts until one produces a reply; raise an ApiError if none does."""
        # Aliases and deprecations resolve once, before an account is chosen (PROTOCOL §13.4).
        upstream_model = self._catalogue.resolve(req.model)
        requested = req.model
        req = dataclasses.replace(req, model=upstream_model)
        quota_group = self._config.quotas.group_of(upstream_model)
        rows = await self.router.candidates(principal, upstream_model, quota_group)
        upstream_req = build_upstream_request(
            req,
            project=None,
            defaults=self._config.defaults,
            request_id=new_request_id(upstream_model),
            signatures=await self._lookup_signatures(req),
            model_info=self._catalogue.info(upstream_model),
            thinking_rules=self._thinking_rules,
        )
        body = upstream_req.body
        state = _Attempts(
            deadline=asyncio.get_running_loop().time() + self._config.upstream.first_byte_timeout
        )
        last_failure: UpstreamFailure | None = None
        ranking = None
        for _attempt in range(self._config.upstream.max_attempts):
            ranking = rank_candidates(
                rows,
                user_id=principal.user_id,
                prefer_shared=bool(principal.prefer_shared),
                inflight=self.router.inflight,
                session_key=upstream_req.session_key,
                exclude=frozenset(state.tried),
                pool_reserved=self.reservations.reserved(principal.user_id, quota_group),
            )
            if not ranking.accounts:
                break
            account = ranking.accounts[0]
            account_id = account["account_id"]
            # PROTOCOL §13.3: never "project": "" (a 400); an account without a project sends none.
            if account["project_id"]:
                body["project"] = account["project_id"]
            else:
                body.pop("project", None)
            self.router.acquire(account_id)
            held = self.reservations.reserve(principal.user_id, quota_group, account)
            try:
                reply = await self._attempt(account, upstream_req, _encode_body(body), started)
                reply.reservation = held
                if account.get("validation_url"):
                    await self._validated(account_id)
                return reply
            except UpstreamFailure as failure:
                self.router.release(account_id)
                self.reservations.cancel(held)
                last_failure = failure
                self.metrics.upstream_errors.labels(failure.kind.value).inc()
                step = await self._after_failure(account, failure, upstream_model, state)
            except (AccountRevoked, RefreshFailed) as exc:
                self.router.release(account_id)
                self.reservations.cancel(held)
                last_failure = UpstreamFailure(FailureKind.UNAUTHENTICATED, 502, str(exc))
                step = _Next.OTHER_ACCOUNT
            except ModelRetired as notice:
                # The retirement notice came as reply text (PROTOCOL §13.4): a clean error instead.
                self.router.release(account_id)
                self.reservations.cancel(held)
                raise self._catalogue.note_retired(requested, notice.replacement or "") from None
            except BaseException:
                self.router.release(account_id)
                self.reservations.cancel(held)
                raise
            log.info(
                "chat_attempt_failed",
                account_id=account_id,
                kind=last_failure.kind.value,
                status=last_failure.status,
                next=step.value,
            )
            if step is _Next.GIVE_UP:
                break
            self.metrics.failovers.labels(step.value).inc()
            if step is _Next.OTHER_ACCOUNT:
                state.tried.add(account_id)
        if last_failure is not None:
            error = self._client_error(last_failure, upstream_model)
            if error.retry_after is not None and ranking is not None and not ranking.accounts:
                # Every account is parked: the client may come back when the first one does,
                # as a later request would be told (no_account_error).
                returns = [t for t in (state.comeback, ranking.retry_at) if t is not None]
                if returns:
                    wait = max(1.0, (min(returns) - datetime.now(UTC)).total_seconds())
                    error.retry_after = min(error.retry_after, wait)
            raise error
        assert ranking is not None  # max_attempts >= 1
        raise no_account_error(ranking, req.model)

    def _client_error(self, failure: UpstreamFailure, model: str) -> ApiError:
        if failure.kind is FailureKind.NOT_FOUND and self._catalogue.knows(model):
            # PROTOCOL §13.9: a model the account lists but the chat cannot find is the
            # client-version gate (§13.1), not a missing model.
            log.error("upstream_client_outdated", model=model, user_agent=self._identity.user_agent)
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
                retry_after=VALIDATION_COOLDOWN.total_seconds(),
            )
        return to_api_error(failure)

    async def _attempt(
        self, account: dict[str, Any], upstream_req: UpstreamRequest, body: bytes, started: float
    ) -> OpenedReply:
        token = await self._tokens.access_token(account)
        overhead_before = time.perf_counter() - started
        try:
            stream = await self._upstream.open_stream(token, body)
        except UpstreamFailure as failure:
            if failure.kind is not FailureKind.UNAUTHENTICATED:
                raise
            # The stored token was refused: refresh once and try the same account again.
            token = await self._tokens.refresh(account["account_id"], stale=account.get("access_token") or "")
            stream = await self._upstream.open_stream(token, body)
        return await self._prime(account, upstream_req, stream, started, overhead_before)

    async def _prime(
        self,
        account: dict[str, Any],
        upstream_req: UpstreamRequest,
        stream: UpstreamStream,
        started: float,
        overhead_before: float,
    ) -> OpenedReply:
        """Read until the first events: an error up to here may still fail over."""
        translator = ResponseTranslator(upstream_req.tool_names, upstream_req.placeholder_tools)
        batches = aiter(stream.batches())
        first_events: list[Event] = []
        seen_frames = 0
        try:
            while not first_events:
                try:
                    batch = await anext(batches)
                except StopAsyncIteration:
                    break
                seen_frames += len(batch)
                first_events = [event for frame in batch for event in translator.feed(frame)]
        except BaseException:
            stream.close()
            raise
        if seen_frames == 0:
            stream.close()
            raise UpstreamFailure(FailureKind.SERVER_ERROR, 502, "upstream sent an empty reply")
        return OpenedReply(
            account, upstream_req, stream, batches, translator, first_events, started, overhead_before
        )

    async def _after_failure(
        self, account: dict[str, Any], failure: UpstreamFailure, model: str, state: _Attempts
    ) -> _Next:
        """Record what the failure says about the account, and say what to try next."""
        account_id = account["account_id"]
        kind = failure.kind
        now = datetime.now(UTC)
        remaining = state.deadline - asyncio.get_running_loop().time()
        if kind is FailureKind.QUOTA_EXHAUSTED:
            until = failure.reset_at or now + DEFAULT_QUOTA_COOLDOWN
            # The models of one quota group share the bucket: park them all.
            parked = await account_group_models(self._db, self._config.quotas, account_id, model)
            await self._cooldown(account_id, parked, until, "quota_exhausted")
            state.parked_until(until)
            return _Next.OTHER_ACCOUNT
        if kind is FailureKind.RATE_LIMITED:
            delay = failure.retry_after or 2.0
            if delay <= min(SHORT_RATE_LIMIT, remaining) and account_id not in state.waited:
                state.waited.add(account_id)
                await asyncio.sleep(delay)
                return _Next.SAME_ACCOUNT
            await self._cooldown(account_id, [model], now + timedelta(seconds=delay), "rate_limited")
            state.parked_until(now + timedelta(seconds=delay))
            return _Next.OTHER_ACCOUNT
        if kind is FailureKind.CAPACITY:
            # Server-wide: other accounts would fail the same way, so wait instead of burning them.
            wait = next(state.capacity_waits, None)
            if wait is None or wait > remaining:
                return _Next.GIVE_UP
            await asyncio.sleep(wait)
            return _Next.SAME_ACCOUNT
        if kind is FailureKind.NOT_FOUND:
            # The version gate or the model: the same on every account and host (PROTOCOL §13.9).
            return _Next.GIVE_UP
        if kind is FailureKind.VALIDATION_REQUIRED:
            until = now + VALIDATION_COOLDOWN
            await self._db.execute(
                "park_account_for_validation",
                account_id=account_id,
                until=until,
                validation_url=failure.validation_url,
            )
            log.warning("account_needs_validation", account_id=account_id, until=until.isoformat())
            state.parked_until(until)
            return _Next.OTHER_ACCOUNT
        project_refused = kind in (FailureKind.PROJECT_INVALID, FailureKind.PERMISSION_DENIED)
        if project_refused and await self._rediscover_project(account, remaining):
            return _Next.SAME_ACCOUNT
        if kind in (FailureKind.ACCOUNT_BLOCKED, FailureKind.PROJECT_INVALID):
            await self._disable(account_id, f"{kind.value}: {failure.message}"[:500])
            return _Next.OTHER_ACCOUNT
        if kind is FailureKind.PERMISSION_DENIED:
            await self._cooldown(account_id, [model], now + PERMISSION_COOLDOWN, "permission_denied")
            return _Next.OTHER_ACCOUNT
        if kind is FailureKind.UNAUTHENTICATED:
            await self._cooldown(account_id, [model], now + UNAUTHENTICATED_COOLDOWN, "unauthenticated")
            return _Next.OTHER_ACCOUNT
        if kind in (FailureKind.SERVER_ERROR, FailureKind.NETWORK):
            return _Next.OTHER_ACCOUNT
        # A bad request, an unknown model or a timeout the client already sat through.
        return _Next.GIVE_UP

    async def _rediscover_project(self, account: dict[str, Any], remaining: float) -> bool:
        """Ask loadCodeAssist for the account's project again; True when it changed (now stored).

        A project refused as invalid or not permitted often means Google moved the
        account to another one (PROTOCOL §8.3): the old one would be refused for good.
        """
        account_id = account["account_id"]
        now = time.monotonic()
        last = self._project_checked.get(account_id)
        if remaining <= 0 or (last is not None and now - last < PROJECT_RECHECK):
            return False
        self._project_checked[account_id] = now
        try:
            async with asyncio.timeout(remaining):
                token = await self._tokens.access_token(account)
                found = await discover_project(self._upstream, token, polls=1, delay=0)
        except (ApiError, AccountRevoked, RefreshFailed, TimeoutError) as exc:
            log.info("project_rediscovery_failed", account_id=account_id, error=type(exc).__name__)
            return False
        if found.project_id == account["project_id"]:
            return False
        await self._db.execute("set_project", account_id=account_id, project_id=found.project_id)
        log.warning("account_project_changed", account_id=account_id)
        # This request's next attempt reads the row it holds; other requests reload.
        account["project_id"] = found.project_id
        return True

    async def _cooldown(self, account_id: int, models_: list[str], until: datetime, reason: str) -> None:
        await self._db.execute(
            "set_cooldowns", account_id=account_id, models=models_, until=until, reason=reason
        )

    async def _validated(self, account_id: int) -> None:
        """The account serves again: the verification Google asked for is done (PROTOCOL §13.9).
        Best effort: the reply is already open and must not be lost to a database hiccup."""
        try:
            await self._db.execute("clear_account_validation", account_id=account_id)
        except ApiError as exc:
            log.warning("account_validation_not_cleared", account_id=account_id, code=exc.code)

    async def _disable(self, account_id: int, reason: str) -> None:
        await self._db.execute("disable_account", account_id=account_id, reason=reason)
        log.warning("account_disabled", account_id=account_id, reason=reason)

    # --- thought signatures --------------------------------------------------

    async def _lookup_signatures(self, req: ChatRequest) -> dict[str, ToolCallSignature]:
        wanted = replayed_tool_call_ids(req, self._thinking_rules)
        if not wanted:
            return {}
        family = models.model_family(req.model)
        found = {}
        for call_id in wanted:
            cached = self._signatures.get(call_id)
            # A signature only opens for the family that made it.
            if cached is not None and cached[0] == family:
                found[call_id] = cached[1]
        missing = [i for i in wanted if i not in found]
        if missing:
            for row in await self._db.all("get_signatures", ids=missing):
                if row["family"] == family:
                    found[row["tool_call_id"]] = ToolCallSignature(row["signature"], row["thinking"])
        return found

    async def remember_signatures(self, reply: OpenedReply) -> None:
        """Store the reply's tool-call signatures before the client can send the next turn."""
        captured = reply.translator.tool_signatures
        if not captured:
            return
        # The family of the model that signed, not of the name the client asked for (an alias).
        family = models.model_family(reply.upstream.model)
        for call_id, (signature, thinking) in captured.items():
            self._signatures[call_id] = (family, ToolCallSignature(signature, thinking))
        while len(self._signatures) > _SIGNATURE_CACHE_SIZE:
            self._signatures.popitem(last=False)
        ids = list(captured)
        await self._db.execute(
            "store_signatures",
            ids=ids,
            families=[family] * len(ids),
            signatures=[captured[i][0] for i in ids],
            thinking=[captured[i][1] for i in ids],
        )

    # --- closing -------------------------------------------------------------

    def finish(self, reply: OpenedReply, principal: Any, request_id: str, status: str, stream: bool) -> None:
        """Release the account and queue the usage row (never awaited by the client)."""
        reply.stream.close()
        self.metrics.chat_requests.labels(reply.upstream.model, "true" if stream else "false", status).inc()
        account = reply.account
        self.router.release(account["account_id"])
        translator = reply.translator
        usage = translator.usage
        record = UsageRecord(
            request_id=request_id,
            user_id=principal.user_id,
            account_id=account["account_id"],
            model_name=reply.upstream.model,
            quota_group=self._config.quotas.group_of(reply.upstream.model),
            is_shared=account["is_shared"],
            status=status,
            latency_ms=int((time.perf_counter() - reply.started) * 1000),
            prompt_tokens=translator.prompt_tokens,
            completion_tokens=translator.completion_tokens,
            reasoning_tokens=translator.reasoning_tokens,
            total_tokens=usage.get("total_tokens", 0),
        )
        self.reservations.finished(reply.reservation, record)
        self._usage.record(record)


CHAT = web.AppKey("chat", ChatService)
