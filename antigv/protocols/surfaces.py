"""Which client surface a path belongs to, so that its errors are told in that surface's
shape: each surface claims its paths when it is set up; the middleware asks here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from antigv.core.errors import GatewayError

# An error -> (HTTP status, JSON body).
ErrorShape = Callable[[GatewayError], tuple[int, dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class _Claim:
    prefix: str
    shape: ErrorShape
    # Headers that carry the request id besides X-Request-Id, as the surface's clients read it.
    id_headers: tuple[str, ...]


class Surfaces:
    def __init__(self, default: ErrorShape) -> None:
        self._default = _Claim("", default, ())
        self._claims: list[_Claim] = []

    def claim(self, prefix: str, shape: ErrorShape, *, request_id_header: str | None = None) -> None:
        """Paths starting with ``prefix`` answer errors in ``shape`` (the longest claim wins)
        and, with ``request_id_header``, name the request id in that header too."""
        self._claims.append(_Claim(prefix, shape, (request_id_header,) if request_id_header else ()))
        self._claims.sort(key=lambda claim: len(claim.prefix), reverse=True)

    def _owner(self, path: str) -> _Claim:
        return next((claim for claim in self._claims if path.startswith(claim.prefix)), self._default)

    def error_shape(self, path: str) -> ErrorShape:
        return self._owner(path).shape

    def request_id_headers(self, path: str) -> tuple[str, ...]:
        return self._owner(path).id_headers
