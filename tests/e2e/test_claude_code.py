"""The real Claude Code CLI against the gateway's Anthropic surface (``POST /v1/messages``),
in front of the upstream double.

Claude Code (pinned in ``deploy/claude-code/package.json``; ``deploy/install-claude-code.sh``
installs it) runs headless: ``claude -p ... --output-format stream-json``, a temporary HOME,
no network but the gateway (see ``tests/claude_code.py``). These tests skip when the CLI is
not installed, and fail instead when ``ANTIGV_REQUIRE_CLAUDE_CODE=1`` (CI).

The model is ``claude-sonnet-4-6`` (``ANTIGV_CLAUDE_MODEL`` overrides it): an id the upstream
serves as such. Claude Code 2.1.332's own default is ``claude-opus-5-5``;
``test_the_default_model_is_answered`` covers what a user gets who names none.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.claude_code import ClaudeRun, RecordingProxy, require_claude, run_claude
from tests.e2e.conftest import E2E
from tests.upstream_double import (
    ChatContext,
    Reply,
    claude_thinking_reply,
    get,
    parts_of,
    responses_of,
    text_reply,
    tool_call_reply,
)

pytestmark = pytest.mark.slow

MODEL = os.environ.get("ANTIGV_CLAUDE_MODEL", "claude-sonnet-4-6")
SECRET = "PELICAN-42"


@pytest.fixture(autouse=True)
def _claude_cli() -> None:
    require_claude()


@pytest.fixture
async def proxy(e2e: E2E) -> AsyncIterator[RecordingProxy]:
    """Claude Code talks to the gateway through this, so a failure shows both sides."""
    async with RecordingProxy(str(e2e.gw.server.make_url("/"))) as recorder:
        yield recorder


def workdir(tmp_path: Path) -> Path:
    cwd = tmp_path / "work"
    cwd.mkdir()
    return cwd


def text_answer(ctx: ChatContext, *chunks: str) -> Reply:
    """Text, after thinking when the request thinks (as the real Claude answers)."""
    if ctx.family == "claude" and ctx.thinking:
        return claude_thinking_reply(chunks=chunks)
    return text_reply(chunks)


def call_answer(ctx: ChatContext, name: str, args: dict[str, Any]) -> Reply:
    if ctx.family == "claude" and ctx.thinking:
        return claude_thinking_reply(calls=[{"name": name, "args": args}])
    return tool_call_reply([{"name": name, "args": args}], family=ctx.family)


def declared_names(ctx: ChatContext) -> list[str]:
    return [get(d, "name") for d in ctx.functions]


def read_tool(names: list[str]) -> str | None:
    """The declared name of Claude Code's Read tool, however the gateway may have spelled it."""
    if "Read" in names:
        return "Read"
    matches = [n for n in names if n.lower() == "read" or n.lower().endswith(("_read", ".read", "__read"))]
    return matches[0] if len(matches) == 1 else None


def function_responses(request_contents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [get(part, "functionResponse") for c in request_contents for _, part in responses_of(c)]


def upstream_trace(e2e: E2E) -> str:
    """What the gateway sent upstream, for an assertion message."""
    lines = []
    for i, rec in enumerate(e2e.double.chat_requests):
        roles = [
            (get(c, "role"), [next(iter(p), "?") for p in parts_of(c)])
            for c in rec.contents
            if isinstance(c, dict)
        ]
        lines.append(
            f"upstream #{i}: {rec.rpc} model={rec.model} status={rec.status} reply={rec.reply_kind} "
            f"contents={roles}"
        )
    return "\n".join(lines) or "no request reached the upstream"


def explain(run: ClaudeRun, e2e: E2E, proxy: RecordingProxy) -> str:
    return "\n".join([run.describe(), proxy.describe(), upstream_trace(e2e)])


@pytest.mark.parametrize(
    "key_var", ["ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"], ids=["x-api-key", "bearer"]
)
async def test_a_plain_prompt_is_answered(
    e2e: E2E, proxy: RecordingProxy, tmp_path: Path, key_var: str
) -> None:
    await e2e.add_account()
    e2e.double.responder = lambda ctx: text_answer(ctx, "Hi ", "from ", "the double.")

    run = await run_claude(
        "say hi",
        base_url=proxy.base_url,
        api_key=e2e.user["api_key"],
        cwd=workdir(tmp_path),
        model=MODEL,
        key_var=key_var,
    )

    assert run.ok, explain(run, e2e, proxy)
    assert run.result_text == "Hi from the double.", explain(run, e2e, proxy)
    assert e2e.double.chat_requests, "no request reached the upstream"
    assert {rec.model for rec in e2e.double.chat_requests} == {MODEL}, upstream_trace(e2e)
    rows = await e2e.usage_rows(len(e2e.double.chat_requests))
    assert rows, "no usage row"
    assert rows[-1]["user_id"] == e2e.user["user_id"]
    assert rows[-1]["model_name"] == MODEL
    assert rows[-1]["status"] == "ok"
    assert rows[-1]["surface"] == "messages"


async def test_claude_code_reads_a_file_with_its_read_tool(
    e2e: E2E, proxy: RecordingProxy, tmp_path: Path
) -> None:
    await e2e.add_account()
    cwd = workdir(tmp_path)
    notes = cwd / "notes.txt"
    notes.write_text(f"The secret word is {SECRET}.\n")
    seen: dict[str, Any] = {}

    def responder(ctx: ChatContext) -> Reply | None:
        if ctx.contents and responses_of(ctx.contents[-1]):
            # The tool result came back: answer with what it carried.
            returned = json.dumps(function_responses(ctx.contents[-1:]))
            seen["returned"] = returned
            return text_answer(ctx, "The file says: ", SECRET if SECRET in returned else "(nothing)")
        names = declared_names(ctx)
        seen["names"] = names
        name = read_tool(names)
        if name is None:
            return text_answer(ctx, f"no Read tool among {names}")
        return call_answer(ctx, name, {"file_path": str(notes)})

    e2e.double.responder = responder

    run = await run_claude(
        "Read notes.txt and tell me the secret word.",
        base_url=proxy.base_url,
        api_key=e2e.user["api_key"],
        cwd=cwd,
        model=MODEL,
        args=["--allowedTools", "Read"],
    )

    assert run.ok, explain(run, e2e, proxy)
    assert read_tool(seen.get("names", [])) is not None, f"declared tools: {seen.get('names')}"
    uses = run.tool_uses()
    assert [u["name"] for u in uses] == ["Read"], explain(run, e2e, proxy)
    assert uses[0]["input"] == {"file_path": str(notes)}
    results = run.tool_results()
    assert len(results) == 1 and SECRET in json.dumps(results[0]), explain(run, e2e, proxy)
    assert not results[0].get("is_error"), results[0]

    # The upstream's second request carried the file's content back as a functionResponse.
    requests = e2e.double.chat_requests
    assert len(requests) == 2, upstream_trace(e2e)
    first, second = requests
    assert not function_responses(first.contents)
    responses = function_responses(second.contents)
    assert len(responses) == 1, upstream_trace(e2e)
    assert SECRET in json.dumps(responses[0]), responses
    calls = [
        get(part, "functionCall")
        for c in second.contents
        for part in parts_of(c)
        if get(part, "functionCall") is not None
    ]
    assert [get(c, "name") for c in calls] == [read_tool(seen["names"])]
    assert get(calls[0], "args") == {"file_path": str(notes)}
    if get(calls[0], "id") is not None:
        assert get(responses[0], "id") == get(calls[0], "id")

    assert run.result_text == f"The file says: {SECRET}", explain(run, e2e, proxy)
    rows = await e2e.usage_rows(2)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert {r["model_name"] for r in rows} == {MODEL}


async def test_the_default_model_is_answered(e2e: E2E, proxy: RecordingProxy, tmp_path: Path) -> None:
    """No ``--model``: Claude Code's default id (``claude-opus-5-5`` in 2.1.332), which also
    puts a ``role: "system"`` message into ``messages``."""
    await e2e.add_account()
    e2e.double.responder = lambda ctx: text_answer(ctx, "Default ", "model here.")

    run = await run_claude(
        "say hi", base_url=proxy.base_url, api_key=e2e.user["api_key"], cwd=workdir(tmp_path)
    )

    assert run.ok, explain(run, e2e, proxy)
    assert run.result_text == "Default model here.", explain(run, e2e, proxy)
    assert e2e.double.chat_requests, "no request reached the upstream"
    # Served by the Opus the upstream offers ([models] aliases, "claude-opus-*").
    assert {rec.model for rec in e2e.double.chat_requests} == {"claude-opus-4-6-thinking"}, upstream_trace(
        e2e
    )
    assert len(await e2e.usage_rows()) >= 1


async def test_gateway_model_discovery_fills_the_model_picker(
    e2e: E2E, proxy: RecordingProxy, tmp_path: Path
) -> None:
    """With ``CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY``, Claude Code reads ``/v1/models``
    (Anthropic's shape, by its ``anthropic-version`` header) into its model picker's cache,
    keeping the Claude ids with the names the upstream gives them."""
    await e2e.add_account()
    e2e.double.responder = lambda ctx: text_answer(ctx, "Listed.")
    home = tmp_path / "home"

    run = await run_claude(
        "say hi",
        base_url=proxy.base_url,
        api_key=e2e.user["api_key"],
        cwd=workdir(tmp_path),
        home=home,
        model=MODEL,
        env={"CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY": "1"},
    )

    assert run.ok, explain(run, e2e, proxy)
    listing = next(x for x in proxy.exchanges if x.path == "/v1/models")
    assert listing.status == 200 and listing.headers.get("anthropic-version"), proxy.describe()
    cached = json.loads((home / ".claude" / "cache" / "gateway-models.json").read_text())
    names = {model["id"]: model.get("display_name") for model in cached["models"]}
    assert names["claude-opus-4-6-thinking"] == "Claude Opus 4.6 (Thinking)", cached
    assert names[MODEL] == "Claude Sonnet 4.6", cached
    assert not any(name.startswith("gemini") for name in names)  # Claude Code keeps only Claude's


async def test_claude_code_on_a_gemini_api_key_reads_a_file(keyed: E2E, gemini: Any, tmp_path: Path) -> None:
    """The whole Claude Code request (twenty-odd tools with full JSON schemas, system blocks,
    thinking) goes to Google's public Gemini API through a key, and the tool loop completes."""
    response = await keyed.gw.http.post(
        "/api/accounts/gemini-key",
        json={"api_key": gemini.add_key(tier="paid").key},
        headers={"Authorization": f"Bearer {keyed.user['api_key']}"},
    )
    assert response.status == 200, await response.text()
    cwd = workdir(tmp_path)
    notes = cwd / "notes.txt"
    notes.write_text(f"The secret word is {SECRET}.\n")

    def responder(ctx: Any) -> Reply | None:
        if responses_of(ctx.contents[-1]):
            returned = json.dumps(function_responses(ctx.contents[-1:]))
            return text_reply(("The file says: ", SECRET if SECRET in returned else "(nothing)"))
        name = read_tool([get(d, "name") for d in ctx.functions])
        if name is None:
            return text_reply(("no Read tool",))
        return tool_call_reply([{"name": name, "args": {"file_path": str(notes)}}], signed=ctx.thinking)

    gemini.responder = responder
    async with RecordingProxy(str(keyed.gw.server.make_url("/"))) as recorder:
        run = await run_claude(
            "Read notes.txt and tell me the secret word.",
            base_url=recorder.base_url,
            api_key=keyed.user["api_key"],
            cwd=cwd,
            model="gemini-2.5-flash",
            args=["--allowedTools", "Read"],
        )
        assert run.ok, explain(run, keyed, recorder)
    assert [u["name"] for u in run.tool_uses()] == ["Read"]
    assert run.result_text == f"The file says: {SECRET}", explain(run, keyed, recorder)
    chats = [r for r in gemini.requests if r.rpc == "streamGenerateContent" and r.status == 200]
    assert len(chats) == 2
    rows = await keyed.usage_rows(2)
    assert {r["status"] for r in rows} == {"ok"} and {r["model_name"] for r in rows} == {"gemini-2.5-flash"}
