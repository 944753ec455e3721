"""``GET /v1/models`` and ``GET /v1/models/{model}`` through the openai SDK: the live catalogue."""

from __future__ import annotations

import openai
import pytest

from antigv.appkeys import QUOTAS
from tests.conftest import ADMIN_KEY, create_user
from tests.e2e.conftest import E2E


async def ids_of(client: openai.AsyncOpenAI) -> list[str]:
    return [model.id for model in (await client.models.list()).data]


async def test_models_lists_live_models_and_their_aliases_and_is_cached(e2e: E2E) -> None:
    await e2e.add_account()
    client = e2e.client()

    listed = await client.models.list()
    ids = [model.id for model in listed.data]
    # Today's lineup, as fetchAvailableModels says (PROTOCOL §13.4) ...
    assert {
        "gemini-pro-agent",
        "gemini-3.7-flash-high",
        "claude-opus-4-6-thinking",
        "claude-sonnet-4-6",
    } <= set(ids)
    # ... plus the aliases and deprecated ids that resolve to them.
    assert {
        "gemini-3-pro-high",
        "gemini-3.1-pro-high",
        "gemini-3-pro-low",
        "claude-sonnet-4-5-thinking",
    } <= set(ids)
    # Internal upstream ids are not for clients, nor are alias patterns.
    assert not [i for i in ids if i.startswith(("chat_", "tab_")) or "*" in i]
    assert ids == sorted(ids)
    assert all(model.object == "model" and model.owned_by == "google" for model in listed.data)
    assert len(e2e.double.requests_for("fetchAvailableModels")) == 1

    again = await client.models.list()
    assert [model.id for model in again.data] == ids
    assert len(e2e.double.requests_for("fetchAvailableModels")) == 1


async def test_aliases_into_models_nobody_offers_are_not_listed(e2e: E2E) -> None:
    del e2e.double.models["claude-opus-4-6-thinking"]
    await e2e.add_account()
    ids = await ids_of(e2e.client())
    assert "claude-opus-4-6-thinking" not in ids
    assert "claude-opus-4-5-thinking" not in ids  # deprecated into a model no account offers
    assert "gemini-3-pro-high" in ids


async def test_models_are_the_union_of_every_usable_account(e2e: E2E) -> None:
    """One account is read by the listing; another is known from the quota reads (PROTOCOL §13.11)."""
    bob = await e2e.create_user("bob")
    e2e.double.models["gemini-9-preview"] = {"displayName": "Gemini 9 Preview", "maxOutputTokens": 8192}
    shared = await e2e.add_account(user=bob, shared=True)
    await e2e.gw.app[QUOTAS].read(shared.account_id)
    del e2e.double.models["gemini-9-preview"]
    await e2e.add_account()  # alice's own: listed first, read by the listing

    ids = await ids_of(e2e.client())
    assert "gemini-9-preview" in ids
    (read,) = e2e.double.requests_for("fetchAvailableModels")[1:]
    assert read.account != shared.email


async def test_retrieve_a_model(e2e: E2E) -> None:
    await e2e.add_account()
    client = e2e.client()
    model = await client.models.retrieve("gemini-pro-agent")
    assert (model.id, model.object, model.owned_by) == ("gemini-pro-agent", "model", "google")
    assert (await client.models.retrieve("gemini-3-pro-high")).id == "gemini-3-pro-high"
    with pytest.raises(openai.NotFoundError) as caught:
        await client.models.retrieve("gpt-9")
    assert caught.value.code == "model_not_found"
    assert caught.value.body["param"] == "model"
    # Answered from the list's cache.
    assert len(e2e.double.requests_for("fetchAvailableModels")) == 1


async def test_models_uses_the_accounts_project(e2e: E2E) -> None:
    account = await e2e.add_account()
    await e2e.client().models.list()
    (call,) = e2e.double.requests_for("fetchAvailableModels")
    assert call.body == {"project": account.upstream.project}


async def test_models_without_any_account_is_403(e2e: E2E) -> None:
    with pytest.raises(openai.PermissionDeniedError) as caught:
        await e2e.client().models.list()
    assert caught.value.code == "no_account"
    assert "/api/oauth/authorize" in caught.value.message
    with pytest.raises(openai.PermissionDeniedError):
        await e2e.client().models.retrieve("gemini-pro-agent")


async def test_models_upstream_failure_is_an_upstream_error(e2e: E2E) -> None:
    await e2e.add_account()
    e2e.double.fail("internal", rpc="fetchAvailableModels", times=5)
    with pytest.raises(openai.InternalServerError) as caught:
        await e2e.client().models.list()
    assert caught.value.status_code == 502


async def test_models_with_the_admin_key(e2e: E2E) -> None:
    await e2e.add_account()
    admin = e2e.client(user={"api_key": ADMIN_KEY})
    ids = await ids_of(admin)
    assert "gemini-3-flash" in ids


async def test_models_of_another_user_are_not_listed(e2e: E2E) -> None:
    """A private account of another user adds nothing to the caller's list."""
    carol = await create_user(e2e.gw.http, "carol")
    e2e.double.models["gemini-9-preview"] = {"displayName": "Gemini 9 Preview"}
    private = await e2e.add_account(user=carol)
    await e2e.gw.app[QUOTAS].read(private.account_id)
    del e2e.double.models["gemini-9-preview"]
    await e2e.add_account()
    assert "gemini-9-preview" not in await ids_of(e2e.client())
