"""The floor for any aiohttp gateway: a pass-through with no auth and no translation.

``python -m bench.null_proxy --port N --upstream http://127.0.0.1:M``
"""

import argparse

import aiohttp
from aiohttp import web

HOP = ("Content-Type", "Authorization", "Accept", "User-Agent")
SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)


async def forward(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    headers = {k: request.headers[k] for k in HOP if k in request.headers}
    session = request.app[SESSION]
    async with session.post(request.app[UPSTREAM] + request.path_qs, data=body, headers=headers) as up:
        response = web.StreamResponse(status=up.status, headers={"Content-Type": up.content_type})
        await response.prepare(request)
        async for chunk in up.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


async def client(app: web.Application):
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False) as s:
        app[SESSION] = s
        yield


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    app = web.Application()
    app[UPSTREAM] = args.upstream.rstrip("/")
    app.cleanup_ctx.append(client)
    app.router.add_post("/{tail:.*}", forward)
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = None
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None, backlog=4096, loop=loop)


if __name__ == "__main__":
    main()
