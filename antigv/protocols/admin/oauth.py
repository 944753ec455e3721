"""OAuth onboarding endpoints (SPEC §3, §4).

``GET /api/oauth/callback`` is opened by a browser: it always answers a small
HTML page (200 on success, the error's status on failure) in which every
interpolated value is HTML-escaped, and never a JSON error.
"""

from __future__ import annotations

import html
from typing import Any

import structlog
from aiohttp import web

from antigv.appkeys import CONFIG, DB, PRINCIPAL, REQUEST_ID, USER_REPO
from antigv.backends.antigravity import oauth
from antigv.core.errors import GatewayError, InvalidRequest, NotFound
from antigv.protocols.auth import PUBLIC, access
from antigv.protocols.openai.errors import error_status
from antigv.protocols.web import api_ok, flag, read_json_object

log = structlog.get_logger(__name__)

_MAX_ID = 2**63 - 1
_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem}}
.ref{{color:#666;font-size:.85em}}</style>
</head>
<body>
<h1>{title}</h1>
<p>{message}</p>
<p class="ref">Request id: {request_id}</p>
</body>
</html>
"""
_PAGE_HEADERS = {
    # Nothing on the page may run or load; the URL carries a code, keep it out of referrers.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}


def render_page(status: int, title: str, message: str, request_id: str = "") -> web.Response:
    """The browser's answer; every value is escaped here, in one place."""
    body = _PAGE.format(
        title=html.escape(title), message=html.escape(message), request_id=html.escape(request_id)
    )
    return web.Response(
        status=status, text=body, content_type="text/html", charset="utf-8", headers=_PAGE_HEADERS
    )


async def _target_user(request: web.Request, body: dict[str, Any]) -> int:
    """Whose account this will be: the caller, or for the admin the body's ``user_id``."""
    principal = request[PRINCIPAL]
    raw = body.get("user_id")
    if raw is not None and (isinstance(raw, bool) or not isinstance(raw, int) or not 0 < raw <= _MAX_ID):
        raise InvalidRequest("user_id must be a positive integer", param="user_id")
    if not principal.is_admin:
        if raw is not None and raw != principal.user_id:
            raise NotFound("user not found")
        assert principal.user_id is not None
        return principal.user_id
    if raw is None:
        raise InvalidRequest("the admin key must name the account's owner: send user_id", param="user_id")
    await request.app[USER_REPO].get(raw)  # NotFound when there is no such user
    return raw


async def authorize(request: web.Request) -> web.Response:
    body = await read_json_object(request, empty_ok=True)
    is_shared = flag(body, "is_shared", required=False, default=0)
    user_id = await _target_user(request, body)
    data = await oauth.create_state(request.app[DB], request.app[CONFIG].oauth, user_id, is_shared)
    return api_ok(data, "open auth_url in a browser; the link works once, within expires_in seconds")


def _success_message(outcome: oauth.Outcome) -> str:
    if outcome.created:
        return "account added"
    return "account re-authorised: its tokens were updated, its settings are unchanged"


@access(PUBLIC)
async def callback(request: web.Request) -> web.Response:
    request_id = request.get(REQUEST_ID, "")
    try:
        outcome = await oauth.finish(request.app, oauth.callback_params(request.query), owner_id=None)
    except GatewayError as exc:
        status = error_status(exc)
        log.info("oauth_callback_failed", status=status, code=exc.code)
        return render_page(status, "The account was not added", exc.message, request_id)
    except Exception:
        log.exception("oauth_callback_error")
        return render_page(500, "The account was not added", "internal error; please try again", request_id)
    email = outcome.account["email"]
    message = f"{email}: {_success_message(outcome)}. You can close this window."
    title = "Account added" if outcome.created else "Account re-authorised"
    return render_page(200, title, message, request_id)


async def callback_manual(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    body = await read_json_object(request)
    params = oauth.parse_callback_url(body.get("callback_url"))
    owner_id = None if principal.is_admin else principal.user_id
    outcome = await oauth.finish(request.app, params, owner_id=owner_id)
    return api_ok(outcome.account, _success_message(outcome))


async def cleanup_states(app: web.Application) -> int:
    """Background task: drop expired states (consumed ones are already gone)."""
    return await oauth.delete_expired_states(app[DB])


def setup(app: web.Application) -> None:
    app.router.add_post("/api/oauth/authorize", authorize)
    app.router.add_get("/api/oauth/callback", callback)
    app.router.add_post("/api/oauth/callback/manual", callback_manual)
