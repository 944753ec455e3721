"""Calls to the upstream ``v1internal`` API over the app's one ClientSession.

Tries the configured base URLs in order on connect errors and on the statuses
PROTOCOL §1.1 recommends; separate connect, first-byte and idle timeouts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import structlog
from aiohttp import web

from ..config import UpstreamConfig
from .failures import FailureKind, UpstreamFailure, classify_error
from .sse import SSEParser

log = structlog.get_logger(__name__)

# Another host may answer where this one failed for these reasons; a quota or a
# bad request is the same everywhere.
_NEXT_HOST_KINDS = frozenset(
    {FailureKind.NETWORK, FailureKind.SERVER_ERROR, FailureKind.PERMISSION_DENIED, FailureKind.NOT_FOUND}
)


class _IdleWatchdog:
    """Fails a stream's reads once nothing has been read for too long.

    One timer per idle period, re-armed from the last read's time, instead of
    rescheduling a timeout on every chunk: that cost an event-loop turn per
    chunk, a measurable share of the hot path.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, content: aiohttp.StreamReader, first: float, idle: float
    ) -> None:
        self._loop = loop
        self._content = content
        self._idle = idle
        self._limit = first
        self.last = loop.time()
        self._handle = loop.call_at(self.last + first, self._check)

    def touch(self) -> None:
        self.last = self._loop.time()
        if self._limit != self._idle:
            # The first read ends the first-byte wait: re-arm once for the idle limit.
            self._limit = self._idle
            self._handle.cancel()
            self._handle = self._loop.call_at(self.last + self._idle, self._check)

    def _check(self) -> None:
        due = self.last + self._limit
        if self._loop.time() >= due:
            self._content.set_exception(TimeoutError())
        else:
            self._handle = self._loop.call_at(due, self._check)

    def cancel(self) -> None:
        self._handle.cancel()


class UpstreamStream:
    """An open ``streamGenerateContent`` reply: parsed frames, with idle timeouts."""

    def __init__(
        self, response: aiohttp.ClientResponse, first_byte_timeout: float, idle_timeout: float
    ) -> None:
        self._response = response
        self._first_byte_timeout = first_byte_timeout
        self._idle_timeout = idle_timeout

    async def batches(self) -> AsyncIterator[list[dict[str, Any]]]:
        """The parsed frames of each network read. Handing them over a read at a time
        lets the caller answer with one write per read instead of one per frame."""
        parser = SSEParser()
        content = self._response.content
        watchdog = _IdleWatchdog(
            asyncio.get_running_loop(), content, self._first_byte_timeout, self._idle_timeout
        )
        try:
            while True:
                chunk = await content.readany()
                watchdog.touch()
                payloads = parser.feed(chunk) if chunk else parser.close()
                frames = [frame for payload in payloads if (frame := _parse_frame(payload)) is not None]
                if frames:
                    yield frames
                if not chunk:
                    return
        except TimeoutError:
            raise UpstreamFailure(FailureKind.TIMEOUT, 504, "upstream stream stalled") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamFailure(FailureKind.NETWORK, 502, f"stream broken: {type(exc).__name__}") from None
        finally:
            watchdog.cancel()

    def close(self) -> None:
        """Abort the upstream request (a client that went away stops the upstream too)."""
        self._response.close()


def _parse_frame(payload: str) -> dict[str, Any] | None:
    try:
        frame = orjson.loads(payload)
    except orjson.JSONDecodeError:
        log.warning("upstream_frame_unparsable", size=len(payload))
        return None
    if not isinstance(frame, dict):
        return None
    if "error" in frame:
        raise classify_error(200, payload.encode("utf-8"))
    return frame


class UpstreamClient:
    def __init__(self, session: aiohttp.ClientSession, config: UpstreamConfig) -> None:
        self._session = session
        self._config = config
        self._request_timeout = aiohttp.ClientTimeout(
            total=None, connect=config.connect_timeout, sock_connect=config.connect_timeout
        )

    def _headers(self, access_token: str, accept: str) -> dict[str, str]:
        return {
            "User-Agent": self._config.user_agent,
            "Authorization": f"Bearer {access_token}",
            "Content-Type": "application/json",
            "Accept": accept,
            "Accept-Encoding": "gzip",
        }

    async def _post(
        self, method: str, access_token: str, body: bytes, *, stream: bool
    ) -> aiohttp.ClientResponse:
        """POST to each base URL in turn until one answers 200; raise the last failure."""
        suffix = f"/v1internal:{method}" + ("?alt=sse" if stream else "")
        headers = self._headers(access_token, "text/event-stream" if stream else "application/json")
        failure: UpstreamFailure | None = None
        for base in self._config.base_urls:
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
        return UpstreamStream(response, self._config.first_byte_timeout, self._config.idle_timeout)

    async def available_models(self, access_token: str, project_id: str) -> dict[str, Any]:
        """``fetchAvailableModels`` for one account: its models and their quotas.

        The project is always sent, "" included: paid accounts without a project
        still get their quota that way (PROTOCOL §7.3).
        """
        return await self.call("fetchAvailableModels", access_token, {"project": project_id})

    async def call(self, method: str, access_token: str, payload: dict[str, Any]) -> dict[str, Any]:
        """A unary JSON call (fetchAvailableModels, loadCodeAssist, onboardUser, ...)."""
        response = await self._post(method, access_token, orjson.dumps(payload), stream=False)
        try:
            async with asyncio.timeout(self._config.idle_timeout):
                raw = await response.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise UpstreamFailure(
                FailureKind.NETWORK, 502, f"{method} reply broken: {type(exc).__name__}"
            ) from None
        finally:
            response.release()
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamFailure(FailureKind.SERVER_ERROR, 502, f"{method} answered with non-JSON") from None
        if not isinstance(data, dict):
            raise UpstreamFailure(FailureKind.SERVER_ERROR, 502, f"{method} answered with a non-object")
        return data


UPSTREAM = web.AppKey("upstream", UpstreamClient)
