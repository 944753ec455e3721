"""API keys: generation, digests, constant-time admin check."""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_PREFIX = "sk-"
# token_urlsafe(36) yields exactly 48 URL-safe characters.
_KEY_BYTES = 36
DISPLAY_PREFIX_LEN = 10


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(_KEY_BYTES)


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def display_prefix(key: str) -> str:
    return key[:DISPLAY_PREFIX_LEN]


def is_admin_key(candidate: str, admin_key: str) -> bool:
    return hmac.compare_digest(candidate.encode("utf-8"), admin_key.encode("utf-8"))
