"""The web console at /ui/ (issue 16), in headless Chromium against the real app and the
upstream double: what a person does, through the page only, and what they must never see
(console errors, CSP violations, a key in an address, a cookie or local storage)."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import ClientSession, web

from antigv.appkeys import CLIENT_IDENTITY, QUOTAS
from antigv.protocols.ui import routes
from tests.browser.conftest import CALLBACK_PREFIX, PHONE, Tab, start_gateway
from tests.conftest import ADMIN_KEY, bearer
from tests.e2e.conftest import E2E, GEMINI

GOOGLE_EMAIL = "new.person@example.com"


def ui_url(site: E2E) -> str:
    return str(site.gw.server.make_url("/ui/"))


async def sign_in(tab: Tab, url: str | None, key: str) -> None:
    """Sign in on the page at ``url`` (None: where the tab is)."""
    page = tab.page
    if url is not None:
        await page.goto(url)
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("button", name="Sign out").wait_for()


async def go(tab: Tab, name: str) -> None:
    """Open a page from the navigation and wait until it has drawn."""
    page = tab.page
    await page.get_by_role("navigation").get_by_role("link", name=name).click()
    await page.get_by_role("heading", level=1, name=name).wait_for()
    await page.locator("#page[aria-busy='false']").wait_for()


async def chat(site: E2E, key: str) -> None:
    response = await site.gw.http.post(
        "/v1/chat/completions",
        json={"model": GEMINI, "messages": [{"role": "user", "content": "Hello"}]},
        headers=bearer(key),
    )
    assert response.status == 200, await response.text()


async def sign_in_with_google(tab: Tab) -> tuple[Any, str]:
    """Click "Open Google's sign-in page": the new tab goes to Google's page (the double's),
    which sends it on to the localhost address nothing listens at. That tab, and the address
    it landed on, which the person then copies from its address bar."""
    landed: list[str] = []

    def seen(request: Any) -> None:
        if request.url.startswith(CALLBACK_PREFIX):
            landed.append(request.url)

    async def nothing_listens(route: Any) -> None:
        await route.fulfill(status=502, content_type="text/plain", body="This site can't be reached")

    await tab.context.route(CALLBACK_PREFIX + "**", nothing_listens)
    tab.context.on("request", seen)
    try:
        async with tab.context.expect_page() as opened:
            await tab.page.get_by_role("button", name="Open Google's sign-in page").click()
        google = await opened.value
        for _ in range(200):
            if landed:
                return google, landed[0]
            await asyncio.sleep(0.05)
        raise AssertionError(f"the new tab never reached {CALLBACK_PREFIX}: it is at {google.url}")
    finally:
        tab.context.remove_listener("request", seen)
        await tab.context.unroute(CALLBACK_PREFIX + "**", nothing_listens)


def assert_key_kept_private(tab: Tab, *keys: str) -> None:
    for url in tab.urls:
        for key in keys:
            assert key not in url, url
    for url, headers in tab.request_headers:
        if "/api/" in url:
            assert headers.get("authorization", "").startswith("Bearer sk-"), url


# --- the walk-through ----------------------------------------------------------------------


@pytest.mark.slow
async def test_a_user_adds_an_account_sees_quotas_creates_a_key_and_sees_usage(site: E2E, new_tab: Any):
    upstream = site.double.add_account(GOOGLE_EMAIL)
    site.double.set_quota(upstream, "claude_gpt", 0.42)
    site.double.set_quota(upstream, "claude_gpt", 0.9, reset_time=3 * 86400, window="weekly")
    tab = await new_tab()
    page = tab.page

    # Signing in: a wrong key is told so, in the API's words.
    await page.goto(ui_url(site))
    await page.get_by_role("heading", name="Sign in").wait_for()
    await tab.screenshot("sign-in")
    await page.get_by_label("API key").fill("sk-not-a-key")
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("alert").filter(has_text="invalid API key").wait_for()
    tab.problems = [p for p in tab.problems if "401" not in p]  # the refused sign-in's own log line
    await page.get_by_label("API key").fill(site.user["api_key"])
    await page.get_by_label("API key").press("Enter")
    await page.get_by_text("alice · user").wait_for()
    await page.get_by_text("No Google account yet.").wait_for()

    # Adding a Google account: the button opens Google's page (the double's) in a new tab,
    # which lands on a localhost address that does not load; the person pastes it.
    await page.get_by_role("button", name="Add a Google account").click()
    # A wrong paste first: the API's message says what is wrong.
    await page.get_by_label("The address from the address bar").fill(
        "http://localhost:42532/oauth-callback?state=made-up&code=4/nothing"
    )
    await page.get_by_role("button", name="Add the account").click()
    await page.locator(".add-account [role=alert]").wait_for()
    tab.problems = [p for p in tab.problems if "status of 4" not in p]
    site.double.queue_login(GOOGLE_EMAIL)
    google, landed = await sign_in_with_google(tab)
    assert "code=" in landed and "state=" in landed, landed
    await page.get_by_text("Google's page is open in a new tab.").wait_for()
    await page.get_by_label("The address from the address bar").fill(landed)
    await page.get_by_role("button", name="Add the account").click()
    await page.get_by_text(f"{GOOGLE_EMAIL}: account added.").wait_for()
    card = page.locator("article.account").filter(has_text=GOOGLE_EMAIL)
    await card.wait_for()
    await google.close()

    # Its quotas: a bar per model group for both windows, and per model.
    await card.get_by_role("button", name="Show quotas").click()
    quotas = card.locator(".quotas")
    await quotas.get_by_role("heading", name="Claude and GPT").wait_for()
    assert await quotas.locator(".window-row").count() == 4
    weekly = quotas.get_by_label("Claude and GPT, Weekly window: quota left")
    assert await weekly.get_attribute("value") == "0.9"
    claude = quotas.locator(".window-group").filter(has_text="Claude and GPT")
    weekly_text = await claude.locator(".window-row").filter(has_text="Weekly").inner_text()
    assert re.search(r"90%\s+resets in\s+(2 d 23 h|3 d 0 h)", weekly_text), weekly_text
    rows = quotas.locator("tbody tr")
    assert await rows.count() >= 3
    await tab.screenshot("accounts")

    # Switching a model off and on again.
    switch = quotas.get_by_role("button", name=f"Use {GEMINI} on this account")
    assert await switch.get_attribute("aria-pressed") == "true"
    await switch.click()
    await page.get_by_text(f"{GEMINI} is switched off on this account.").wait_for()
    assert await switch.get_attribute("aria-pressed") == "false"
    [row] = await site.sql("SELECT status FROM model_quotas WHERE model_name = %s", (GEMINI,))
    assert row["status"] == 0
    await switch.click()
    await page.get_by_text(f"{GEMINI} is switched on again.").wait_for()

    # Disabling the account, then enabling it again; renaming it.
    await card.get_by_role("button", name="Disable").click()
    await card.get_by_text("disabled by owner").wait_for()
    await card.locator(".badge", has_text="Disabled").wait_for()
    await card.get_by_role("button", name="Enable").click()
    await card.locator(".badge", has_text="Enabled").wait_for()
    await card.get_by_role("button", name="Rename").click()
    await card.get_by_label("New name").fill("Work <b>account</b>")
    await card.get_by_role("button", name="Save").click()
    await card.get_by_role("heading", name="Work <b>account</b>").wait_for()  # text, never markup

    # A key with a limit: its secret shown once, with a copy button.
    await go(tab, "Keys")
    await page.get_by_role("button", name="Create a key").click()
    await page.get_by_label("Name").fill("laptop")
    await page.get_by_label("Requests a minute").fill("60")
    await page.get_by_role("button", name="Create the key").click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_role("heading", name='Key "laptop" created').wait_for()
    secret = await dialog.get_by_label("Key").input_value()
    assert secret.startswith("sk-")
    await dialog.get_by_role("button", name="Copy").click()
    await dialog.get_by_role("button", name="I have stored it").click()
    key_card = page.locator("article.key").filter(has_text="laptop")
    await key_card.get_by_text("60 requests/min").wait_for()
    assert await page.get_by_role("textbox", name="OpenAI base URL").input_value() == str(
        site.gw.server.make_url("/v1")
    )
    await tab.screenshot("keys")

    # Usage after a chat with the new key.
    await chat(site, secret)
    await site.usage_rows(1)
    await go(tab, "Usage")
    await page.locator("svg.chart rect").first.wait_for()
    log = page.locator("table.log tbody tr")
    assert await log.count() == 1
    assert GEMINI in await log.first.inner_text()
    assert "laptop" in await log.first.inner_text()
    await page.get_by_role("radio", name="Tokens").check()
    await page.locator("svg.chart rect").first.wait_for()
    await tab.screenshot("usage")

    # Every page once more, then: nothing went wrong, and the key stayed out of sight.
    await go(tab, "Accounts")
    await tab.assert_clean()
    assert_key_kept_private(tab, site.user["api_key"], secret)
    assert await tab.context.cookies() == []
    assert await page.evaluate("localStorage.length") == 0
    assert await page.evaluate("sessionStorage.getItem('antigv.apiKey')") == site.user["api_key"]
    # A non-admin sees no Admin page.
    assert not await page.get_by_role("link", name="Admin").is_visible()

    # Signing out forgets the key.
    await page.get_by_role("button", name="Sign out").click()
    await page.get_by_role("heading", name="Sign in").wait_for()
    assert await page.evaluate("sessionStorage.length") == 0


@pytest.mark.slow
async def test_the_admin_creates_a_user_and_sees_the_upstream_client_version(site: E2E, new_tab: Any):
    pooled = await site.add_account("pooled@example.com", shared=True)
    site.double.set_quota(pooled.upstream, "gemini", 0.05, reset_time=1800)
    assert await site.gw.app[QUOTAS].read(pooled.account_id) is not None
    tab = await new_tab()
    page = tab.page
    await sign_in(tab, ui_url(site), ADMIN_KEY)
    await page.get_by_text("admin", exact=True).wait_for()

    await go(tab, "Admin")
    version = site.gw.app[CLIENT_IDENTITY].version
    assert version
    await page.locator(".client-version", has_text=version).wait_for()
    await page.get_by_role("table", name="Users").get_by_text("alice").wait_for()

    await page.get_by_label("Name").fill("bob")
    await page.get_by_role("button", name="Create the user").click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_role("heading", name="User bob created").wait_for()
    bob_key = await dialog.get_by_label("Key").input_value()
    await dialog.get_by_role("button", name="I have stored it").click()
    bob_row = page.get_by_role("table", name="Users").locator("tr").filter(has_text="bob")
    await bob_row.wait_for()
    response = await site.gw.http.get("/api/user/me", headers=bearer(bob_key))
    assert (await response.json())["data"]["name"] == "bob"

    # Disabling bob: his key is refused from then on.
    await bob_row.get_by_role("button", name="Disable").click()
    await bob_row.locator(".badge", has_text="Disabled").wait_for()
    response = await site.gw.http.get("/api/user/me", headers=bearer(bob_key))
    assert response.status == 403
    pool = page.get_by_role("table", name="Shared pool per model")
    assert GEMINI in await pool.inner_text()
    low = page.get_by_role("table", name="Quotas running low")
    assert "pooled@example.com" in await low.inner_text()
    assert "5.0%" in await low.inner_text()
    await tab.screenshot("admin")

    # The admin's view of the other pages draws too (every user's data).
    await go(tab, "Accounts")
    await page.locator("article.account").filter(has_text="pooled@example.com").wait_for()
    await page.get_by_role("button", name="Add a Google account").click()
    owner = page.get_by_label("Owner")
    await owner.select_option(label="alice (user 1)")
    site.double.add_account("for.alice@example.com")
    site.double.queue_login("for.alice@example.com")
    google, _ = await sign_in_with_google(tab)
    await google.close()
    [state] = await site.sql("SELECT user_id FROM oauth_states")
    assert state["user_id"] == site.user["user_id"]
    for name in ("Usage", "Keys"):
        await go(tab, name)
    await tab.assert_clean()
    assert_key_kept_private(tab, ADMIN_KEY, bob_key)


@pytest.mark.slow
async def test_the_usage_log_pages_and_filters_by_day(site: E2E, new_tab: Any):
    acc = await site.add_account("busy@example.com")
    today = datetime.now(UTC)
    # Noon, so that its rows, seconds apart, fall on one UTC day whenever this runs.
    long_ago = (today - timedelta(days=10)).replace(hour=12, minute=0)
    insert = (
        "INSERT INTO usage_log (request_id, user_id, account_id, model_name, quota_group, is_shared,"
        " prompt_tokens, completion_tokens, reasoning_tokens, total_tokens, status, latency_ms, consumed_at)"
        " SELECT 'r' || %(tag)s || n, %(user)s, %(account)s, %(model)s, 'gemini', 0, 10, 20, 0, 30,"
        " CASE WHEN n = 1 THEN 'error' ELSE 'ok' END, 100 + n, %(at)s - n * interval '1 second'"
        " FROM generate_series(1, %(count)s) AS n"
    )
    common = {"user": site.user["user_id"], "account": acc.account_id}
    await site.sql(insert, {**common, "tag": "now", "model": GEMINI, "at": today, "count": 30})
    await site.sql(insert, {**common, "tag": "old", "model": "gemini-3-flash", "at": long_ago, "count": 1200})
    tab = await new_tab()
    page = tab.page
    await sign_in(tab, ui_url(site), site.user["api_key"])
    await go(tab, "Usage")

    # The last seven days: this morning's thirty, 25 a page.
    tiles = page.locator(".tiles")
    assert "Requests\n30" in await tiles.inner_text()
    assert "Not ok\n1" in await tiles.inner_text()
    rows = page.locator("table.log tbody tr")
    assert await rows.count() == 25
    newer = page.get_by_role("button", name="Newer")
    older = page.get_by_role("button", name="Older")
    assert await newer.is_disabled() and await older.is_enabled()
    await older.click()
    await page.get_by_text("Page 2").wait_for()
    assert await rows.count() == 5
    assert await older.is_disabled()
    await newer.click()
    await page.get_by_text("Page 1").wait_for()
    assert await rows.count() == 25

    # Ten days ago, by its own dates: all 1200 counted (more than one read of the log holds).
    await page.get_by_label("From (UTC day)").fill((long_ago - timedelta(days=1)).date().isoformat())
    await page.get_by_label("To (UTC day)").fill((long_ago + timedelta(days=1)).date().isoformat())
    await page.get_by_role("button", name="Show", exact=True).click()
    await page.locator(".tiles", has_text=re.compile(r"Requests\s*1,200(?!\d)")).wait_for()
    assert await rows.count() == 25 and await older.is_enabled()
    assert "gemini-3-flash" in await rows.first.inner_text()
    assert await page.locator("svg.chart rect").count() == 1
    await tab.assert_clean()


# --- a phone, the keyboard -----------------------------------------------------------------


def _no_sideways_scroll() -> str:
    return "document.documentElement.scrollWidth <= window.innerWidth + 1"


@pytest.mark.slow
async def test_a_phone_sized_screen_and_the_keyboard_alone(site: E2E, new_tab: Any):
    acc = await site.add_account("phone@example.com")
    tab = await new_tab(viewport=PHONE, is_mobile=True, has_touch=True)
    page = tab.page
    keyboard = page.keyboard
    await page.goto(ui_url(site))
    await page.get_by_role("heading", name="Sign in").wait_for()
    assert await page.evaluate("document.activeElement.id") == "signin-key"
    await keyboard.type(site.user["api_key"])
    await keyboard.press("Enter")
    await page.get_by_role("heading", level=1, name="Accounts").wait_for()
    await page.locator("#page[aria-busy='false']").wait_for()
    assert await page.evaluate("document.activeElement.textContent") == "Accounts"  # the page's heading
    assert await page.evaluate(_no_sideways_scroll())
    await tab.screenshot("phone-accounts")

    # Tab to the navigation's "Usage", Enter: the new page's heading takes the focus.
    for _ in range(40):
        await keyboard.press("Tab")
        if await page.evaluate("document.activeElement.textContent") == "Usage":
            break
    else:
        raise AssertionError("Tab never reached the Usage link")
    await keyboard.press("Enter")
    await page.get_by_role("heading", level=1, name="Usage").wait_for()
    await page.locator("#page[aria-busy='false']").wait_for()
    assert await page.evaluate("document.activeElement.textContent") == "Usage"
    assert await page.evaluate(_no_sideways_scroll())
    await go(tab, "Keys")
    assert await page.evaluate(_no_sideways_scroll())
    await go(tab, "Accounts")

    # A destructive action asks first; Escape says no, and the focus comes back.
    card = page.locator("article.account").filter(has_text="phone@example.com")
    await card.get_by_role("button", name="Delete").focus()
    await keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    await dialog.get_by_role("heading", name="Delete phone@example.com?").wait_for()
    assert await page.evaluate("document.activeElement.textContent") == "Cancel"
    await keyboard.press("Escape")
    await dialog.wait_for(state="hidden")
    assert await page.evaluate("document.activeElement.textContent") == "Delete"
    assert await site.sql("SELECT 1 FROM accounts WHERE account_id = %s", (acc.account_id,))
    # Enter on "Delete the account" does it.
    await keyboard.press("Enter")
    await dialog.get_by_role("button", name="Delete the account").focus()
    await keyboard.press("Enter")
    await page.get_by_text("No Google account yet.").wait_for()
    assert not await site.sql("SELECT 1 FROM accounts WHERE account_id = %s", (acc.account_id,))

    # The add-account flow opens where the focus is.
    await page.get_by_role("button", name="Add a Google account").focus()
    await keyboard.press("Enter")
    assert await page.evaluate("document.activeElement.textContent") == "Add a Google account"
    assert await page.evaluate("document.activeElement.tagName") == "H2"
    assert await page.evaluate(_no_sideways_scroll())
    await tab.assert_clean()


# --- behind a path prefix ------------------------------------------------------------------

_HOP_BY_HOP = {"host", "connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


async def start_prefix_proxy(aiohttp_server: Any, prefix: str) -> tuple[Any, dict[str, str], list[str]]:
    """A reverse proxy that serves the gateway under ``prefix`` (nginx's ``location /antigv/ {
    proxy_pass http://gateway/; }``); anything outside the prefix is a 404, recorded."""
    target: dict[str, str] = {}
    strays: list[str] = []

    async def forward(request: web.Request) -> web.Response:
        if not request.path.startswith(prefix + "/"):
            strays.append(request.path)
            return web.Response(status=404, text="not under the prefix")
        url = target["url"] + request.raw_path[len(prefix) :]
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with (
            ClientSession() as session,
            session.request(
                request.method, url, headers=headers, data=await request.read(), allow_redirects=False
            ) as answer,
        ):
            body = await answer.read()
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP}
            return web.Response(status=answer.status, body=body, headers=kept)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    return await aiohttp_server(app), target, strays


@pytest.mark.slow
async def test_the_console_works_behind_a_path_prefix(site: E2E, aiohttp_server: Any, new_tab: Any):
    await site.add_account("prefixed@example.com")
    proxy, target, strays = await start_prefix_proxy(aiohttp_server, "/antigv")
    public_url = str(proxy.make_url("/antigv"))

    # Without server.public_url: every URL the page uses is relative, so an unknown prefix holds.
    target["url"] = str(site.gw.server.make_url("/")).rstrip("/")
    tab = await new_tab()
    page = tab.page
    await page.goto(public_url + "/ui")
    assert page.url == public_url + "/ui/"
    await sign_in(tab, None, site.user["api_key"])
    await page.locator("article.account").filter(has_text="prefixed@example.com").wait_for()

    # With it: the redirect and the addresses shown to people are the public ones.
    gateway = await start_gateway(site, aiohttp_server, public_url=public_url)
    target["url"] = str(gateway.server.make_url("/")).rstrip("/")
    tab = await new_tab()
    page = tab.page
    await page.goto(public_url + "/ui")
    assert page.url == public_url + "/ui/"
    await sign_in(tab, None, site.user["api_key"])
    await go(tab, "Keys")
    assert await page.get_by_role("textbox", name="OpenAI base URL").input_value() == public_url + "/v1"
    assert await page.get_by_role("textbox", name="Anthropic base URL").input_value() == public_url
    await go(tab, "Usage")
    await go(tab, "Accounts")
    await page.locator("article.account").filter(has_text="prefixed@example.com").wait_for()
    await tab.assert_clean()
    assert strays == []
    assert tab.urls and all(url.startswith(public_url + "/") for url in tab.urls), tab.urls


# --- the headers and the page's own rules ------------------------------------------------------


def directives(policy: str) -> dict[str, str]:
    return dict(part.strip().partition(" ")[::2] for part in policy.split(";") if part.strip())


# Ways to turn a string into markup or code; the console uses none of them.
_HTML_SINKS = re.compile(
    r"\.(innerHTML|outerHTML)\s*[+]?=|insertAdjacentHTML\(|document\.write|\beval\(|new Function\(|setAttribute\(\s*\"on"
)


def assert_secure(response: Any) -> None:
    policy = directives(response.headers["Content-Security-Policy"])
    assert policy["default-src"] == "'self'"
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert policy["object-src"] == "'none'"
    assert policy["form-action"] == "'none'"
    assert policy["require-trusted-types-for"] == "'script'"
    assert "unsafe" not in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_the_console_is_served_with_strict_security_headers(site: E2E):
    http = site.gw.http
    page = await http.get("/ui/")
    assert page.status == 200
    assert page.content_type == "text/html" and page.charset == "utf-8"
    assert page.headers["Cache-Control"] == "no-store"
    assert_secure(page)
    text = await page.text()
    # No inline script or style, no handler attributes: all of it lives in the files.
    scripts = re.findall(r"<script\b[^>]*>", text)
    assert scripts and all('src="' in tag and 'type="module"' in tag for tag in scripts)
    assert "<style" not in text
    assert not re.search(r"\sstyle=", text)
    assert not re.search(r"\son[a-z]+=", text)
    assert '<meta name="antigv-public-url" content="">' in text

    for name in ("app.js", "api.js", "dom.js", "accounts.js", "usage.js", "keys.js", "admin.js", "chart.js"):
        asset = await http.get(f"/ui/{name}")
        assert asset.status == 200, name
        assert asset.content_type == "text/javascript"
        assert asset.headers["Cache-Control"] == "no-cache"
        assert_secure(asset)
        source = await asset.text()
        sink = _HTML_SINKS.search(source)
        assert sink is None, (name, sink)
        assert "localStorage" not in source and "document.cookie" not in source, name
        again = await http.get(f"/ui/{name}", headers={"If-None-Match": asset.headers["ETag"]})
        assert again.status == 304
    api_source = await (await http.get("/ui/api.js")).text()
    assert 'cache: "no-store"' in api_source and 'credentials: "omit"' in api_source
    assert (await http.get("/ui/app.css")).content_type == "text/css"

    # Only the files of the console; the page itself only at /ui/.
    for path in ("/ui/index.html", "/ui/nothing.js", "/ui/..%2Froutes.py", "/ui/__init__.py"):
        missing = await http.get(path)
        assert missing.status == 404, path
        assert (await missing.json())["error"]["code"] in ("not_found", "unknown_route", None)
    moved = await http.get("/ui", allow_redirects=False)
    assert moved.status == 308 and moved.headers["Location"] == "ui/"

    # What the admin page shows: the upstream client version, admin only, never cached.
    info = await http.get("/api/ui/info", headers=bearer(ADMIN_KEY))
    body = await info.json()
    assert info.status == 200 and body["success"] is True
    assert body["data"]["upstream_client_version"] == site.gw.app[CLIENT_IDENTITY].version
    assert body["data"]["public_url"] is None
    assert info.headers["Cache-Control"] == "no-store"
    refused = await http.get("/api/ui/info", headers=bearer(site.user["api_key"]))
    assert refused.status == 403 and (await refused.json())["error"]["code"] == "admin_required"
    assert (await http.get("/api/ui/info")).status == 401


def test_public_url_is_escaped_in_the_page():
    page = routes.render_index('https://example.com/a"><script>alert(1)</script>').body.decode()
    assert "<script>alert" not in page
    assert 'content="https://example.com/a&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in page
