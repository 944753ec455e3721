"""Quota and usage endpoints (SPEC §3, §9)."""

from __future__ import annotations

import math
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

from aiohttp import web

from antigv.accounting.pools import user_pools
from antigv.appkeys import ACCOUNT_REPO, CATALOGUE, CONFIG, PRINCIPAL, QUOTA_REPO, QUOTAS, USAGE_REPO
from antigv.backends.gemini_api import KIND as GEMINI_API_KIND
from antigv.backends.gemini_api.failures import pacific_day
from antigv.core.errors import InvalidRequest, NotFound
from antigv.core.principal import Principal
from antigv.protocols.auth import ADMIN, access, target_user
from antigv.protocols.web import api_ok, flag, json_response, path_id, query_id, query_int, read_json_object
from antigv.store.quotas import QuotaAccount

USAGE_LIMIT_DEFAULT = 100
USAGE_LIMIT_MAX = 1000


# --- query parsing -----------------------------------------------------------------


# A bound shifted past the calendar's edge (9999-12-31 as an end date, a time zone
# across year 1 or 9999) lies beyond every row: the edge itself answers exactly.
_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)


def parse_moment(raw: str, param: str, *, end: bool = False) -> datetime:
    """An ISO date or datetime as a UTC datetime; 400 naming ``param`` otherwise.

    A bare date as an end bound covers that whole day.
    """
    text = raw.strip()
    if len(text) == 10:
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise InvalidRequest(
                f"{param} must be an ISO 8601 date or datetime (e.g. 2025-01-31 or 2025-01-31T12:00:00Z)",
                param=param,
            ) from None
        moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
        if not end:
            return moment
        try:
            return moment + timedelta(days=1)
        except OverflowError:
            return _LATEST
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidRequest(
            f"{param} must be an ISO 8601 date or datetime (e.g. 2025-01-31 or 2025-01-31T12:00:00Z)",
            param=param,
        ) from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return _LATEST if moment.year > 1 else _EARLIEST


def date_range(request: web.Request) -> tuple[datetime | None, datetime | None]:
    start_raw = request.query.get("start_date", "")
    end_raw = request.query.get("end_date", "")
    start = parse_moment(start_raw, "start_date") if start_raw.strip() else None
    end = parse_moment(end_raw, "end_date", end=True) if end_raw.strip() else None
    if start is not None and end is not None and end <= start:
        raise InvalidRequest("end_date must be after start_date", param="end_date")
    return start, end


def parse_threshold(request: web.Request) -> float:
    raw = request.query.get("threshold", "").strip()
    if not raw:
        return 0.1
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:
        raise InvalidRequest("threshold must be a number between 0 and 1", param="threshold")
    return value


async def owned_account(request: web.Request) -> QuotaAccount:
    """The account in the path, if the caller may see it; 404 otherwise (existence not revealed)."""
    account_id = path_id(request)
    account = await request.app[QUOTA_REPO].account(account_id)
    principal: Principal = request[PRINCIPAL]
    if account is None or (not principal.is_admin and account["user_id"] != principal.user_id):
        raise NotFound("account not found")
    return account


# --- handlers ---------------------------------------------------------------------


async def account_quotas(request: web.Request) -> web.Response:
    """``GET /api/accounts/{id}/quotas``: read upstream first when the stored read is stale.

    ``data`` is the per-model rows; ``windows`` beside it the 5-hour and weekly windows
    of the family buckets (SPEC §9, PROTOCOL §13.6).
    """
    account = await owned_account(request)
    app = request.app
    if account["kind"] == GEMINI_API_KIND:
        return json_response({"success": True, **await _key_quotas(app, account)})
    message = None
    fetched = account["quota_fetched_at"]
    stale_after = timedelta(seconds=app[CONFIG].quotas.stale_after)
    if account["status"] == 1 and (fetched is None or datetime.now(UTC) - fetched > stale_after):
        if await app[QUOTAS].read(account["account_id"]) is None:
            message = "quotas could not be refreshed from upstream; showing the last stored read"
    elif account["status"] != 1:
        message = "the account is disabled; showing the last stored read"
    body: dict[str, Any] = {
        "success": True,
        "data": await app[QUOTA_REPO].model_quotas(account["account_id"]),
        "windows": await app[QUOTA_REPO].windows(account["account_id"]),
    }
    if message:
        body["message"] = message
    return json_response(body)


async def _key_quotas(app: web.Application, account: QuotaAccount) -> dict[str, Any]:
    """A Gemini API key reports no remaining fraction (issue 15): its parked windows (the
    models a 429 parked, until when) and its use this Pacific day, when Google's per-day
    quotas reset, against the pool's daily allowance."""
    day_start, _ = pacific_day(datetime.now(UTC))
    shown = await app[ACCOUNT_REPO].get(account["account_id"], user_id=None)
    return {
        "data": [],
        "windows": [],
        "parked": [asdict(cooldown) for cooldown in shown.cooldowns] if shown else [],
        "today": {
            "since": day_start,
            **await app[QUOTA_REPO].usage_since(account["account_id"], day_start),
            "daily_tokens": app[CONFIG].gemini_api.pool_daily_tokens,
        },
    }


async def set_model_status(request: web.Request) -> web.Response:
    """``PUT /api/accounts/{id}/quotas/{model}/status``: switch one model off or on."""
    account = await owned_account(request)
    status = flag(await read_json_object(request), "status")
    model = request.match_info["model"]
    quota = await request.app[QUOTA_REPO].set_model_status(account["account_id"], model, status)
    if quota is None:
        raise NotFound(f"no quota is known for model {model} on this account", code="model_not_found")
    return api_ok(quota)


async def user_pool(request: web.Request) -> web.Response:
    """``GET /api/quotas/user``: the caller's pool per quota group."""
    user_id = target_user(request, required=True)
    assert user_id is not None
    pools = await user_pools(request.app[QUOTA_REPO], request.app[CONFIG].quotas, user_id)
    if pools is None:
        raise NotFound("user not found")
    return api_ok(pools)


async def shared_pool(request: web.Request) -> web.Response:
    """``GET /api/quotas/shared-pool``: totals over every enabled shared account, per model."""
    return api_ok(await request.app[QUOTA_REPO].shared_totals())


async def consumption(request: web.Request) -> web.Response:
    """``GET /api/quotas/consumption``: the usage log, newest first."""
    limit = query_int(request, "limit", default=USAGE_LIMIT_DEFAULT, minimum=1, maximum=USAGE_LIMIT_MAX)
    start, end = date_range(request)
    user_id = target_user(request, required=False)
    key_id = query_id(request, "key_id")
    before_id = query_id(request, "before_id")
    rows = await request.app[USAGE_REPO].rows(
        user_id=user_id, key_id=key_id, start=start, end=end, limit=limit, before_id=before_id
    )
    return api_ok(rows)


async def consumption_daily(request: web.Request) -> web.Response:
    """``GET /api/quotas/consumption/daily``: the usage log summed per UTC day and model."""
    start, end = date_range(request)
    rows = await request.app[USAGE_REPO].daily(
        user_id=target_user(request, required=False), key_id=query_id(request, "key_id"), start=start, end=end
    )
    return api_ok(rows)


async def consumption_stats(request: web.Request) -> web.Response:
    """``GET /api/quotas/consumption/stats/{model}``."""
    model = request.match_info["model"]
    start, end = date_range(request)
    user_id = target_user(request, required=False)
    models = sorted({model, request.app[CATALOGUE].served_as(model)})
    key_id = query_id(request, "key_id")
    stats = await request.app[USAGE_REPO].stats(
        user_id=user_id, key_id=key_id, models=models, start=start, end=end
    )
    return api_ok({"model_name": model, **asdict(stats)})


@access(ADMIN)
async def low_quotas(request: web.Request) -> web.Response:
    """``GET /api/quotas/low?threshold=0.1``: enabled model quotas below the threshold."""
    return api_ok(await request.app[QUOTA_REPO].low(parse_threshold(request)))


def setup(app: web.Application) -> None:
    app.router.add_get("/api/accounts/{id}/quotas", account_quotas)
    app.router.add_put("/api/accounts/{id}/quotas/{model}/status", set_model_status)
    app.router.add_get("/api/quotas/user", user_pool)
    app.router.add_get("/api/quotas/shared-pool", shared_pool)
    app.router.add_get("/api/quotas/consumption", consumption)
    app.router.add_get("/api/quotas/consumption/daily", consumption_daily)
    app.router.add_get("/api/quotas/consumption/stats/{model}", consumption_stats)
    app.router.add_get("/api/quotas/low", low_quotas)
