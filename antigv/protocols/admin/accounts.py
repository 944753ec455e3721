"""Account endpoints (SPEC §3): list, show, enable/disable, rename, type, delete.

A user reaches only their own accounts; the admin reaches every account. The
owner check is part of each query (``user_id`` None for the admin), so another
user's account is a 404, exactly like one that does not exist.
"""

from __future__ import annotations

from aiohttp import web

from antigv.appkeys import ACCOUNT_REPO, PRINCIPAL
from antigv.core.errors import InvalidRequest, NotFound
from antigv.protocols.auth import target_user
from antigv.protocols.web import api_ok, flag, path_id, read_json_object
from antigv.store.accounts import Account

NAME_MAX_CHARS = 100
DISABLED_BY_OWNER = "disabled by owner"


def _scope(request: web.Request) -> int | None:
    """The user whose accounts the caller reaches; None for the admin (all of them)."""
    principal = request[PRINCIPAL]
    return None if principal.is_admin else principal.user_id


def _found(account: Account | None) -> Account:
    if account is None:
        raise NotFound("account not found")
    return account


async def list_accounts(request: web.Request) -> web.Response:
    return api_ok(await request.app[ACCOUNT_REPO].owned_by(target_user(request)))


async def get_account(request: web.Request) -> web.Response:
    account_id = path_id(request)
    return api_ok(_found(await request.app[ACCOUNT_REPO].get(account_id, user_id=_scope(request))))


async def set_status(request: web.Request) -> web.Response:
    account_id = path_id(request)
    status = flag(await read_json_object(request), "status")
    account = await request.app[ACCOUNT_REPO].set_status(
        account_id, user_id=_scope(request), status=status, reason=DISABLED_BY_OWNER
    )
    return api_ok(_found(account))


async def set_name(request: web.Request) -> web.Response:
    account_id = path_id(request)
    body = await read_json_object(request)
    if "name" not in body:
        raise InvalidRequest(f"name is required (1 to {NAME_MAX_CHARS} characters)", param="name")
    name = body["name"]
    if not isinstance(name, str):
        raise InvalidRequest("name must be a string", param="name")
    name = name.strip()
    if not 1 <= len(name) <= NAME_MAX_CHARS:
        raise InvalidRequest(f"name must be 1 to {NAME_MAX_CHARS} characters", param="name")
    account = await request.app[ACCOUNT_REPO].rename(account_id, user_id=_scope(request), name=name)
    return api_ok(_found(account))


async def set_type(request: web.Request) -> web.Response:
    account_id = path_id(request)
    is_shared = flag(await read_json_object(request), "is_shared")
    account = await request.app[ACCOUNT_REPO].set_shared(
        account_id, user_id=_scope(request), is_shared=is_shared
    )
    return api_ok(_found(account))


async def delete_account(request: web.Request) -> web.Response:
    account_id = path_id(request)
    if not await request.app[ACCOUNT_REPO].delete(account_id, user_id=_scope(request)):
        raise NotFound("account not found")
    return api_ok({"account_id": account_id}, "account deleted")


def setup(app: web.Application) -> None:
    app.router.add_get("/api/accounts", list_accounts)
    app.router.add_get("/api/accounts/{id}", get_account)
    app.router.add_put("/api/accounts/{id}/status", set_status)
    app.router.add_put("/api/accounts/{id}/name", set_name)
    app.router.add_put("/api/accounts/{id}/type", set_type)
    app.router.add_delete("/api/accounts/{id}", delete_account)
