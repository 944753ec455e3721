"""Calls to the upstream ``v1internal`` API over the app's one ClientSession.

Tries the configured base URLs in order on connect errors and on the statuses
PROTOCOL §1.1 recommends (not a 404: §13.9); separate connect, first-byte and idle
timeouts, and a cap on a stream's whole length.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import aiohttp
import orjson
import structlog

from antigv.backends.antigravity.identity import ClientIdentity
from antigv.backends.google.failures import classify_error
from antigv.backends.google.stream import UpstreamStream, read_json_reply
from antigv.config import UpstreamConfig
from antigv.core.failures import FailureKind, UpstreamFailure

log = structlog.get_logger(__name__)

# Another host may answer where this one failed for these reasons; a quota or a
# bad request is the same everywhere, and a 404 is the version gate or the model,
# not the host (PROTOCOL §13.2, §13.9): it costs one call.
_NEXT_HOST_KINDS = frozenset({FailureKind.NETWORK, FailureKind.SERVER_ERROR, FailureKind.PERMISSION_DENIED})


class UpstreamClient:
    def __init__(
        self, session: aiohttp.ClientSession, config: UpstreamConfig, identity: ClientIdentity
    ) -> None:
        self._session = session
        self._config = config
        self._identity = identity
        self._request_timeout = aiohttp.ClientTimeout(
            total=None, connect=config.connect_timeout, sock_connect=config.connect_timeout
        )

    def _headers(self, access_token: str, accept: str) -> dict[str, str]:
        return {
            "User-Agent": self._identity.user_agent,
            "Authorization": f"Bearer {access_token}",
            "Content-Type": "application/json",
            "Accept": accept,
            "Accept-Encoding": "gzip",
        }

    async def _post(
        self, method: str, access_token: str, body: bytes, *, stream: bool, hosts: Sequence[str] | None = None
    ) -> aiohttp.ClientResponse:
        """POST to each base URL (or ``hosts``) in turn until one answers 200; raise the last failure."""
        suffix = f"/v1internal:{method}" + ("?alt=sse" if stream else "")
        headers = self._headers(access_token, "text/event-stream" if stream else "application/json")
        failure: UpstreamFailure | None = None
        for base in self._config.base_urls if hosts is None else hosts:
            try:
                async with asyncio.timeout(self._config.first_byte_timeout):
                    response = await self._session.post(
                        base + suffix, data=body, headers=headers, timeout=self._request_timeout
                    )
                    if response.status == 200:
                        return response
                    raw = await response.read()
                    response.release()
            except TimeoutError:
                raise UpstreamFailure(
                    FailureKind.TIMEOUT, 504, f"no answer from upstream ({method})"
                ) from None
            except (aiohttp.ClientError, OSError) as exc:
                failure = UpstreamFailure(FailureKind.NETWORK, 502, f"{type(exc).__name__} calling {method}")
            else:
                failure = classify_error(response.status, raw, response.headers)
            log.info("upstream_attempt_failed", method=method, kind=failure.kind.value, status=failure.status)
            if failure.kind not in _NEXT_HOST_KINDS:
                break
        assert failure is not None
        raise failure

    async def open_stream(self, access_token: str, body: bytes) -> UpstreamStream:
        response = await self._post("streamGenerateContent", access_token, body, stream=True)
        return UpstreamStream(response, self._config)

    async def available_models(self, access_token: str, project_id: str) -> dict[str, Any]:
        """``fetchAvailableModels`` for one account: its models and their quotas.

        Without a project the body is ``{}``: ``"project": ""`` is a 400 (PROTOCOL §13.3),
        and paid accounts without a project still get their models that way.
        """
        return await self.call(
            "fetchAvailableModels", access_token, {"project": project_id} if project_id else {}
        )

    async def quota_summary(self, access_token: str, project_id: str) -> dict[str, Any]:
        """``retrieveUserQuotaSummary``: the 5-hour and weekly windows per family bucket.

        Only the daily host, first in ``base_urls``, has current weekly figures, so no
        other host is asked (PROTOCOL §13.2, §13.6); an unknown project is left out.
        """
        payload = {"project": project_id} if project_id else {}
        hosts = self._config.base_urls[:1]
        return await self.call("retrieveUserQuotaSummary", access_token, payload, hosts=hosts)

    async def call(
        self, method: str, access_token: str, payload: dict[str, Any], *, hosts: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """A unary JSON call (fetchAvailableModels, loadCodeAssist, onboardUser, ...)."""
        response = await self._post(method, access_token, orjson.dumps(payload), stream=False, hosts=hosts)
        return await read_json_reply(response, self._config.idle_timeout, method)
