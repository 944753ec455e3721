"""The web console in a real browser: Debian's Chromium, headless, driven by Playwright's
Python package (its own browser download is never used: ``executable_path`` points at
the system's Chromium), against the real app on an aiohttp test server in front of the
upstream double, which also plays Google's sign-in page.

Without Playwright or Chromium the browser tests skip (``deploy/install-browser.sh``
installs both); with ``ANTIGV_REQUIRE_BROWSER=1`` (CI) they fail instead.

Every tab records what a person would never want to see: console errors and warnings,
uncaught exceptions, Content-Security-Policy violations and failed requests; a test
ends by asserting there were none.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from antigv.app import create_app
from antigv.backends.antigravity import oauth as oauth_module
from tests.conftest import double_config
from tests.e2e.conftest import E2E, Gateway
from tests.upstream_double import UpstreamDouble

CHROMIUM = os.environ.get("ANTIGV_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
REQUIRED = os.environ.get("ANTIGV_REQUIRE_BROWSER") == "1"
# No network of its own (updates, sync, field trials), no GPU, a fresh profile per launch
# (Playwright gives each launch a temporary user-data-dir and removes it afterwards).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
# Where the double's consent page sends the browser (config.oauth.callback_url's default):
# nothing listens there, as on a person's machine.
CALLBACK_PREFIX = "http://localhost:42532/"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

# Every CSP violation the page sees, kept where the test can read it (injected through the
# DevTools protocol before any of the page's own scripts, so the page's CSP does not apply).
_CSP_LISTENER = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(`${event.violatedDirective} blocked ${event.blockedURI || "inline"}`);
});
"""


def _missing() -> str | None:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "Playwright's Python package is not installed (deploy/install-browser.sh installs it)"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no Chromium at {CHROMIUM} (deploy/install-browser.sh installs Debian's chromium)"
    return None


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    missing = _missing()
    if missing:
        if REQUIRED:
            pytest.fail(f"{missing}; ANTIGV_REQUIRE_BROWSER=1 says the browser tests must run")
        pytest.skip(missing)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=30_000
        )
        try:
            yield chromium
        finally:
            await chromium.close()


class Tab:
    """A page of one browser context, and what went wrong on it."""

    def __init__(self, context: Any, page: Any) -> None:
        self.context = context
        self.page = page
        self.problems: list[str] = []
        self.urls: list[str] = []
        self.request_headers: list[tuple[str, dict[str, str]]] = []
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.problems.append(f"uncaught: {error}"))
        page.on("requestfailed", self._on_failed)
        page.on("request", self._on_request)

    def _on_console(self, message: Any) -> None:
        if message.type in ("error", "warning"):
            self.problems.append(f"console {message.type}: {message.text}")

    def _on_failed(self, request: Any) -> None:
        if not request.url.startswith(CALLBACK_PREFIX):
            self.problems.append(f"request failed: {request.method} {request.url} {request.failure}")

    def _on_request(self, request: Any) -> None:
        self.urls.append(request.url)
        self.request_headers.append((request.url, dict(request.headers)))

    async def csp_violations(self) -> list[str]:
        return list(await self.page.evaluate("window.__cspViolations || []"))

    async def assert_clean(self) -> None:
        """No console error or warning, no uncaught error, no CSP violation so far."""
        violations = await self.csp_violations()
        assert not violations, violations
        assert not self.problems, self.problems

    async def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        # The picture is of the page: passing notices and the scroll position are left out.
        await self.page.evaluate(
            "document.getElementById('toasts')?.replaceChildren(); window.scrollTo(0, 0)"
        )
        await self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture
async def new_tab(browser: Any, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """``await new_tab(viewport=...)``: a fresh context (no cookies, no storage) and its page.
    A failed test leaves a screenshot of each of its tabs, as they were, in var/screenshots/."""
    contexts: list[Any] = []
    tabs: list[Tab] = []

    async def make(viewport: dict[str, int] | None = None, **options: Any) -> Tab:
        context = await browser.new_context(viewport=viewport or DESKTOP, **options)
        context.set_default_timeout(10_000)
        await context.add_init_script(_CSP_LISTENER)
        contexts.append(context)
        tab = Tab(context, await context.new_page())
        tabs.append(tab)
        return tab

    yield make
    if request.node.stash.get(_FAILED, False):
        for index, tab in enumerate(tabs):
            await tab.screenshot(f"FAILED-{request.node.name}-{index}")
    for context in contexts:
        await context.close()


@pytest.fixture(autouse=True)
def fast_onboarding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(oauth_module, "ONBOARD_POLL_DELAY", 0.0)


async def start_gateway(harness: E2E, aiohttp_server: Any, **server: Any) -> Gateway:
    """A gateway whose upstream and Google sign-in (authorize, token, userinfo) are the double's."""
    config = double_config(
        harness.db_dsn,
        harness.double,
        upstream={"first_byte_timeout": 5, "idle_timeout": 2},
        server=server,
    )
    app = create_app(config, clock=harness.clock.clock())
    test_server = await aiohttp_server(app)
    http = TestClient(test_server)
    await http.start_server()
    gateway = Gateway(app, test_server, http)
    harness.gateways.append(gateway)
    return gateway


@pytest.fixture
async def site(aiohttp_server: Any, db_dsn: str, double: UpstreamDouble) -> AsyncIterator[E2E]:
    """The e2e harness (its helpers, a user alice) over a gateway that signs in through the double."""
    harness = E2E(aiohttp_server, db_dsn, double)
    harness.gw = await start_gateway(harness, aiohttp_server)
    harness.user = await harness.create_user("alice")
    yield harness
    try:
        await harness.assert_nothing_in_flight()
    finally:
        await harness.close()
