"""Serving the app: aiohttp's runner and site, with HTTP-level errors in OpenAI's shape.

A request aiohttp's parser refuses (an over-long or malformed header, broken chunking, an
unknown method) never reaches the app or its middlewares: aiohttp answers it itself, in
``text/plain``, quoting the offending bytes (a header line with its API key). aiohttp has
no public hook for that answer, so the server's connection handler is aiohttp's own with
``handle_error`` replaced (issue 11 #18). aiohttp is pinned in ``deploy/constraints.txt``
and ``tests/test_serving.py`` checks the answer, so an upgrade that changes this fails there.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any

from aiohttp import web

from antigv.protocols.web import json_response


def protocol_error_body(status: int) -> dict[str, object]:
    """What a client gets for a request that is not valid HTTP: the status, never its bytes."""
    client_side = 400 <= status < 500
    try:
        phrase = HTTPStatus(status).phrase.lower()
    except ValueError:
        phrase = "bad request" if client_side else "internal error"
    return {
        "error": {
            "message": f"the request is not valid HTTP ({phrase})" if client_side else "internal error",
            "type": "invalid_request_error" if client_side else "server_error",
            "code": "bad_http_request" if client_side else "internal_error",
            "param": None,
        }
    }


class _RequestHandler(web.RequestHandler):
    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp's own logs the error (antigv.ops.logs keeps its class and status only) and
        # refuses when a response has started; its text answer is replaced.
        super().handle_error(request, status, exc, None)
        response = json_response(protocol_error_body(status), status=status)
        response.force_close()
        return response


class _Server(web.Server):
    def __call__(self) -> web.RequestHandler:
        return _RequestHandler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer HTTP-level errors as the app answers its own."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The server aiohttp made for the app, as it made it; only its connections differ.
        server.__class__ = _Server
        return server


async def serve(
    app: web.Application,
    host: str,
    port: int,
    *,
    reuse_port: bool,
    shutdown_timeout: float,
    listening: Callable[[], None],
) -> None:
    """Serve ``app`` until cancelled; then drain within ``shutdown_timeout``. A port that
    cannot be bound raises OSError."""
    runner = GatewayRunner(
        app,
        handle_signals=True,  # SIGINT/SIGTERM raise web.GracefulExit in the loop
        shutdown_timeout=shutdown_timeout,
        access_log=None,  # the request middleware logs each request once
        # A client that goes away cancels its handler, which aborts the upstream call.
        handler_cancellation=True,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_port=reuse_port or None).start()
        listening()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def run(main: Coroutine[Any, Any, None], loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Run ``main`` (:func:`serve`) until SIGINT or SIGTERM, then let it drain, as
    ``web.run_app`` does; what ``main`` raises (OSError for a port in use) propagates."""
    loop = loop or asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    task = loop.create_task(main)
    try:
        loop.run_until_complete(task)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        try:
            if not task.done():
                task.cancel()  # runs the runner's cleanup: the drain
                with contextlib.suppress(asyncio.CancelledError):
                    loop.run_until_complete(task)
        finally:
            rest = asyncio.all_tasks(loop)
            for other in rest:
                other.cancel()
            loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
