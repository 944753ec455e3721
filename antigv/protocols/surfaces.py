"""Which client surface a request belongs to, so that its errors are told in that surface's
shape: each surface claims its paths when it is set up (a path two surfaces serve, by a
header only one's clients send); the middleware asks here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from antigv.core.errors import GatewayError

# An error -> (HTTP status, JSON body).
ErrorShape = Callable[[GatewayError], tuple[int, dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Claim:
    prefix: str
    shape: ErrorShape
    # Headers that carry the request id besides X-Request-Id, as the surface's clients read it.
    id_headers: tuple[str, ...]
    # Only requests that carry this header, when set.
    header: str | None = None


class Surfaces:
    def __init__(self, default: ErrorShape) -> None:
        self._default = Claim("", default, ())
        self._claims: list[Claim] = []

    def claim(
        self,
        prefix: str,
        shape: ErrorShape,
        *,
        request_id_header: str | None = None,
        header: str | None = None,
    ) -> None:
        """Paths starting with ``prefix`` (only requests carrying ``header``, when given)
        answer errors in ``shape`` and, with ``request_id_header``, name the request id in
        that header too. The longest prefix wins, a header-bound claim before an open one."""
        ids = (request_id_header,) if request_id_header else ()
        self._claims.append(Claim(prefix, shape, ids, header))
        self._claims.sort(key=lambda claim: (len(claim.prefix), claim.header is not None), reverse=True)

    def owner(self, request: web.BaseRequest) -> Claim:
        """The claim that answers ``request``: its ``shape`` and ``id_headers``."""
        path, headers = request.path, request.headers
        return next(
            (
                claim
                for claim in self._claims
                if path.startswith(claim.prefix) and (claim.header is None or claim.header in headers)
            ),
            self._default,
        )

    def request_id_headers(self, request: web.BaseRequest) -> tuple[str, ...]:
        return self.owner(request).id_headers
