"""Calls to the upstream ``v1internal`` API over the app's one ClientSession.

Tries the configured base URLs in order on connect errors and on the statuses
PROTOCOL §1.1 recommends (not a 404: §13.9); separate connect, first-byte and idle
timeouts, and a cap on a stream's whole length.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import orjson
import structlog

from antigv.backends.antigravity.identity import ClientIdentity
from antigv.backends.google.failures import classify_error
from antigv.backends.google.sse import SSEParser
from antigv.config import UpstreamConfig
from antigv.core.errors import MalformedUpstreamReply
from antigv.core.failures import FailureKind, UpstreamFailure

log = structlog.get_logger(__name__)

# Another host may answer where this one failed for these reasons; a quota or a
# bad request is the same everywhere, and a 404 is the version gate or the model,
# not the host (PROTOCOL §13.2, §13.9): it costs one call.
_NEXT_HOST_KINDS = frozenset({FailureKind.NETWORK, FailureKind.SERVER_ERROR, FailureKind.PERMISSION_DENIED})


class _IdleWatchdog:
    """Fails a stream's reads once no data has come for too long, or the stream as a
    whole has lasted too long (``upstream.max_stream_seconds``).

    One timer per idle period, re-armed from the last progress, instead of
    rescheduling a timeout on every chunk: that cost an event-loop turn per
    chunk, a measurable share of the hot path.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        content: aiohttp.StreamReader,
        first: float,
        idle: float,
        total: float,
    ) -> None:
        self._loop = loop
        self._content = content
        self._idle = idle
        self._limit = first
        self.last = loop.time()
        self._end = self.last + total
        # Why the stream was failed: "idle" or "total".
        self.expired: str | None = None
        self._handle = loop.call_at(min(self.last + first, self._end), self._check)

    def touch(self) -> None:
        """Data arrived (SSE comments are no progress: issue 11 item 23)."""
        self.last = self._loop.time()
        if self._limit != self._idle:
            # The first data ends the first-byte wait: re-arm once for the idle limit.
            self._limit = self._idle
            self._handle.cancel()
            self._handle = self._loop.call_at(min(self.last + self._idle, self._end), self._check)

    def _check(self) -> None:
        now = self._loop.time()
        due = self.last + self._limit
        if now >= self._end or now >= due:
            self.expired = "total" if now >= self._end else "idle"
            self._content.set_exception(TimeoutError())
        else:
            self._handle = self._loop.call_at(min(due, self._end), self._check)

    def cancel(self) -> None:
        self._handle.cancel()


class UpstreamStream:
    """An open ``streamGenerateContent`` reply: parsed frames, with idle timeouts."""

    def __init__(self, response: aiohttp.ClientResponse, config: UpstreamConfig) -> None:
        self._response = response
        self._config = config

    async def batches(self) -> AsyncIterator[list[dict[str, Any]]]:
        """The parsed frames of each network read. Handing them over a read at a time
        lets the caller answer with one write per read instead of one per frame."""
        parser = SSEParser()
        content = self._response.content
        config = self._config
        watchdog = _IdleWatchdog(
            asyncio.get_running_loop(),
            content,
            config.first_byte_timeout,
            config.idle_timeout,
            config.max_stream_seconds,
        )
        try:
            while True:
                chunk = await content.readany()
                payloads = parser.feed(chunk) if chunk else parser.close()
                if payloads or parser.in_data:
                    watchdog.touch()
                frames = [frame for payload in payloads if (frame := _parse_frame(payload)) is not None]
                if frames:
                    yield frames
                if not chunk:
                    return
        except TimeoutError:
            what = "lasted longer than max_stream_seconds" if watchdog.expired == "total" else "stalled"
            raise UpstreamFailure(FailureKind.TIMEOUT, 504, f"upstream stream {what}") from None
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
        # An event that is JSON but no object breaks PROTOCOL §4: fail the reply, not the account.
        log.warning("upstream_reply_malformed", field="frame")
        raise MalformedUpstreamReply("frame")
    if "error" in frame:
        raise classify_error(200, payload.encode("utf-8"))
    # PROTOCOL §13.8 spellings; an or-chain costs half a generator over them (hot path).
    if "thought_signature" in payload or "inline_data" in payload or "mime_type" in payload:
        _camel_case_parts(frame)
    return frame


def _camel_case_parts(frame: dict[str, Any]) -> None:
    """Rename the snake_case part fields of PROTOCOL §13.8 in place (malformed shapes are
    left for the translator to judge)."""
    response = frame.get("response", frame)
    candidates = response.get("candidates") if isinstance(response, dict) else None
    if not isinstance(candidates, list):
        return
    for candidate in candidates:
        content = candidate.get("content") if isinstance(candidate, dict) else None
        parts = content.get("parts") if isinstance(content, dict) else None
        if not isinstance(parts, list):
            continue
        for part in parts:
            if not isinstance(part, dict):
                continue
            if "thought_signature" in part:
                part.setdefault("thoughtSignature", part.pop("thought_signature"))
            if "inline_data" in part:
                part.setdefault("inlineData", part.pop("inline_data"))
            inline = part.get("inlineData")
            if isinstance(inline, dict) and "mime_type" in inline:
                inline.setdefault("mimeType", inline.pop("mime_type"))


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
