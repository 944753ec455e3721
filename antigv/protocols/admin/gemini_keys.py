"""``POST /api/accounts/gemini-key`` (issue 15): a Gemini API key becomes an account of
its owner's, after one model listing proves it works; and the listing that tells the
catalogue what a key offers."""

from __future__ import annotations

import hashlib

import structlog
from aiohttp import web

from antigv.appkeys import ACCOUNT_REPO, CATALOGUE, CIPHER, GEMINI_API, PRINCIPAL
from antigv.core.errors import Conflict, InvalidRequest, NotFound, UpstreamError
from antigv.core.failures import CredentialsFailed, FailureKind, UpstreamFailure
from antigv.protocols.admin.accounts import NAME_MAX_CHARS
from antigv.protocols.web import api_ok, flag, optional_str, read_json_object, reject_unknown_fields

log = structlog.get_logger(__name__)

# The request's own or the key's fault: told to the caller; anything else is the upstream's.
_KEY_FAULTS = frozenset({FailureKind.ACCOUNT_BLOCKED, FailureKind.INVALID_REQUEST, FailureKind.NOT_FOUND})
_MAX_KEY_LENGTH = 200


def fingerprint(key: str) -> str:
    """What stands for the key where an account has its e-mail: unique, and no secret."""
    return "gemini-key:" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


async def add_gemini_key(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    reject_unknown_fields(body, ("api_key", "name", "is_shared"))
    key = body.get("api_key")
    if not isinstance(key, str) or not key.strip() or len(key) > _MAX_KEY_LENGTH or not key.isprintable():
        raise InvalidRequest("api_key must be a Gemini API key (from Google AI Studio)", param="api_key")
    key = key.strip()
    name = optional_str(body, "name", max_len=NAME_MAX_CHARS)
    is_shared = flag(body, "is_shared", required=False)
    principal = request[PRINCIPAL]
    if principal.user_id is None:
        raise InvalidRequest("the admin holds no accounts: add the key with a user's API key")
    app = request.app
    try:
        offers = await app[GEMINI_API].offered_models(key)
    except UpstreamFailure as failure:
        if failure.kind in _KEY_FAULTS:
            # The message is redacted of keys (backends/gemini_api/failures.py).
            why = failure.reason or failure.kind.value
            raise InvalidRequest(
                f"the Gemini API refused this key ({why}): {failure.message}",
                param="api_key",
                code="gemini_key_rejected",
            ) from None
        raise UpstreamError("the Gemini API could not be reached to check the key; try again") from None
    account_id = await app[ACCOUNT_REPO].add_gemini_key(
        user_id=principal.user_id,
        fingerprint=fingerprint(key),
        name=name or f"Gemini API key {key[:4]}…{key[-4:]}",
        is_shared=is_shared,
        sealed_key=app[CIPHER].seal(key),
        tier="",
    )
    if account_id is None:
        raise Conflict("this Gemini API key is an account already", code="account_exists")
    app[CATALOGUE].learn_offers(account_id, offers)
    log.info("gemini_key_added", account_id=account_id, models=len(offers))
    account = await app[ACCOUNT_REPO].get(account_id, user_id=None)
    if account is None:
        raise NotFound("account not found")
    return api_ok(account, f"the key serves {len(offers)} models")


async def learn_key_models(app: web.Application, account_id: int) -> None:
    """Tell the catalogue what one key account offers (its listing, read once per process)."""
    sealed = await app[ACCOUNT_REPO].sealed_api_key(account_id)
    if not sealed:
        return
    try:
        backend = app[GEMINI_API]
        offers = await backend.offered_models(backend.open_key(sealed))
    except (UpstreamFailure, CredentialsFailed) as exc:
        log.info("gemini_key_models_not_read", account_id=account_id, error=type(exc).__name__)
        return
    app[CATALOGUE].learn_offers(account_id, offers)


def setup(app: web.Application) -> None:
    app.router.add_post("/api/accounts/gemini-key", add_gemini_key)
