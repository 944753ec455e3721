"""``POST /v1/chat/completions``: the gateway's events, rendered as SSE chunks or one JSON body."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from antigv.appkeys import GATEWAY, PRINCIPAL, REQUEST_ID, SHUTDOWN_CUT
from antigv.protocols.openai.parse import include_usage, parse_chat_request
from antigv.protocols.openai.render import StreamRenderer, assemble_completion
from antigv.protocols.streaming import stream_reply, whole_reply
from antigv.protocols.web import json_response, read_json

SURFACE = "chat_completions"


async def chat_completions(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    shutdown = request.app[SHUTDOWN_CUT]
    with shutdown.tracking():
        body = await read_json(request)
        chat = parse_chat_request(body)
        async with request.app[GATEWAY].chat(
            request[PRINCIPAL], chat, request_id=request[REQUEST_ID], started=started, surface=SURFACE
        ) as reply:
            try:
                if chat.stream:
                    renderer = StreamRenderer(reply.requested_model, include_usage(body))
                    return await stream_reply(request, reply, renderer)
                events, headers = await whole_reply(request, reply)
                return json_response(assemble_completion(events, reply.requested_model), headers=headers)
            except asyncio.CancelledError:
                if shutdown.cut:
                    reply.fail()
                raise


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
