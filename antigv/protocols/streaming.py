"""What every chat surface does with an opened reply, whatever its protocol: send it as
one body or as a stream of server-sent events, measure the gateway's share of the time,
end a stream cleanly when it fails midway or shutdown cuts it (SPEC §7, §8).

A surface supplies only the rendering (:class:`StreamRenderer`); the life of the
response is here, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import structlog
from aiohttp import web

from antigv.appkeys import CONFIG, GATEWAY, PRINCIPAL, REQUEST_ID, SHUTDOWN_CUT, SURFACES
from antigv.core.conversation import ChatRequest
from antigv.core.errors import GatewayError, InternalError, ServiceUnavailable
from antigv.core.events import Event
from antigv.core.failures import UpstreamFailure, client_error
from antigv.gateway.service import Reply
from antigv.protocols.web import json_response

log = structlog.get_logger(__name__)

OVERHEAD_HEADER = "x-antigv-overhead-ms"
SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    # Tell nginx not to buffer the stream.
    "X-Accel-Buffering": "no",
}
# Seconds, at most, a stream cut by shutdown gets to say so and end (taken from the bound).
_GOODBYE_TIMEOUT = 1.0
SHUTTING_DOWN = "the server is shutting down; retry the request"


class StreamRenderer(Protocol):
    """One reply's events as a protocol's SSE bytes."""

    def open(self, first: Sequence[Event]) -> bytes:
        """The stream's opening and its first events."""
        ...

    def render(self, events: Sequence[Event]) -> bytes: ...

    def end(self) -> bytes:
        """After the last batch (which holds the usage and the finish)."""
        ...

    def error(self, error: GatewayError) -> bytes:
        """The event that ends a stream that failed after its first byte."""
        ...


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
            raise ServiceUnavailable(SHUTTING_DOWN) from None
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


def overhead(reply: Reply, upstream_done: float) -> float:
    """Seconds the gateway itself added: before the upstream call, and after the
    upstream's part (its first events for a stream, its last frame otherwise)."""
    return reply.overhead_before + (time.perf_counter() - upstream_done)


async def whole_reply(request: web.Request, reply: Reply) -> tuple[list[Event], dict[str, str]]:
    """Every event of a non-streamed reply, and the headers its response carries."""
    events = [event async for batch in reply.batches() for event in batch]
    assert reply.upstream_done is not None
    spent = overhead(reply, reply.upstream_done)
    request.app[GATEWAY].metrics.overhead_seconds.observe(spent)
    return events, {OVERHEAD_HEADER: f"{spent * 1000:.2f}", **reply.rate_limit_headers}


async def answer_chat(
    request: web.Request,
    chat: ChatRequest,
    *,
    surface: str,
    started: float,
    renderer: Callable[[Reply], StreamRenderer],
    assemble: Callable[[list[Event], str], dict[str, Any]],
    heartbeat: tuple[bytes, float] | None = None,
) -> web.StreamResponse:
    """A chat surface's answer to ``chat``: the gateway's reply as a stream (``renderer``)
    or as one body (``assemble``, given the events and the requested model)."""
    shutdown = request.app[SHUTDOWN_CUT]
    async with request.app[GATEWAY].chat(
        request[PRINCIPAL], chat, request_id=request[REQUEST_ID], started=started, surface=surface
    ) as reply:
        try:
            if chat.stream:
                return await stream_reply(request, reply, renderer(reply), heartbeat=heartbeat)
            events, whole_headers = await whole_reply(request, reply)
            return json_response(assemble(events, reply.requested_model), headers=whole_headers)
        except asyncio.CancelledError:
            if shutdown.cut:
                reply.fail()
            raise


def _mid_stream_error(exc: Exception, request_id: str) -> GatewayError:
    if isinstance(exc, UpstreamFailure):
        return client_error(exc)
    if isinstance(exc, GatewayError):
        return exc
    return InternalError(f"internal error (request id {request_id})")


async def stream_reply(
    request: web.Request,
    reply: Reply,
    renderer: StreamRenderer,
    *,
    heartbeat: tuple[bytes, float] | None = None,
) -> web.StreamResponse:
    """Send ``reply`` as SSE. ``heartbeat`` is (event, seconds): the event is sent
    whenever the stream has been silent that long, so that clients and proxies that
    time out idle connections keep waiting while the model thinks."""
    app = request.app
    metrics = app[GATEWAY].metrics
    shutdown = app[SHUTDOWN_CUT]
    spent = overhead(reply, reply.opened_at)
    # Prepared here, so the middleware cannot add the request id afterwards.
    response = web.StreamResponse(
        headers={
            **SSE_HEADERS,
            OVERHEAD_HEADER: f"{spent * 1000:.2f}",
            "X-Request-Id": request[REQUEST_ID],
            **reply.rate_limit_headers,
            # The surface's own name for the request id (the middleware's, for a body).
            **dict.fromkeys(app[SURFACES].request_id_headers(request), request[REQUEST_ID]),
        }
    )
    await response.prepare(request)
    beat = _Heartbeat(response, *heartbeat) if heartbeat else None
    # From here on bytes are out: whatever happens, the stream ends with an error event
    # and a clean end of the chunked body (SPEC §7), never a second response.
    try:
        batches = reply.batches()
        first = await anext(batches)
        await response.write(renderer.open(first))
        metrics.overhead_seconds.observe(spent)
        metrics.first_token_seconds.labels(reply.model).observe(time.perf_counter() - reply.started)
        if beat is not None:
            beat.start()
        async for events in batches:
            if beat is not None:
                beat.wrote()
            await response.write(renderer.render(events))
        if beat is not None:
            await beat.stop()
        await response.write(renderer.end())
        await response.write_eof()
        return response
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if not shutdown.cut or task is None:
            raise  # the client went away
        task.uncancel()
        reply.fail()
        if beat is not None:
            await beat.stop()
        goodbye = renderer.error(ServiceUnavailable(SHUTTING_DOWN))
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
    finally:
        if beat is not None:
            beat.cancel()
    reply.fail()
    await _end(response, renderer.error(error))
    return response


class _Heartbeat:
    """Writes ``event`` after ``every`` seconds without a write, until stopped."""

    def __init__(self, response: web.StreamResponse, event: bytes, every: float) -> None:
        self._response = response
        self._event = event
        self._every = every
        self._last = time.monotonic()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._last = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def wrote(self) -> None:
        self._last = time.monotonic()

    async def _run(self) -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                await asyncio.sleep(max(0.0, self._last + self._every - time.monotonic()))
                if time.monotonic() - self._last >= self._every:
                    self._last = time.monotonic()
                    # One write is one chunk: it never lands inside another event.
                    await self._response.write(self._event)

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        """Cancel and wait, so that no ping follows the stream's last event."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


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
    """The shutdown cut every chat surface's handlers run under."""
    app[SHUTDOWN_CUT] = ShutdownCut()
    app.on_shutdown.append(_on_shutdown)
    app.on_cleanup.append(_on_cleanup)
