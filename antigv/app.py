"""The application factory: ``create_app(config)``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from functools import partial

import aiohttp
import structlog
from aiohttp import web

from antigv.accounting.pools import account_group_models, recover_pools_task
from antigv.accounting.quotas import quota_service, read_stale_quotas
from antigv.accounting.reservations import ESTIMATE_EVERY, PoolReservations, refresh_estimates
from antigv.accounting.usage import purge_old_usage, usage_writer
from antigv.appkeys import (
    ACCOUNT_REPO,
    CATALOGUE,
    CIPHER,
    CLIENT_IDENTITY,
    CLOCK,
    CONFIG,
    DB,
    GATEWAY,
    GEMINI_API,
    HTTP,
    KEY_CACHE,
    KEY_LIMITER,
    KEY_REPO,
    LIFECYCLE,
    METRICS,
    QUOTA_REPO,
    QUOTAS,
    RESERVATIONS,
    SIGNATURE_REPO,
    SURFACES,
    TASKS,
    TOKENS,
    UPSTREAM,
    USAGE,
    USAGE_REPO,
    USER_REPO,
)
from antigv.backends.antigravity import KIND as ANTIGRAVITY_KIND
from antigv.backends.antigravity.backend import AntigravityBackend
from antigv.backends.antigravity.client import UpstreamClient
from antigv.backends.antigravity.identity import MANIFEST_REFRESH, ClientIdentity, refresh_client_version
from antigv.backends.antigravity.tokens import TokenManager, refresh_due_tokens
from antigv.backends.gemini_api import KIND as GEMINI_API_KIND
from antigv.backends.gemini_api.backend import GeminiApiBackend
from antigv.backends.gemini_api.client import GeminiApiClient
from antigv.config import Config, ConfigError
from antigv.gateway.admission import KeyLimiter, reconciling
from antigv.gateway.catalogue import ModelCatalogue
from antigv.gateway.clock import SYSTEM_CLOCK, Clock
from antigv.gateway.selection import AccountRouter
from antigv.gateway.service import Gateway
from antigv.gateway.signatures import SignatureStore
from antigv.ops import health
from antigv.ops.embedded_pg import default_cluster
from antigv.ops.lifecycle import Lifecycle
from antigv.ops.metrics import setup as setup_metrics
from antigv.ops.tasks import Task, TaskLoop, task_loop
from antigv.protocols import model_listing, streaming, ui
from antigv.protocols.admin import accounts, envelope, gemini_keys, keys, oauth, quotas, users
from antigv.protocols.admin.gemini_keys import learn_key_models
from antigv.protocols.anthropic import messages
from antigv.protocols.auth import KeyCache, auth_middleware
from antigv.protocols.middleware import request_middleware
from antigv.protocols.openai import chat
from antigv.protocols.openai.errors import openai_error
from antigv.protocols.surfaces import Surfaces
from antigv.store.accounts import AccountRepository
from antigv.store.api_keys import ApiKeyRepository
from antigv.store.crypto import TokenCipher, parse_key
from antigv.store.db import Database, Queries, close_pool, create_pool
from antigv.store.quotas import QuotaRepository
from antigv.store.signatures import SignatureRepository
from antigv.store.usage import UsageRepository
from antigv.store.users import UserRepository

log = structlog.get_logger(__name__)

# Seconds a tool call's thought signature is kept for replay.
SIGNATURE_MAX_AGE = 7 * 24 * 3600
# Accounts the catalogue has not seen are read this often, this many at once.
CATALOGUE_READ_EVERY = 300.0
CATALOGUE_READ_CONCURRENCY = 8


def resolve_dsn(config: Config) -> str:
    """The configured DSN, or the embedded cluster's when it is empty."""
    return config.database.dsn or default_cluster(config.database.embedded_dir).dsn()


async def _database(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    pool = await create_pool(
        resolve_dsn(config), minsize=config.database.pool_min, maxsize=config.database.pool_max
    )
    app[DB] = Database(pool, Queries.load())
    yield
    await close_pool(pool)


async def _http_client(app: web.Application) -> AsyncIterator[None]:
    upstream = app[CONFIG].upstream
    timeout = aiohttp.ClientTimeout(
        total=None, connect=upstream.connect_timeout, sock_connect=upstream.connect_timeout
    )
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector, raise_for_status=False) as session:
        app[HTTP] = session
        yield


async def _services(app: web.Application) -> AsyncIterator[None]:
    """The request path's collaborators, built once the pool and the client exist."""
    config = app[CONFIG]
    app[USER_REPO] = UserRepository(app[DB])
    app[ACCOUNT_REPO] = AccountRepository(app[DB])
    app[QUOTA_REPO] = QuotaRepository(app[DB])
    app[USAGE_REPO] = UsageRepository(app[DB])
    app[KEY_REPO] = ApiKeyRepository(app[DB])
    limiter = KeyLimiter(app[CLOCK], app[KEY_REPO], interval=config.keys.reconcile_interval)
    app[KEY_LIMITER] = limiter
    app[SIGNATURE_REPO] = SignatureRepository(app[DB])
    cipher = TokenCipher(parse_key(config.security.token_encryption_key))
    metrics = app[METRICS]
    tokens = TokenManager(app[DB], app[HTTP], config.oauth, cipher)
    router = AccountRouter(app[DB], config.database.account_cache_ttl)

    def on_refresh(account_id: int, outcome: str) -> None:
        metrics.token_refreshes.labels(outcome).inc()

    tokens.listeners.append(on_refresh)
    reservations = PoolReservations()
    app[RESERVATIONS] = reservations
    app[USAGE].listeners.append(reservations.on_usage_batch)
    app[TOKENS] = tokens
    app[UPSTREAM] = UpstreamClient(app[HTTP], config.upstream, app[CLIENT_IDENTITY])
    backend = AntigravityBackend(
        config=config, upstream=app[UPSTREAM], tokens=tokens, accounts=app[ACCOUNT_REPO]
    )
    app[GEMINI_API] = GeminiApiBackend(
        config=config, client=GeminiApiClient(app[HTTP], config.upstream, config.gemini_api), cipher=cipher
    )
    app[CIPHER] = cipher
    app[GATEWAY] = Gateway(
        config=config,
        backends={ANTIGRAVITY_KIND: backend, GEMINI_API_KIND: app[GEMINI_API]},
        router=router,
        accounts=app[ACCOUNT_REPO],
        signatures=SignatureStore(app[SIGNATURE_REPO]),
        group_models=partial(account_group_models, app[DB], config.quotas),
        usage=app[USAGE],
        reservations=reservations,
        metrics=metrics,
        catalogue=app[CATALOGUE],
        limiter=limiter,
        clock=app[CLOCK],
    )
    async with reconciling(limiter):
        yield


async def _learn_models(app: web.Application) -> None:
    """Read the accounts this process's model catalogue has not seen (after a start), through
    the quota service, whose reads feed the catalogue (PROTOCOL §13.11), or a Gemini API
    key's model listing."""
    catalogue, quotas = app[CATALOGUE], app[QUOTAS]
    kinds = await app[ACCOUNT_REPO].enabled_kinds()
    unread = [a for a in kinds if not catalogue.has_read(a)]
    gate = asyncio.Semaphore(CATALOGUE_READ_CONCURRENCY)

    async def read(account_id: int) -> None:
        async with gate:
            if kinds[account_id] == GEMINI_API_KIND:
                await learn_key_models(app, account_id)
            else:
                await quotas.read(account_id)

    await asyncio.gather(*(read(account_id) for account_id in unread))


async def _cleanup_signatures(app: web.Application) -> None:
    await app[SIGNATURE_REPO].delete_older_than(SIGNATURE_MAX_AGE)


async def _on_shutdown(app: web.Application) -> None:
    app[LIFECYCLE].draining = True


# Issue 11 #21: OAuth tokens are never kept in clear unless the operator says so.
PLAINTEXT_REFUSED = (
    "config: security.token_encryption_key is empty, so OAuth tokens would be stored in clear; "
    "add one with 'antigv init-config --add-token-key' "
    "(or set security.allow_plaintext_tokens = true to accept that)"
)


def refuse_plaintext_tokens(config: Config) -> None:
    """Raise ConfigError when tokens would be stored in clear without the operator's say-so."""
    if not config.security.token_encryption_key and not config.security.allow_plaintext_tokens:
        raise ConfigError(PLAINTEXT_REFUSED)


def create_app(config: Config, *, clock: Clock = SYSTEM_CLOCK) -> web.Application:
    """The application; ``clock`` is the time the gateway waits on (failover backoffs)."""
    refuse_plaintext_tokens(config)
    app = web.Application(
        middlewares=[request_middleware, auth_middleware],
        client_max_size=config.security.max_request_bytes,
    )
    app[CONFIG] = config
    app[LIFECYCLE] = Lifecycle()
    app[CLOCK] = clock
    # Errors answer in OpenAI's shape, unless a surface claims the path for its own.
    app[SURFACES] = Surfaces(default=openai_error)
    app[SURFACES].claim(envelope.PREFIX, envelope.admin_error)
    app[KEY_CACHE] = KeyCache()
    app[TASKS] = TaskLoop(app)
    # Each process holds its own client identity, so each reads the manifest (PROTOCOL §13.1);
    # first in a round, so the calls the other tasks make at start carry the version read.
    app[CLIENT_IDENTITY] = ClientIdentity(config.upstream)
    app[TASKS].add(
        Task("refresh_client_version", refresh_client_version, every=MANIFEST_REFRESH, once_per_cluster=False)
    )
    app[TASKS].add(Task("refresh_tokens", refresh_due_tokens))
    app[TASKS].add(Task("cleanup_signatures", _cleanup_signatures, every=3600))
    app[TASKS].add(Task("recover_pools", recover_pools_task))
    app[TASKS].add(Task("read_stale_quotas", read_stale_quotas))
    app[TASKS].add(Task("cleanup_oauth_states", oauth.cleanup_states, every=60))
    app[TASKS].add(Task("purge_old_usage", purge_old_usage, every=3600))
    app[TASKS].add(Task("pool_estimates", refresh_estimates, every=ESTIMATE_EVERY, once_per_cluster=False))
    app[CATALOGUE] = ModelCatalogue(config.models.aliases)
    # Each process holds its own catalogue, so each fills it.
    app[TASKS].add(Task("learn_models", _learn_models, every=CATALOGUE_READ_EVERY, once_per_cluster=False))
    app.cleanup_ctx.extend([_database, _http_client, usage_writer, _services, quota_service, task_loop])
    app.on_shutdown.append(_on_shutdown)
    setup_metrics(app)
    app[METRICS].upstream_client.set(app[CLIENT_IDENTITY].version)
    app[CLIENT_IDENTITY].listeners.append(app[METRICS].upstream_client.set)
    health.setup(app)
    users.setup(app)
    keys.setup(app)
    oauth.setup(app)
    accounts.setup(app)
    gemini_keys.setup(app)
    streaming.setup(app)
    chat.setup(app)
    messages.setup(app)
    quotas.setup(app)
    model_listing.setup(app)
    ui.setup(app)
    if not config.security.token_encryption_key:
        log.warning("tokens_stored_in_clear", hint="set security.token_encryption_key")
    return app
