"""``GET /v1/models`` through the openai SDK."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import ADMIN_KEY
from tests.e2e.conftest import E2E


async def test_models_lists_chat_models_only_and_is_cached(e2e: E2E) -> None:
    await e2e.add_account()
    client = e2e.client()

    listed = await client.models.list()
    ids = [model.id for model in listed.data]
    assert "gemini-3-pro-high" in ids and "claude-sonnet-4-5-thinking" in ids
    # Internal upstream ids are not for clients.
    assert not [i for i in ids if i.startswith(("chat_", "tab_"))]
    assert all(model.object == "model" and model.owned_by == "google" for model in listed.data)
    fetches = len(e2e.double.requests_for("fetchAvailableModels"))
    assert fetches == 1

    again = await client.models.list()
    assert [model.id for model in again.data] == ids
    assert len(e2e.double.requests_for("fetchAvailableModels")) == fetches


async def test_models_uses_the_accounts_project(e2e: E2E) -> None:
    account = await e2e.add_account()
    await e2e.client().models.list()
    (call,) = e2e.double.requests_for("fetchAvailableModels")
    assert call.body == {"project": account.upstream.project}


async def test_models_without_any_account_is_403(e2e: E2E) -> None:
    with pytest.raises(openai.PermissionDeniedError) as caught:
        await e2e.client().models.list()
    assert caught.value.code == "no_account"


async def test_models_upstream_failure_is_an_upstream_error(e2e: E2E) -> None:
    await e2e.add_account()
    e2e.double.fail("internal", rpc="fetchAvailableModels", times=5)
    with pytest.raises(openai.InternalServerError) as caught:
        await e2e.client().models.list()
    assert caught.value.status_code == 502


async def test_models_with_the_admin_key(e2e: E2E) -> None:
    await e2e.add_account()
    admin = e2e.client(user={"api_key": ADMIN_KEY})
    ids = [model.id for model in (await admin.models.list()).data]
    assert "gemini-2.5-flash" in ids
