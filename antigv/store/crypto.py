"""Sealing OAuth tokens at rest with AES-GCM.

Stored form: ``v1:<base64(nonce | ciphertext+tag)>`` under a key, or
``plain:<token>`` when ``security.token_encryption_key`` is empty. The prefix
lets a gateway that gains a key read the tokens it stored in clear (they are
sealed again on their next write).
"""

from __future__ import annotations

import base64
import binascii
import os

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from antigv.core.errors import Misconfigured

log = structlog.get_logger(__name__)

_SEALED = "v1:"
_PLAIN = "plain:"
_NONCE_BYTES = 12
# Binds ciphertexts to their purpose, so one cannot be swapped for another kind.
_AAD = b"antigv-token"


class TokenCipherError(Exception):
    pass


class SealedTokenError(TokenCipherError, Misconfigured):
    """A stored token this instance cannot open: the key is missing or not the one it
    was sealed with. An operator's problem, so a 503 that says what to fix, not a 500."""

    default_code = "token_key_mismatch"


KEY_HINT = (
    "the gateway cannot open its stored OAuth tokens: security.token_encryption_key is {why}; "
    "the operator must set the key that sealed them"
)


def parse_key(encoded: str) -> bytes | None:
    """The 32-byte key from its base64 form; None for an empty setting."""
    if not encoded:
        return None
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise TokenCipherError("security.token_encryption_key must be base64") from None
    if len(key) != 32:
        raise TokenCipherError("security.token_encryption_key must decode to 32 bytes")
    return key


class TokenCipher:
    def __init__(self, key: bytes | None) -> None:
        self._aead = AESGCM(key) if key else None
        # One error event per cause, not one per request that trips on it.
        self._reported: set[str] = set()

    @property
    def encrypts(self) -> bool:
        return self._aead is not None

    def seal(self, token: str) -> str:
        if self._aead is None:
            return _PLAIN + token
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, token.encode("utf-8"), _AAD)
        return _SEALED + base64.b64encode(nonce + sealed).decode("ascii")

    def open(self, stored: str) -> str:
        if stored.startswith(_PLAIN):
            return stored[len(_PLAIN) :]
        if not stored.startswith(_SEALED):
            raise TokenCipherError("stored token has an unknown format")
        if self._aead is None:
            raise self._unreadable("empty", "key_missing")
        try:
            raw = base64.b64decode(stored[len(_SEALED) :], validate=True)
            return self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _AAD).decode("utf-8")
        except (InvalidTag, binascii.Error, ValueError):
            raise self._unreadable("not the key they were sealed with", "key_mismatch") from None

    def _unreadable(self, why: str, cause: str) -> SealedTokenError:
        if cause not in self._reported:
            self._reported.add(cause)
            log.error("sealed_tokens_unreadable", cause=cause, hint="set security.token_encryption_key")
        return SealedTokenError(KEY_HINT.format(why=why))
