"""A stated estimate of a request's input tokens, for when the upstream cannot count them:
about four characters of text (system, turns, tool definitions) per token, and a flat
count per image. Pure."""

from __future__ import annotations

import math

import orjson

from antigv.core.conversation import ChatRequest, Image, Text, Thinking, ToolResult, ToolUse

CHARS_PER_TOKEN = 4
# Gemini bills an image of up to 384x384 px as 258 tokens; larger ones as tiles of that.
TOKENS_PER_IMAGE = 258


def estimate_input_tokens(request: ChatRequest) -> int:
    chars = sum(len(text) for text in request.system)
    images = 0
    for turn in request.turns:
        for part in turn.parts:
            if isinstance(part, Text | Thinking):
                chars += len(part.text)
            elif isinstance(part, Image):
                images += 1
            elif isinstance(part, ToolUse):
                chars += len(part.name) + len(orjson.dumps(dict(part.input)))
            elif isinstance(part, ToolResult):
                chars += len(part.text)
                images += sum(isinstance(item, Image) for item in part.content)
    for tool in request.tools:
        chars += len(tool.name) + len(tool.description or "") + len(orjson.dumps(tool.parameters or {}))
    return math.ceil(chars / CHARS_PER_TOKEN) + images * TOKENS_PER_IMAGE
