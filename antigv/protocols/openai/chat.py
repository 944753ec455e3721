"""``POST /v1/chat/completions``: the gateway's events, rendered as SSE chunks or one JSON body."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import structlog
from aiohttp import web

from antigv.appkeys import CONFIG, GATEWAY, PRINCIPAL, REQUEST_ID, SHUTDOWN_CUT
from antigv.core.errors import GatewayError, InternalError, ServiceUnavailable
from antigv.core.failures import UpstreamFailure, client_error
from antigv.gateway.service import Reply
from antigv.ops.metrics import Metrics
from antigv.protocols.openai.parse import include_usage, parse_chat_request
from antigv.protocols.openai.render import StreamRenderer, assemble_completion
from antigv.protocols.web import json_response, read_json

log = structlog.get_logger(__name__)

OVERHEAD_HEADER = "x-antigv-overhead-ms"
_SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    # Tell nginx not to buffer the stream.
    "X-Accel-Buffering": "no",
}
# Seconds, at most, a stream cut by shutdown gets to say so and end (taken from the bound).
_GOODBYE_TIMEOUT = 1.0


class ShutdownCut:
    """Chat handlers in progress, ended by shutdown within its bound (SPEC §8).

    aiohttp waits ``server.shutdown_timeout`` for handlers, then only fails their request
    body and waits as long again before cancelling them, when it closes the connection at
    once: a long stream got neither an error nor its end, after twice the bound. Here the
    handlers are cancelled a moment before the bound, and end their replies themselves.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task] = set()
        self._timer: asyncio.TimerHandle | None = None
        self.margin = _GOODBYE_TIMEOUT
        self.cut = False

    @contextlib.contextmanager
    def tracking(self) -> Iterator[None]:
        """Run the block as a handler shutdown may cut; a cut before any byte is a 503."""
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            yield
        except asyncio.CancelledError:
            if not self.cut:
                raise
            task.uncancel()
            raise ServiceUnavailable("the server is shutting down; retry the request") from None
        finally:
            self._tasks.discard(task)

    def schedule(self, bound: float) -> None:
        self.margin = min(_GOODBYE_TIMEOUT, bound / 2)
        self._timer = asyncio.get_running_loop().call_later(bound - self.margin, self._cut_all)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _cut_all(self) -> None:
        self.cut = True
        if self._tasks:
            log.warning("shutdown_cut_requests", requests=len(self._tasks))
        for task in self._tasks:
            task.cancel()


def _overhead(reply: Reply, upstream_done: float) -> float:
    """Seconds the gateway itself added: before the upstream call, and after the
    upstream's part (its first events for a stream, its last frame otherwise)."""
    return reply.overhead_before + (time.perf_counter() - upstream_done)


def _mid_stream_error(exc: Exception, request_id: str) -> GatewayError:
    if isinstance(exc, UpstreamFailure):
        return client_error(exc)
    if isinstance(exc, GatewayError):
        return exc
    return InternalError(f"internal error (request id {request_id})")


async def chat_completions(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    shutdown = request.app[SHUTDOWN_CUT]
    with shutdown.tracking():
        body = await read_json(request)
        chat = parse_chat_request(body)
        gateway = request.app[GATEWAY]
        async with gateway.chat(
            request[PRINCIPAL], chat, request_id=request[REQUEST_ID], started=started
        ) as reply:
            try:
                if chat.stream:
                    return await _stream(request, gateway.metrics, reply, include_usage(body), shutdown)
                return await _complete(gateway.metrics, reply)
            except asyncio.CancelledError:
                if shutdown.cut:
                    reply.fail()
                raise


async def _complete(metrics: Metrics, reply: Reply) -> web.Response:
    events = [event async for batch in reply.batches() for event in batch]
    completion = assemble_completion(events, reply.requested_model)
    assert reply.upstream_done is not None
    overhead = _overhead(reply, reply.upstream_done)
    metrics.overhead_seconds.observe(overhead)
    return json_response(completion, headers={OVERHEAD_HEADER: f"{overhead * 1000:.2f}"})


async def _stream(
    request: web.Request, metrics: Metrics, reply: Reply, include_usage: bool, shutdown: ShutdownCut
) -> web.StreamResponse:
    renderer = StreamRenderer(reply.requested_model, include_usage)
    overhead = _overhead(reply, reply.opened_at)
    # Prepared here, so the middleware cannot add the request id afterwards.
    headers = {**_SSE_HEADERS, OVERHEAD_HEADER: f"{overhead * 1000:.2f}", "X-Request-Id": request[REQUEST_ID]}
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    # From here on bytes are out: whatever happens, the stream ends with an SSE error
    # object and a clean end of the chunked body (SPEC §7), never a second response.
    try:
        batches = reply.batches()
        first = await anext(batches)
        await response.write(renderer.start() + renderer.render(first))
        metrics.overhead_seconds.observe(overhead)
        metrics.first_token_seconds.labels(reply.model).observe(time.perf_counter() - reply.started)
        async for events in batches:
            await response.write(renderer.render(events))
        await response.write(renderer.end())
        await response.write_eof()
        return response
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if not shutdown.cut or task is None:
            raise  # the client went away
        task.uncancel()
        reply.fail()
        goodbye = renderer.error(ServiceUnavailable("the server is shutting down; retry the request"))
        if not await _end(response, goodbye, within=shutdown.margin) and request.transport is not None:
            request.transport.abort()  # a client that reads no more does not hold shutdown up
        return response
    except ConnectionResetError:
        raise  # the client went away
    except (UpstreamFailure, GatewayError) as exc:
        # The class and code only: an upstream's message may quote the prompt (issue 11 item 20).
        code = exc.kind.value if isinstance(exc, UpstreamFailure) else exc.code
        log.warning("stream_failed_midway", error=type(exc).__name__, code=code)
        error = _mid_stream_error(exc, request[REQUEST_ID])
    except Exception as exc:
        log.exception("stream_failed_midway", error=type(exc).__name__)
        error = _mid_stream_error(exc, request[REQUEST_ID])
    reply.fail()
    await _end(response, renderer.error(error))
    return response


async def _end(response: web.StreamResponse, goodbye: bytes, within: float | None = None) -> bool:
    """Send the last SSE event and end the chunked body; False if the client could not take it."""
    try:
        async with asyncio.timeout(within):
            await response.write(goodbye)
            await response.write_eof()
    except (TimeoutError, ConnectionError):
        return False
    return True


async def _on_shutdown(app: web.Application) -> None:
    app[SHUTDOWN_CUT].schedule(app[CONFIG].server.shutdown_timeout)


async def _on_cleanup(app: web.Application) -> None:
    app[SHUTDOWN_CUT].cancel()


def setup(app: web.Application) -> None:
    app[SHUTDOWN_CUT] = ShutdownCut()
    app.on_shutdown.append(_on_shutdown)
    app.on_cleanup.append(_on_cleanup)
    app.router.add_post("/v1/chat/completions", chat_completions)
