"""Liveness and readiness."""

from __future__ import annotations

from aiohttp import web

from antigv.appkeys import DB, LIFECYCLE
from antigv.protocols.auth import PUBLIC, access
from antigv.protocols.web import json_response


@access(PUBLIC)
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@access(PUBLIC)
async def readyz(request: web.Request) -> web.Response:
    if request.app[LIFECYCLE].draining:
        return json_response({"status": "draining"}, status=503)
    if not await request.app[DB].ping():
        return json_response({"status": "database unavailable"}, status=503)
    return json_response({"status": "ready"})


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
