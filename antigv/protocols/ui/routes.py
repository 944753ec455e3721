"""The web console (issue 16): ``/ui/`` and its assets, served from the package.

The console is one HTML page with hand-written ES modules and a style sheet; it talks to
the JSON API with the key a person signs in with, kept in the tab's ``sessionStorage`` and
sent only in the ``Authorization`` header. Nothing here needs a key: the page and its assets
are the same for everyone, and every datum comes from ``/api/*``.

Behind a proxy that puts the gateway under a path prefix (``server.public_url``), every URL
the page uses is relative to the page (``../api/...``), so the prefix is never spelt out in
the assets; the page also carries ``public_url`` in a ``<meta>`` tag (no inline script) for
what it shows people, such as the base URL a client should use.
"""

from __future__ import annotations

import hashlib
import html
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from aiohttp import web

from antigv.appkeys import CLIENT_IDENTITY, CONFIG
from antigv.core.errors import NotFound
from antigv.protocols.auth import ADMIN, PUBLIC, access
from antigv.protocols.web import api_ok

STATIC = Path(__file__).with_name("static")
INDEX = "index.html"
_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}

# No inline script or style anywhere, no other origin, no framing, no plugin, no <base>,
# no native form submission (a form that escaped its script would put the key in a URL),
# and DOM sinks that parse HTML refused outright (Trusted Types with no policy).
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}
# The page is small and names no data; it is never stored, so a sign-out leaves nothing behind.
PAGE_CACHE = "no-store"
# Assets are revalidated on every load (a 304 by their ETag): a new release is seen at once,
# on any of the server's workers, which all compute the same ETag from the same bytes.
ASSET_CACHE = "no-cache"


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def load_assets(directory: Path = STATIC) -> dict[str, Asset]:
    """Every servable file of ``directory`` by name: an allow-list, read once at start."""
    assets = {}
    for path in sorted(directory.iterdir()):
        content_type = _TYPES.get(path.suffix)
        if content_type is not None and path.is_file():
            body = path.read_bytes()
            assets[path.name] = Asset(body, content_type, _etag(body))
    return assets


def render_index(public_url: str, directory: Path = STATIC) -> Asset:
    """The page, with ``public_url`` put in its ``<meta>`` tag (escaped)."""
    template = (directory / INDEX).read_text(encoding="utf-8")
    body = template.replace("{{public_url}}", html.escape(public_url, quote=True)).encode("utf-8")
    return Asset(body, "text/html", _etag(body))


def _gateway_version() -> str:
    try:
        return metadata.version("antigv")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


class Console:
    """The handlers, over what ``setup`` read from the package."""

    def __init__(self, public_url: str) -> None:
        self.public_url = public_url
        self.index = render_index(public_url)
        self.assets = load_assets()
        self.version = _gateway_version()

    @staticmethod
    def _answer(request: web.Request, asset: Asset, cache: str) -> web.Response:
        headers = {**SECURITY_HEADERS, "Cache-Control": cache, "ETag": asset.etag}
        if asset.etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=headers)
        charset = "utf-8" if asset.content_type.startswith("text/") else None
        return web.Response(
            body=asset.body, content_type=asset.content_type, charset=charset, headers=headers
        )

    @access(PUBLIC)
    async def page(self, request: web.Request) -> web.Response:
        """``GET /ui/``: the console."""
        return self._answer(request, self.index, PAGE_CACHE)

    @access(PUBLIC)
    async def asset(self, request: web.Request) -> web.Response:
        """``GET /ui/{name}``: a script, the style sheet or an icon; anything else is a 404."""
        name = request.match_info["name"]
        asset = self.assets.get(name) if name != INDEX else None
        if asset is None:
            raise NotFound("no such file in the web console")
        return self._answer(request, asset, ASSET_CACHE)

    @access(PUBLIC)
    async def to_page(self, request: web.Request) -> web.Response:
        """``GET /ui``: to ``/ui/``, through the proxy's prefix when one is configured; without
        one the Location is relative ("ui/" from "/ui"), which keeps an unknown prefix too."""
        location = f"{self.public_url}/ui/" if self.public_url else "ui/"
        return web.Response(status=308, headers={**SECURITY_HEADERS, "Location": location})

    @access(ADMIN)
    async def info(self, request: web.Request) -> web.Response:
        """``GET /api/ui/info`` (admin): what the admin page shows about this instance: the
        upstream client version in use (the ``antigv_upstream_client_info`` metric's)."""
        identity = request.app[CLIENT_IDENTITY]
        return api_ok(
            {
                "gateway_version": self.version,
                "upstream_client_version": identity.version,
                "upstream_user_agent": identity.user_agent,
                "upstream_client_fixed": identity.fixed,
                "public_url": self.public_url or None,
            }
        )


def setup(app: web.Application) -> None:
    """Register the console's routes: the page and its assets need no key; ``/api/ui/info``
    needs the admin key."""
    console = Console(app[CONFIG].server.public_url)
    app.router.add_get("/ui", console.to_page)
    app.router.add_get("/ui/", console.page)
    app.router.add_get("/ui/{name}", console.asset)
    app.router.add_get("/api/ui/info", console.info)
