"""The live model catalogue (PROTOCOL §13.4, §13.11) and the reply-side rules that use it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from antigv.backends.antigravity.notices import reject_notices, retirement_replacement
from antigv.backends.google.frames import FrameDecoder
from antigv.backends.google.models import PLACEHOLDER_ARGUMENT
from antigv.config import ModelsConfig, build_config
from antigv.core.errors import GatewayError, ModelRetired
from antigv.core.events import TextDelta, ToolCallDelta
from antigv.gateway.catalogue import AliasTable, ModelCatalogue, parse_deprecations, parse_models
from antigv.protocols.openai.errors import error_status
from tests.upstream_double import default_deprecated_ids, default_models, retirement_text


def fetch_answer(**extra: object) -> dict:
    return {
        "models": default_models(),
        "deprecatedModelIds": {old: {"newModelId": new} for old, new in default_deprecated_ids().items()},
        **extra,
    }


def catalogue(aliases: dict[str, str] | None = None) -> ModelCatalogue:
    return ModelCatalogue(ModelsConfig().aliases if aliases is None else aliases)


def test_the_catalogue_holds_what_fetch_available_models_says() -> None:
    offered = parse_models(fetch_answer())
    assert "chat_20706" not in offered and "tab_flash_lite_preview" not in offered
    pro = offered["gemini-pro-agent"]
    assert (pro.display_name, pro.supports_thinking, pro.max_output_tokens) == (
        "Gemini 3.1 Pro (High)",
        True,
        65535,
    )
    assert offered["gemini-3.1-flash-lite"].supports_thinking is False
    assert offered["claude-opus-4-6-thinking"].max_output_tokens == 64000


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
    )
)
def test_any_answer_is_read_without_raising(data: object) -> None:
    cat = catalogue()
    cat.learn(1, {"models": data, "deprecatedModelIds": data})
    if isinstance(data, dict):
        cat.learn(2, data)
    cat.resolve("gemini-3-pro-high")
    cat.aliases_into(cat.offered([1, 2]))


def test_default_aliases_serve_retired_ids_as_their_successors() -> None:
    cat = catalogue()
    assert cat.resolve("gemini-3-pro-high") == "gemini-pro-agent"
    assert cat.resolve("gemini-3-pro-low") == "gemini-3.1-pro-low"
    assert cat.resolve("claude-sonnet-4-5-thinking") == "claude-sonnet-4-6"  # trailing * = prefix
    assert cat.resolve("claude-opus-4-5-thinking") == "claude-opus-4-6-thinking"
    assert cat.resolve("gemini-3.5-flash-low") == "gemini-3.7-flash-high"
    assert cat.resolve("gemini-3-flash") == "gemini-3-flash"


def test_prefix_aliases_prefer_the_longest_and_exact_wins() -> None:
    table = AliasTable({"claude-*": "a", "claude-opus-*": "b", "claude-opus-4-5": "c"})
    assert (table.get("claude-x"), table.get("claude-opus-9"), table.get("claude-opus-4-5")) == (
        "a",
        "b",
        "c",
    )
    assert table.get("gemini-3-flash") is None


def test_claude_clients_names_resolve_until_the_upstream_offers_them() -> None:
    cat = catalogue()
    # Claude Code's ids (issue 13): dated, undated, newer than the upstream's, Haiku.
    assert cat.resolve("claude-sonnet-4-5-20250929") == "claude-sonnet-4-6"
    assert cat.resolve("claude-sonnet-4-6-20260217") == "claude-sonnet-4-6"
    assert cat.resolve("claude-opus-4-6") == "claude-opus-4-6-thinking"
    assert cat.resolve("claude-opus-5-5") == "claude-opus-4-6-thinking"
    assert cat.resolve("claude-haiku-4-5-20251001") == "gemini-3-flash"
    assert cat.resolve("claude-opus-4-6-thinking") == "claude-opus-4-6-thinking"
    # Once an account offers the newer model (dated ids too), it is served as itself.
    cat.learn(1, {"models": {"claude-opus-5-5": {}, "claude-sonnet-4-6-20260217": {}}})
    assert cat.resolve("claude-opus-5-5") == "claude-opus-5-5"
    assert cat.resolve("claude-sonnet-4-6-20260217") == "claude-sonnet-4-6-20260217"
    assert cat.resolve("claude-opus-5-6") == "claude-opus-4-6-thinking"


def test_deprecated_model_ids_are_learnt_at_run_time() -> None:
    cat = catalogue(aliases={})
    assert cat.resolve("gemini-3-pro-high") == "gemini-3-pro-high"
    cat.learn(7, fetch_answer(deprecatedModelIds={"gemini-3-pro-high": {"newModelId": "gemini-pro-agent"}}))
    assert cat.resolve("gemini-3-pro-high") == "gemini-pro-agent"
    # The configured table wins over the upstream's.
    cat = catalogue(aliases={"gemini-3-pro-high": "gemini-3-flash"})
    cat.learn(7, fetch_answer())
    assert cat.resolve("gemini-3-pro-high") == "gemini-3-flash"
    assert parse_deprecations({"deprecatedModelIds": {"a": {"newModelId": "a"}, "b": "c", "d": 3}}) == {
        "b": "c"
    }


def test_an_alias_loop_ends() -> None:
    assert catalogue(aliases={"a": "b", "b": "a"}).resolve("a") in ("a", "b")


def test_offers_are_per_account_and_aliases_list_into_them() -> None:
    cat = catalogue()
    cat.learn(1, {"models": {"gemini-pro-agent": {}, "gemini-3-flash": {}}})
    cat.learn(2, {"models": {"claude-sonnet-4-6": {"maxOutputTokens": 64000}}})
    assert set(cat.offered([1])) == {"gemini-pro-agent", "gemini-3-flash"}
    assert cat.info("claude-sonnet-4-6").max_output_tokens == 64000
    assert cat.knows("gemini-3-flash") and not cat.knows("gemini-3-pro-high")
    assert cat.aliases_into(cat.offered([1])) == {
        "gemini-3-pro-high": "gemini-pro-agent",
        "gemini-3.1-pro-high": "gemini-pro-agent",
    }
    # A later read replaces what the account offered.
    cat.learn(1, {"models": {"gemini-3-flash": {}}})
    assert set(cat.offered([1, 2])) == {"gemini-3-flash", "claude-sonnet-4-6"}


def test_a_retirement_notice_names_the_replacement_by_id_when_known() -> None:
    cat = catalogue(aliases={})
    cat.learn(1, fetch_answer())
    error = cat.note_retired("gemini-3.5-flash-high", "Gemini 3.7 Flash")
    assert (error_status(error), error.code, error.param) == (404, "model_retired", "model")
    assert "'gemini-3.7-flash-high'" in error.message
    # Known successor: served as it from now on.
    assert cat.resolve("gemini-3.5-flash-high") == "gemini-3.7-flash-high"
    # Unknown successor: every request gets the error at once.
    cat.note_retired("claude-x", "Claude Y")
    with pytest.raises(ModelRetired) as caught:
        cat.resolve("claude-x")
    assert "no known replacement" in caught.value.message


@pytest.mark.parametrize(
    "text, replacement",
    [
        (retirement_text("gemini-3-pro-high", "Gemini 3.1 Pro (High)"), "Gemini 3.1 Pro (High)"),
        ("Gemini 3.5 Flash is no longer available. Please switch to Gemini 3.7 Flash!", "Gemini 3.7 Flash"),
        ("The model is no longer available. Please switch to", ""),
        ("Hello world!", None),
    ],
)
def test_retirement_notices_are_recognised(text: str, replacement: str | None) -> None:
    assert retirement_replacement(text) == replacement


def test_a_retirement_notice_as_reply_text_is_an_error_not_the_answer() -> None:
    # The Antigravity backend's decoder checks a reply's first text for notices.
    translator = FrameDecoder(check_first_text=reject_notices)
    text = retirement_text("claude-sonnet-4-6-thinking", "Claude Sonnet 4.6")
    with pytest.raises(ModelRetired) as caught:
        translator.feed({"response": {"candidates": [{"content": {"parts": [{"text": text}]}}]}})
    assert caught.value.code == "model_retired" and caught.value.replacement == "Claude Sonnet 4.6"
    # Later in an answer the words are the model's own.
    translator = FrameDecoder(check_first_text=reject_notices)
    translator.feed({"response": {"candidates": [{"content": {"parts": [{"text": "Sure."}]}}]}})
    events = translator.feed({"response": {"candidates": [{"content": {"parts": [{"text": text}]}}]}})
    assert events == [TextDelta(text)]


def test_the_placeholder_argument_is_dropped_from_calls() -> None:
    # PROTOCOL §13.5: the request added "reason" to parameterless Claude tools.
    translator = FrameDecoder({"now": "now"}, frozenset({"now"}), PLACEHOLDER_ARGUMENT)
    part = {"functionCall": {"id": "toolu_1", "name": "now", "args": {"reason": "user asked"}}}
    other = {"functionCall": {"id": "toolu_2", "name": "get_weather", "args": {"reason": "r", "city": "P"}}}
    events = translator.feed({"response": {"candidates": [{"content": {"parts": [part, other]}}]}})
    assert PLACEHOLDER_ARGUMENT == "reason"
    assert [e.arguments_json for e in events if isinstance(e, ToolCallDelta)] == [
        "{}",
        '{"reason":"r","city":"P"}',
    ]


def test_models_config() -> None:
    config = build_config(
        {
            "security": {"admin_api_key": "k" * 16},
            "models": {
                "aliases": {"old-*": "new-model"},
                "thinking": {"gemini": {"depth": "budget", "default": True}},
            },
        }
    )
    assert config.models.aliases == {"old-*": "new-model"}
    assert config.models.thinking == {"gemini": {"depth": "budget", "default": True}}
    for bad in (
        {"aliases": {"a*b": "c"}},
        {"aliases": {"a": "b*"}},
        {"aliases": {"a": "a"}},
        {"thinking": {"gemini-9": {}}},
        {"thinking": {"gemini": {"depth": "tokens"}}},
        {"thinking": {"claude": {"default": "yes"}}},
    ):
        with pytest.raises(Exception, match="config: models"):
            build_config({"security": {"admin_api_key": "k" * 16}, "models": bad})


def test_model_retired_is_an_api_error() -> None:
    assert isinstance(ModelRetired("a", None), GatewayError)


def test_gemini_api_prefer_orders_the_kinds_within_a_tier() -> None:
    from antigv.gateway.selection import rank_candidates
    from antigv.gateway.service import KIND_ORDERS

    def row(account_id: int, kind: str, shared: int = 0) -> dict[str, object]:
        return {
            "account_id": account_id,
            "user_id": 1,
            "is_shared": shared,
            "kind": kind,
            "pool_quota": 1.0,
            "pool_max": 2.0,
            "pool_refill_per_second": 0.0,
            "access_token_expires_at": None,
        }

    rows = [row(1, "antigravity"), row(2, "gemini_api"), row(3, "antigravity", 1), row(4, "gemini_api", 1)]

    def order(prefer: str) -> list[int]:
        ranking = rank_candidates(
            rows, user_id=1, prefer_shared=False, inflight={}, kind_order=KIND_ORDERS[prefer]
        )
        return [r["account_id"] for r in ranking.accounts]

    # Dedicated before shared whatever the kind; within each, the kind's place.
    assert order("first") == [2, 1, 4, 3]
    assert order("last") == [1, 2, 3, 4]
    assert sorted(order("mixed")[:2]) == [1, 2] and sorted(order("mixed")[2:]) == [3, 4]
