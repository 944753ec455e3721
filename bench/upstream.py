"""The upstream double in its bench profile, plus what the benchmark needs around it.

``python -m bench.upstream --port N --control-port M`` serves
``tests.upstream_double.UpstreamDouble(profile="bench")`` unchanged, on uvloop when
installed, with a listen backlog large enough for 1,000 simultaneous connections.
The bench profile records nothing, so calls are counted here, by RPC, from the
app's ``on_response_prepare`` signal (one per answered request, error or not).
A second port (never the gateway's upstream) serves:

* ``GET /stats``    -> ``{"calls": {"streamGenerateContent": n, "token": n, ...}}``
* ``POST /transport`` with ``{"frame_delay": s}`` -> switch to slower frames (for the
  1,000-open-streams memory phase) and back.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections import Counter

from aiohttp import web

from tests.upstream_double import Transport, UpstreamDouble


async def serve(host: str, port: int, control_port: int) -> None:
    double = UpstreamDouble(profile="bench")
    calls: Counter[str] = Counter()
    base_transport = double.transport

    async def count(request: web.Request, response: web.StreamResponse) -> None:
        path = request.path
        key = path.split(":", 1)[1] if path.startswith("/v1internal:") else path.strip("/")
        calls[key or "/"] += 1

    double.app.on_response_prepare.append(count)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"calls": dict(calls)})

    async def transport(request: web.Request) -> web.Response:
        nonlocal base_transport
        body = await request.json()
        delay = body.get("frame_delay")
        if delay is None:
            double.transport = base_transport
        else:
            double.transport = Transport(
                first_byte_delay=base_transport.first_byte_delay, frame_delay=float(delay), usage="last"
            )
        return web.json_response({"frame_delay": double.transport.frame_delay})

    control = web.Application()
    control.router.add_get("/stats", stats)
    control.router.add_post("/transport", transport)

    runners = []
    for app, p in ((double.app, port), (control, control_port)):
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, host, p, backlog=4096).start()
        runners.append(runner)
    double.base_url = f"http://{host}:{port}"
    print(f"bench upstream on {double.base_url}, control on :{control_port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for runner in runners:
            await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--control-port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        uvloop = None
    with contextlib.suppress(KeyboardInterrupt):
        if uvloop is not None:
            uvloop.run(serve(args.host, args.port, args.control_port))
        else:
            asyncio.run(serve(args.host, args.port, args.control_port))


if __name__ == "__main__":
    main()
