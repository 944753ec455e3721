from __future__ import annotations

import copy
import re

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from antigv.backends.google.schema import sanitize_function_name, sanitize_schema

UPSTREAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$")


def obj(**properties: object) -> dict:
    return {"type": "object", "properties": properties}


def test_root_metadata_and_definitions_are_stripped() -> None:
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": "urn:tool",
        "$defs": {"A": {"type": "string"}},
        "definitions": {"B": {"type": "string"}},
        **obj(x={"type": "string"}),
    }
    assert sanitize_schema(schema) == obj(x={"type": "string"})


@pytest.mark.parametrize("section", ["$defs", "definitions"])
def test_local_refs_are_inlined(section: str) -> None:
    schema = {
        **obj(place={"$ref": f"#/{section}/Place"}),
        section: {"Place": obj(city={"type": "string"})},
    }
    assert sanitize_schema(schema)["properties"]["place"] == obj(city={"type": "string"})


def test_ref_siblings_override_the_definition() -> None:
    schema = {
        **obj(place={"$ref": "#/$defs/Place", "description": "where"}),
        "$defs": {"Place": {"type": "string", "description": "a place"}},
    }
    assert sanitize_schema(schema)["properties"]["place"] == {"type": "string", "description": "where"}


def test_cyclic_ref_becomes_a_pointer_instead_of_recursing_forever() -> None:
    schema = {
        **obj(root={"$ref": "#/$defs/Node"}),
        "$defs": {"Node": obj(child={"$ref": "#/$defs/Node"})},
    }
    node = sanitize_schema(schema)["properties"]["root"]
    assert node["properties"]["child"] == {"type": "object", "description": "See: Node"}


def test_unresolvable_ref_becomes_a_pointer() -> None:
    schema = obj(a={"$ref": "https://example.com/x.json#/Thing"}, b={"$ref": "#/$defs/Missing"})
    properties = sanitize_schema(schema)["properties"]
    assert properties["a"] == {"type": "object", "description": "See: Thing"}
    assert properties["b"] == {"type": "object", "description": "See: Missing"}


def test_exponential_ref_fan_out_is_bounded() -> None:
    # Each level references the next twice: 2**40 nodes if fully inlined.
    defs = {f"L{i}": obj(a={"$ref": f"#/$defs/L{i + 1}"}, b={"$ref": f"#/$defs/L{i + 1}"}) for i in range(40)}
    defs["L40"] = {"type": "string"}
    schema = {**obj(top={"$ref": "#/$defs/L0"}), "$defs": defs}
    assert len(orjson.dumps(sanitize_schema(schema))) < 1_000_000


def test_deep_nesting_does_not_exhaust_the_stack() -> None:
    schema: dict = {"type": "string"}
    for _ in range(2000):
        schema = obj(x=schema)
    assert sanitize_schema(schema)["type"] == "object"


def test_const_becomes_enum() -> None:
    assert sanitize_schema(obj(kind={"const": "circle"}))["properties"]["kind"] == {"enum": ["circle"]}


def test_null_is_dropped_from_enum() -> None:
    schema = obj(size={"type": ["string", "null"], "enum": ["S", "M", None]})
    assert sanitize_schema(schema)["properties"]["size"] == {"type": "string", "enum": ["S", "M"]}


@pytest.mark.parametrize(
    "keyword, value",
    [
        ("default", "x"),
        ("examples", ["x"]),
        ("pattern", "^a$"),
        ("patternProperties", {"^a": {"type": "string"}}),
        ("propertyNames", {"pattern": "^a"}),
        ("minLength", 1),
        ("maxLength", 5),
        ("minItems", 1),
        ("maxItems", 5),
        ("uniqueItems", True),
        ("contains", {"type": "string"}),
        ("minimum", 0),
        ("maximum", 9),
        ("exclusiveMinimum", 0),
        ("exclusiveMaximum", 9),
        ("multipleOf", 2),
        ("additionalProperties", False),
        ("additionalItems", False),
        ("dependentSchemas", {"a": {}}),
        ("dependentRequired", {"a": ["b"]}),
        ("unevaluatedProperties", False),
        ("unevaluatedItems", False),
        ("not", {"type": "null"}),
        ("if", {"type": "string"}),
        ("then", {"type": "string"}),
        ("else", {"type": "string"}),
        ("title", "Field"),
        ("nullable", True),
        ("x-vendor", 1),
    ],
)
def test_unsupported_keywords_are_stripped(keyword: str, value: object) -> None:
    schema = obj(field={"type": "string", "description": "d", keyword: value})
    assert sanitize_schema(schema)["properties"]["field"] == {"type": "string", "description": "d"}


@pytest.mark.parametrize("fmt, kept", [("date-time", True), ("enum", True), ("email", False), ("uri", False)])
def test_only_upstream_formats_are_kept(fmt: str, kept: bool) -> None:
    field = sanitize_schema(obj(f={"type": "string", "format": fmt}))["properties"]["f"]
    assert ("format" in field) is kept


def test_nullable_type_list_flattens_to_first_real_type() -> None:
    schema = obj(a={"type": ["null", "integer"]}, b={"type": ["string", "null"]})
    assert sanitize_schema(schema)["properties"] == {"a": {"type": "integer"}, "b": {"type": "string"}}


def test_all_of_is_merged() -> None:
    schema = obj(
        pet={
            "description": "a pet",
            "allOf": [
                {"$ref": "#/$defs/Named"},
                {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]},
            ],
        }
    )
    schema["$defs"] = {"Named": obj(name={"type": "string"}) | {"required": ["name"]}}
    assert sanitize_schema(schema)["properties"]["pet"] == {
        "type": "object",
        "description": "a pet",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }


@pytest.mark.parametrize("keyword", ["anyOf", "oneOf"])
def test_any_of_picks_the_first_object_branch(keyword: str) -> None:
    schema = obj(
        target={
            "description": "what to hit",
            keyword: [
                {"type": "null"},
                {"type": "string"},
                obj(id={"type": "integer"}),
                obj(x={"type": "string"}),
            ],
        }
    )
    assert sanitize_schema(schema)["properties"]["target"] == {
        "type": "object",
        "description": "what to hit",
        "properties": {"id": {"type": "integer"}},
    }


def test_any_of_without_objects_picks_first_non_null_branch() -> None:
    schema = obj(v={"anyOf": [{"type": "null"}, {"type": "number"}, {"type": "string"}]})
    assert sanitize_schema(schema)["properties"]["v"] == {"type": "number"}


def test_optional_model_from_pydantic_resolves_ref_inside_any_of() -> None:
    schema = {
        **obj(owner={"anyOf": [{"$ref": "#/$defs/User"}, {"type": "null"}], "default": None}),
        "$defs": {"User": obj(email={"type": "string"}) | {"title": "User"}},
    }
    assert sanitize_schema(schema)["properties"]["owner"] == obj(email={"type": "string"})


def test_recurses_into_items_and_nested_properties() -> None:
    schema = obj(
        rows={
            "type": "array",
            "minItems": 1,
            "items": obj(cell={"type": "string", "minLength": 1, "title": "C"}),
        }
    )
    assert sanitize_schema(schema)["properties"]["rows"] == {
        "type": "array",
        "items": obj(cell={"type": "string"}),
    }


@pytest.mark.parametrize("schema", [None, {}, {"type": "string"}, {"properties": {}}, "not a schema"])
def test_root_is_always_an_object_with_properties(schema: object) -> None:
    assert sanitize_schema(schema) == {"type": "object", "properties": {}}


def test_root_keeps_only_object_keywords() -> None:
    schema = obj(a={"type": "string"}) | {"description": "args", "required": ["a"], "enum": [1], "items": {}}
    assert sanitize_schema(schema) == obj(a={"type": "string"}) | {"description": "args", "required": ["a"]}


def test_required_keeps_only_existing_properties() -> None:
    schema = obj(a={"type": "string"}) | {"required": ["a", "ghost", "a", 7]}
    assert sanitize_schema(schema)["required"] == ["a"]


def test_empty_required_is_omitted() -> None:
    assert "required" not in sanitize_schema(obj(a={"type": "string"}) | {"required": ["ghost"]})


def test_input_is_never_mutated() -> None:
    schema = {
        "$schema": "x",
        **obj(
            a={"allOf": [{"$ref": "#/$defs/A"}], "default": 1},
            b={"anyOf": [{"type": "null"}, {"const": 3}]},
            c={"type": ["string", "null"]},
        ),
        "required": ["a", "missing"],
        "$defs": {"A": obj(x={"type": "string", "title": "X"}) | {"required": ["x"]}},
    }
    original = copy.deepcopy(schema)
    sanitize_schema(schema)
    assert schema == original


@pytest.mark.parametrize(
    "name, expected",
    [
        ("get_weather", "get_weather"),
        ("ns.tool:v1-beta", "ns_tool_v1-beta"),
        ("files/read", "files_read"),
        ("run command", "run_command"),
        ("1st_tool", "_1st_tool"),
        ("-dash", "_-dash"),
        ("", "_"),
        ("Fünf", "F_nf"),
        ("a" * 80, "a" * 64),
    ],
)
def test_function_names_are_made_upstream_safe(name: str, expected: str) -> None:
    assert sanitize_function_name(name) == expected


@given(st.text(max_size=100))
def test_any_function_name_sanitizes_to_a_valid_name(name: str) -> None:
    assert UPSTREAM_NAME.match(sanitize_function_name(name))
