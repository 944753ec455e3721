"""A streamed Google ``generateContent`` reply (``?alt=sse``), shared by the Google-family
backends: parsed frames a network read at a time, with first-byte, idle and total
timeouts (PROTOCOL §4.1, §13.8)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import structlog

from antigv.backends.google.failures import classify_error
from antigv.backends.google.sse import SSEParser
from antigv.config import UpstreamConfig
from antigv.core.errors import MalformedUpstreamReply
from antigv.core.failures import FailureKind, UpstreamFailure

log = structlog.get_logger(__name__)

# An error reply (status, body) as the backend classifies it.
Classify = Callable[[int, bytes], UpstreamFailure]


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

    def __init__(
        self, response: aiohttp.ClientResponse, config: UpstreamConfig, classify: Classify = classify_error
    ) -> None:
        self._response = response
        self._config = config
        # How an error frame inside the 200 stream is read (the backend's rules).
        self._classify = classify

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
                frames = [
                    frame
                    for payload in payloads
                    if (frame := _parse_frame(payload, self._classify)) is not None
                ]
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


def _parse_frame(payload: str, classify: Classify = classify_error) -> dict[str, Any] | None:
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
        raise classify(200, payload.encode("utf-8"))
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


async def read_json_reply(response: aiohttp.ClientResponse, idle_timeout: float, what: str) -> dict[str, Any]:
    """The JSON object of a unary 200 reply (released after); ``what`` names the call in failures."""
    try:
        async with asyncio.timeout(idle_timeout):
            raw = await response.read()
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise UpstreamFailure(
            FailureKind.NETWORK, 502, f"{what} reply broken: {type(exc).__name__}"
        ) from None
    finally:
        response.release()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamFailure(FailureKind.SERVER_ERROR, 502, f"{what} answered with non-JSON") from None
    if not isinstance(data, dict):
        raise UpstreamFailure(FailureKind.SERVER_ERROR, 502, f"{what} answered with a non-object")
    return data
