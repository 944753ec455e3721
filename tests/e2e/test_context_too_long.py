"""A conversation longer than the model takes: each surface says so in its own API's words,
which its clients act on (litellm's ContextWindowExceededError, Claude Code's compaction),
and no account pays for it."""

from __future__ import annotations

import dataclasses

import anthropic
import openai
import pytest

from tests.e2e.conftest import CLAUDE, E2E, GEMINI, user
from tests.e2e.test_gemini_api import MODEL as KEY_MODEL
from tests.e2e.test_gemini_api import add_key
from tests.e2e.test_messages_sdk import client as anthropic_client
from tests.gemini_double import GeminiApiDouble

LONG = "a rather long conversation " * 40


async def test_claude_over_its_limit_is_anthropic_s_prompt_too_long(e2e: E2E) -> None:
    acc = await e2e.add_account()
    e2e.double.models[CLAUDE]["maxTokens"] = 100
    with pytest.raises(anthropic.BadRequestError) as caught:
        await anthropic_client(e2e).messages.create(model=CLAUDE, max_tokens=50, messages=user(LONG))
    error = caught.value.body["error"]
    assert error["type"] == "invalid_request_error"
    tokens, limit = _numbers(error["message"], "prompt is too long: {} tokens > {} maximum")
    assert limit == 100 and tokens > 100
    # The request's own fault: the account serves the next, shorter one.
    reply = await anthropic_client(e2e).messages.create(model=CLAUDE, max_tokens=50, messages=user("hi"))
    assert reply.content and e2e.double.chat_requests[-1].account == acc.upstream.email


async def test_gemini_over_its_limit_is_openai_s_context_length_exceeded(e2e: E2E) -> None:
    await e2e.add_account()
    e2e.double.models[GEMINI]["maxTokens"] = 100
    with pytest.raises(openai.BadRequestError) as caught:
        await e2e.client().chat.completions.create(model=GEMINI, messages=user(LONG))
    error = caught.value.body
    assert error["code"] == "context_length_exceeded" and error["param"] == "messages"
    assert error["type"] == "invalid_request_error"
    limit, tokens = _numbers(
        error["message"],
        "This model's maximum context length is {} tokens. However, your messages resulted in {} tokens. "
        "Please reduce the length of the messages.",
    )
    assert limit == 100 and tokens > 100
    completion = await e2e.client().chat.completions.create(model=GEMINI, messages=user("hi"))
    assert completion.choices[0].message.content


async def test_a_gemini_api_key_s_input_limit_on_both_surfaces(keyed: E2E, gemini: GeminiApiDouble) -> None:
    status, _ = await add_key(keyed, gemini.add_key(tier="paid").key)
    assert status == 200
    gemini.models[KEY_MODEL] = dataclasses.replace(gemini.models[KEY_MODEL], input_token_limit=100)
    with pytest.raises(openai.BadRequestError) as chat:
        await keyed.client().chat.completions.create(model=KEY_MODEL, messages=user(LONG))
    assert chat.value.body["code"] == "context_length_exceeded"
    with pytest.raises(anthropic.BadRequestError) as messages:
        await anthropic_client(keyed).messages.create(model=KEY_MODEL, max_tokens=50, messages=user(LONG))
    assert messages.value.body["error"]["message"].startswith("prompt is too long: ")
    assert messages.value.body["error"]["message"].endswith(" tokens > 100 maximum")
    assert (await keyed.sql("SELECT status FROM accounts")) == [{"status": 1}]


def _numbers(message: str, template: str) -> tuple[int, int]:
    """The two numbers of ``message``, which must be ``template`` with them filled in."""
    head, middle, tail = template.split("{}")
    assert message.startswith(head) and message.endswith(tail), message
    first, _, second = message[len(head) : len(message) - len(tail)].partition(middle)
    return int(first), int(second)
