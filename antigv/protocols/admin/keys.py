"""API keys (issue 14): ``/api/keys``. A user manages its own keys; the admin any user's,
naming it with ``?user_id=``. Another user's key is a 404. An admin may lock a key's
limits: its owner may then still rename it, lower its limits or switch it off, but not
raise, clear or unlock them."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from aiohttp import web

from antigv.appkeys import CLOCK, KEY_CACHE, KEY_LIMITER, KEY_REPO, PRINCIPAL
from antigv.core.errors import Forbidden, InvalidRequest, NotFound
from antigv.core.principal import KeyLimits, Principal
from antigv.protocols.admin.quotas import parse_moment
from antigv.protocols.auth import target_user
from antigv.protocols.web import api_ok, flag, optional_str, path_id, read_json_object, reject_unknown_fields
from antigv.store.api_keys import EDITABLE_FIELDS, LIMIT_FIELDS, ApiKey
from antigv.store.users import NAME_MAX_LEN

_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1
# Column bounds: rpm and max_concurrency are integers, tpm and the budget bigints.
_LIMIT_MAXIMA = {
    "rpm": _INT32_MAX,
    "tpm": _INT64_MAX,
    "max_concurrency": _INT32_MAX,
    "monthly_token_budget": _INT64_MAX,
}
MAX_ALLOWED_MODELS = 100
_MODEL_MAX_LEN = 200
_CREATE_FIELDS = ("name", *LIMIT_FIELDS, "limits_locked")


def check_expiry_ahead(fields: dict[str, Any], now: datetime) -> None:
    """A new key must not be born expired: a 400 when its ``expires_at`` is not after ``now``."""
    expires_at: datetime | None = fields.get("expires_at")
    if expires_at is not None and expires_at <= now:
        raise InvalidRequest("expires_at is in the past", param="expires_at")


def parse_key_fields(body: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    """The fields a create or update body sets, validated (a 400 names the field); an
    update's absent fields stay as they are and a null clears a limit."""
    reject_unknown_fields(body, _CREATE_FIELDS if creating else EDITABLE_FIELDS)
    fields: dict[str, Any] = {}
    if creating or "name" in body:
        name = optional_str(body, "name", max_len=NAME_MAX_LEN)
        if not name:
            raise InvalidRequest("name is required: say what the key is for", param="name")
        fields["name"] = name
    if "status" in body:
        fields["status"] = flag(body, "status")
    if "limits_locked" in body:
        fields["limits_locked"] = flag(body, "limits_locked")
    for field, maximum in _LIMIT_MAXIMA.items():
        if field in body:
            fields[field] = _limit(body[field], field, maximum)
    if "allowed_models" in body:
        fields["allowed_models"] = _allowed_models(body["allowed_models"])
    if "expires_at" in body:
        raw = body["expires_at"]
        if raw is not None and not isinstance(raw, str):
            raise InvalidRequest("expires_at must be an ISO 8601 datetime or null", param="expires_at")
        fields["expires_at"] = None if raw is None else parse_moment(raw, "expires_at")
    return fields


def _limit(value: object, field: str, maximum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= maximum:
        raise InvalidRequest(f"{field} must be a positive integer (at most {maximum}) or null", param=field)
    return value


def _allowed_models(value: object) -> list[str] | None:
    if value is None:
        return None
    message = (
        f"allowed_models must be null or a list of 1 to {MAX_ALLOWED_MODELS} model ids, "
        "each exact or a prefix ending in '*'"
    )
    if not isinstance(value, list) or not 0 < len(value) <= MAX_ALLOWED_MODELS:
        raise InvalidRequest(message, param="allowed_models")
    for entry in value:
        if (
            not isinstance(entry, str)
            or not entry.rstrip("*")
            or "*" in entry.rstrip("*")
            or entry.count("*") > 1
            or len(entry) > _MODEL_MAX_LEN
            or not entry.isprintable()
        ):
            raise InvalidRequest(message, param="allowed_models")
    return list(dict.fromkeys(value))


def _tighter(field: str, old: Any, new: Any) -> bool:
    """Whether ``new`` limits at least as much as ``old`` (None is no limit)."""
    if old is None:
        return True
    if new is None:
        return False
    if field == "allowed_models":
        covered = KeyLimits(allowed_models=tuple(old))
        return all(
            covered.allows(entry)
            if not entry.endswith("*")
            else any(o.endswith("*") and entry[:-1].startswith(o[:-1]) for o in old)
            for entry in new
        )
    return bool(new <= old)


def _check_locked(principal: Principal, key: ApiKey, changes: dict[str, Any]) -> None:
    if principal.is_admin:
        return
    if "limits_locked" in changes:
        raise Forbidden("only the admin may lock or unlock a key's limits", code="limits_locked")
    if not key.limits_locked:
        return
    for field in LIMIT_FIELDS:
        if field in changes and not _tighter(field, getattr(key, field), changes[field]):
            raise Forbidden(
                f"an admin locked this key's limits: {field} may be lowered, not raised or cleared",
                code="limits_locked",
            )
    if changes.get("status") == 1 and key.status == 0:
        raise Forbidden(
            "an admin locked this key: only the admin may switch it on again", code="limits_locked"
        )


async def _owned(request: web.Request) -> ApiKey:
    """The key in the path, if the caller may see it; 404 otherwise (existence not revealed)."""
    key = await request.app[KEY_REPO].get(path_id(request))
    principal = request[PRINCIPAL]
    if not principal.is_admin and key.user_id != principal.user_id:
        raise NotFound("key not found")
    return key


async def _with_month(request: web.Request, key: ApiKey) -> dict[str, Any]:
    month = await request.app[KEY_REPO].month_usage(key.key_id)
    return {**asdict(key), "month_requests": month.requests, "month_tokens": month.tokens}


async def list_keys(request: web.Request) -> web.Response:
    """``GET /api/keys``: the caller's keys (the admin: ``?user_id=``'s, or everyone's)."""
    return api_ok(await request.app[KEY_REPO].of_user(target_user(request)))


async def create_key(request: web.Request) -> web.Response:
    user_id = target_user(request, required=True)
    assert user_id is not None
    fields = parse_key_fields(await read_json_object(request), creating=True)
    principal = request[PRINCIPAL]
    if "limits_locked" in fields and not principal.is_admin:
        raise Forbidden("only the admin may lock a key's limits", code="limits_locked")
    check_expiry_ahead(fields, request.app[CLOCK].now())
    created = await request.app[KEY_REPO].create(user_id, fields.pop("name"), fields)
    return api_ok(created, "store the api_key now: it is not shown again")


async def get_key(request: web.Request) -> web.Response:
    return api_ok(await _with_month(request, await _owned(request)))


async def update_key(request: web.Request) -> web.Response:
    key = await _owned(request)
    changes = parse_key_fields(await read_json_object(request), creating=False)
    _check_locked(request[PRINCIPAL], key, changes)
    updated, digest = await request.app[KEY_REPO].update(key.key_id, changes)
    # This instance sees the change at once; the others within the key cache's bound.
    request.app[KEY_CACHE].evict(digest)
    return api_ok(await _with_month(request, updated))


async def delete_key(request: web.Request) -> web.Response:
    key = await _owned(request)
    digest = await request.app[KEY_REPO].delete(key.key_id)
    request.app[KEY_CACHE].evict(digest)
    request.app[KEY_LIMITER].forget([key.key_id])
    return api_ok({"key_id": key.key_id}, "key deleted; its usage history is kept")


def setup(app: web.Application) -> None:
    app.router.add_get("/api/keys", list_keys)
    app.router.add_post("/api/keys", create_key)
    app.router.add_get("/api/keys/{id}", get_key)
    app.router.add_put("/api/keys/{id}", update_key)
    app.router.add_delete("/api/keys/{id}", delete_key)
