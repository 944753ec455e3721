"""``GET /v1/models``: the chat models an account the caller may use offers."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from ..accounts.tokens import TOKENS, AccountRevoked, RefreshFailed
from ..errors import Forbidden, UpstreamError
from ..state import CONFIG, DB, PRINCIPAL, Principal
from ..translate.models import is_chat_model
from ..upstream.client import UPSTREAM
from ..upstream.failures import UpstreamFailure, to_api_error
from ..web import json_response


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


MODEL_CACHE = web.AppKey("model_cache", ModelListCache)


def model_list(upstream_models: dict[str, Any], created: int) -> dict[str, Any]:
    """OpenAI's list shape; internal ids (``chat_*``, ``tab_*``) are hidden."""
    names = sorted(name for name in upstream_models if isinstance(name, str) and is_chat_model(name))
    return {
        "object": "list",
        "data": [{"id": name, "object": "model", "created": created, "owned_by": "google"} for name in names],
    }


async def _fetch(app: web.Application, principal: Principal) -> dict[str, Any]:
    accounts = await app[DB].all(
        "account_candidates", model="", quota_group="", user_id=principal.user_id, is_admin=principal.is_admin
    )
    if not accounts:
        raise Forbidden("no enabled account of yours (or shared pool) to list models with", code="no_account")
    # Own accounts first; any one that answers will do.
    accounts.sort(key=lambda a: a["user_id"] != principal.user_id)
    last: UpstreamFailure | None = None
    for account in accounts[:3]:
        try:
            token = await app[TOKENS].access_token(account)
            data = await app[UPSTREAM].available_models(token, account["project_id"])
        except UpstreamFailure as failure:
            last = failure
            continue
        except (AccountRevoked, RefreshFailed):
            continue
        models = data.get("models")
        return model_list(models if isinstance(models, dict) else {}, int(time.time()))
    raise to_api_error(last) if last else UpstreamError("no account could list the models")


async def list_models(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    cache = request.app[MODEL_CACHE]
    ttl = request.app[CONFIG].upstream.models_cache_ttl
    body = cache.get(principal.user_id, ttl)
    if body is None:
        body = await _fetch(request.app, principal)
        cache.put(principal.user_id, body)
    return json_response(body)


def setup(app: web.Application) -> None:
    app[MODEL_CACHE] = ModelListCache()
    app.router.add_get("/v1/models", list_models)
