"""Checks every client surface makes of a decoded JSON body: each failure is an
:class:`InvalidRequest` naming the field (its ``param``). Pure."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from antigv.core.conversation import Tool
from antigv.core.errors import InvalidRequest

# Bounds on the work one request may cause (issue 11 #12): far above any real
# conversation, low enough that translating the largest accepted body takes milliseconds.
MAX_MESSAGES = 10_000
MAX_TOOLS = 512
# Gemini takes at most five stop sequences; more would be a 400 from the upstream.
MAX_STOP_SEQUENCES = 5
# Client JSON that is re-encoded upstream (tool-call arguments, tool and response
# schemas) may nest this deep: orjson refuses to encode past 255 levels and the
# upstream envelope wraps such values in about ten more.
MAX_JSON_DEPTH = 128

_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
IMAGE_MIME_TYPES = {
    "jpeg": "image/jpeg",
    "jpg": "image/jpeg",
    "png": "image/png",
    "gif": "image/gif",
    "webp": "image/webp",
}


def fail(message: str, param: str | None) -> NoReturn:
    raise InvalidRequest(message, param=param)


def number(value: object, param: str, accept: Callable[[float], bool], expected: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not accept(value):
        fail(f"{param} must be {expected}", param)
    return value


def integer(value: object, param: str, accept: Callable[[int], bool], expected: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not accept(value):
        fail(f"{param} must be {expected}", param)
    return value


def positive_int(value: object, param: str) -> int | None:
    return integer(value, param, lambda v: v > 0, "a positive integer")


def boolean(value: object, param: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        fail(f"{param} must be a boolean", param)
    return value


def non_empty_string(value: object, param: str) -> str:
    if not isinstance(value, str) or not value:
        fail(f"{param} must be a non-empty string", param)
    return value


def optional_string(value: object, param: str) -> str | None:
    if value is not None and not isinstance(value, str):
        fail(f"{param} must be a string", param)
    return value


def _too_deep(value: object) -> bool:
    """Whether ``value`` nests more than MAX_JSON_DEPTH arrays/objects (iterative: no recursion limit)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > MAX_JSON_DEPTH:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def check_depth(value: object, param: str) -> None:
    if _too_deep(value):
        fail(f"{param} nests deeper than {MAX_JSON_DEPTH} levels", param)


def looks_like_base64(data: str) -> bool:
    """Length, alphabet and padding only: decoding megabytes on every request costs too much."""
    if not data or len(data) % 4 or not data.isascii():
        return False
    encoded = data.encode("ascii")
    # bytes.translate is several times faster than a regex over megabytes.
    padding = encoded.translate(None, _BASE64_ALPHABET)
    return padding in (b"", b"=", b"==") and encoded.endswith(padding)


def named_tool(name: str, tools: Sequence[Tool], param: str) -> str:
    """``name``, which a tool choice names: one of ``tools``, else a 400 naming ``param``."""
    if all(tool.name != name for tool in tools):
        fail(f"{param.split('.')[0]} names {name!r}, which is not among the tools", param)
    return name
