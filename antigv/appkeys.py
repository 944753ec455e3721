"""Typed application keys and the per-request principal."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from aiohttp import web

from antigv.config import Config
from antigv.store.db import Database


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the admin (user_id None) or one user."""

    user_id: int | None
    is_admin: bool
    name: str = ""
    prefer_shared: int = 0


CONFIG = web.AppKey("config", Config)
DB = web.AppKey("db", Database)
HTTP = web.AppKey("http", aiohttp.ClientSession)


class Lifecycle:
    """Mutable run state shared by handlers and shutdown hooks."""

    def __init__(self) -> None:
        # Set once shutdown begins: readiness answers 503, new requests are refused.
        self.draining = False


LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
PRINCIPAL = web.RequestKey("principal", Principal)
