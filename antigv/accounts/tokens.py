"""Access tokens: refreshed ahead of expiry, at most one refresh per account at a time.

In-process, concurrent callers share one refresh future. Across instances, the
refresh runs under a row lock (``SELECT ... FOR UPDATE``): an instance that
waited on the lock finds the token already fresh and uses it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import structlog
from aiohttp import web

from ..config import OAuthConfig
from ..crypto import TokenCipher
from ..db import Database
from ..errors import UpstreamError
from ..state import CONFIG, DB

log = structlog.get_logger(__name__)

# The hot path refreshes a token that expires sooner than this.
HOT_PATH_SKEW = timedelta(seconds=60)
_BACKOFF_BASE = 30.0
_BACKOFF_MAX = 1800.0
_TOKEN_TIMEOUT = aiohttp.ClientTimeout(total=20)


class AccountRevoked(Exception):
    """The refresh token is dead (``invalid_grant``): the account must be disabled."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RefreshFailed(UpstreamError):
    """A transient refresh failure: try another account, retry this one later."""


async def request_token(
    http: aiohttp.ClientSession, oauth: OAuthConfig, form: dict[str, str]
) -> dict[str, Any]:
    """POST to the token endpoint. Raises AccountRevoked or RefreshFailed."""
    payload = {"client_id": oauth.client_id, "client_secret": oauth.client_secret, **form}
    try:
        async with http.post(oauth.token_url, data=payload, timeout=_TOKEN_TIMEOUT) as response:
            raw = await response.read()
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise RefreshFailed(f"token endpoint unreachable: {type(exc).__name__}") from exc
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    if status == 200 and body.get("access_token"):
        return body
    error = str(body.get("error", ""))
    description = str(body.get("error_description", "")) or f"HTTP {status}"
    if error in ("invalid_grant", "unauthorized_client", "invalid_client") and status in (400, 401):
        raise AccountRevoked(f"{error}: {description}")
    raise RefreshFailed(f"token refresh failed: {error or status} {description}".strip())


def expiry(body: dict[str, Any], now: datetime | None = None) -> datetime:
    seconds = body.get("expires_in")
    seconds = seconds if isinstance(seconds, int | float) and seconds > 0 else 3600
    return (now or datetime.now(UTC)) + timedelta(seconds=seconds)


class TokenManager:
    def __init__(
        self, db: Database, http: aiohttp.ClientSession, oauth: OAuthConfig, cipher: TokenCipher
    ) -> None:
        self._db = db
        self._http = http
        self._oauth = oauth
        self._cipher = cipher
        self._inflight: dict[int, asyncio.Future[str]] = {}
        # Told of every refresh attempt: (account id, "ok" | "revoked" | "failed").
        self.listeners: list[Callable[[int, str], None]] = []
        # Decrypting on every request is cheap but not free; cache by stored value.
        self._opened: dict[str, str] = {}

    @property
    def cipher(self) -> TokenCipher:
        """The cipher that seals tokens at rest (OAuth onboarding stores new ones)."""
        return self._cipher

    def _notify(self, account_id: int, outcome: str) -> None:
        for listener in self.listeners:
            listener(account_id, outcome)

    def open(self, stored: str) -> str:
        token = self._opened.get(stored)
        if token is None:
            token = self._cipher.open(stored) if stored else ""
            if len(self._opened) > 4096:
                self._opened.clear()
            self._opened[stored] = token
        return token

    async def access_token(self, account: dict[str, Any], *, now: datetime | None = None) -> str:
        """A usable access token for a candidate row, refreshing it when close to expiry."""
        expires_at = account.get("access_token_expires_at")
        now = now or datetime.now(UTC)
        if account.get("access_token") and expires_at is not None and expires_at - now > HOT_PATH_SKEW:
            return self.open(account["access_token"])
        return await self.refresh(account["account_id"], stale=account.get("access_token") or "")

    async def refresh(self, account_id: int, *, stale: str = "", ahead: timedelta = HOT_PATH_SKEW) -> str:
        """Refresh once, however many callers ask at the same moment.

        ``stale`` is the stored token the caller saw; if the row holds another
        one that is still valid, someone else refreshed it and it is used as is.
        """
        running = self._inflight.get(account_id)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._inflight[account_id] = future
        try:
            token = await self._refresh_locked(account_id, stale, ahead)
            future.set_result(token)
            return token
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # a failure nobody else awaited is not "never retrieved"
            raise
        finally:
            del self._inflight[account_id]

    async def _refresh_locked(self, account_id: int, stale: str, ahead: timedelta) -> str:
        failure: AccountRevoked | RefreshFailed | None = None
        async with self._db.transaction() as tx:
            row = await tx.one("lock_account_tokens", account_id=account_id)
            if row is None or row["status"] != 1:
                raise RefreshFailed("account is no longer available")
            now = datetime.now(UTC)
            expires_at = row["access_token_expires_at"]
            fresh = expires_at is not None and expires_at - now > ahead
            if fresh and row["access_token"] and row["access_token"] != stale:
                return self.open(row["access_token"])
            try:
                body = await request_token(
                    self._http,
                    self._oauth,
                    {"grant_type": "refresh_token", "refresh_token": self.open(row["refresh_token"])},
                )
            except (AccountRevoked, RefreshFailed) as exc:
                failure = exc
            else:
                rotated = body.get("refresh_token")
                await tx.execute(
                    "store_refreshed_tokens",
                    account_id=account_id,
                    access_token=self._cipher.seal(body["access_token"]),
                    expires_at=expiry(body, now),
                    refresh_token=self._cipher.seal(rotated) if rotated else None,
                )
                log.info("token_refreshed", account_id=account_id, rotated=bool(rotated))
                self._notify(account_id, "ok")
                return body["access_token"]
        # Outcomes are written after the lock's transaction, which has nothing to keep.
        if isinstance(failure, AccountRevoked):
            await self._db.execute("disable_account", account_id=account_id, reason=failure.reason)
            log.warning("account_disabled", account_id=account_id, reason=failure.reason)
            self._notify(account_id, "revoked")
        else:
            self._notify(account_id, "failed")
            backoff = min(_BACKOFF_MAX, _BACKOFF_BASE * 2 ** min(row["refresh_failures"], 6))
            await self._db.execute("note_refresh_failure", account_id=account_id, backoff=backoff)
            log.warning("token_refresh_failed", account_id=account_id, retry_in=backoff)
        raise failure


TOKENS = web.AppKey("tokens", TokenManager)


async def refresh_due_tokens(app: web.Application) -> int:
    """Background task: refresh every token that expires within ``tasks.refresh_ahead``."""
    ahead = timedelta(seconds=app[CONFIG].tasks.refresh_ahead)
    due = await app[DB].all("accounts_due_for_refresh", ahead=ahead.total_seconds(), limit=200)
    refreshed = 0
    for row in due:
        try:
            await app[TOKENS].refresh(row["account_id"], ahead=ahead)
            refreshed += 1
        except (AccountRevoked, RefreshFailed):
            continue  # already recorded on the account; the loop goes on
    return refreshed
