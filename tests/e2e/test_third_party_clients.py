"""The clients users put in front of the gateway, as they ship: litellm, LangChain's
ChatOpenAI and pydantic-ai, through both surfaces, against the upstream double.

Each drives what it does its own way (streaming assembly, tool-call parsing, an agent
loop that runs a tool and answers, error classes chosen from status and wording), so a
reply the official SDKs tolerate but these misread fails here.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

# litellm fetches its model price map from GitHub at import unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm
from langchain_core.messages import AIMessageChunk, HumanMessage, ToolMessage
from langchain_openai import ChatOpenAI
from pydantic_ai import Agent
from pydantic_ai.models.anthropic import AnthropicModel
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.anthropic import AnthropicProvider
from pydantic_ai.providers.openai import OpenAIProvider

from tests.e2e.conftest import CLAUDE, E2E, GEMINI, WEATHER_TOOL, user

LONG = "a rather long conversation " * 40

# Their own import-time noise (pydantic on litellm's TypedDicts), not the gateway's.
pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning:pydantic._internal._generate_schema"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:litellm"),
]


def root_url(e2e: E2E) -> str:
    """The gateway without ``/v1``: what Anthropic-style clients take as their base."""
    return str(e2e.gw.server.make_url("/")).rstrip("/")


# --- litellm -----------------------------------------------------------------------------


async def test_litellm_streams_through_chat_completions_with_usage(e2e: E2E) -> None:
    await e2e.add_account()
    stream = await litellm.acompletion(
        model=f"openai/{GEMINI}",
        api_base=e2e.gw.base_url,
        api_key=e2e.user["api_key"],
        messages=user("hi"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "Hello world!"
    usage = next(chunk.usage for chunk in reversed(chunks) if getattr(chunk, "usage", None))
    assert usage.prompt_tokens > 0 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_litellm_tool_calls_and_the_anthropic_route(e2e: E2E) -> None:
    await e2e.add_account()
    response = await litellm.acompletion(
        model=f"openai/{GEMINI}",
        api_base=e2e.gw.base_url,
        api_key=e2e.user["api_key"],
        messages=user("[[tool]] weather in Paris?"),
        tools=[WEATHER_TOOL],
    )
    call = response.choices[0].message.tool_calls[0]
    assert response.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    # litellm's anthropic provider posts to {api_base}/v1/messages.
    claude = await litellm.acompletion(
        model=f"anthropic/{CLAUDE}",
        api_base=root_url(e2e),
        api_key=e2e.user["api_key"],
        messages=user("hi"),
        max_tokens=2048,
    )
    assert claude.choices[0].message.content == "Hello world!"
    assert e2e.double.chat_requests[-1].model == CLAUDE


async def test_litellm_reads_errors_as_its_own_exception_classes(e2e: E2E) -> None:
    await e2e.add_account()
    common: dict[str, Any] = {"model": f"openai/{GEMINI}", "api_base": e2e.gw.base_url}
    with pytest.raises(litellm.AuthenticationError):
        await litellm.acompletion(api_key="sk-wrong", messages=user("hi"), **common)
    e2e.double.models[GEMINI]["maxTokens"] = 100
    # The class litellm's context-window fallbacks act on.
    with pytest.raises(litellm.ContextWindowExceededError):
        await litellm.acompletion(api_key=e2e.user["api_key"], messages=user(LONG), **common)


# --- LangChain -----------------------------------------------------------------------------


def chat_model(e2e: E2E, **extra: Any) -> ChatOpenAI:
    return ChatOpenAI(
        model=GEMINI, base_url=e2e.gw.base_url, api_key=e2e.user["api_key"], max_retries=0, **extra
    )


async def test_langchain_invokes_and_streams(e2e: E2E) -> None:
    await e2e.add_account()
    answer = await chat_model(e2e).ainvoke([HumanMessage("hi")])
    assert answer.content == "Hello world!"
    assert answer.usage_metadata is not None and answer.usage_metadata["input_tokens"] > 0
    chunks = [chunk async for chunk in chat_model(e2e, stream_usage=True).astream([HumanMessage("hi")])]
    assert all(isinstance(chunk, AIMessageChunk) for chunk in chunks)
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole += chunk
    assert whole.content == "Hello world!"
    assert whole.usage_metadata is not None and whole.usage_metadata["output_tokens"] > 0


async def test_langchain_binds_tools_and_takes_their_results(e2e: E2E) -> None:
    await e2e.add_account()
    model = chat_model(e2e).bind_tools([WEATHER_TOOL])
    question = HumanMessage("[[tool]] weather in Paris?")
    first = await model.ainvoke([question])
    (call,) = first.tool_calls
    assert call["name"] == "get_weather" and isinstance(call["args"], dict) and call["id"]
    final = await model.ainvoke([question, first, ToolMessage("22C", tool_call_id=call["id"])])
    assert final.content == "Hello world!" and not final.tool_calls


# --- pydantic-ai -----------------------------------------------------------------------------


@pytest.mark.parametrize("surface", ["chat_completions", "messages"])
async def test_pydantic_ai_agent_runs_a_tool_and_answers(e2e: E2E, surface: str) -> None:
    await e2e.add_account()
    key = e2e.user["api_key"]
    if surface == "chat_completions":
        model: Any = OpenAIChatModel(GEMINI, provider=OpenAIProvider(base_url=e2e.gw.base_url, api_key=key))
    else:
        model = AnthropicModel(CLAUDE, provider=AnthropicProvider(base_url=root_url(e2e), api_key=key))
    agent = Agent(model)
    asked: list[str] = []

    @agent.tool_plain
    def get_weather(city: str) -> str:
        """Weather for a city."""
        asked.append(city)
        return "22C"

    result = await agent.run("[[tool]] weather in Paris?")
    assert asked and result.output == "Hello world!"
    assert result.usage.requests == 2 and result.usage.input_tokens > 0
    assert e2e.double.chat_requests[-1].model == model.model_name
