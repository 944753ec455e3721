"""``POST /v1/chat/completions``: the gateway's events, rendered as SSE chunks or one JSON body."""

from __future__ import annotations

import time

from aiohttp import web

from antigv.appkeys import SHUTDOWN_CUT
from antigv.protocols.openai.parse import include_usage, parse_chat_request
from antigv.protocols.openai.render import StreamRenderer, assemble_completion
from antigv.protocols.streaming import answer_chat
from antigv.protocols.web import read_json

SURFACE = "chat_completions"


async def chat_completions(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    with request.app[SHUTDOWN_CUT].tracking():
        body = await read_json(request)
        chat = parse_chat_request(body)
        return await answer_chat(
            request,
            chat,
            surface=SURFACE,
            started=started,
            renderer=lambda reply: StreamRenderer(reply.requested_model, include_usage(body)),
            assemble=assemble_completion,
        )


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
