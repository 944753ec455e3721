"""Rules that follow from a model's name (PROTOCOL §3.3 – §3.5)."""

from __future__ import annotations

from typing import Literal

ModelFamily = Literal["claude", "gemini", "gpt-oss", "other"]

# Client-facing names whose upstream id differs; thinking stays on through thinkingConfig.
_UPSTREAM_IDS = {"gemini-2.5-flash-thinking": "gemini-2.5-flash"}
_THINKING_BY_DEFAULT = frozenset({"gemini-2.5-pro", "rev19-uic3-1p", "gpt-oss-120b-medium"})
_INTERNAL_PREFIXES = ("chat_", "tab_")


def model_family(name: str) -> ModelFamily:
    if name.startswith("claude-"):
        return "claude"
    # rev19-uic3-1p is Gemini 2.5 computer-use under a code name.
    if name.startswith("gemini-") or name == "rev19-uic3-1p":
        return "gemini"
    if name.startswith("gpt-oss-"):
        return "gpt-oss"
    return "other"


def thinks_by_default(name: str) -> bool:
    return name.endswith("-thinking") or name in _THINKING_BY_DEFAULT or name.startswith("gemini-3-pro-")


def is_thinking_only(name: str) -> bool:
    """These answer ``thinkingBudget: 0`` with 400 "Budget 0 is invalid"."""
    return name == "gemini-2.5-pro" or name.startswith("gemini-3-pro-")


def accepts_thinking_config(name: str) -> bool:
    """Image models reject any ``thinkingConfig``."""
    return not name.endswith("-image")


def requires_thought_signature(name: str) -> bool:
    """Whether replayed function calls need a ``thoughtSignature`` (the sentinel will do).

    Gemini 3 enforces it; Gemini 2.5 has been seen to as well, and every Gemini
    accepts the sentinel, so the whole family gets one.
    """
    return model_family(name) == "gemini"


def upstream_model(name: str) -> str:
    return _UPSTREAM_IDS.get(name, name)


def is_chat_model(name: str) -> bool:
    """False for internal ids (``chat_*``, ``tab_*``) that clients must not see."""
    return not name.startswith(_INTERNAL_PREFIXES)
