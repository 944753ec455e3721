"""The outermost middleware: request ids, one access-log event, and the one
place where every error becomes an OpenAI-shaped response (SPEC §2)."""

from __future__ import annotations

import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from antigv.appkeys import LIFECYCLE, METRICS, REQUEST_ID, SURFACES
from antigv.core.errors import (
    GatewayError,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
)
from antigv.core.failures import UpstreamFailure, client_error
from antigv.ops.metrics import route_label
from antigv.protocols.web import json_response

log = structlog.get_logger("antigv.http")
# Probes still answer while draining (readiness says 503 by itself).
_DRAIN_EXEMPT = frozenset({"/healthz", "/readyz"})
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _request_id(request: web.Request) -> str:
    supplied = request.headers.get("X-Request-Id", "")
    # Echo a caller's id only when it is safe to put in logs and headers.
    return supplied if _REQUEST_ID_RE.match(supplied) else secrets.token_hex(12)


def _from_http_exception(exc: web.HTTPException) -> GatewayError:
    if isinstance(exc, web.HTTPNotFound):
        return NotFound("no such endpoint", code="unknown_route")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        error = MethodNotAllowed(f"method {exc.method} is not allowed here")
        error.headers = {"Allow": ", ".join(sorted(exc.allowed_methods))}
        return error
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return PayloadTooLarge("request body is too large")
    if exc.status == 503:
        return ServiceUnavailable(exc.reason)
    if 400 <= exc.status < 500:
        return InvalidRequest(exc.reason)
    return InternalError("internal error")


def _response_started(request: web.Request) -> bool:
    """Whether bytes of a response are out (aiohttp's handle_error asks the same)."""
    return request.writer.output_size > 0


def _as_api_error(request: web.Request, exc: Exception, request_id: str) -> GatewayError:
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, UpstreamFailure):
        return client_error(exc)
    log.exception("unhandled_error", method=request.method, path=request.path)
    return InternalError(f"internal error (request id {request_id})")


def error_response(request: web.Request, error: GatewayError, request_id: str) -> web.Response:
    claim = request.app[SURFACES].owner(request)
    status, body = claim.shape(error)
    headers = {"X-Request-Id": request_id, **error.headers}
    for name in claim.id_headers:
        headers[name] = request_id
    if error.retry_after is not None:
        # Rounding up: a client told to wait less than needed only earns another 429.
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    response = json_response(body, status=status, headers=headers)
    if error.close_connection:
        response.force_close()  # "Connection: close": no next request on this connection
    return response


async def _answer_and_close(request: web.Request, response: web.Response) -> None:
    """Send ``response`` and end the connection at once: what is left of the body is never
    read (aiohttp would otherwise linger on a slow body, or re-raise a broken one)."""
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()


@web.middleware
async def request_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    request_id = _request_id(request)
    request[REQUEST_ID] = request_id
    started = time.perf_counter()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    try:
        try:
            if request.app[LIFECYCLE].draining and request.path not in _DRAIN_EXEMPT:
                raise ServiceUnavailable("the server is shutting down; retry on another instance")
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = error_response(request, _from_http_exception(exc), request_id)
        except Exception as exc:
            if _response_started(request):
                # A second response would land inside the first one's body (a chunked SSE
                # stream, say): leave the connection to aiohttp, which closes it.
                if not isinstance(exc, ConnectionError):  # more than a client that went away
                    log.exception("response_failed_after_start", method=request.method, path=request.path)
                raise
            error = _as_api_error(request, exc, request_id)
            response = error_response(request, error, request_id)
            if error.close_connection:
                await _answer_and_close(request, response)
        if not response.prepared:
            response.headers["X-Request-Id"] = request_id
            # API answers are the caller's own and change: no cache keeps one (the console's
            # assets say otherwise for themselves).
            response.headers.setdefault("Cache-Control", "no-store")
            for name in request.app[SURFACES].request_id_headers(request):
                response.headers[name] = request_id
        duration = time.perf_counter() - started
        route = route_label(request)
        metrics = request.app[METRICS]
        metrics.requests.labels(route, request.method, str(response.status)).inc()
        metrics.request_seconds.labels(route).observe(duration)
        log.info(
            "request",
            method=request.method,
            path=request.path,
            status=response.status,
            duration_ms=round(duration * 1000, 2),
        )
        return response
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
