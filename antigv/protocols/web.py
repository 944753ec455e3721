"""Small helpers shared by handlers: JSON in, JSON out, path and query parsing."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson
from aiohttp import web

from antigv.appkeys import CONFIG
from antigv.core.errors import GatewayError, InvalidRequest, NotFound, PayloadTooLarge, RequestTimeout

# Ids are bigint: 1 to 18 ASCII digits cannot overflow it (str.isdigit would admit '²').
_ID_RE = re.compile(r"^[0-9]{1,18}$")
_INT_RE = re.compile(r"^-?[0-9]{1,19}$")
JSON_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC


def dumps(data: Any) -> bytes:
    return orjson.dumps(data, option=JSON_OPTIONS)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=dumps(data), status=status, content_type="application/json", headers=headers)


def api_ok(data: Any, message: str | None = None) -> web.Response:
    """The ``/api/*`` success envelope (SPEC §2)."""
    body: dict[str, Any] = {"success": True, "data": data}
    if message:
        body["message"] = message
    return json_response(body)


async def read_body(request: web.Request) -> bytes:
    """The raw body; one larger than ``security.max_request_size`` is a 413 that says the limit,
    one slower than ``server.body_timeout`` a 408, one that cannot be decoded a 400."""
    config = request.app[CONFIG]
    try:
        async with asyncio.timeout(config.server.body_timeout):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        limit = config.security.max_request_size
        raise PayloadTooLarge(
            f"request body is larger than {limit}, the limit of this gateway (security.max_request_size)"
        ) from None
    except TimeoutError:
        error: GatewayError = RequestTimeout(
            f"the request body did not arrive within {config.server.body_timeout:g} s (server.body_timeout)"
        )
    except web.RequestPayloadError:
        # A body its Content-Encoding does not describe (a plain body sent as gzip), broken
        # chunking or a cut-off body. aiohttp's text is not echoed: it may quote the input.
        if request.headers.get("Content-Encoding"):
            error = InvalidRequest(
                "request body could not be decoded as its Content-Encoding header says",
                code="invalid_body_encoding",
            )
        else:
            error = InvalidRequest("request body could not be read", code="invalid_body")
    # The rest of the body is unread or unreadable: the connection ends with this answer.
    error.close_connection = True
    raise error


async def read_json(request: web.Request) -> Any:
    """The decoded body; malformed JSON is a 400, an oversized body a 413."""
    raw = await read_body(request)
    if not raw:
        raise InvalidRequest("request body is empty; send a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc.msg}") from None


async def read_json_object(request: web.Request, *, empty_ok: bool = False) -> dict[str, Any]:
    """A JSON object body; with ``empty_ok`` an absent body counts as ``{}``."""
    if empty_ok and not await read_body(request):
        return {}
    body = await read_json(request)
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    return body


def reject_unknown_fields(body: dict[str, Any], known: tuple[str, ...]) -> None:
    """A field the endpoint does not take is a 400 naming it (a typo must not pass silently)."""
    unknown = sorted(key for key in body if key not in known)
    if unknown:
        raise InvalidRequest(
            f"unknown field {unknown[0]!r}; this endpoint takes {', '.join(known)}", param=unknown[0]
        )


def path_id(request: web.Request, name: str = "id") -> int:
    """A numeric id from the path; anything malformed is a 404, as SPEC §3 asks."""
    raw = request.match_info.get(name, "")
    if not _ID_RE.match(raw):
        raise NotFound("not found")
    return int(raw)


def query_id(request: web.Request, key: str) -> int | None:
    """An id from the query string; None when absent, a 400 naming it when malformed."""
    raw = request.query.get(key, "").strip()
    if not raw:
        return None
    if not _ID_RE.match(raw):
        raise InvalidRequest(f"{key} must be a positive integer id", param=key)
    return int(raw)


def flag(body: dict[str, Any], key: str, *, required: bool = True, default: int = 0) -> int:
    """A 0/1 field (true/false accepted too)."""
    if key not in body:
        if required:
            raise InvalidRequest(f"{key} is required (0 or 1)", param=key)
        return default
    value = body[key]
    if isinstance(value, bool):
        return int(value)
    if value in (0, 1) and isinstance(value, int):
        return value
    raise InvalidRequest(f"{key} must be 0 or 1", param=key)


def optional_str(body: dict[str, Any], key: str, *, max_len: int = 200, default: str = "") -> str:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise InvalidRequest(f"{key} must be a string", param=key)
    value = value.strip()
    if "\x00" in value:
        raise InvalidRequest(f"{key} must not contain NUL characters", param=key)
    if len(value) > max_len:
        raise InvalidRequest(f"{key} must be at most {max_len} characters", param=key)
    return value


def query_int(request: web.Request, key: str, *, default: int, minimum: int, maximum: int) -> int:
    return parse_int(request.query.get(key), key, default=default, minimum=minimum, maximum=maximum)


def parse_int(raw: str | None, key: str, *, default: int, minimum: int, maximum: int) -> int:
    """A query parameter's integer within bounds; ``default`` when absent, else a 400 naming ``key``."""
    if raw is None or raw == "":
        return default
    if not _INT_RE.match(raw):
        raise InvalidRequest(f"{key} must be an integer", param=key)
    value = int(raw)
    if not minimum <= value <= maximum:
        raise InvalidRequest(f"{key} must be between {minimum} and {maximum}", param=key)
    return value
