"""The process's run state, shared by handlers and shutdown hooks."""

from __future__ import annotations


class Lifecycle:
    def __init__(self) -> None:
        # Set once shutdown begins: readiness answers 503, new requests are refused.
        self.draining = False
