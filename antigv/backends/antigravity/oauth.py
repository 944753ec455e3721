"""OAuth onboarding of Google accounts (SPEC §4, PROTOCOL §7).

``authorize`` stores a single-use, expiring state bound to the user and
``is_shared``. A callback (the browser's redirect, or a URL pasted by hand)
consumes that state first, whatever happens next, then:

1. exchanges the code at ``oauth.token_url`` (a refresh token is required);
2. reads the e-mail at ``oauth.userinfo_url``;
3. for an e-mail another user owns: 409; for one the same user owns: new tokens,
   nothing else changes; otherwise
4. discovers the project (``loadCodeAssist``, then ``onboardUser`` polls when
   needed) under the tier policy of PROTOCOL §7.3, reads the model quotas
   (``fetchAvailableModels``), and stores the account and its quotas in one
   transaction.

Every failure raises a typed error with the reason and stores nothing. Failures
that are about the account or the code are 4xx; Google not answering at all
(network, timeout, 5xx) is a 502/504, because trying again may work.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
import orjson
import psycopg2.errors
import structlog
from aiohttp import web

from antigv.accounting.quota_reads import store_params, window_params
from antigv.appkeys import CONFIG, DB, HTTP, TOKENS, UPSTREAM
from antigv.backends.antigravity.client import UpstreamClient
from antigv.backends.antigravity.quota import UpstreamQuotas, fetch_quotas
from antigv.backends.antigravity.tokens import AccountRevoked, RefreshFailed, expiry, request_token
from antigv.config import OAuthConfig, QuotasConfig
from antigv.core.errors import (
    Conflict,
    GatewayError,
    InvalidRequest,
    NotFound,
    Unprocessable,
    UpstreamError,
    UpstreamTimeout,
)
from antigv.core.failures import FailureKind, UpstreamFailure
from antigv.protocols.admin.views import account_view
from antigv.store.db import Database

log = structlog.get_logger(__name__)

# PROTOCOL §7.1: the scopes of the Antigravity desktop client.
SCOPES = (
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/userinfo.email",
    "https://www.googleapis.com/auth/userinfo.profile",
    "https://www.googleapis.com/auth/cclog",
    "https://www.googleapis.com/auth/experimentsandconfigs",
)
# loadCodeAssist / onboardUser metadata, as the Antigravity client sends it (PROTOCOL §7.3).
CLIENT_METADATA = {"ideType": "ANTIGRAVITY"}
# onboardUser is a long-running operation: ask again until it is done, within a bound.
# Read at call time, so tests can shorten them.
ONBOARD_MAX_POLLS = 10
ONBOARD_POLL_DELAY = 2.0

NO_REFRESH_TOKEN = (
    "no refresh token: revoke the app's access at https://myaccount.google.com/permissions and try again"
)
RESTART_HINT = "start again with POST /api/oauth/authorize"
_USERINFO_TIMEOUT = aiohttp.ClientTimeout(total=20)
_STATE_BYTES = 32
_MAX_STATE_CHARS = 200
_MAX_CALLBACK_URL_CHARS = 8192
_MAX_ECHOED_CHARS = 300
# Upstream failures where Google did not really answer: worth trying again later.
_TRANSIENT_KINDS = frozenset(
    {
        FailureKind.NETWORK,
        FailureKind.SERVER_ERROR,
        FailureKind.CAPACITY,
        FailureKind.RATE_LIMITED,
        FailureKind.QUOTA_EXHAUSTED,
    }
)


# --- authorize ------------------------------------------------------------------


def authorize_url(oauth: OAuthConfig, state: str) -> str:
    """Google's consent page for this state (PROTOCOL §7.2)."""
    query = {
        "access_type": "offline",
        "client_id": oauth.client_id,
        "prompt": "consent",
        "redirect_uri": oauth.callback_url,
        "response_type": "code",
        "scope": " ".join(SCOPES),
        "state": state,
    }
    separator = "&" if "?" in oauth.authorize_url else "?"
    return oauth.authorize_url + separator + urlencode(query)


async def create_state(db: Database, oauth: OAuthConfig, user_id: int, is_shared: int) -> dict[str, Any]:
    """A new single-use state; the answer of ``POST /api/oauth/authorize``."""
    state = secrets.token_urlsafe(_STATE_BYTES)
    await db.one("create_oauth_state", state=state, user_id=user_id, is_shared=is_shared, ttl=oauth.state_ttl)
    return {"auth_url": authorize_url(oauth, state), "state": state, "expires_in": oauth.state_ttl}


async def delete_expired_states(db: Database) -> int:
    return await db.execute("delete_expired_oauth_states")


# --- the callback's parameters ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallbackParams:
    code: str = ""
    state: str = ""
    error: str = ""
    error_description: str = ""


def callback_params(query: Mapping[str, str]) -> CallbackParams:
    """The parameters Google put on the redirect."""

    def get(name: str) -> str:
        value = query.get(name, "")
        return value.strip() if isinstance(value, str) else ""

    return CallbackParams(
        code=get("code"), state=get("state"), error=get("error"), error_description=get("error_description")
    )


def parse_callback_url(url: Any) -> CallbackParams:
    """The parameters of a redirect URL pasted by hand (the whole URL, or just its query)."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidRequest(
            "callback_url is required: paste the whole address the browser was sent to",
            param="callback_url",
        )
    url = url.strip()
    if len(url) > _MAX_CALLBACK_URL_CHARS:
        raise InvalidRequest(
            f"callback_url must be at most {_MAX_CALLBACK_URL_CHARS} characters", param="callback_url"
        )
    # A whole URL, "?code=...&state=...", or just "code=...&state=...".
    query = urlsplit(url).query if "://" in url else url.partition("?")[2] or url
    pairs: dict[str, str] = {}
    for key, value in parse_qsl(query.split("#", 1)[0], keep_blank_values=True):
        pairs.setdefault(key, value)  # the first of repeated parameters wins
    params = callback_params(pairs)
    if not params.state:
        raise InvalidRequest(
            "callback_url has no state parameter: paste the whole address the browser was sent to",
            param="callback_url",
            code="oauth_state_missing",
        )
    return params


# --- the state ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StateGrant:
    user_id: int
    is_shared: int


async def consume_state(db: Database, state: str, owner_id: int | None) -> StateGrant:
    """Take a state for this attempt: it is gone afterwards, whatever the outcome.

    ``owner_id`` limits the take to that user's states (a pasted URL); another
    user's state then answers like an unknown one and stays usable for its owner.
    """
    if not state:
        raise InvalidRequest(
            "the callback has no state parameter; " + RESTART_HINT, code="oauth_state_missing"
        )
    row = None
    if len(state) <= _MAX_STATE_CHARS:
        row = await db.one("consume_oauth_state", state=state, owner_id=owner_id)
    if row is None:
        # 404 alike for unknown, used and another user's states: nothing is revealed.
        raise NotFound(
            "unknown or already used state: each authorisation link works once; " + RESTART_HINT,
            param="state",
            code="oauth_state_invalid",
        )
    if not row["live"]:
        raise InvalidRequest(
            "the authorisation link has expired; " + RESTART_HINT, param="state", code="oauth_state_expired"
        )
    return StateGrant(user_id=row["user_id"], is_shared=row["is_shared"])


# --- Google's OAuth endpoints --------------------------------------------------------


def _echo(text: str) -> str:
    """Google's own words, shortened, for an error message (never a token)."""
    text = " ".join(text.split())
    return text if len(text) <= _MAX_ECHOED_CHARS else text[:_MAX_ECHOED_CHARS] + "…"


async def exchange_code(http: aiohttp.ClientSession, oauth: OAuthConfig, code: str) -> dict[str, Any]:
    """The token response for an authorization code; a refresh token is required."""
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": oauth.callback_url}
    try:
        body = await request_token(http, oauth, form)
    except AccountRevoked as exc:
        log.warning("oauth_exchange_failed", status=exc.status, error=exc.oauth_error)
        raise InvalidRequest(
            f"Google rejected the authorization code ({_echo(exc.reason)}); " + RESTART_HINT,
            code="oauth_code_rejected",
        ) from None
    except RefreshFailed as exc:
        # The cause, never the code or a token: the network error, or status and Google's error code.
        cause = exc.__cause__
        if isinstance(cause, aiohttp.ClientError | TimeoutError):
            log.warning("oauth_exchange_failed", network_error=f"{type(cause).__name__}: {cause}"[:300])
            raise UpstreamError(
                "Google's token endpoint could not be reached; " + RESTART_HINT, code="oauth_unreachable"
            ) from None
        log.warning("oauth_exchange_failed", status=exc.status, error=exc.oauth_error)
        detail = exc.message.removeprefix("token refresh failed:").strip()
        raise InvalidRequest(
            f"the authorization code could not be exchanged ({_echo(detail)}); " + RESTART_HINT,
            code="oauth_exchange_failed",
        ) from None
    refresh_token = body.get("refresh_token")
    if not isinstance(refresh_token, str) or not refresh_token:
        raise InvalidRequest(NO_REFRESH_TOKEN, code="no_refresh_token")
    if not isinstance(body.get("access_token"), str):
        raise InvalidRequest("Google's token response has no access token; " + RESTART_HINT)
    return body


async def read_email(http: aiohttp.ClientSession, oauth: OAuthConfig, access_token: str) -> str:
    """The Google account's e-mail, lower-cased (e-mails are compared without case)."""
    headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
    try:
        async with http.get(oauth.userinfo_url, headers=headers, timeout=_USERINFO_TIMEOUT) as response:
            raw = await response.read()
            status = response.status
    except (aiohttp.ClientError, TimeoutError):
        raise UpstreamError(
            "Google's userinfo endpoint could not be reached; " + RESTART_HINT, code="oauth_unreachable"
        ) from None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    email = body.get("email") if isinstance(body, dict) else None
    if status != 200 or not isinstance(email, str) or "@" not in email:
        raise InvalidRequest(
            f"the Google account's e-mail could not be read (HTTP {status}); " + RESTART_HINT,
            code="oauth_userinfo_failed",
        )
    return email.strip().lower()


# --- project discovery (PROTOCOL §7.3-7.4) ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Project:
    project_id: str  # '' for a paid account without one
    tier: str


def _project_id(value: Any) -> str:
    """``cloudaicompanionProject``: a string in loadCodeAssist, an object in onboardUser."""
    if isinstance(value, Mapping):
        value = value.get("id")
    return value.strip() if isinstance(value, str) else ""


def _tier_id(value: Any) -> str:
    tier = value.get("id") if isinstance(value, Mapping) else None
    return tier if isinstance(tier, str) else ""


def _ineligible(load: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(reasonCode, reasonMessage) of every ineligible tier."""
    found = []
    for tier in load.get("ineligibleTiers") or ():
        if isinstance(tier, Mapping):
            found.append((str(tier.get("reasonCode") or "UNKNOWN"), str(tier.get("reasonMessage") or "")))
    return found


def _onboarding_tier(load: Mapping[str, Any]) -> str:
    """The allowed tier marked default, else the current one, else ``free-tier``."""
    for tier in load.get("allowedTiers") or ():
        if isinstance(tier, Mapping) and tier.get("isDefault") and _tier_id(tier):
            return _tier_id(tier)
    return _tier_id(load.get("currentTier")) or "free-tier"


def _discovery_error(failure: UpstreamFailure, step: str) -> GatewayError:
    if failure.kind is FailureKind.TIMEOUT:
        return UpstreamTimeout(f"Google did not answer {step} in time; " + RESTART_HINT)
    if failure.kind in _TRANSIENT_KINDS:
        return UpstreamError(
            f"Google could not answer {step} (HTTP {failure.status}); " + RESTART_HINT,
            code="project_discovery_unavailable",
        )
    # About this account (denied, blocked, not eligible...): the user may read why.
    return Unprocessable(
        f"project discovery failed: {step} answered HTTP {failure.status}: {_echo(failure.message)}",
        code="project_discovery_failed",
    )


async def _onboard(
    upstream: UpstreamClient, access_token: str, tier_id: str, polls: int, delay: float
) -> str:
    # free-tier must not send cloudaicompanionProject (PROTOCOL §7.4); we never have one here.
    payload = {"tierId": tier_id, "metadata": CLIENT_METADATA}
    for attempt in range(polls):
        try:
            reply = await upstream.call("onboardUser", access_token, payload)
        except UpstreamFailure as failure:
            raise _discovery_error(failure, "onboardUser") from None
        if reply.get("done"):
            response = reply.get("response")
            return (
                _project_id(response.get("cloudaicompanionProject")) if isinstance(response, Mapping) else ""
            )
        if attempt + 1 < polls:
            await asyncio.sleep(delay)
    raise Unprocessable(
        f"project discovery failed: onboarding did not finish after {polls} checks; try again later",
        code="onboarding_timeout",
    )


async def discover_project(
    upstream: UpstreamClient, access_token: str, *, polls: int | None = None, delay: float | None = None
) -> Project:
    """The account's project and tier, onboarding it when needed; rejects what cannot serve.

    Policy (PROTOCOL §7.3): paid = ``paidTier.id`` without "free"; ``INELIGIBLE_ACCOUNT``
    and not paid: rejected. No project from ``loadCodeAssist``: ``onboardUser`` runs, paid
    tiers included, with the paid tier id or the default allowed tier (PROTOCOL §13.7).
    Still none: not paid is rejected; paid is stored with ``project_id = ''`` (its chats
    then carry no project).
    """
    polls = ONBOARD_MAX_POLLS if polls is None else polls
    delay = ONBOARD_POLL_DELAY if delay is None else delay
    try:
        load = await upstream.call("loadCodeAssist", access_token, {"metadata": CLIENT_METADATA})
    except UpstreamFailure as failure:
        raise _discovery_error(failure, "loadCodeAssist") from None
    paid_tier = _tier_id(load.get("paidTier"))
    paid = bool(paid_tier) and "free" not in paid_tier.lower()
    ineligible = _ineligible(load)
    for code, message in ineligible:
        if code == "INELIGIBLE_ACCOUNT" and not paid:
            raise Unprocessable(
                "this Google account is not eligible for Antigravity (INELIGIBLE_ACCOUNT"
                + (f": {_echo(message)}" if message else "")
                + ")",
                code="account_ineligible",
            )
    tier = paid_tier if paid else _tier_id(load.get("currentTier"))
    project = _project_id(load.get("cloudaicompanionProject"))
    if project:
        return Project(project, tier or _onboarding_tier(load))
    tier = paid_tier if paid else _onboarding_tier(load)
    try:
        project = await _onboard(upstream, access_token, tier, polls, delay)
    except Unprocessable as exc:
        if not paid:
            raise
        # Refused or never finished: a paid account still serves without a project.
        log.warning("paid_account_not_onboarded", tier=tier, code=exc.code)
        project = ""
    if paid:
        return Project(project, tier)
    if not project:
        code, message = ineligible[0] if ineligible else ("NO_PROJECT_AND_FREE_TIER", "")
        raise Unprocessable(
            f"this Google account has no Cloud Code project and no paid tier ({code}"
            + (f": {_echo(message)}" if message else "")
            + ")",
            code="account_unsupported",
        )
    return Project(project, tier)


async def read_quotas(
    upstream: UpstreamClient, access_token: str, project_id: str, groups: QuotasConfig
) -> UpstreamQuotas | None:
    """The account's model quotas and windows; None when the read failed (the account is
    still added, and the background loop reads them later)."""
    try:
        fetched = await fetch_quotas(upstream, access_token, project_id, groups)
    except UpstreamFailure as failure:
        log.warning("onboarding_quota_read_failed", kind=failure.kind.value, status=failure.status)
        return None
    if fetched.summary_failure is not None:
        failure = fetched.summary_failure
        log.warning("onboarding_quota_summary_failed", kind=failure.kind.value, status=failure.status)
    return fetched


# --- the callback ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    account: dict[str, Any]
    created: bool  # False: an account the user already had, with new tokens


def _owned_elsewhere(email: str) -> Conflict:
    return Conflict(f"the Google account {email} was already added by another user", code="account_exists")


async def _store(
    db: Database,
    grant: StateGrant,
    email: str,
    sealed: dict[str, Any],
    project: Project | None,
    quotas: UpstreamQuotas | None,
    groups: QuotasConfig,
) -> tuple[int, bool]:
    """One transaction: a new account and its quotas, or new tokens for the caller's own.

    ``project`` None means the e-mail was the user's own when checked: only tokens change.
    """
    async with db.transaction() as tx:
        if project is not None:
            row = await tx.one(
                "insert_account",
                user_id=grant.user_id,
                email=email,
                name=email,
                is_shared=grant.is_shared,
                project_id=project.project_id,
                tier=project.tier,
                quotas_read=quotas is not None,
                **sealed,
            )
            if row is not None:
                if quotas is not None:
                    account_id, read_at = row["account_id"], datetime.now(UTC)
                    readings = quotas.readings(groups, project.tier)
                    if readings:
                        await tx.execute("store_quota_read", **store_params(account_id, readings, read_at))
                    if quotas.windows:
                        await tx.execute(
                            "store_quota_windows", **window_params(account_id, quotas.windows, read_at)
                        )
                return row["account_id"], True
        # Already there (checked before, or inserted by a concurrent callback meanwhile).
        existing = await tx.one("lock_account_by_email", email=email)
        if existing is None:
            raise Conflict("the account was removed while it was being authorised; " + RESTART_HINT)
        if existing["user_id"] != grant.user_id:
            raise _owned_elsewhere(email)
        await tx.one("reauthorise_account", account_id=existing["account_id"], **sealed)
        return existing["account_id"], False


async def finish(app: web.Application, params: CallbackParams, *, owner_id: int | None) -> Outcome:
    """Complete an authorisation from the redirect's parameters; see the module doc."""
    db = app[DB]
    oauth = app[CONFIG].oauth
    if params.state or not params.error:
        grant = await consume_state(db, params.state, owner_id)
    if params.error:
        detail = params.error + (f": {params.error_description}" if params.error_description else "")
        raise InvalidRequest(
            f"Google did not grant access ({_echo(detail)}); " + RESTART_HINT, code="oauth_denied"
        )
    if not params.code:
        raise InvalidRequest("the callback has no code parameter; " + RESTART_HINT, code="oauth_code_missing")
    tokens = await exchange_code(app[HTTP], oauth, params.code)
    access_token = tokens["access_token"]
    email = await read_email(app[HTTP], oauth, access_token)
    known = await db.one("account_owner_by_email", email=email)
    if known is not None and known["user_id"] != grant.user_id:
        raise _owned_elsewhere(email)
    project = quotas = None
    groups = app[CONFIG].quotas
    if known is None:
        upstream = app[UPSTREAM]
        project = await discover_project(upstream, access_token)
        quotas = await read_quotas(upstream, access_token, project.project_id, groups)
    cipher = app[TOKENS].cipher
    sealed = {
        "refresh_token": cipher.seal(tokens["refresh_token"]),
        "access_token": cipher.seal(access_token),
        "expires_at": expiry(tokens),
    }
    try:
        account_id, created = await _store(db, grant, email, sealed, project, quotas, groups)
    except psycopg2.errors.ForeignKeyViolation:
        raise InvalidRequest("the user who started this authorisation no longer exists") from None
    row = await db.one("get_account", account_id=account_id, user_id=None)
    if row is None:
        raise Conflict("the account was removed while it was being authorised; " + RESTART_HINT)
    log.info("account_authorised", account_id=account_id, user_id=grant.user_id, created=created)
    return Outcome(account_view(row), created)
