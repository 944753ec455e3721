"""The core's chat request -> a ``GenerateContentRequest`` (PROTOCOL §2, §3, §13.3), with
the per-family rules of Google's models (thinking, signatures, placeholder arguments,
output limits: PROTOCOL §13.5). Both Google backends send it: Antigravity inside Cloud
Code's envelope (``backends/antigravity/envelope.py``), the Gemini API as it is. Pure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import orjson

from antigv.backends.base import ToolCallSignature
from antigv.backends.google import models
from antigv.backends.google.contents import ToolNames, encode_contents, signed_thinking, tool_declaration
from antigv.backends.google.frames import FrameDecoder
from antigv.backends.google.schema import sanitize_schema
from antigv.config import DefaultsConfig
from antigv.core.conversation import ChatRequest, ToolResult, Turn
from antigv.core.errors import InvalidRequest
from antigv.core.models import ModelInfo


def encode_body(body: dict[str, Any]) -> bytes:
    """A request body as JSON; a 400 for JSON the client could send but orjson cannot write
    back (nested deeper than 255 levels once wrapped, an integer beyond 64 bits)."""
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:
        raise InvalidRequest(
            "the request cannot be forwarded: its JSON nests more than 255 levels deep "
            "or holds an integer beyond 64 bits",
            code="request_not_encodable",
        ) from None


@dataclass(frozen=True)
class UpstreamRequest:
    """What a Google backend posts (``body``) and what reading its reply needs."""

    body: dict[str, Any]
    model: str
    thinking: bool
    # Upstream (sanitized) function name -> the client's name.
    tool_names: dict[str, str]
    # Hex sha256 of the conversation's opening; for sticky account routing.
    session_key: str
    # Upstream names of tools given the placeholder argument (dropped from their calls).
    placeholder_tools: frozenset[str] = frozenset()
    # How ids invented for unnamed calls in the reply begin (the client's protocol's form).
    tool_call_id_prefix: str = "call_"

    def decoder(self, check_first_text: Callable[[str], None] | None = None) -> FrameDecoder:
        """The frame decoder for this request's reply (its tool names and placeholders)."""
        return FrameDecoder(
            self.tool_names,
            self.placeholder_tools,
            models.PLACEHOLDER_ARGUMENT,
            check_first_text=check_first_text,
            tool_call_id_prefix=self.tool_call_id_prefix,
        )


SKIP_THOUGHT_SIGNATURE = "skip_thought_signature_validator"
# reasoning_effort -> thinkingBudget or thinkingLevel, as the family's row of the
# thinking table says (PROTOCOL §13.5); a family thinking by default without an
# effort gets DEFAULT_THINKING_BUDGET, or no level (the model's own depth).
DEFAULT_THINKING_BUDGET = 1024
_EFFORT_BUDGETS = {"minimal": 1024, "low": 1024, "medium": 8192, "high": 24576}
# Gemini Pro takes no "minimal" level (CPA-0822 registry: 3.1 Pro low|medium|high), every
# thinking Gemini takes "low".
_EFFORT_LEVELS = {"minimal": "low", "low": "low", "medium": "medium", "high": "high"}
# A token budget asked of a levelled family: the level whose effort budget covers it.
_BUDGET_LEVELS = (("low", _EFFORT_BUDGETS["low"]), ("medium", _EFFORT_BUDGETS["medium"]))
# Claude's smallest budget (PROTOCOL §3.4); below it thinking is left off.
_MIN_CLAUDE_BUDGET = 1024
# Room left for the visible answer: Claude needs maxOutputTokens > budget, and
# Gemini spends thinking inside maxOutputTokens.
_MIN_ANSWER_TOKENS = 1024
# Claude and Gemini >= 3.6 refuse a conversation that ends on a model turn (no prefill);
# every family gets the same user turn after one (PROTOCOL §13.5).
_CONTINUE_TEXT = "Continue."
NO_SIGNATURES: Mapping[str, ToolCallSignature] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class _Thinking:
    """Thinking on, at this depth: a thinkingLevel, a thinkingBudget, or neither (the default)."""

    level: str | None = None
    budget: int | None = None


def replayed_tool_call_ids(
    req: ChatRequest, rules: Mapping[models.ThinkingFamily, models.ThinkingRule] = models.THINKING_RULES
) -> list[str]:
    """Ids of history tool calls whose signature must come from the server-side store.

    Claude needs the signed thinking text, which no client carries back, so every
    call is looked up while thinking is requested; other families only miss the
    calls that came back without ``extra_content``.
    """
    calls = req.tool_uses()
    if models.model_family(req.model) == "claude":
        wanted = calls if _requested_thinking(req, rules, None) is not None else []
    else:
        wanted = [call for call in calls if call.signature is None]
    return list(dict.fromkeys(call.id for call in wanted))


def build_generate_request(
    req: ChatRequest,
    *,
    defaults: DefaultsConfig,
    auto_calling_mode: str,
    signatures: Mapping[str, ToolCallSignature] = NO_SIGNATURES,
    model_info: ModelInfo | None = None,
    thinking_rules: Mapping[models.ThinkingFamily, models.ThinkingRule] = models.THINKING_RULES,
) -> UpstreamRequest:
    """The ``GenerateContentRequest`` for ``req``.

    ``req.model`` is the id to send (aliases already resolved); ``model_info`` is what
    the live catalogue says about it; ``auto_calling_mode`` is the backend's name for
    ``tool_choice: auto`` (functionCallingConfig mode).
    """
    upstream_model = req.model
    family = models.model_family(upstream_model)
    names = ToolNames()
    declarations = [tool_declaration(tool, names) for tool in req.tools]
    placeholder_tools = frozenset()
    if models.needs_placeholder_argument(upstream_model):
        placeholder_tools = _add_placeholder_arguments(declarations)
    claude = family == "claude"
    call_signatures = {} if claude else _function_call_signatures(req.turns, signatures)
    contents = encode_contents(req.turns, names, call_signatures, signed_thoughts=claude)

    thinking = _requested_thinking(req, thinking_rules, model_info)
    if claude:
        if thinking is not None and not _start_tool_turns_with_thinking(contents, signatures):
            thinking = None
        if thinking is None:
            _drop_thoughts(contents)
    elif models.requires_thought_signature(upstream_model):
        _sign_first_function_calls(contents)
    if contents[-1]["role"] == "model":
        contents.append({"role": "user", "parts": [{"text": _CONTINUE_TEXT}]})

    system_text = "\n\n".join(req.system) if req.system else defaults.system_instruction
    # The first user message, not a tool result: what a conversation opens with.
    first_user_text = next(
        (turn.text for turn in req.turns if turn.role == "user" and not _has_results(turn.parts)), ""
    )
    digest = hashlib.sha256((first_user_text + system_text).encode("utf-8", "surrogatepass")).digest()
    limit = models.output_limit(upstream_model, model_info.max_output_tokens if model_info else None)

    request: dict[str, Any] = {"contents": contents}
    if models.is_image_model(upstream_model):
        # PROTOCOL §13.3: only candidateCount (and imageConfig); no system text, tools or sampling.
        request["generationConfig"] = {"candidateCount": 1}
    else:
        # PROTOCOL §13.3: a systemInstruction only when there is system text.
        if system_text:
            request["systemInstruction"] = {"role": "user", "parts": [{"text": system_text}]}
        if declarations:
            request["tools"] = [{"functionDeclarations": declarations}]
            request["toolConfig"] = {
                "functionCallingConfig": _function_calling_config(req, names, auto_calling_mode)
            }
        request["generationConfig"] = _generation_config(req, defaults, thinking, limit)
    return UpstreamRequest(
        body=request,
        model=upstream_model,
        thinking="thinkingConfig" in request["generationConfig"],
        tool_names=names.originals,
        session_key=digest.hex(),
        placeholder_tools=placeholder_tools,
        tool_call_id_prefix=req.tool_call_id_prefix,
    )


def _requested_thinking(
    req: ChatRequest,
    rules: Mapping[models.ThinkingFamily, models.ThinkingRule],
    info: ModelInfo | None,
) -> _Thinking | None:
    """Whether the model thinks for ``req``, and how deep; None means thinking off (PROTOCOL §13.5).

    Off sends no thinkingConfig at all: Gemini >= 3 answers ``thinkingBudget: 0`` with a 400.
    """
    if models.is_image_model(req.model) or (info is not None and info.supports_thinking is False):
        return None
    wanted = req.generation.thinking
    if wanted.off:
        return None
    effort = wanted.effort
    rule = rules[models.thinking_family(req.model)]
    if wanted.budget is not None:  # a number of tokens, as Anthropic's clients ask
        if rule.depth == "budget":
            return _Thinking(budget=wanted.budget)
        return _Thinking(level=next((lv for lv, most in _BUDGET_LEVELS if wanted.budget <= most), "high"))
    if effort is None:
        if not models.thinks_by_default(req.model, rules):
            return None
        return _Thinking(budget=DEFAULT_THINKING_BUDGET) if rule.depth == "budget" else _Thinking()
    if rule.depth == "level":
        return _Thinking(level=_EFFORT_LEVELS[effort])
    return _Thinking(budget=_EFFORT_BUDGETS[effort])


def _has_results(parts: Sequence[object]) -> bool:
    return any(isinstance(part, ToolResult) for part in parts)


def _add_placeholder_arguments(declarations: list[dict[str, Any]]) -> frozenset[str]:
    """Give each parameterless tool the placeholder argument; the names of those tools.

    PROTOCOL §13.5: Claude's VALIDATED mode wants a required property; the response side
    drops the argument from these tools' calls.
    """
    added = set()
    for declaration in declarations:
        parameters = declaration["parameters"]
        if not parameters.get("properties"):
            declaration["parameters"] = {
                **parameters,
                "type": "object",
                "properties": {
                    models.PLACEHOLDER_ARGUMENT: {"type": "string", "description": "Why the tool is called"}
                },
                "required": [models.PLACEHOLDER_ARGUMENT],
            }
            added.add(declaration["name"])
    return frozenset(added)


def _function_calling_config(req: ChatRequest, names: ToolNames, auto_mode: str) -> dict[str, Any]:
    choice = req.tool_choice
    if choice.name is not None:
        return {"mode": "ANY", "allowedFunctionNames": [names.upstream(choice.name)]}
    return {"mode": {"auto": auto_mode, "none": "NONE", "any": "ANY"}[choice.mode]}


def _function_call_signatures(
    turns: Sequence[Turn], stored: Mapping[str, ToolCallSignature]
) -> dict[str, str]:
    """Signatures for non-Claude function-call parts: the call's own copy from the client,
    else the store's, else (first call of a turn) the signed thinking block the client
    carried back with the turn, where Anthropic's clients keep it (PROTOCOL §3.5)."""
    found: dict[str, str] = {}
    for turn in turns:
        thought = signed_thinking(turn) if turn.role == "assistant" else None
        for position, call in enumerate(turn.tool_uses):
            entry = stored.get(call.id)
            if call.signature is not None:
                found[call.id] = call.signature
            # An entry with thinking text is a Claude signature, which other families reject.
            elif entry is not None and entry.thinking is None:
                found[call.id] = entry.signature
            elif position == 0 and thought is not None and thought.signature:
                found[call.id] = thought.signature
    return found


def _sign_first_function_calls(contents: list[dict[str, Any]]) -> None:
    for content in contents:
        first_call = next((part for part in content["parts"] if "functionCall" in part), None)
        if first_call is not None:
            first_call.setdefault("thoughtSignature", SKIP_THOUGHT_SIGNATURE)


def _start_tool_turns_with_thinking(
    contents: list[dict[str, Any]], stored: Mapping[str, ToolCallSignature]
) -> bool:
    """Open each replayed tool-call turn with its signed thinking, as Claude demands
    (PROTOCOL §3.5): the store's (it knows which family signed), else the one the client
    carried back (already the turn's first part).

    Returns False, changing nothing, when any such turn has neither; the caller must
    then switch thinking off.
    """
    turns = []
    for content in contents:
        parts = content["parts"]
        call_ids = [part["functionCall"]["id"] for part in parts if "functionCall" in part]
        if not call_ids:
            continue
        entry = next(
            (
                entry
                for entry in map(stored.get, call_ids)
                if entry is not None and entry.thinking is not None
            ),
            None,
        )
        if entry is None and not parts[0].get("thought"):
            return False
        turns.append((content, entry))
    for content, entry in turns:
        if entry is None:
            continue
        thought = {"thought": True, "text": entry.thinking, "thoughtSignature": entry.signature}
        parts = content["parts"]
        if parts[0].get("thought"):
            parts[0] = thought
        else:
            parts.insert(0, thought)
    return True


def _drop_thoughts(contents: list[dict[str, Any]]) -> None:
    """Thinking off: no replayed thought goes to Claude."""
    for content in contents:
        if any(part.get("thought") for part in content["parts"]):
            content["parts"] = [part for part in content["parts"] if not part.get("thought")]


# Families whose generationConfig takes frequencyPenalty/presencePenalty: Gemini's does
# (GCLI VertexGenerationConfig, PROTOCOL §2); Anthropic's API has none and gpt-oss is
# unverified, so those go without.
_PENALTY_FAMILIES = frozenset({"gemini"})


def _generation_config(
    req: ChatRequest, defaults: DefaultsConfig, thinking: _Thinking | None, limit: int | None
) -> dict[str, Any]:
    asked = req.generation
    max_tokens = defaults.max_tokens if asked.max_tokens is None else asked.max_tokens
    config: dict[str, Any] = {
        "temperature": defaults.temperature if asked.temperature is None else asked.temperature,
        "topP": defaults.top_p if asked.top_p is None else asked.top_p,
        "topK": defaults.top_k if asked.top_k is None else asked.top_k,
        # PROTOCOL §13.5: more than the model's limit is a 400, so ask for at most that.
        "maxOutputTokens": max_tokens if limit is None else min(max_tokens, limit),
        "candidateCount": 1,
    }
    if asked.stop:
        config["stopSequences"] = list(asked.stop)
    if asked.seed is not None:
        config["seed"] = asked.seed
    if models.model_family(req.model) in _PENALTY_FAMILIES:
        if asked.frequency_penalty is not None:
            config["frequencyPenalty"] = asked.frequency_penalty
        if asked.presence_penalty is not None:
            config["presencePenalty"] = asked.presence_penalty
    if asked.json_output:
        config["responseMimeType"] = "application/json"
    if asked.response_schema is not None:
        config["responseSchema"] = sanitize_schema(asked.response_schema)
    if thinking is not None:
        _apply_thinking(config, req.model, thinking, limit)
    return config


def _apply_thinking(config: dict[str, Any], model: str, thinking: _Thinking, limit: int | None) -> None:
    """Add the thinkingConfig, with room for the answer within ``limit`` (PROTOCOL §13.5, §3.4)."""
    claude = models.model_family(model) == "claude"
    thinking_config: dict[str, Any] = {"includeThoughts": True}
    if thinking.level is not None:
        thinking_config["thinkingLevel"] = thinking.level
    if thinking.budget is not None:
        budget = thinking.budget
        requested = config["maxOutputTokens"]
        if claude:
            if requested <= budget:
                requested = budget + max(_MIN_ANSWER_TOKENS, requested)
        else:
            requested = max(requested, budget + _MIN_ANSWER_TOKENS)
        if limit is not None and requested > limit:
            requested = limit
            budget = min(budget, limit - _MIN_ANSWER_TOKENS)
        if budget < (_MIN_CLAUDE_BUDGET if claude else 1):
            return  # no room to think within the limit
        config["maxOutputTokens"] = requested
        thinking_config["thinkingBudget"] = budget
    config["thinkingConfig"] = thinking_config
    if claude:
        # Anthropic allows only temperature 1 and no top_p/top_k while thinking.
        config["temperature"] = 1
        del config["topP"], config["topK"]
