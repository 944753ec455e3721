"""``GET /v1/models`` and ``GET /v1/models/{model}``: what the caller's accounts offer today,
in the shape of the client that asks.

The list is the live catalogue (PROTOCOL §13.4, §13.11) of every account the caller may
use, plus the aliases and deprecated ids that resolve to one of those models. Reading it
refreshes the catalogue from one account; the other accounts' entries come from the
quota reads the gateway makes anyway.

Both surfaces serve the same path: Anthropic's clients send ``anthropic-version`` on every
call (its SDKs, and Claude Code's gateway model discovery, which fills its model picker
from the list) and get Anthropic's page; every other client gets OpenAI's list.
"""

from __future__ import annotations

import time

from aiohttp import web

from antigv.appkeys import ACCOUNT_REPO, CATALOGUE, CONFIG, MODEL_CACHE, PRINCIPAL, SURFACES, TOKENS, UPSTREAM
from antigv.backends.antigravity import KIND as ANTIGRAVITY
from antigv.backends.antigravity.tokens import AccountRevoked, RefreshFailed
from antigv.core.errors import Forbidden, NotFound, UpstreamError
from antigv.core.failures import UpstreamFailure, client_error
from antigv.core.models import ListedModel, ModelInfo
from antigv.core.principal import Principal
from antigv.protocols.anthropic import models as anthropic_models
from antigv.protocols.anthropic.errors import anthropic_error
from antigv.protocols.anthropic.messages import REQUEST_ID_HEADER as ANTHROPIC_REQUEST_ID_HEADER
from antigv.protocols.openai import models as openai_models
from antigv.protocols.web import json_response

# Accounts tried in turn when reading the list from upstream.
_READ_ATTEMPTS = 3


# What Anthropic's clients send on every request, and OpenAI's never do.
ANTHROPIC_CLIENT_HEADER = "anthropic-version"


class ModelListCache:
    """Model lists per caller scope, kept ``upstream.models_cache_ttl`` seconds."""

    def __init__(self) -> None:
        self._entries: dict[int | None, tuple[float, list[ListedModel]]] = {}

    def get(self, scope: int | None, ttl: float) -> list[ListedModel] | None:
        entry = self._entries.get(scope)
        if entry is None or time.monotonic() - entry[0] > ttl:
            return None
        return entry[1]

    def put(self, scope: int | None, models: list[ListedModel]) -> None:
        self._entries[scope] = (time.monotonic(), models)


def listing(offered: dict[str, ModelInfo], aliases: dict[str, str], created: int) -> list[ListedModel]:
    """The offered ids and the aliases that resolve to them (named as their model), sorted."""
    models = {**{alias: offered[target] for alias, target in aliases.items()}, **offered}
    return [
        ListedModel(name, model.display_name, created, model.max_input_tokens, model.max_output_tokens)
        for name, model in sorted(models.items())
    ]


async def _fetch(app: web.Application, principal: Principal) -> list[ListedModel]:
    accounts = await app[ACCOUNT_REPO].usable_by(principal.user_id, is_admin=principal.is_admin)
    if not accounts:
        raise Forbidden(
            "no enabled account of yours (or shared pool) to list models with; "
            "add an account via /api/oauth/authorize",
            code="no_account",
        )
    catalogue = app[CATALOGUE]
    # Own accounts first; the first one that answers refreshes the catalogue. Only Google
    # accounts are read here: a Gemini API key's list is read once it is added
    # (protocols/admin/gemini_keys.py), and Google's OAuth knows nothing of a key.
    readable = sorted(
        (a for a in accounts if a["kind"] == ANTIGRAVITY), key=lambda a: a["user_id"] != principal.user_id
    )
    last: UpstreamFailure | None = None
    answered = False
    for account in readable[:_READ_ATTEMPTS]:
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
    return listing(offered, catalogue.aliases_into(offered), int(time.time()))


async def listed_models(request: web.Request) -> list[ListedModel]:
    """What the caller may chat with (its key's allow-list applied, issue 14)."""
    principal = request[PRINCIPAL]
    cache = request.app[MODEL_CACHE]
    models = cache.get(principal.user_id, request.app[CONFIG].upstream.models_cache_ttl)
    if models is None:
        models = await _fetch(request.app, principal)
        cache.put(principal.user_id, models)
    if principal.limits.allowed_models is None:
        return models
    served_as = request.app[CATALOGUE].served_as
    return [model for model in models if principal.limits.allows(model.id, served_as(model.id))]


def from_anthropic_client(request: web.Request) -> bool:
    return ANTHROPIC_CLIENT_HEADER in request.headers


async def list_models(request: web.Request) -> web.Response:
    models = await listed_models(request)
    if from_anthropic_client(request):
        return json_response(anthropic_models.model_page(models, request.query))
    return json_response(openai_models.model_list(models))


async def retrieve_model(request: web.Request) -> web.Response:
    """``GET /v1/models/{model}`` (``client.models.retrieve``): one entry of the list."""
    model_id = request.match_info["model"]
    for model in await listed_models(request):
        if model.id == model_id:
            render = (
                anthropic_models.model_object
                if from_anthropic_client(request)
                else openai_models.model_object
            )
            return json_response(render(model))
    raise NotFound(
        f"The model {model_id!r} does not exist or is not offered", code="model_not_found", param="model"
    )


def setup(app: web.Application) -> None:
    # Anthropic's clients are told errors here in Anthropic's shape, as on /v1/messages.
    app[SURFACES].claim(
        "/v1/models",
        anthropic_error,
        request_id_header=ANTHROPIC_REQUEST_ID_HEADER,
        header=ANTHROPIC_CLIENT_HEADER,
    )
    app[MODEL_CACHE] = ModelListCache()
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model}", retrieve_model)
