"""What a request to no endpoint probably meant (issue 11 #9).

The usual mistakes: an OpenAI client whose base URL lacks ``/v1`` (or has it twice),
and a trailing slash. The routes are the app's own, so the hints follow them.
"""

from __future__ import annotations

from aiohttp import web

from antigv.core.errors import NotFound

_MISSING_V1 = "the API is under /v1: a client's base URL ends in /v1"
_DOUBLE_V1 = "the client's base URL already ends in /v1"
_TRAILING_SLASH = "without the trailing slash"


def _exists(app: web.Application, path: str) -> bool:
    for resource in app.router.resources():
        info = resource.get_info()
        if info.get("path") == path:
            return True
        pattern = info.get("pattern")
        if pattern is not None and pattern.fullmatch(path):
            return True
    return False


def suggestion(app: web.Application, path: str) -> tuple[str, str] | None:
    """(path meant, why) for a path no route matches, or None when nothing close exists."""
    trimmed = path.rstrip("/") or "/"
    candidates = []
    if trimmed.startswith("/v1/v1/"):
        candidates.append((trimmed[len("/v1") :], _DOUBLE_V1))
    if trimmed != path:
        candidates.append((trimmed, _TRAILING_SLASH))
    if not trimmed.startswith("/v1/"):
        candidates.append(("/v1" + trimmed, _MISSING_V1))
    return next(((meant, why) for meant, why in candidates if _exists(app, meant)), None)


def no_such_endpoint(request: web.Request) -> NotFound:
    found = suggestion(request.app, request.path)
    if found is None:
        return NotFound("no such endpoint", code="unknown_route")
    meant, why = found
    return NotFound(f"no such endpoint; did you mean {meant}? ({why})", code="unknown_route")
