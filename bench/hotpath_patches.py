"""Prototypes of hot-path changes, measured by ``python -m bench.ab`` (not product code).

Each patch monkeypatches the installed ``antigv`` before the app is built, so a
change can be measured against the unchanged gateway in the same interleaved run
before anyone edits the product:

    python bench/hotpath_patches.py --patches cache,watchdog,sse --config F serve

* ``cache``: ``AccountRouter.candidates`` answers from an in-process cache (1 s per
  user, model and quota group) instead of one ``account_candidates`` round trip per
  request. A real version must also drop the entry when this process writes a
  cooldown, disables an account or refreshes a token (and may listen for other
  instances' changes).
* ``watchdog``: ``UpstreamStream.frames`` without ``asyncio.timeout().reschedule()``
  per chunk. Under uvloop every reschedule closes a libuv timer handle, which costs
  an extra loop iteration (an ``epoll_pwait`` with timeout 0) per chunk; one timer
  per idle period that re-arms itself from the last chunk's time does the same job.
* ``sse``: SSE framing on bytes (``orjson.loads`` takes bytes) instead of an
  incremental UTF-8 decoder and ``str`` lines.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

PATCHES = ("cache", "watchdog", "sse")


def patch_cache(ttl: float = 1.0) -> None:
    from antigv.accounts import selection

    original = selection.AccountRouter.candidates
    cache: dict[tuple, tuple[float, list]] = {}

    async def candidates(self: Any, principal: Any, model: str, quota_group: str) -> list:
        key = (principal.user_id, principal.is_admin, model, quota_group)
        now = time.monotonic()
        hit = cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        rows = await original(self, principal, model, quota_group)
        cache[key] = (now + ttl, rows)
        return rows

    selection.AccountRouter.candidates = candidates  # type: ignore[method-assign]


class IdleWatchdog:
    """Fails a reader that has been idle too long; re-armed lazily, not per chunk."""

    __slots__ = ("handle", "last", "limit", "loop", "reader")

    def __init__(self, loop: asyncio.AbstractEventLoop, reader: aiohttp.StreamReader, limit: float) -> None:
        self.loop, self.reader, self.limit = loop, reader, limit
        self.last = loop.time()
        self.handle = loop.call_at(self.last + limit, self._check)

    def _check(self) -> None:
        due = self.last + self.limit
        if self.loop.time() >= due:
            self.reader.set_exception(TimeoutError())
        else:
            self.handle = self.loop.call_at(due, self._check)

    def touch(self, limit: float) -> None:
        self.last = self.loop.time()
        self.limit = limit

    def cancel(self) -> None:
        self.handle.cancel()


def _byte_events(buf: bytes, final: bool) -> tuple[list[bytes], bytes]:
    """Complete SSE events' data in ``buf`` and the rest (the subset the upstream uses)."""
    if b"\r" in buf:
        buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    out = []
    while True:
        end = buf.find(b"\n\n")
        if end < 0:
            if not final or not buf.strip():
                return out, buf
            end = len(buf)
        event, buf = buf[:end], buf[end + 2 :]
        data = [line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
        if data:
            out.append(b"\n".join(data))


def patch_stream(watchdog: bool, byte_sse: bool) -> None:
    from antigv.upstream import client
    from antigv.upstream.failures import FailureKind, UpstreamFailure
    from antigv.upstream.sse import SSEParser

    def parse(payload: bytes | str) -> dict[str, Any] | None:
        try:
            frame = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(frame, dict):
            return None
        if "error" in frame:
            raise client.classify_error(200, payload if isinstance(payload, bytes) else payload.encode())
        return frame

    async def frames(self: Any) -> AsyncIterator[dict[str, Any]]:
        content = self._response.content
        loop = asyncio.get_running_loop()
        parser = None if byte_sse else SSEParser()
        buf = b""
        dog = IdleWatchdog(loop, content, self._first_byte_timeout) if watchdog else None
        try:
            async with asyncio.timeout(None) as deadline:
                if dog is None:
                    deadline.reschedule(loop.time() + self._first_byte_timeout)
                while True:
                    chunk = await content.readany()
                    if dog is not None:
                        dog.touch(self._idle_timeout)
                    else:
                        deadline.reschedule(loop.time() + self._idle_timeout)
                    if parser is not None:
                        payloads: list = parser.feed(chunk) if chunk else parser.close()
                    else:
                        payloads, buf = _byte_events(buf + chunk if buf else chunk, final=not chunk)
                    for payload in payloads:
                        frame = parse(payload)
                        if frame is not None:
                            yield frame
                    if not chunk:
                        return
        except TimeoutError:
            raise UpstreamFailure(FailureKind.TIMEOUT, 504, "upstream stream stalled") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamFailure(FailureKind.NETWORK, 502, f"stream broken: {type(exc).__name__}") from None
        finally:
            if dog is not None:
                dog.cancel()

    client.UpstreamStream.frames = frames  # type: ignore[method-assign]


def apply(names: list[str]) -> None:
    unknown = [n for n in names if n not in PATCHES]
    if unknown:
        raise SystemExit(f"unknown patches: {', '.join(unknown)} (known: {', '.join(PATCHES)})")
    if "cache" in names:
        patch_cache()
    if "watchdog" in names or "sse" in names:
        patch_stream(watchdog="watchdog" in names, byte_sse="sse" in names)


def main() -> int:
    argv = sys.argv[1:]
    names: list[str] = []
    if "--patches" in argv:
        at = argv.index("--patches")
        names = [n for n in argv[at + 1].split(",") if n]
        del argv[at : at + 2]
    apply(names)
    from antigv.cli import main as antigv_main

    return antigv_main(argv)


if __name__ == "__main__":
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
    sys.exit(main())
