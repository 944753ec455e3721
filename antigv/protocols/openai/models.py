"""``GET /v1/models`` and ``GET /v1/models/{model}``: what the caller's accounts offer today.

The list is the live catalogue (PROTOCOL §13.4, §13.11) of every account the caller may
use, plus the aliases and deprecated ids that resolve to one of those models. Reading it
refreshes the catalogue from one account; the other accounts' entries come from the
quota reads the gateway makes anyway.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from antigv.appkeys import ACCOUNT_REPO, CATALOGUE, CONFIG, MODEL_CACHE, PRINCIPAL, TOKENS, UPSTREAM
from antigv.backends.antigravity.tokens import AccountRevoked, RefreshFailed
from antigv.core.errors import Forbidden, NotFound, UpstreamError
from antigv.core.failures import UpstreamFailure, client_error
from antigv.core.models import ModelInfo
from antigv.core.principal import Principal
from antigv.protocols.web import json_response

# Accounts tried in turn when reading the list from upstream.
_READ_ATTEMPTS = 3


class ModelListCache:
    """Model lists per caller scope, kept ``upstream.models_cache_ttl`` seconds."""

    def __init__(self) -> None:
        self._entries: dict[int | None, tuple[float, dict[str, Any]]] = {}

    def get(self, scope: int | None, ttl: float) -> dict[str, Any] | None:
        entry = self._entries.get(scope)
        if entry is None or time.monotonic() - entry[0] > ttl:
            return None
        return entry[1]

    def put(self, scope: int | None, body: dict[str, Any]) -> None:
        self._entries[scope] = (time.monotonic(), body)


def model_object(model_id: str, created: int) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "google"}


def model_list(offered: dict[str, ModelInfo], aliases: dict[str, str], created: int) -> dict[str, Any]:
    """OpenAI's list shape: the offered ids and the aliases that resolve to them, sorted."""
    names = sorted({*offered, *aliases})
    return {"object": "list", "data": [model_object(name, created) for name in names]}


async def _fetch(app: web.Application, principal: Principal) -> dict[str, Any]:
    accounts = await app[ACCOUNT_REPO].usable_by(principal.user_id, is_admin=principal.is_admin)
    if not accounts:
        raise Forbidden(
            "no enabled account of yours (or shared pool) to list models with; "
            "add an account via /api/oauth/authorize",
            code="no_account",
        )
    catalogue = app[CATALOGUE]
    # Own accounts first; the first one that answers refreshes the catalogue.
    accounts.sort(key=lambda a: a["user_id"] != principal.user_id)
    last: UpstreamFailure | None = None
    answered = False
    for account in accounts[:_READ_ATTEMPTS]:
        try:
            token = await app[TOKENS].access_token(account)
            data = await app[UPSTREAM].available_models(token, account["project_id"])
        except UpstreamFailure as failure:
            last = failure
            continue
        except (AccountRevoked, RefreshFailed):
            continue
        catalogue.learn(account["account_id"], data)
        answered = True
        break
    offered = catalogue.offered(a["account_id"] for a in accounts)
    if not answered and not offered:
        raise client_error(last) if last else UpstreamError("no account could list the models")
    return model_list(offered, catalogue.aliases_into(offered), int(time.time()))


async def _listing(request: web.Request) -> dict[str, Any]:
    principal = request[PRINCIPAL]
    cache = request.app[MODEL_CACHE]
    body = cache.get(principal.user_id, request.app[CONFIG].upstream.models_cache_ttl)
    if body is None:
        body = await _fetch(request.app, principal)
        cache.put(principal.user_id, body)
    if principal.limits.allowed_models is None:
        return body
    # The key's allow-list (issue 14): only what it may chat with, by id or served id.
    served_as = request.app[CATALOGUE].served_as
    allowed = [
        entry for entry in body["data"] if principal.limits.allows(entry["id"], served_as(entry["id"]))
    ]
    return {**body, "data": allowed}


async def list_models(request: web.Request) -> web.Response:
    return json_response(await _listing(request))


async def retrieve_model(request: web.Request) -> web.Response:
    """``GET /v1/models/{model}`` (``client.models.retrieve``): one entry of the list."""
    model_id = request.match_info["model"]
    for entry in (await _listing(request))["data"]:
        if entry["id"] == model_id:
            return json_response(entry)
    raise NotFound(
        f"The model {model_id!r} does not exist or is not offered", code="model_not_found", param="model"
    )


def setup(app: web.Application) -> None:
    app[MODEL_CACHE] = ModelListCache()
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model}", retrieve_model)
