"""The client identity antigv shows the upstream: its User-Agent and version (PROTOCOL §13.1).

Cloud Code refuses old clients (the outdated-client text below 1.15, a 404 for newer
models below 2.9.0), so the version keeps up with the Antigravity hub's auto-updater
manifest: read in the background at start and every :data:`MANIFEST_REFRESH` seconds,
never on the request path, and never below the configured floor. A failed read keeps
the last good version. A fixed ``upstream.user_agent`` overrides all of it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import aiohttp
import structlog
from aiohttp import web

from antigv.appkeys import CLIENT_IDENTITY, HTTP
from antigv.config import UpstreamConfig

log = structlog.get_logger(__name__)

# CPA-0822 refreshes every 3 h (half its 6 h cache).
MANIFEST_REFRESH = 3 * 3600.0
_MANIFEST_TIMEOUT = aiohttp.ClientTimeout(total=10)
# The manifest is a few hundred bytes; anything much larger is not it.
_MANIFEST_MAX_BYTES = 16 * 1024
_VERSION_RE = re.compile(r"^\d{1,6}(?:\.\d{1,6}){1,3}$")
# A top-level ``version:`` key: unindented, value optionally quoted, optional comment.
_MANIFEST_VERSION_RE = re.compile(
    r"""^version:[ \t]*(?P<q>["']?)(?P<v>[^"'#\s]+)(?P=q)[ \t]*(?:\#.*)?\r?$""", re.MULTILINE
)
_UA_VERSION_RE = re.compile(r"^antigravity/(?:hub/)?(\d+(?:\.\d+)*)[ /]")


def parse_version(text: str) -> tuple[int, ...] | None:
    """``"2.9.1"`` -> ``(2, 9, 1)``; None for anything that is not a dotted version."""
    if not _VERSION_RE.match(text):
        return None
    return tuple(int(part) for part in text.split("."))


def newest(*versions: str) -> str:
    """The highest of some valid version strings (compared numerically: 2.10 > 2.9)."""
    return max(versions, key=lambda v: parse_version(v) or ())


def manifest_version(text: str) -> str | None:
    """The ``version:`` of an electron-builder update manifest (``latest-*.yml``), if valid.

    One key of a flat YAML document: a regular expression does it without a YAML library.
    """
    match = _MANIFEST_VERSION_RE.search(text)
    if match is None:
        return None
    version = match.group("v")
    return version if parse_version(version) is not None else None


class ClientIdentity:
    """The User-Agent of upstream calls, kept current by :meth:`refresh`.

    ``user_agent`` is a plain attribute: the request path reads it without work.
    """

    def __init__(self, config: UpstreamConfig) -> None:
        self._fixed = config.user_agent
        self._floor = config.client_version_floor
        self._platform = config.platform
        self.manifest_url = "" if self._fixed else config.version_manifest_url
        # Called with the new version whenever it changes.
        self.listeners: list[Callable[[str], None]] = []
        self.version = ""
        self.user_agent = ""
        self._apply(self._floor)

    @property
    def fixed(self) -> bool:
        return bool(self._fixed)

    def _apply(self, manifest: str) -> None:
        if self._fixed:
            found = _UA_VERSION_RE.match(self._fixed)
            self.version = found.group(1) if found else "custom"
            self.user_agent = self._fixed
            return
        self.version = newest(self._floor, manifest)
        self.user_agent = f"antigravity/hub/{self.version} {self._platform}"

    def update(self, manifest: str) -> bool:
        """Take a version read from the manifest; True when the version in use changed."""
        before = self.version
        self._apply(manifest)
        if self.version == before:
            return False
        log.info("client_version_changed", version=self.version, previous=before, user_agent=self.user_agent)
        for listener in self.listeners:
            listener(self.version)
        return True

    async def refresh(self, session: aiohttp.ClientSession) -> bool:
        """Read the manifest once. A failure logs one warning and keeps the version in use."""
        if not self.manifest_url:
            return False
        try:
            async with session.get(
                self.manifest_url, timeout=_MANIFEST_TIMEOUT, headers={"Cache-Control": "no-cache"}
            ) as response:
                if response.status != 200:
                    raise ValueError(f"HTTP {response.status}")
                raw = b""
                async for chunk in response.content.iter_any():
                    raw += chunk
                    if len(raw) > _MANIFEST_MAX_BYTES:
                        break
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            log.warning("client_version_manifest_failed", error=str(exc) or type(exc).__name__)
            return False
        found = manifest_version(raw.decode("utf-8", "replace")) if len(raw) <= _MANIFEST_MAX_BYTES else None
        if found is None:
            log.warning("client_version_manifest_failed", error="no valid version: key")
            return False
        return self.update(found)


async def refresh_client_version(app: web.Application) -> None:
    """The background task (once per process: each one holds its own identity)."""
    await app[CLIENT_IDENTITY].refresh(app[HTTP])
