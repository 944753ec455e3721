"""The live model catalogue: what each account's ``fetchAvailableModels`` says (PROTOCOL §13.4, §13.11).

Fed by the reads the gateway already makes (quota reads, ``/v1/models``), never by a call
on the chat path. It answers which models an account offers today, their display names,
thinking support and output limits, and which id a requested one is served as: the
``[models] aliases`` table first, then the upstream's ``deprecatedModelIds``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import structlog

from antigv.backends.google.models import is_chat_model, token_limit
from antigv.core.errors import ModelRetired
from antigv.core.models import ModelInfo

log = structlog.get_logger(__name__)

# Alias chains longer than this are a configuration loop.
_MAX_HOPS = 8
# Anthropic's clients name snapshots with a date (claude-sonnet-4-5-20250929); the
# upstream's ids carry none (PROTOCOL §13.4), so an unknown dated id is its undated one.
_DATE_SUFFIX = re.compile(r"-\d{8}$")


def parse_models(data: Mapping[str, Any]) -> dict[str, ModelInfo]:
    """The chat models of a ``fetchAvailableModels`` answer; internal ids are left out."""
    found = data.get("models")
    if not isinstance(found, Mapping):
        return {}
    offered = {}
    for name, entry in found.items():
        if not isinstance(name, str) or not name or not is_chat_model(name):
            continue
        entry = entry if isinstance(entry, Mapping) else {}
        display = entry.get("displayName")
        thinking = entry.get("supportsThinking")
        offered[name] = ModelInfo(
            id=name,
            display_name=display if isinstance(display, str) and display else name,
            supports_thinking=thinking if isinstance(thinking, bool) else None,
            max_output_tokens=token_limit(entry.get("maxOutputTokens")),
            # The context window (PROTOCOL §13.4 maxTokens): shown, never enforced here.
            max_input_tokens=token_limit(entry.get("maxTokens")),
        )
    return offered


def parse_deprecations(data: Mapping[str, Any]) -> dict[str, str]:
    """``deprecatedModelIds``: ``{"<old>": {"newModelId": "<new>"}}`` -> old -> new."""
    found = data.get("deprecatedModelIds")
    if not isinstance(found, Mapping):
        return {}
    moves = {}
    for old, entry in found.items():
        new = entry.get("newModelId") if isinstance(entry, Mapping) else entry
        if isinstance(old, str) and old and isinstance(new, str) and new and new != old:
            moves[old] = new
    return moves


class AliasTable:
    """``[models] aliases``: exact ids, or prefixes written with a trailing ``*``.

    A prefix is a fallback for ids the upstream does not serve: once an account offers
    an id it matches (a newer model of that family, say), the id is served as itself."""

    def __init__(self, aliases: Mapping[str, str]) -> None:
        self.exact = {old: new for old, new in aliases.items() if not old.endswith("*")}
        # Longest prefix first, so the most specific entry wins.
        self._prefixes = sorted(
            ((old.rstrip("*"), new) for old, new in aliases.items() if old.endswith("*")),
            key=lambda item: -len(item[0]),
        )

    def get(self, model: str, *, offered: bool = False) -> str | None:
        target = self.exact.get(model)
        if target is not None or offered:
            return target
        return next((new for prefix, new in self._prefixes if model.startswith(prefix)), None)


class ModelCatalogue:
    """Per account: the models it offers; for all: deprecations and learnt retirements."""

    def __init__(self, aliases: Mapping[str, str]) -> None:
        self._aliases = AliasTable(aliases)
        self._offers: dict[int, dict[str, ModelInfo]] = {}
        # Union of every account's offers (the first account to list a model describes it),
        # rebuilt as they change: the request path asks it several times per request.
        self._known: dict[str, ModelInfo] = {}
        self._deprecations: dict[int, dict[str, str]] = {}
        self._moved: dict[str, str] = {}  # union of every account's deprecatedModelIds
        self._retired: dict[str, str | None] = {}  # id -> replacement, learnt from notices

    # --- feeding -------------------------------------------------------------

    def learn(self, account_id: int, data: Mapping[str, Any]) -> None:
        """Take in one account's ``fetchAvailableModels`` answer (replaces what it said before)."""
        if not isinstance(data, Mapping):
            return
        self._offers[account_id] = parse_models(data)
        self._index()
        moves = parse_deprecations(data)
        if moves != self._deprecations.get(account_id):
            self._deprecations[account_id] = moves
            self._moved = {old: new for table in self._deprecations.values() for old, new in table.items()}
            if moves:
                log.info("model_deprecations_learnt", account_id=account_id, count=len(moves))

    def learn_offers(self, account_id: int, offers: Mapping[str, ModelInfo]) -> None:
        """Take in what a backend without ``fetchAvailableModels`` listed (a Gemini API key)."""
        self._offers[account_id] = dict(offers)
        self._index()

    def _index(self) -> None:
        known: dict[str, ModelInfo] = {}
        for offers in self._offers.values():
            for name, model in offers.items():
                known.setdefault(name, model)
        self._known = known

    def offers(self, account_id: int, model: str) -> bool | None:
        """Whether the account offers ``model``; None when its listing was never read."""
        offers = self._offers.get(account_id)
        return None if offers is None else model in offers

    def note_retired(self, model: str, replacement_text: str) -> ModelRetired:
        """A retirement notice arrived for ``model``: remember it and return the client's error.

        When the notice names a model the catalogue knows (by id or display name),
        later requests are served as that model.
        """
        replacement = self._model_named(replacement_text) if replacement_text else None
        self._retired[model] = replacement
        log.warning("model_retired", model=model, replacement=replacement or replacement_text or None)
        return ModelRetired(model, replacement or replacement_text or None)

    # --- asking --------------------------------------------------------------

    def resolve(self, requested: str) -> str:
        """The id to send upstream for ``requested``; ModelRetired for a retired id with no successor."""
        model = requested if self.knows(requested) else _DATE_SUFFIX.sub("", requested)
        for _ in range(_MAX_HOPS):
            if model in self._retired:
                replacement = self._retired[model]
                if replacement is None:
                    raise ModelRetired(requested, None)
                model = replacement
                continue
            target = self._aliases.get(model, offered=self.knows(model)) or self._moved.get(model)
            if target is None or target == model:
                return model
            model = target
        return model

    def served_as(self, requested: str) -> str:
        """Like :meth:`resolve`, without raising: the id usage of ``requested`` is recorded under."""
        try:
            return self.resolve(requested)
        except ModelRetired:
            return requested

    def info(self, model: str) -> ModelInfo | None:
        """What any account's catalogue says about ``model``."""
        return self._known.get(model)

    def knows(self, model: str) -> bool:
        return model in self._known

    def has_read(self, account_id: int) -> bool:
        return account_id in self._offers

    def offered(self, account_ids: Iterable[int]) -> dict[str, ModelInfo]:
        """The models these accounts offer, by id."""
        found: dict[str, ModelInfo] = {}
        for account_id in account_ids:
            for name, model in self._offers.get(account_id, {}).items():
                found.setdefault(name, model)
        return found

    def aliases_into(self, models: Iterable[str]) -> dict[str, str]:
        """Requestable ids (exact aliases, deprecated ids) that are served as one of ``models``."""
        targets = set(models)
        names = {*self._aliases.exact, *self._moved, *(m for m, r in self._retired.items() if r)}
        found = {}
        for name in names - targets:
            served = self.served_as(name)
            if served in targets:
                found[name] = served
        return found

    def _model_named(self, text: str) -> str | None:
        """A known model id for a replacement named by id or display name ("Gemini 3.7 Flash")."""
        if self.knows(text):
            return text
        wanted = text.casefold()
        candidates = sorted(
            {
                model.id
                for offers in self._offers.values()
                for model in offers.values()
                if model.display_name.casefold() == wanted
                or model.display_name.casefold().startswith(wanted + " ")
            }
        )
        return candidates[0] if candidates else None
