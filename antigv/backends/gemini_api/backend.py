"""The Gemini API backend (issue 15): accounts that are API keys of Google's public
Gemini API, licensed for third-party software. The request is the same translation as
the Antigravity backend's (contents, tools and their sanitised schemas, thinking per
model family, thought signatures), sent as a plain ``GenerateContentRequest`` without
Cloud Code's envelope; replies decode with the same frame decoder."""

from __future__ import annotations

from collections.abc import Mapping

from antigv.backends.base import Account, Prepared, ToolCallSignature
from antigv.backends.gemini_api import KIND
from antigv.backends.gemini_api.client import GeminiApiClient
from antigv.backends.gemini_api.models import parse_models
from antigv.backends.google import models as families
from antigv.backends.google.frames import counted_total
from antigv.backends.google.generation import (
    UpstreamRequest,
    build_generate_request,
    encode_body,
    replayed_tool_call_ids,
)
from antigv.backends.google.reply import GoogleReply
from antigv.config import Config
from antigv.core.conversation import ChatRequest
from antigv.core.events import Usage
from antigv.core.failures import CredentialsFailed
from antigv.core.models import ModelInfo
from antigv.store.crypto import SealedTokenError, TokenCipher

# The public API's documented mode for tool_choice "auto" (Cloud Code's is VALIDATED).
_AUTO_CALLING_MODE = "AUTO"


class GeminiApiBackend:
    def __init__(self, *, config: Config, client: GeminiApiClient, cipher: TokenCipher) -> None:
        self._defaults = config.defaults
        self._daily_tokens = config.gemini_api.pool_daily_tokens
        self._thinking_rules = families.thinking_rules(config.models.thinking)
        self._client = client
        self._cipher = cipher

    def signature_family(self, model: str) -> str:
        # A signature opens only where it was made: another backend's copy of a family is foreign.
        return f"{KIND}:{families.model_family(model)}"

    def wanted_signatures(self, request: ChatRequest) -> list[str]:
        return replayed_tool_call_ids(request, self._thinking_rules)

    def prepare(
        self, request: ChatRequest, signatures: Mapping[str, ToolCallSignature], model: ModelInfo | None
    ) -> Prepared:
        generated = build_generate_request(
            request,
            defaults=self._defaults,
            auto_calling_mode=_AUTO_CALLING_MODE,
            signatures=signatures,
            model_info=model,
            thinking_rules=self._thinking_rules,
        )
        return Prepared(generated.model, generated.session_key, generated)

    def open_key(self, sealed: str) -> str:
        """The key an account stores sealed; CredentialsFailed when it cannot be opened
        (a changed token key)."""
        try:
            return self._cipher.open(sealed)
        except SealedTokenError as exc:
            raise CredentialsFailed(str(exc)) from exc

    async def open(self, account: Account, prepared: Prepared) -> GoogleReply:
        generated: UpstreamRequest = prepared.payload
        body = encode_body(generated.body)
        stream = await self._client.open_stream(self.open_key(account["api_key"]), generated.model, body)
        return GoogleReply(stream, generated.decoder())

    async def count_tokens(self, account: Account, prepared: Prepared) -> int:
        generated: UpstreamRequest = prepared.payload
        answer = await self._client.count_tokens(
            self.open_key(account["api_key"]),
            generated.model,
            {"generateContentRequest": {"model": f"models/{generated.model}", **generated.body}},
        )
        return counted_total(answer)

    def quota_charge(self, usage: Usage) -> float | None:
        """A key reports no remaining fraction: its tokens against the daily allowance
        ([gemini_api] pool_daily_tokens), so the pool rules of SPEC §6 keep their meaning."""
        return (usage.prompt_tokens + usage.completion_tokens) / self._daily_tokens

    async def repair(self, account: Account, within: float) -> bool:
        return False  # a key has no project to look up again

    async def offered_models(self, key: str) -> dict[str, ModelInfo]:
        """The chat models ``key`` may use (one listing, all pages); raises UpstreamFailure."""
        return parse_models(await self._client.list_models(key))
