"""User endpoints (SPEC §3)."""

from __future__ import annotations

from dataclasses import asdict

from aiohttp import web

from antigv.appkeys import KEY_CACHE, PRINCIPAL, USER_REPO
from antigv.protocols.auth import ADMIN, access, require_self_or_admin
from antigv.protocols.web import (
    api_ok,
    flag,
    optional_str,
    path_id,
    query_int,
    read_json_object,
    reject_unknown_fields,
)
from antigv.store import users


async def me(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    if principal.is_admin:
        return api_ok({"user_id": None, "name": "admin", "is_admin": True})
    profile = await request.app[USER_REPO].get(principal.user_id)
    return api_ok({**asdict(profile), "is_admin": False})


@access(ADMIN)
async def create(request: web.Request) -> web.Response:
    body = await read_json_object(request, empty_ok=True)
    reject_unknown_fields(body, ("name", "prefer_shared"))
    name = optional_str(body, "name", max_len=users.NAME_MAX_LEN)
    prefer_shared = flag(body, "prefer_shared", required=False)
    created = await request.app[USER_REPO].create(name, prefer_shared)
    return api_ok(created, "store the api_key now: it is not shown again")


@access(ADMIN)
async def list_all(request: web.Request) -> web.Response:
    limit = query_int(
        request, "limit", default=users.LIST_LIMIT_DEFAULT, minimum=1, maximum=users.LIST_LIMIT_MAX
    )
    offset = query_int(request, "offset", default=0, minimum=0, maximum=users.LIST_OFFSET_MAX)
    return api_ok(await request.app[USER_REPO].page(limit, offset))


@access(ADMIN)
async def regenerate_key(request: web.Request) -> web.Response:
    user_id = path_id(request)
    updated = await request.app[USER_REPO].regenerate_key(user_id)
    request.app[KEY_CACHE].evict_user(user_id)
    return api_ok(updated, "the previous key no longer works; store the new api_key now")


@access(ADMIN)
async def set_status(request: web.Request) -> web.Response:
    user_id = path_id(request)
    status = flag(await read_json_object(request), "status")
    updated = await request.app[USER_REPO].set_status(user_id, status)
    request.app[KEY_CACHE].evict_user(user_id)
    return api_ok(updated)


async def set_preference(request: web.Request) -> web.Response:
    user_id = path_id(request)
    require_self_or_admin(request[PRINCIPAL], user_id)
    prefer_shared = flag(await read_json_object(request), "prefer_shared")
    updated = await request.app[USER_REPO].set_preference(user_id, prefer_shared)
    request.app[KEY_CACHE].evict_user(user_id)
    return api_ok(updated)


@access(ADMIN)
async def delete(request: web.Request) -> web.Response:
    user_id = path_id(request)
    await request.app[USER_REPO].delete(user_id)
    request.app[KEY_CACHE].evict_user(user_id)
    return api_ok({"user_id": user_id}, "user deleted; usage history is kept")


def setup(app: web.Application) -> None:
    app.router.add_get("/api/user/me", me)
    app.router.add_post("/api/users", create)
    app.router.add_get("/api/users", list_all)
    app.router.add_post("/api/users/{id}/regenerate-key", regenerate_key)
    app.router.add_put("/api/users/{id}/status", set_status)
    app.router.add_put("/api/users/{id}/preference", set_preference)
    app.router.add_delete("/api/users/{id}", delete)
