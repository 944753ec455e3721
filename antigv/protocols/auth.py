"""API-key authentication: a middleware with a small in-process cache.

The hot path must not hit the database on every request, yet a regenerated key
or a disabled user must stop working at once here and within
``CACHE_TTL`` seconds on every other instance. Entries (negative ones too) live
at most that long; this instance evicts a user's entries when it changes them.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from antigv.appkeys import CLOCK, CONFIG, KEY_CACHE, PRINCIPAL, USER_REPO
from antigv.core.errors import Forbidden, InvalidRequest, NotFound, Unauthorized
from antigv.core.principal import KeyLimits, Principal
from antigv.protocols.endpoint_hints import no_such_endpoint
from antigv.protocols.web import query_id
from antigv.store.keys import is_admin_key, key_digest
from antigv.store.singleflight import SingleFlight
from antigv.store.users import UserRepository

CACHE_TTL = 5.0
CACHE_SIZE = 10_000

PUBLIC = "public"
USER = "user"
ADMIN = "admin"


def access(level: str) -> Callable[[Callable], Callable]:
    """Mark a handler's access level; unmarked handlers need a user key."""

    def mark(handler: Callable) -> Callable:
        handler.access = level  # type: ignore[attr-defined]
        return handler

    return mark


@dataclass(frozen=True, slots=True)
class DisabledUser:
    """What a key of a disabled user resolves to: refused, but not as a wrong key."""

    user_id: int


@dataclass(frozen=True, slots=True)
class RevokedKey:
    """A key its owner or the admin switched off (status 0)."""

    user_id: int


# What a key resolves to: its user, its disabled user, its revocation, or None for no such key.
KeyOwner = Principal | DisabledUser | RevokedKey | None


class KeyCache:
    """digest -> (key owner, expiry). LRU-bounded."""

    def __init__(self, ttl: float = CACHE_TTL, size: int = CACHE_SIZE) -> None:
        self._ttl = ttl
        self._size = size
        self._entries: OrderedDict[bytes, tuple[KeyOwner, float]] = OrderedDict()
        # Bumped by every eviction, so a lookup that raced one does not re-cache stale data.
        self.generation = 0
        # Requests with the same key that miss together share one read.
        self.reads: SingleFlight[bytes, KeyOwner] = SingleFlight()

    def get(self, digest: bytes) -> tuple[bool, KeyOwner]:
        entry = self._entries.get(digest)
        if entry is None or entry[1] < time.monotonic():
            return False, None
        return True, entry[0]

    def put(self, digest: bytes, principal: KeyOwner) -> None:
        self._entries[digest] = (principal, time.monotonic() + self._ttl)
        self._entries.move_to_end(digest)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def evict(self, digest: bytes) -> None:
        """Forget one key (changed or deleted)."""
        self.generation += 1
        self._entries.pop(digest, None)
        self.reads.forget(digest)

    def evict_user(self, user_id: int) -> None:
        """Forget a user's keys (a disabled user's too) and, to be safe, unknown keys."""
        self.generation += 1
        stale = [d for d, (p, _) in self._entries.items() if p is None or p.user_id == user_id]
        for digest in stale:
            del self._entries[digest]
        self.reads.forget()


def api_key(request: web.Request) -> str | None:
    """The key of ``Authorization: Bearer <key>`` or, as Anthropic's SDKs send it, ``x-api-key``."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        token = token.strip()
    else:
        token = request.headers.get("x-api-key", "").strip()
        if not token:
            return None
    if not token.isascii():
        # Keys are ASCII. aiohttp decodes other bytes as surrogates, which no digest
        # can take (issue 11 #17): such a key is simply a wrong one.
        raise Unauthorized("invalid API key")
    return token


async def resolve_key(users: UserRepository, cache: KeyCache, key: str) -> KeyOwner:
    digest = key_digest(key)
    hit, owner = cache.get(digest)
    if hit:
        return owner
    return await cache.reads.run(digest, lambda: _read_owner(users, cache, digest))


async def _read_owner(users: UserRepository, cache: KeyCache, digest: bytes) -> KeyOwner:
    generation = cache.generation
    holder = await users.by_key_digest(digest)
    owner: KeyOwner = None
    if holder is not None and holder.status != 1:
        owner = DisabledUser(holder.user_id)
    elif holder is not None and holder.key_status != 1:
        owner = RevokedKey(holder.user_id)
    elif holder is not None:
        owner = Principal(
            user_id=holder.user_id,
            is_admin=False,
            name=holder.name,
            prefer_shared=holder.prefer_shared,
            key_id=holder.key_id,
            limits=KeyLimits(
                rpm=holder.rpm,
                tpm=holder.tpm,
                max_concurrency=holder.max_concurrency,
                allowed_models=tuple(holder.allowed_models) if holder.allowed_models is not None else None,
                monthly_token_budget=holder.monthly_token_budget,
            ),
            expires_at=holder.expires_at,
        )
    if cache.generation == generation:
        cache.put(digest, owner)
    return owner


async def authenticate(request: web.Request) -> Principal:
    token = api_key(request)
    if token is None:
        raise Unauthorized(
            "missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'",
            code="missing_api_key",
        )
    app = request.app
    if is_admin_key(token, app[CONFIG].security.admin_api_key):
        return Principal(user_id=None, is_admin=True, name="admin")
    owner = await resolve_key(app[USER_REPO], app[KEY_CACHE], token)
    if isinstance(owner, DisabledUser):
        raise Forbidden("this key's user is disabled", code="user_disabled")
    if isinstance(owner, RevokedKey):
        raise Unauthorized("this API key is revoked", code="key_revoked")
    if owner is None:
        raise Unauthorized("invalid API key")
    # Checked on every request, not cached: a key expires at its second on every instance.
    if owner.expires_at is not None and owner.expires_at <= app[CLOCK].now():
        raise Unauthorized("this API key has expired", code="key_expired")
    return owner


@web.middleware
async def auth_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    # Unknown routes and wrong methods answer 404/405 before asking for a key.
    if isinstance(request.match_info.http_exception, web.HTTPNotFound):
        raise no_such_endpoint(request)
    if request.match_info.http_exception is not None:
        return await handler(request)
    level = getattr(request.match_info.handler, "access", USER)
    if level != PUBLIC:
        principal = await authenticate(request)
        if level == ADMIN and not principal.is_admin:
            raise Forbidden("this endpoint needs the admin key", code="admin_required")
        request[PRINCIPAL] = principal
    return await handler(request)


def target_user(request: web.Request, *, required: bool = False) -> int | None:
    """Whose data a request reads: the caller's own; the admin names a user with
    ``?user_id=`` (or, unless ``required``, means every user with None). A user
    naming someone else gets a 404, like a user that does not exist."""
    principal = request[PRINCIPAL]
    wanted = query_id(request, "user_id")
    if principal.is_admin:
        if wanted is None and required:
            raise InvalidRequest("user_id is required with the admin key", param="user_id")
        return wanted
    if wanted is not None and wanted != principal.user_id:
        raise NotFound("user not found")
    return principal.user_id


def require_self_or_admin(principal: Principal, user_id: int) -> None:
    """Another user's data is a 404: its existence is not revealed."""
    if not principal.is_admin and principal.user_id != user_id:
        raise NotFound("user not found")
