"""The double speaks PROTOCOL §13.12's client rules (plain aiohttp client against it)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.unit.test_upstream_double import chat_body, post, stream, visible_text
from tests.upstream_double import NEW_MODELS, VERSION_NOTICE


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


NEW = sorted(NEW_MODELS)[0]
OLD = "gpt-oss-120b-medium"  # not marked new


@pytest.mark.parametrize(
    ("user_agent", "model", "outcome"),
    [
        ("antigravity/hub/2.9.1 darwin/arm64", NEW, "text"),
        ("antigravity/2.9.0 windows/amd64", NEW, "text"),
        ("antigravity/hub/2.8.9 darwin/arm64", NEW, 404),
        ("antigravity/2.8.0 windows/amd64", OLD, "text"),
        ("antigravity/1.14.9 windows/amd64", OLD, "notice"),
        ("antigravity/1.11.3 windows/amd64", NEW, 404),
        ("antigravity/hub/ darwin/arm64", OLD, 400),
    ],
)
async def test_version_gate(double, http, user_agent: str, model: str, outcome: str | int) -> None:
    acc = double.add_account("v@example.com")
    body = chat_body(acc.project, model=model)
    status, _, raw = await post(
        http, double, "streamGenerateContent", acc.access_token, body, sse=True, **{"User-Agent": user_agent}
    )
    if isinstance(outcome, int):
        assert status == outcome, raw
        if outcome == 404:
            assert json.loads(raw)["error"]["message"] == "Requested entity was not found."
        return
    assert status == 200, raw
    _, _, events = await stream(http, double, acc.access_token, body, **{"User-Agent": user_agent})
    assert (visible_text(events) == VERSION_NOTICE) is (outcome == "notice")


async def test_an_empty_project_is_a_400(double, http) -> None:
    acc = double.add_account("p@example.com", paid_tier="g1-pro-tier", project=None)
    status, _, raw = await post(
        http, double, "streamGenerateContent", acc.access_token, chat_body(""), sse=True
    )
    assert status == 400 and "projects/" in json.loads(raw)["error"]["message"]
    status, _, raw = await post(http, double, "fetchAvailableModels", acc.access_token, {"project": ""})
    assert status == 400
    status, _, raw = await post(http, double, "fetchAvailableModels", acc.access_token, {})
    assert status == 200 and json.loads(raw)["models"]
    _, _, events = await stream(http, double, acc.access_token, chat_body(None))
    assert visible_text(events)


async def test_snake_case_transport(double, http) -> None:
    acc = double.add_account("s@example.com")
    double.next_transport(snake_case=True)
    _, text, events = await stream(
        http, double, acc.access_token, chat_body(acc.project, "[[image]]", model=OLD)
    )
    parts = [
        p
        for e in events
        for c in e["response"].get("candidates", [])
        for p in c.get("content", {}).get("parts", [])
    ]
    images = [p for p in parts if "inline_data" in p]
    assert images and set(images[0]["inline_data"]) == {"mime_type", "data"}
    assert "inlineData" not in text


async def test_keepalive_comments_between_frames(double, http) -> None:
    acc = double.add_account("k@example.com")
    double.next_transport(frame_delay=0.03, keepalive=0.01)
    _, text, events = await stream(http, double, acc.access_token, chat_body(acc.project, model=OLD))
    assert ": keep-alive" in text
    assert visible_text(events) == "Hello world!"
