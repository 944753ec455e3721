"""Which client surface a path belongs to, so that its errors are told in that surface's
shape: each surface claims its paths when it is set up; the middleware asks here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from antigv.core.errors import GatewayError

# An error -> (HTTP status, JSON body).
ErrorShape = Callable[[GatewayError], tuple[int, dict[str, Any]]]


class Surfaces:
    def __init__(self, default: ErrorShape) -> None:
        self._default = default
        self._claims: list[tuple[str, ErrorShape]] = []

    def claim(self, prefix: str, shape: ErrorShape) -> None:
        """Paths starting with ``prefix`` answer errors in ``shape`` (the longest claim wins)."""
        self._claims.append((prefix, shape))
        self._claims.sort(key=lambda claim: len(claim[0]), reverse=True)

    def error_shape(self, path: str) -> ErrorShape:
        return next((shape for prefix, shape in self._claims if path.startswith(prefix)), self._default)
