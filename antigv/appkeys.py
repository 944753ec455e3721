"""Every typed application and request key, in one place (what the app holds and who reads it).

Types are imported for annotations only, so any module may import its keys from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

if TYPE_CHECKING:
    from antigv.accounting.quotas import QuotaService
    from antigv.accounting.reservations import PoolReservations
    from antigv.accounting.usage import UsageRecorder
    from antigv.backends.antigravity.client import UpstreamClient
    from antigv.backends.antigravity.identity import ClientIdentity
    from antigv.backends.antigravity.tokens import TokenManager
    from antigv.backends.gemini_api.backend import GeminiApiBackend
    from antigv.config import Config
    from antigv.core.principal import Principal
    from antigv.gateway.admission import KeyLimiter
    from antigv.gateway.catalogue import ModelCatalogue
    from antigv.gateway.clock import Clock
    from antigv.gateway.service import Gateway
    from antigv.ops.lifecycle import Lifecycle
    from antigv.ops.metrics import Metrics
    from antigv.ops.tasks import TaskLoop
    from antigv.protocols.auth import KeyCache
    from antigv.protocols.model_listing import ModelListCache
    from antigv.protocols.streaming import ShutdownCut
    from antigv.protocols.surfaces import Surfaces
    from antigv.store.accounts import AccountRepository
    from antigv.store.api_keys import ApiKeyRepository
    from antigv.store.crypto import TokenCipher
    from antigv.store.db import Database
    from antigv.store.quotas import QuotaRepository
    from antigv.store.signatures import SignatureRepository
    from antigv.store.usage import UsageRepository
    from antigv.store.users import UserRepository


CONFIG: web.AppKey[Config] = web.AppKey("config")
DB: web.AppKey[Database] = web.AppKey("db")
# Repositories over the named SQL: handlers ask these, never a query by name.
USER_REPO: web.AppKey[UserRepository] = web.AppKey("user_repo")
ACCOUNT_REPO: web.AppKey[AccountRepository] = web.AppKey("account_repo")
QUOTA_REPO: web.AppKey[QuotaRepository] = web.AppKey("quota_repo")
USAGE_REPO: web.AppKey[UsageRepository] = web.AppKey("usage_repo")
KEY_REPO: web.AppKey[ApiKeyRepository] = web.AppKey("key_repo")
HTTP = web.AppKey("http", aiohttp.ClientSession)
LIFECYCLE: web.AppKey[Lifecycle] = web.AppKey("lifecycle")
SURFACES: web.AppKey[Surfaces] = web.AppKey("surfaces")
QUOTAS: web.AppKey[QuotaService] = web.AppKey("quotas")
RESERVATIONS: web.AppKey[PoolReservations] = web.AppKey("pool_reservations")
USAGE: web.AppKey[UsageRecorder] = web.AppKey("usage")
UPSTREAM: web.AppKey[UpstreamClient] = web.AppKey("upstream")
CLIENT_IDENTITY: web.AppKey[ClientIdentity] = web.AppKey("client_identity")
TOKENS: web.AppKey[TokenManager] = web.AppKey("tokens")
CATALOGUE: web.AppKey[ModelCatalogue] = web.AppKey("catalogue")
GATEWAY: web.AppKey[Gateway] = web.AppKey("gateway")
GEMINI_API: web.AppKey[GeminiApiBackend] = web.AppKey("gemini_api")
CIPHER: web.AppKey[TokenCipher] = web.AppKey("cipher")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
TASKS: web.AppKey[TaskLoop] = web.AppKey("tasks")
KEY_CACHE: web.AppKey[KeyCache] = web.AppKey("key_cache")
KEY_LIMITER: web.AppKey[KeyLimiter] = web.AppKey("key_limiter")
REQUEST_ID = web.RequestKey("request_id", str)
SHUTDOWN_CUT: web.AppKey[ShutdownCut] = web.AppKey("shutdown_cut")
MODEL_CACHE: web.AppKey[ModelListCache] = web.AppKey("model_cache")
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal")
SIGNATURE_REPO: web.AppKey[SignatureRepository] = web.AppKey("signature_repository")
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
