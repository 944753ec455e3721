"""The Antigravity backend: Google accounts through Cloud Code's ``v1internal`` API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import structlog

from antigv.backends.antigravity.client import UpstreamClient
from antigv.backends.antigravity.envelope import build_upstream_request, new_request_id
from antigv.backends.antigravity.notices import reject_notices
from antigv.backends.antigravity.oauth import discover_project
from antigv.backends.antigravity.tokens import AccountRevoked, RefreshFailed, TokenManager
from antigv.backends.base import Account, Prepared, ToolCallSignature
from antigv.backends.google import models
from antigv.backends.google.frames import counted_total
from antigv.backends.google.generation import UpstreamRequest, encode_body, replayed_tool_call_ids
from antigv.backends.google.reply import GoogleReply
from antigv.config import Config
from antigv.core.conversation import ChatRequest
from antigv.core.errors import GatewayError
from antigv.core.events import Usage
from antigv.core.failures import CredentialsFailed, FailureKind, UpstreamFailure
from antigv.core.models import ModelInfo
from antigv.store.accounts import AccountRepository

log = structlog.get_logger(__name__)


class AntigravityBackend:
    def __init__(
        self,
        *,
        config: Config,
        upstream: UpstreamClient,
        tokens: TokenManager,
        accounts: AccountRepository,
    ) -> None:
        self._defaults = config.defaults
        self._thinking_rules = models.thinking_rules(config.models.thinking)
        self._project_recheck = config.failover.project_recheck
        self._upstream = upstream
        self._tokens = tokens
        self._accounts = accounts
        self._project_checked: dict[int, float] = {}  # account id -> monotonic time

    def signature_family(self, model: str) -> str:
        return models.model_family(model)

    def wanted_signatures(self, request: ChatRequest) -> list[str]:
        return replayed_tool_call_ids(request, self._thinking_rules)

    def prepare(
        self, request: ChatRequest, signatures: Mapping[str, ToolCallSignature], model: ModelInfo | None
    ) -> Prepared:
        envelope = build_upstream_request(
            request,
            project=None,
            defaults=self._defaults,
            request_id=new_request_id(request.model),
            signatures=signatures,
            model_info=model,
            thinking_rules=self._thinking_rules,
        )
        return Prepared(envelope.model, envelope.session_key, envelope)

    async def open(self, account: Account, prepared: Prepared) -> GoogleReply:
        envelope: UpstreamRequest = prepared.payload
        body = envelope.body
        # PROTOCOL §13.3: never "project": "" (a 400); an account without a project sends none.
        if account["project_id"]:
            body["project"] = account["project_id"]
        else:
            body.pop("project", None)
        encoded = encode_body(body)
        try:
            token = await self._tokens.access_token(account)
            try:
                stream = await self._upstream.open_stream(token, encoded)
            except UpstreamFailure as failure:
                if failure.kind is not FailureKind.UNAUTHENTICATED:
                    raise
                # The stored token was refused: refresh once and try the same account again.
                token = await self._tokens.refresh(
                    account["account_id"], stale=account.get("access_token") or ""
                )
                stream = await self._upstream.open_stream(token, encoded)
        except (AccountRevoked, RefreshFailed) as exc:
            raise CredentialsFailed(str(exc)) from exc
        return GoogleReply(stream, envelope.decoder(check_first_text=reject_notices))

    async def count_tokens(self, account: Account, prepared: Prepared) -> int:
        """``countTokens`` with the envelope's model and contents (PROTOCOL §13.10)."""
        envelope: UpstreamRequest = prepared.payload
        inner = envelope.body["request"]
        payload: dict[str, Any] = {"request": {"model": envelope.model, "contents": inner["contents"]}}
        try:
            token = await self._tokens.access_token(account)
        except (AccountRevoked, RefreshFailed) as exc:
            raise CredentialsFailed(str(exc)) from exc
        return counted_total(await self._upstream.call("countTokens", token, payload))

    def quota_charge(self, usage: Usage) -> float | None:
        return None  # the next fetchAvailableModels read settles it (accounting/settlement.py)

    async def repair(self, account: Account, within: float) -> bool:
        """Ask loadCodeAssist for the account's project again; True when it changed (now stored).

        A project refused as invalid or not permitted often means Google moved the
        account to another one (PROTOCOL §8.3): the old one would be refused for good.
        """
        account_id = account["account_id"]
        now = time.monotonic()
        last = self._project_checked.get(account_id)
        if within <= 0 or (last is not None and now - last < self._project_recheck):
            return False
        self._project_checked[account_id] = now
        try:
            async with asyncio.timeout(within):
                token = await self._tokens.access_token(account)
                found = await discover_project(self._upstream, token, polls=1, delay=0)
        except (GatewayError, AccountRevoked, RefreshFailed, TimeoutError) as exc:
            log.info("project_rediscovery_failed", account_id=account_id, error=type(exc).__name__)
            return False
        if found.project_id == account["project_id"]:
            return False
        await self._accounts.set_project(account_id, found.project_id)
        log.warning("account_project_changed", account_id=account_id)
        # This request's next attempt reads the row it holds; other requests reload.
        account["project_id"] = found.project_id
        return True
