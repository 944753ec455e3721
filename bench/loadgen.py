"""The load generator: closed-loop HTTP/1.1 keep-alive clients in their own process.

``python -m bench.loadgen SPEC.json`` prints one JSON object on stdout.

Why not wrk: wrk times whole responses only, and the benchmark needs time to
first byte of streams; it is also not installed on a clean machine. Why not the
aiohttp client: its per-chunk machinery costs more CPU than the servers under
test on a 2-core box. So this is asyncio (uvloop when installed) with a raw
``asyncio.Protocol`` per connection: the request bytes are built once, the
response is parsed just enough to know when it ends (status line, headers,
Content-Length or chunked framing) and to check its last bytes.

Spec keys: ``host``, ``port``, ``request`` (latin-1 text of the whole request),
``concurrency``, ``duration`` (seconds; each connection stops issuing after it
and finishes its request in flight), ``start_at`` (``time.time()`` to start, so
several generator processes start together), ``expect`` (bytes, as text, that
the end of every good response contains), ``one_shot`` (each connection sends
one request, for the open-streams phase), ``ramp`` (seconds over which
connections are opened and first requests sent), ``header`` (a numeric response
header to collect, e.g. the gateway's ``x-antigv-overhead-ms``).

Output: ``samples`` as ``[ttfb_ms, total_ms]`` per good response (TTFB = first
byte of the response body, i.e. the first SSE event of a stream), ``errors``,
``first_error``, ``started``/``finished`` (perf_counter-free wall times),
``cpu`` (this process's user+system seconds) and ``max_open`` (most responses
that had started and not ended at one moment), ``header_values``.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time

_HEAD, _BODY_LENGTH, _BODY_CHUNKED, _CHUNK_END, _DONE = range(5)


class ResponseError(Exception):
    pass


class Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future | None = None
        self.closed = False
        self._reset()

    def _reset(self) -> None:
        self.state = _HEAD
        self.buf = b""
        self.status = 0
        self.need = 0
        self.tail = b""
        self.t0 = 0.0
        self.ttfb = 0.0
        self.keep_alive = True
        self.header = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ResponseError(f"connection lost ({exc or 'closed by server'})"))

    def request(self, data: bytes) -> asyncio.Future:
        self._reset()
        self.waiter = asyncio.get_running_loop().create_future()
        self.t0 = time.perf_counter()
        self.transport.write(data)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if self.state == _HEAD:
            self.buf += data
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].lower()
            data = self.buf[end + 4 :]
            self.buf = b""
            try:
                self.status = int(head[9:12])
            except ValueError:
                return self._fail("bad status line")
            self.keep_alive = b"connection: close" not in head
            if self.stats.header:
                at = head.find(self.stats.header)
                if at >= 0:
                    eol = head.find(b"\r\n", at)
                    self.header = head[at + len(self.stats.header) : eol if eol > 0 else None].strip()
            if b"transfer-encoding: chunked" in head:
                self.state = _BODY_CHUNKED
            else:
                at = head.find(b"content-length:")
                if at < 0:
                    return self._fail("neither chunked nor content-length")
                eol = head.find(b"\r\n", at)
                self.need = int(head[at + 15 : eol if eol > 0 else None])
                self.state = _BODY_LENGTH
                if self.need == 0:
                    self._first_byte(now)
                    return self._done(now)
            if not data:
                return
        if not self.ttfb:
            self._first_byte(now)
        self.tail = (self.tail + data)[-2048:]
        if self.state == _BODY_LENGTH:
            self.need -= len(data)
            if self.need <= 0:
                self._done(now)
        else:
            self._chunked(data, now)

    def _first_byte(self, now: float) -> None:
        self.ttfb = now
        self.stats.opened()

    def _chunked(self, data: bytes, now: float) -> None:
        buf = self.buf + data if self.buf else data
        pos = 0
        size = len(buf)
        while pos < size:
            if self.state == _CHUNK_END:
                # After the last chunk: the final CRLF (trailers are not expected).
                if size - pos >= 2:
                    self.buf = b""
                    return self._done(now)
                break
            if self.need:
                take = min(self.need, size - pos)
                pos += take
                self.need -= take
                continue
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            chunk = int(buf[pos:eol].split(b";", 1)[0], 16)
            pos = eol + 2
            if chunk == 0:
                self.state = _CHUNK_END
            else:
                self.need = chunk + 2
        self.buf = buf[pos:]

    def _done(self, now: float) -> None:
        self.state = _DONE
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(now)

    def _fail(self, why: str) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ResponseError(why))
        if self.transport is not None:
            self.transport.close()


class Stats:
    def __init__(self, header: str = "") -> None:
        self.header = (header.lower() + ":").encode("latin-1") if header else b""
        self.header_values: list[float] = []
        self.samples: list[tuple[float, float]] = []
        self.errors = 0
        self.first_error = ""
        self.open = 0
        self.max_open = 0

    def opened(self) -> None:
        self.open += 1
        if self.open > self.max_open:
            self.max_open = self.open

    def error(self, why: str) -> None:
        self.errors += 1
        if not self.first_error:
            self.first_error = why


async def _connect(loop: asyncio.AbstractEventLoop, spec: dict, stats: Stats) -> Connection:
    _, conn = await loop.create_connection(lambda: Connection(stats), spec["host"], spec["port"])
    return conn


async def _client(spec: dict, stats: Stats, deadline: float, delay: float) -> None:
    loop = asyncio.get_running_loop()
    data = spec["request"].encode("latin-1")
    expect = spec.get("expect", "").encode("latin-1")
    if delay:
        await asyncio.sleep(delay)
    conn: Connection | None = None
    while True:
        try:
            if conn is None or conn.closed:
                conn = await _connect(loop, spec, stats)
            finished = await conn.request(data)
        except (OSError, ResponseError) as exc:
            stats.error(f"{type(exc).__name__}: {exc}")
            if conn is not None and conn.ttfb:
                stats.open -= 1
            conn = None
            if spec.get("one_shot") or time.time() >= deadline:
                return
            await asyncio.sleep(0.05)
            continue
        if conn.ttfb:
            stats.open -= 1
        if conn.status != 200:
            stats.error(f"HTTP {conn.status}: {conn.tail[-200:]!r}")
        elif expect and expect not in conn.tail:
            stats.error(f"response does not end with {expect!r}: {conn.tail[-120:]!r}")
        else:
            stats.samples.append(((conn.ttfb - conn.t0) * 1000, (finished - conn.t0) * 1000))
            if conn.header is not None:
                try:
                    stats.header_values.append(float(conn.header))
                except ValueError:
                    pass
        if not conn.keep_alive:
            conn.transport.close()
            conn = None
        if spec.get("one_shot") or time.time() >= deadline:
            if conn is not None:
                conn.transport.close()
            return


async def run(spec: dict) -> dict:
    stats = Stats(spec.get("header", ""))
    start_at = spec.get("start_at", time.time())
    await asyncio.sleep(max(0.0, start_at - time.time()))
    started = time.time()
    deadline = started + spec["duration"]
    n = spec["concurrency"]
    ramp = spec.get("ramp", 0.0)
    await asyncio.gather(*(_client(spec, stats, deadline, ramp * i / n) for i in range(n)))
    finished = time.time()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "samples": [[round(a, 3), round(b, 3)] for a, b in stats.samples],
        "errors": stats.errors,
        "first_error": stats.first_error,
        "started": started,
        "finished": finished,
        "cpu": usage.ru_utime + usage.ru_stime,
        "max_open": stats.max_open,
        "header_values": stats.header_values,
    }


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    try:
        import uvloop

        result = uvloop.run(run(spec))
    except ImportError:
        result = asyncio.run(run(spec))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
