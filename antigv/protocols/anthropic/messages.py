"""Anthropic's Messages API (issue 13): ``POST /v1/messages`` streamed or not,
``POST /v1/messages/count_tokens``, and the ``HEAD /`` Claude Code sends first.

Everything but the wire shape is the gateway's, as for chat completions.
"""

from __future__ import annotations

import time

from aiohttp import web

from antigv.appkeys import CONFIG, GATEWAY, PRINCIPAL, SHUTDOWN_CUT, SURFACES
from antigv.core.conversation import ChatRequest
from antigv.core.estimate import estimate_input_tokens
from antigv.core.events import Usage
from antigv.gateway.service import Reply
from antigv.protocols.anthropic.errors import anthropic_error
from antigv.protocols.anthropic.parse import parse_count_tokens_request, parse_messages_request
from antigv.protocols.anthropic.render import PING, StreamRenderer, assemble_message
from antigv.protocols.auth import PUBLIC, access
from antigv.protocols.streaming import answer_chat
from antigv.protocols.web import json_response, read_json

SURFACE = "messages"
PREFIX = "/v1/messages"
# Anthropic's SDKs read the request id from this header (Claude Code shows it in errors).
REQUEST_ID_HEADER = "request-id"
# Whether count_tokens asked the upstream or estimated (core/estimate.py).
COUNT_SOURCE_HEADER = "x-antigv-token-count"


async def messages(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    with request.app[SHUTDOWN_CUT].tracking():
        chat = parse_messages_request(await read_json(request))
        every = request.app[CONFIG].server.stream_ping_interval
        return await answer_chat(
            request,
            chat,
            surface=SURFACE,
            started=started,
            renderer=lambda reply: StreamRenderer(reply.requested_model, lambda: _input_usage(reply, chat)),
            assemble=assemble_message,
            heartbeat=(PING, every) if every > 0 else None,
        )


def _input_usage(reply: Reply, chat: ChatRequest) -> Usage:
    """What ``message_start`` says of the prompt: the upstream's count when its first frames
    carried one, else the stated estimate (core/estimate.py); ``message_delta`` has the count."""
    usage = reply.upstream.usage
    return usage if usage.prompt_tokens else Usage(prompt_tokens=estimate_input_tokens(chat))


async def count_tokens(request: web.Request) -> web.Response:
    chat = parse_count_tokens_request(await read_json(request))
    tokens, counted = await request.app[GATEWAY].count_tokens(request[PRINCIPAL], chat)
    return json_response(
        {"input_tokens": tokens}, headers={COUNT_SOURCE_HEADER: "upstream" if counted else "estimate"}
    )


@access(PUBLIC)
async def root(request: web.Request) -> web.Response:
    """``GET /`` and ``HEAD /``: Claude Code's connectivity check before its first request,
    and a pointer for a person who opens the server's address."""
    return json_response(
        {"service": "antigv", "endpoints": ["/v1/chat/completions", "/v1/messages", "/v1/models"]}
    )


def setup(app: web.Application) -> None:
    app[SURFACES].claim(PREFIX, anthropic_error, request_id_header=REQUEST_ID_HEADER)
    app.router.add_post(PREFIX, messages)
    app.router.add_post(PREFIX + "/count_tokens", count_tokens)
    app.router.add_get("/", root)
