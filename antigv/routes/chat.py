"""``POST /v1/chat/completions``: one translator, two renderings (SSE or JSON)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from aiohttp import web

from ..chat import CHAT, OpenedReply
from ..errors import ApiError, UpstreamError
from ..middleware import REQUEST_ID
from ..state import PRINCIPAL
from ..translate.request import ChatRequest, parse_chat_request
from ..translate.response import StreamRenderer, assemble_completion
from ..upstream.failures import UpstreamFailure, to_api_error
from ..web import json_response, read_json

log = structlog.get_logger(__name__)

OVERHEAD_HEADER = "x-antigv-overhead-ms"
_SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    # Tell nginx not to buffer the stream.
    "X-Accel-Buffering": "no",
}


def _overhead_ms(reply: OpenedReply) -> str:
    """Time the gateway itself added before the client's first byte."""
    after = time.perf_counter() - reply.opened_at
    return f"{(reply.overhead_before + after) * 1000:.2f}"


def _mid_stream_error(exc: BaseException) -> ApiError:
    if isinstance(exc, UpstreamFailure):
        return to_api_error(exc)
    if isinstance(exc, ApiError):
        return exc
    return UpstreamError("the upstream reply could not be read")


async def chat_completions(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    body = await read_json(request)
    req = parse_chat_request(body)
    principal = request[PRINCIPAL]
    service = request.app[CHAT]
    reply = await service.open(principal, req, started)
    status = "error"
    try:
        if req.stream:
            response, status = await _stream(request, service, reply, req)
        else:
            response = await _complete(service, reply, req)
            status = "ok"
        return response
    except (asyncio.CancelledError, ConnectionResetError):
        status = "cancelled"
        raise
    finally:
        service.finish(reply, principal, request[REQUEST_ID], status)


async def _complete(service: Any, reply: OpenedReply, req: ChatRequest) -> web.Response:
    translator = reply.translator
    events = list(reply.first_events)
    try:
        async for frame in reply.frames:
            events.extend(translator.feed(frame))
    except UpstreamFailure as failure:
        # Not an ApiError: left alone it would reach the client as a 500.
        raise to_api_error(failure) from None
    events.extend(translator.finish())
    await service.remember_signatures(reply, req.model)
    completion = assemble_completion(events, translator.usage, req.model)
    return json_response(completion, headers={OVERHEAD_HEADER: _overhead_ms(reply)})


async def _stream(
    request: web.Request, service: Any, reply: OpenedReply, req: ChatRequest
) -> tuple[web.StreamResponse, str]:
    translator = reply.translator
    renderer = StreamRenderer(req.model, req.include_usage)
    # Prepared here, so the middleware cannot add the request id afterwards.
    headers = {**_SSE_HEADERS, OVERHEAD_HEADER: _overhead_ms(reply), "X-Request-Id": request[REQUEST_ID]}
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    await response.write(renderer.start() + renderer.render(reply.first_events))
    try:
        async for frame in reply.frames:
            events = translator.feed(frame)
            if events:
                await response.write(renderer.render(events))
    except (UpstreamFailure, ApiError) as exc:
        # Bytes are out: the error travels as an SSE error object, then the stream ends.
        log.warning("stream_failed_midway", error=str(exc))
        await response.write(renderer.error(_mid_stream_error(exc)))
        await response.write_eof()
        return response, "error"
    await service.remember_signatures(reply, req.model)
    await response.write(renderer.finish(translator.finish(), translator.usage))
    await response.write_eof()
    return response, "ok"


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
