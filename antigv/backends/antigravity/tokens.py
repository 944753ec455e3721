"""Access tokens: refreshed ahead of expiry, at most one refresh per account at a time.

In-process, concurrent callers share one refresh future. Across instances, the
refresh runs under a lease on the account row (``refresh_lease_until``, taken by
a conditional UPDATE and cleared when the outcome is stored): an instance that
finds the lease taken waits for the token the holder stores and uses it.

No database connection is held while Google answers (issue 11 item 16): a slow
token endpoint must not take the pool from unrelated requests and readiness.
Every statement here is short; the wait for another instance's refresh polls.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import structlog
from aiohttp import web

from antigv.appkeys import CONFIG, DB, TOKENS
from antigv.config import OAuthConfig
from antigv.core.errors import UpstreamError
from antigv.store.crypto import TokenCipher
from antigv.store.db import Database

log = structlog.get_logger(__name__)

# The hot path refreshes a token that expires sooner than this.
HOT_PATH_SKEW = timedelta(seconds=60)
_BACKOFF_BASE = 30.0
_BACKOFF_MAX = 1800.0
_TOKEN_TIMEOUT = aiohttp.ClientTimeout(total=20)
# Longer than a token request can take (_TOKEN_TIMEOUT): a lease whose holder died runs out.
REFRESH_LEASE = 30.0
# While another instance holds the lease: first look again after this long, then less often.
LEASE_POLL_FIRST = 0.05
LEASE_POLL_MAX = 1.0


class AccountRevoked(Exception):
    """The refresh token is dead (``invalid_grant``): the account must be disabled."""

    # What the token endpoint answered, for the log: HTTP status and OAuth error code.
    status: int | None = None
    oauth_error: str = ""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RefreshFailed(UpstreamError):
    """A transient refresh failure: try another account, retry this one later."""

    # As AccountRevoked's; both None/"" when the endpoint could not be reached.
    status: int | None = None
    oauth_error: str = ""


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
    failure: AccountRevoked | RefreshFailed
    if error in ("invalid_grant", "unauthorized_client", "invalid_client") and status in (400, 401):
        failure = AccountRevoked(f"{error}: {description}")
    else:
        failure = RefreshFailed(f"token refresh failed: {error or status} {description}".strip())
    failure.status, failure.oauth_error = status, error[:100]
    raise failure


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
            token = await self._refresh_leased(account_id, stale, ahead)
            future.set_result(token)
            return token
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # a failure nobody else awaited is not "never retrieved"
            raise
        finally:
            del self._inflight[account_id]

    async def _refresh_leased(self, account_id: int, stale: str, ahead: timedelta) -> str:
        lease, token = await self._lease(account_id, stale, ahead)
        if token is not None:
            return token
        assert lease is not None
        try:
            body = await request_token(
                self._http,
                self._oauth,
                {"grant_type": "refresh_token", "refresh_token": self.open(lease["refresh_token"])},
            )
        except AccountRevoked as exc:
            # Both outcome statements clear the lease as well.
            await self._db.execute("disable_account", account_id=account_id, reason=exc.reason)
            log.warning("account_disabled", account_id=account_id, reason=exc.reason)
            self._notify(account_id, "revoked")
            raise
        except RefreshFailed:
            self._notify(account_id, "failed")
            backoff = min(_BACKOFF_MAX, _BACKOFF_BASE * 2 ** min(lease["refresh_failures"], 6))
            await self._db.execute("note_refresh_failure", account_id=account_id, backoff=backoff)
            log.warning("token_refresh_failed", account_id=account_id, retry_in=backoff)
            raise
        except BaseException:
            # Cancelled (or broken) mid-call: let the next caller, here or elsewhere, try at once.
            # If even that fails, the lease runs out by itself.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._db.execute("release_refresh_lease", account_id=account_id))
            raise
        rotated = body.get("refresh_token")
        await self._db.execute(
            "store_refreshed_tokens",
            account_id=account_id,
            access_token=self._cipher.seal(body["access_token"]),
            expires_at=expiry(body),
            refresh_token=self._cipher.seal(rotated) if rotated else None,
        )
        log.info("token_refreshed", account_id=account_id, rotated=bool(rotated))
        self._notify(account_id, "ok")
        return body["access_token"]

    async def _lease(
        self, account_id: int, stale: str, ahead: timedelta
    ) -> tuple[dict[str, Any] | None, str | None]:
        """Take the account's refresh lease: ``(lease row, None)``; or, when another caller
        refreshed it meanwhile, ``(None, its token)``. Waits while another instance holds it."""
        poll = LEASE_POLL_FIRST
        while True:
            row = await self._db.one("take_refresh_lease", account_id=account_id, lease=REFRESH_LEASE)
            if row is not None:
                if self._fresh(row, stale, ahead):
                    await self._db.execute("release_refresh_lease", account_id=account_id)
                    return None, self.open(row["access_token"])
                return row, None
            state = await self._db.one("account_token_state", account_id=account_id)
            if state is None or state["status"] != 1:
                raise RefreshFailed("account is no longer available")
            if self._fresh(state, stale, ahead):
                return None, self.open(state["access_token"])
            await asyncio.sleep(poll)
            poll = min(LEASE_POLL_MAX, poll * 2)

    @staticmethod
    def _fresh(row: dict[str, Any], stale: str, ahead: timedelta) -> bool:
        """Someone else refreshed it: the stored token is another one, and still valid."""
        expires_at = row["access_token_expires_at"]
        valid = expires_at is not None and expires_at - datetime.now(UTC) > ahead
        return valid and bool(row["access_token"]) and row["access_token"] != stale


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
