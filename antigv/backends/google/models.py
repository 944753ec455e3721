"""Rules that follow from a model's family (PROTOCOL §13.4, §13.5).

Nothing here names a model: the upstream renames and retires them every few weeks.
What a model offers (thinking support, output limit) comes from the live catalogue
(``antigv.gateway.catalogue``); this module holds only the per-family defaults for what the
upstream does not say, each in one table.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

ModelFamily = Literal["claude", "gemini", "gpt-oss", "other"]
# Families the thinking table (and ``[models.thinking]``) is keyed by: Gemini splits at 3.
ThinkingFamily = Literal["gemini", "gemini-2", "claude", "gpt-oss", "other"]
ThinkingDepth = Literal["level", "budget"]

_INTERNAL_PREFIXES = ("chat_", "tab_")
_GEMINI_VERSION = re.compile(r"^gemini-(\d+)(?:\.\d+)?-")


def model_family(name: str) -> ModelFamily:
    if name.startswith("claude-"):
        return "claude"
    if name.startswith("gemini-"):
        return "gemini"
    if name.startswith("gpt-oss-"):
        return "gpt-oss"
    return "other"


def thinking_family(name: str) -> ThinkingFamily:
    """The row of the thinking table for a model; Gemini before 3 is ``gemini-2``.

    Unversioned Gemini ids (``gemini-pro-agent``) are today's models.
    """
    family = model_family(name)
    if family == "gemini":
        version = _GEMINI_VERSION.match(name)
        return "gemini-2" if version is not None and int(version.group(1)) < 3 else "gemini"
    return family


@dataclass(frozen=True, slots=True)
class ThinkingRule:
    # "level": thinkingLevel from reasoning_effort; "budget": thinkingBudget tokens.
    depth: ThinkingDepth
    # Whether a request without reasoning_effort thinks.
    default_on: bool


# PROTOCOL §13.5: Gemini >= 3 takes thinkingLevel (CPA-0822) and thinks at its own default
# without a thinkingConfig, so "off" sends none; never thinkingBudget 0 (a 400 on Pro and
# newer Flash). Claude takes a budget >= 1024 (§3.4). Overridable per family in
# ``[models.thinking.<family>]``.
THINKING_RULES: Mapping[ThinkingFamily, ThinkingRule] = {
    "gemini": ThinkingRule("level", default_on=False),
    "gemini-2": ThinkingRule("budget", default_on=False),
    "claude": ThinkingRule("budget", default_on=False),
    "gpt-oss": ThinkingRule("budget", default_on=True),
    "other": ThinkingRule("budget", default_on=False),
}
THINKING_FAMILIES: tuple[str, ...] = tuple(THINKING_RULES)

# PROTOCOL §13.5: maxOutputTokens is clamped to the catalogue's limit; these when the
# catalogue has none for the model.
FALLBACK_OUTPUT_LIMITS: Mapping[ModelFamily, int] = {"claude": 64000, "gemini": 65536}


def thinking_rules(overrides: Mapping[str, Mapping[str, Any]]) -> dict[ThinkingFamily, ThinkingRule]:
    """The thinking table with ``[models.thinking]`` overrides applied (already validated)."""
    table = dict(THINKING_RULES)
    for family, fields in overrides.items():
        rule = table[family]  # type: ignore[index]
        table[family] = ThinkingRule(  # type: ignore[index]
            depth=fields.get("depth", rule.depth),
            default_on=fields.get("default", rule.default_on),
        )
    return table


def thinks_by_default(name: str, rules: Mapping[ThinkingFamily, ThinkingRule] = THINKING_RULES) -> bool:
    # The upstream names the thinking variant of a model "<id>-thinking" (PROTOCOL §3.3).
    return rules[thinking_family(name)].default_on or name.endswith("-thinking")


def is_image_model(name: str) -> bool:
    """Image models take the ``image_gen`` request form and no thinkingConfig (PROTOCOL §13.3)."""
    return name.endswith("-image")


def output_limit(name: str, catalogue_limit: int | None) -> int | None:
    """The most ``maxOutputTokens`` may ask for; None when nothing is known (PROTOCOL §13.5)."""
    return catalogue_limit or FALLBACK_OUTPUT_LIMITS.get(model_family(name))


def requires_thought_signature(name: str) -> bool:
    """Whether replayed function calls need a ``thoughtSignature`` (the sentinel will do).

    Gemini 3 enforces it; Gemini 2.5 has been seen to as well, and every Gemini
    accepts the sentinel, so the whole family gets one (PROTOCOL §3.5).
    """
    return model_family(name) == "gemini"


def token_limit(value: Any) -> int | None:
    """A token limit as Google's model listings give one (``maxTokens``, ``outputTokenLimit``,
    ...): a positive integer, or None for anything else."""
    return value if type(value) is int and value > 0 else None


def is_chat_model(name: str) -> bool:
    """False for internal ids (``chat_*``, ``tab_*``) that clients must not see (PROTOCOL §3.3)."""
    return not name.startswith(_INTERNAL_PREFIXES)


# PROTOCOL §13.5 (CPA, ACP): Claude in VALIDATED mode wants a required property, so a tool
# without parameters gets this one; it is dropped from the calls the client sees.
PLACEHOLDER_ARGUMENT = "reason"


def needs_placeholder_argument(name: str) -> bool:
    return model_family(name) == "claude"
