"""Gemini API keys in the web console (issue 15), in headless Chromium against the real app
and the Gemini API double: adding a key through the page (a refused one says why, one added
twice is told so), its card beside Google accounts, and its quotas: the models a 429 parked
and what it served today against the daily allowance."""

from __future__ import annotations

import re
from typing import Any

import openai
import pytest

from tests.browser.conftest import Tab
from tests.browser.test_console import assert_key_kept_private, sign_in, ui_url
from tests.e2e.conftest import E2E, user
from tests.gemini_double import GeminiApiDouble

MODEL = "gemini-2.5-flash"


@pytest.fixture
async def keyed(site: E2E, gemini: GeminiApiDouble) -> E2E:
    """The browser harness with a gateway whose Gemini API is the double."""
    site.gw = await site.new_gateway(gemini_api={"base_url": gemini.base_url})
    return site


async def submit_key(tab: Tab, key: str, *, name: str = "", shared: bool = False) -> None:
    page = tab.page
    form = page.locator("section.add-key")
    await form.get_by_label("Gemini API key").fill(key)
    await form.get_by_label("Name (optional)").fill(name)
    await form.get_by_label("Share it with the pool").set_checked(shared)
    await form.get_by_role("button", name="Add the key").click()


@pytest.mark.slow
async def test_a_user_adds_a_gemini_key_and_sees_its_card_and_quotas(
    keyed: E2E, gemini: GeminiApiDouble, new_tab: Any
):
    await keyed.add_account("person@example.com")
    entry = gemini.add_key(tier="paid")
    gemini.set_limits(entry, MODEL, rpm=1)
    refused = "AIza" + "x" * 35
    tab = await new_tab()
    page = tab.page
    await sign_in(tab, ui_url(keyed), keyed.user["api_key"])
    await page.locator("article.account").filter(has_text="person@example.com").wait_for()

    # The form: a password field the browser neither fills nor remembers.
    opener = page.get_by_role("button", name="Add a Gemini API key")
    await opener.click()
    assert await opener.get_attribute("aria-expanded") == "true"
    form = page.locator("section.add-key")
    secret = form.get_by_label("Gemini API key")
    assert await secret.get_attribute("type") == "password"
    assert await secret.get_attribute("autocomplete") == "off"

    # A key Google refuses: the API's message names Google's reason; the field is emptied.
    await submit_key(tab, refused)
    alert = form.get_by_role("alert")
    await alert.filter(has_text="API_KEY_INVALID").wait_for()
    assert "AIza" not in await alert.inner_text()
    assert await secret.input_value() == ""
    tab.problems = [p for p in tab.problems if "status of 400" not in p]  # the refusal's own log line

    # A good one: added, shown, and its card carries the kind.
    await submit_key(tab, entry.key, name="team key", shared=True)
    await form.get_by_text(re.compile(r"team key: the key serves \d+ models\.")).wait_for()
    assert await secret.input_value() == ""
    card = page.locator("article.account").filter(has_text="team key")
    await card.wait_for()
    await card.locator(".badge", has_text="Gemini API key").wait_for()
    await card.locator(".badge", has_text="Shared").wait_for()
    facts = await card.locator(".facts").inner_text()
    assert "Fingerprint" in facts and "gemini-key:" in facts
    assert "Project" not in facts and "Tier" not in facts
    google = page.locator("article.account").filter(has_text="person@example.com")
    await google.locator(".badge", has_text="Google account").wait_for()
    assert "Project" in await google.locator(".facts").inner_text()

    # The same key again: a 409, in the API's words.
    await submit_key(tab, entry.key)
    await form.get_by_role("alert").filter(has_text="is an account already").wait_for()
    assert await secret.input_value() == ""
    tab.problems = [p for p in tab.problems if "status of 409" not in p]
    await form.get_by_role("button", name="Close").click()
    assert await form.is_hidden()

    # One chat through the key, a second one its minute window refuses: the model is parked.
    client = keyed.client()
    await client.models.list()  # the catalogue learns what the Google account offers: not this model
    completion = await client.chat.completions.create(model=MODEL, messages=user("hi"))
    assert completion.choices[0].message.content == "Hello world!"
    with pytest.raises(openai.RateLimitError):
        await client.chat.completions.create(model=MODEL, messages=user("again"))
    await keyed.usage_rows(request_id=completion._request_id)

    # Its quotas: today's use and the parked model, no 5-hour or weekly windows.
    await page.reload()
    card = page.locator("article.account").filter(has_text="team key")
    await card.get_by_role("button", name="Show quotas").click()
    quotas = card.locator(".quotas")
    await quotas.get_by_role("heading", name="Today").wait_for()
    tiles = await quotas.locator(".tiles").inner_text()
    assert re.search(r"Requests\s+[12](?!\d)", tiles), tiles
    assert re.search(rf"Tokens\s+{completion.usage.total_tokens}(?!\d)", tiles), tiles
    allowance = quotas.get_by_label("Share of the daily allowance used")
    consumed = float(await allowance.get_attribute("value"))
    assert consumed == pytest.approx(completion.usage.total_tokens / 1_000_000)
    assert "used of 1M tokens a day" in await quotas.inner_text()
    await quotas.get_by_text("midnight Pacific time").wait_for()
    parked = quotas.locator("ul.parked li")
    assert await parked.count() == 1
    assert re.search(rf"{MODEL} \(model quota exhausted\): back in \d+:\d\d", await parked.inner_text()), (
        await parked.inner_text()
    )
    assert await quotas.get_by_role("heading", name="Quota windows").count() == 0
    assert await quotas.locator("table").count() == 0
    await tab.screenshot("gemini-key")

    assert entry.key not in await page.content()
    assert entry.key not in await page.evaluate(
        "JSON.stringify(sessionStorage) + JSON.stringify(localStorage)"
    )
    await tab.assert_clean()
    assert_key_kept_private(tab, keyed.user["api_key"], entry.key, refused)
