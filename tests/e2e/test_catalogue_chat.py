"""Chats against today's upstream: aliases, retirements, thinking, output limits, prefill, images
(PROTOCOL §13.3 – §13.5, §13.9), through the openai SDK."""

from __future__ import annotations

import openai
import pytest

from antigv.appkeys import CATALOGUE, TASKS
from tests.e2e.conftest import E2E, user


async def test_a_retired_id_is_served_as_its_successor(e2e: E2E) -> None:
    await e2e.add_account()
    completion = await e2e.client().chat.completions.create(model="gemini-3-pro-high", messages=user("hi"))
    assert completion.choices[0].message.content == "Hello world!"
    assert e2e.double.last_chat().model == "gemini-pro-agent"
    rows = await e2e.usage_rows()
    assert rows[0]["model_name"] == "gemini-pro-agent"


async def test_deprecated_model_ids_from_upstream_are_followed(e2e: E2E) -> None:
    e2e.double.models["gemini-4-flash"] = {"displayName": "Gemini 4 Flash", "maxOutputTokens": 65536}
    e2e.double.deprecated_ids["gemini-3-flash"] = "gemini-4-flash"
    await e2e.add_account()
    oc = e2e.client()
    await oc.models.list()  # the catalogue learns deprecatedModelIds from the reads the gateway makes
    await oc.chat.completions.create(model="gemini-3-flash", messages=user("hi"))
    assert e2e.double.last_chat().model == "gemini-4-flash"


@pytest.mark.parametrize("stream", [False, True])
async def test_a_retirement_notice_is_a_404_naming_the_replacement(e2e: E2E, stream: bool) -> None:
    await e2e.add_account()
    oc = e2e.client()
    with pytest.raises(openai.NotFoundError) as caught:
        reply = await oc.chat.completions.create(model="gemini-2.5-pro", messages=user("hi"), stream=stream)
        if stream:
            async for _ in reply:
                pass
    assert caught.value.code == "model_retired"
    assert "gemini-2.5-pro" in caught.value.message
    assert "Gemini 3.1 Pro (High)" in caught.value.message
    assert "no longer available" not in caught.value.message  # not the upstream's text as an answer
    assert await e2e.usage_rows(wait=0.2) == []


async def test_a_retirement_notice_naming_a_known_model_serves_it_from_then_on(e2e: E2E) -> None:
    await e2e.add_account()
    oc = e2e.client()
    await oc.models.list()
    with pytest.raises(openai.NotFoundError) as caught:
        await oc.chat.completions.create(model="gemini-2.5-pro", messages=user("hi"))
    assert caught.value.code == "model_retired"
    assert "'gemini-pro-agent'" in caught.value.message
    completion = await oc.chat.completions.create(model="gemini-2.5-pro", messages=user("hi"))
    assert completion.choices[0].message.content == "Hello world!"
    assert e2e.double.last_chat().model == "gemini-pro-agent"


async def test_a_retired_id_without_a_successor_answers_at_once(e2e: E2E) -> None:
    e2e.double.retired_models["gemini-3-flash-lite"] = "nothing"
    await e2e.add_account()
    oc = e2e.client()
    for _ in range(2):
        with pytest.raises(openai.NotFoundError) as caught:
            await oc.chat.completions.create(model="gemini-3-flash-lite", messages=user("hi"))
        assert caught.value.code == "model_retired"
    # The second answer needed no upstream call.
    assert len(e2e.double.chat_requests) == 1


@pytest.mark.parametrize("model", ["gemini-pro-agent", "gemini-3-flash", "gemini-3.7-flash-high"])
async def test_gemini_3_thinking_follows_reasoning_effort(e2e: E2E, model: str) -> None:
    await e2e.add_account()
    oc = e2e.client()
    await oc.chat.completions.create(model=model, messages=user("hi"))
    assert "thinkingConfig" not in e2e.double.last_chat().generation_config
    completion = await oc.chat.completions.create(
        model=model, messages=user("[[think]] hi"), reasoning_effort="low"
    )
    assert e2e.double.last_chat().generation_config["thinkingConfig"] == {
        "includeThoughts": True,
        "thinkingLevel": "low",
    }
    assert (completion.choices[0].message.model_extra or {}).get("reasoning_content")


@pytest.mark.parametrize(
    ("model", "limit"),
    [("gemini-pro-agent", 65535), ("claude-opus-4-6-thinking", 64000), ("gemini-3-flash", 65536)],
)
async def test_max_tokens_is_clamped_to_the_models_limit(e2e: E2E, model: str, limit: int) -> None:
    await e2e.add_account()
    oc = e2e.client()
    await oc.models.list()  # the catalogue now knows the limits
    completion = await oc.chat.completions.create(model=model, messages=user("hi"), max_tokens=500000)
    assert completion.choices[0].message.content == "Hello world!"
    assert e2e.double.last_chat().generation_config["maxOutputTokens"] == limit


async def test_max_tokens_is_clamped_by_family_before_the_catalogue_knows(e2e: E2E) -> None:
    await e2e.add_account()
    await e2e.client().chat.completions.create(model="gemini-3-flash", messages=user("hi"), max_tokens=500000)
    assert e2e.double.last_chat().generation_config["maxOutputTokens"] == 65536


@pytest.mark.parametrize("model", ["claude-sonnet-4-6", "claude-opus-4-6-thinking", "gemini-3.7-flash-high"])
async def test_a_trailing_assistant_turn_works(e2e: E2E, model: str) -> None:
    await e2e.add_account()
    messages = [*user("Tell me a story"), {"role": "assistant", "content": "Once upon a time"}]
    completion = await e2e.client().chat.completions.create(model=model, messages=messages)
    assert completion.choices[0].message.content
    contents = e2e.double.last_chat().contents
    assert contents[-1] == {"role": "user", "parts": [{"text": "Continue."}]}


async def test_image_models_use_the_image_gen_form(e2e: E2E) -> None:
    await e2e.add_account()
    completion = await e2e.client().chat.completions.create(
        model="gemini-3.1-flash-image",
        messages=[{"role": "system", "content": "Be nice."}, *user("a cat")],
        temperature=0.5,
    )
    assert "data:image/png;base64," in completion.choices[0].message.content
    body = e2e.double.last_chat_body()
    assert body["requestType"] == "image_gen" and body["requestId"].startswith("image_gen/")
    assert body["request"]["generationConfig"] == {"candidateCount": 1}


async def test_system_instruction_only_with_system_text(e2e: E2E) -> None:
    await e2e.add_account()
    oc = e2e.client()
    await oc.chat.completions.create(model="gemini-3-flash", messages=user("hi"))
    assert "systemInstruction" not in e2e.double.last_chat().inner
    await oc.chat.completions.create(
        model="gemini-3-flash", messages=[{"role": "system", "content": "Be brief."}, *user("hi")]
    )
    assert e2e.double.last_chat().inner["systemInstruction"] == {
        "role": "user",
        "parts": [{"text": "Be brief."}],
    }


async def test_claude_parameterless_tools_get_a_placeholder_the_client_never_sees(e2e: E2E) -> None:
    await e2e.add_account()
    now_tool = {"type": "function", "function": {"name": "now", "description": "The time"}}
    completion = await e2e.client().chat.completions.create(
        model="claude-sonnet-4-6", messages=user("[[tool:now]] time?"), tools=[now_tool]
    )
    (declaration,) = e2e.double.last_chat().inner["tools"][0]["functionDeclarations"]
    assert declaration["parameters"]["required"] == ["reason"]
    (call,) = completion.choices[0].message.tool_calls
    assert call.function.name == "now" and call.function.arguments == "{}"


async def test_a_404_for_a_model_the_catalogue_lists_is_the_client_version_gate(e2e: E2E) -> None:
    await e2e.add_account()
    await e2e.add_account()
    oc = e2e.client()
    e2e.double.fail("not_found", times=5)
    # Unknown to the catalogue: the model is not found.
    with pytest.raises(openai.NotFoundError) as caught:
        await oc.chat.completions.create(model="gemini-pro-agent", messages=user("hi"))
    assert caught.value.code == "model_not_found"
    await oc.models.list()
    with pytest.raises(openai.APIStatusError) as caught:
        await oc.chat.completions.create(model="gemini-pro-agent", messages=user("hi"))
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_client_outdated"
    # One upstream call each: a 404 is not tried elsewhere (PROTOCOL §13.9).
    assert len(e2e.double.chat_requests) == 2


async def test_the_background_loop_fills_the_catalogue_after_a_start(e2e: E2E) -> None:
    acc = await e2e.add_account()
    catalogue = e2e.gw.app[CATALOGUE]
    assert not catalogue.has_read(acc.account_id)
    await e2e.gw.app[TASKS].run_once("learn_models")
    assert catalogue.has_read(acc.account_id)
    assert catalogue.info("gemini-pro-agent").max_output_tokens == 65535
    # Read once: a known account is not read again by this task.
    reads = len(e2e.double.requests_for("fetchAvailableModels"))
    await e2e.gw.app[TASKS].run_once("learn_models")
    assert len(e2e.double.requests_for("fetchAvailableModels")) == reads == 1
    # The chat path then knows the limit without any read of its own.
    await e2e.client().chat.completions.create(
        model="gemini-pro-agent", messages=user("hi"), max_tokens=500000
    )
    assert e2e.double.last_chat().generation_config["maxOutputTokens"] == 65535
    assert len(e2e.double.requests_for("fetchAvailableModels")) == 1


async def test_minimal_effort_on_a_pro_model_is_sent_as_a_level_it_takes(e2e: E2E) -> None:
    await e2e.add_account()
    completion = await e2e.client().chat.completions.create(
        model="gemini-pro-agent", messages=user("hi"), reasoning_effort="minimal"
    )
    assert completion.choices[0].message.content == "Hello world!"
    assert e2e.double.last_chat().generation_config["thinkingConfig"]["thinkingLevel"] == "low"
