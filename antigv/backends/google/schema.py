"""JSON-schema and function-name sanitising for upstream tool declarations (PROTOCOL §2.3).

The upstream accepts a small OpenAPI subset for Gemini and runs Anthropic's own
validation for Claude; anything beyond ``type``, ``description``, ``properties``,
``required``, ``items``, ``enum`` and a few ``format`` values risks a 400. So the
output is built from that whitelist rather than by deleting known-bad keys.
"""

from __future__ import annotations

import re
from typing import Any

_KEPT_FORMATS = ("enum", "date-time")
# Bounds the work a hostile schema can cause: refs may fan out exponentially and
# nesting may exceed the recursion limit.
_MAX_REF_EXPANSIONS = 256
_MAX_DEPTH = 32

# Claude accepts only [A-Za-z0-9_-]; Gemini more, so the common subset is used.
_NAME_DISALLOWED = re.compile(r"[^A-Za-z0-9_-]")
_NAME_START = re.compile(r"[A-Za-z_]")
MAX_FUNCTION_NAME_LENGTH = 64


def sanitize_function_name(name: str) -> str:
    """A name matching ``^[A-Za-z_][A-Za-z0-9_-]{0,63}$``; the caller keeps the map back."""
    cleaned = _NAME_DISALLOWED.sub("_", name)
    if not _NAME_START.match(cleaned):
        cleaned = "_" + cleaned
    return cleaned[:MAX_FUNCTION_NAME_LENGTH]


def sanitize_schema(schema: object) -> dict[str, Any]:
    """An upstream-safe copy of ``schema``; the root is always an object schema."""
    root = schema if isinstance(schema, dict) else {}
    sanitized = _Sanitizer(root).schema(root, frozenset(), 0)
    object_schema = {"type": "object", "properties": sanitized.get("properties", {})}
    for key in ("required", "description"):
        if key in sanitized:
            object_schema[key] = sanitized[key]
    return object_schema


def _local_definitions(root: dict[str, Any]) -> dict[str, Any]:
    definitions: dict[str, Any] = {}
    for key in ("definitions", "$defs"):
        section = root.get(key)
        if isinstance(section, dict):
            definitions.update({f"#/{key}/{name}": value for name, value in section.items()})
    return definitions


class _Sanitizer:
    def __init__(self, root: dict[str, Any]) -> None:
        self._definitions = _local_definitions(root)
        self._expansions_left = _MAX_REF_EXPANSIONS

    def schema(self, node: object, seen: frozenset[str], depth: int) -> dict[str, Any]:
        if depth > _MAX_DEPTH:
            return {"type": "object"}
        node, seen = self._expand(node, seen)
        out: dict[str, Any] = {}
        type_ = _single_type(node.get("type")) or _implied_type(node)
        if type_:
            out["type"] = type_
        description = node.get("description")
        if isinstance(description, str):
            out["description"] = description
        enum = _enum(node)
        if enum:
            out["enum"] = enum
        if node.get("format") in _KEPT_FORMATS:
            out["format"] = node["format"]
        properties = node.get("properties")
        if isinstance(properties, dict):
            out["properties"] = {
                name: self.schema(value, seen, depth + 1)
                for name, value in properties.items()
                if isinstance(value, dict)
            }
            required = node.get("required")
            if isinstance(required, list):
                names = (name for name in required if isinstance(name, str))
                kept = [name for name in dict.fromkeys(names) if name in out["properties"]]
                if kept:
                    out["required"] = kept
        items = node.get("items")
        if isinstance(items, dict):
            out["items"] = self.schema(items, seen, depth + 1)
        return out

    def _expand(self, node: object, seen: frozenset[str]) -> tuple[dict[str, Any], frozenset[str]]:
        """Resolve ``$ref``, ``allOf``, ``anyOf`` and ``oneOf`` into one plain schema."""
        if not isinstance(node, dict):
            return {}, seen
        if "$ref" in node:
            return self._inline_ref(node, seen)
        if "allOf" in node:
            return self._merge_all_of(node, seen)
        for key in ("anyOf", "oneOf"):
            if key in node:
                return self._pick_branch(node, key, seen)
        return node, seen

    def _inline_ref(
        self, node: dict[str, Any], seen: frozenset[str]
    ) -> tuple[dict[str, Any], frozenset[str]]:
        ref = node["$ref"]
        siblings = {key: value for key, value in node.items() if key != "$ref"}
        if not isinstance(ref, str):
            return self._expand(siblings, seen)
        target = self._definitions.get(ref)
        if target is None or ref in seen or self._expansions_left <= 0:
            return {"type": "object", "description": f"See: {ref.rsplit('/', 1)[-1]}"}, seen
        self._expansions_left -= 1
        merged = {**target, **siblings} if isinstance(target, dict) else siblings
        return self._expand(merged, seen | {ref})

    def _merge_all_of(
        self, node: dict[str, Any], seen: frozenset[str]
    ) -> tuple[dict[str, Any], frozenset[str]]:
        merged = {key: value for key, value in node.items() if key != "allOf"}
        branches = node["allOf"] if isinstance(node["allOf"], list) else []
        properties = dict(merged["properties"]) if isinstance(merged.get("properties"), dict) else {}
        required = list(merged["required"]) if isinstance(merged.get("required"), list) else []
        for branch in branches:
            branch, seen = self._expand(branch, seen)
            if isinstance(branch.get("properties"), dict):
                for name, value in branch["properties"].items():
                    properties.setdefault(name, value)
            if isinstance(branch.get("required"), list):
                required.extend(branch["required"])
            for key, value in branch.items():
                merged.setdefault(key, value)
        if properties:
            merged["properties"] = properties
        if required:
            merged["required"] = required
        return self._expand(merged, seen)

    def _pick_branch(
        self, node: dict[str, Any], key: str, seen: frozenset[str]
    ) -> tuple[dict[str, Any], frozenset[str]]:
        """Keep one branch: the first object-like one, else the first that is not null."""
        rest = {name: value for name, value in node.items() if name != key}
        branches = node[key] if isinstance(node[key], list) else []
        candidates = [self._expand(branch, seen) for branch in branches]
        non_null = [(branch, s) for branch, s in candidates if _single_type(branch.get("type")) != "null"]
        chosen = next(
            (candidate for candidate in non_null if _is_object_like(candidate[0])),
            non_null[0] if non_null else ({}, seen),
        )
        return self._expand({**chosen[0], **rest}, chosen[1])


def _single_type(value: object) -> str | None:
    """``["string", "null"]`` -> ``"string"``; a lone ``"null"`` stays."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        names = [name for name in value if isinstance(name, str)]
        return next((name for name in names if name != "null"), names[0] if names else None)
    return None


def _implied_type(node: dict[str, Any]) -> str | None:
    if isinstance(node.get("properties"), dict):
        return "object"
    if isinstance(node.get("items"), dict):
        return "array"
    return None


def _is_object_like(node: dict[str, Any]) -> bool:
    return _single_type(node.get("type")) == "object" or isinstance(node.get("properties"), dict)


def _enum(node: dict[str, Any]) -> list[Any]:
    if "const" in node:
        values = [node["const"]]
    elif isinstance(node.get("enum"), list):
        values = node["enum"]
    else:
        return []
    return [value for value in values if value is not None]
