"""Who is calling: resolved by a surface's authentication, read by the gateway."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    """The admin (user_id None) or one user."""

    user_id: int | None
    is_admin: bool
    name: str = ""
    prefer_shared: int = 0
