"""``POST /v1/chat/completions``: one translator, two renderings (SSE or JSON)."""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog
from aiohttp import web

from ..chat import CHAT, ChatService, OpenedReply
from ..errors import ApiError, ServiceUnavailable, UpstreamError
from ..middleware import REQUEST_ID
from ..state import LIFECYCLE, PRINCIPAL
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
# Seconds a stream cut by shutdown gets to say so before its connection closes.
_GOODBYE_TIMEOUT = 1.0


def _overhead(reply: OpenedReply, upstream_done: float) -> float:
    """Seconds the gateway itself added: before the upstream call, and after the
    upstream's part (its first events for a stream, its last frame otherwise)."""
    return reply.overhead_before + (time.perf_counter() - upstream_done)


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
        service.finish(reply, principal, request[REQUEST_ID], status, req.stream)


async def _complete(service: ChatService, reply: OpenedReply, req: ChatRequest) -> web.Response:
    translator = reply.translator
    events = list(reply.first_events)
    async for batch in reply.batches:
        for frame in batch:
            events.extend(translator.feed(frame))
    upstream_done = time.perf_counter()
    events.extend(translator.finish())
    await service.remember_signatures(reply, req.model)
    completion = assemble_completion(events, translator.usage, req.model)
    overhead = _overhead(reply, upstream_done)
    service.metrics.overhead_seconds.observe(overhead)
    return json_response(completion, headers={OVERHEAD_HEADER: f"{overhead * 1000:.2f}"})


async def _stream(
    request: web.Request, service: ChatService, reply: OpenedReply, req: ChatRequest
) -> tuple[web.StreamResponse, str]:
    translator = reply.translator
    renderer = StreamRenderer(req.model, req.include_usage)
    overhead = _overhead(reply, reply.opened_at)
    # Prepared here, so the middleware cannot add the request id afterwards.
    headers = {**_SSE_HEADERS, OVERHEAD_HEADER: f"{overhead * 1000:.2f}", "X-Request-Id": request[REQUEST_ID]}
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    await response.write(renderer.start() + renderer.render(reply.first_events))
    metrics = service.metrics
    metrics.overhead_seconds.observe(overhead)
    metrics.first_token_seconds.labels(reply.upstream.model).observe(time.perf_counter() - reply.started)
    try:
        async for batch in reply.batches:
            events = [event for frame in batch for event in translator.feed(frame)]
            if events:
                await response.write(renderer.render(events))
    except (UpstreamFailure, ApiError) as exc:
        # Bytes are out: the error travels as an SSE error object, then the stream ends.
        log.warning("stream_failed_midway", error=str(exc))
        await response.write(renderer.error(_mid_stream_error(exc)))
        await response.write_eof()
        return response, "error"
    except asyncio.CancelledError:
        if request.app[LIFECYCLE].draining:
            # Shutdown's bound ran out: tell the client why its stream ends here.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                goodbye = renderer.error(ServiceUnavailable("the server is shutting down; retry the request"))
                await asyncio.wait_for(response.write(goodbye), _GOODBYE_TIMEOUT)
        raise
    await service.remember_signatures(reply, req.model)
    await response.write(renderer.finish(translator.finish(), translator.usage))
    await response.write_eof()
    return response, "ok"


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
