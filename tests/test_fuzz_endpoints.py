"""Fuzzing every endpoint with malformed input: never a 5xx, every error in OpenAI's
shape (SPEC §2; issue 11 #17 and "Done when"), plus the inputs the fuzzing found."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from antigv.app import create_app
from tests.conftest import ADMIN_KEY, bearer, create_user, make_config

# The endpoints SPEC §3 names that this build serves; the fuzzer drives whatever the
# router holds, and this list makes sure none of them quietly drops out of it.
KNOWN_ENDPOINTS = {
    ("POST", "/v1/chat/completions"),
    ("GET", "/v1/models"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/api/user/me"),
    ("POST", "/api/users"),
    ("GET", "/api/users"),
    ("POST", "/api/users/{id}/regenerate-key"),
    ("PUT", "/api/users/{id}/status"),
    ("PUT", "/api/users/{id}/preference"),
    ("DELETE", "/api/users/{id}"),
    ("POST", "/api/oauth/authorize"),
    ("GET", "/api/oauth/callback"),
    ("POST", "/api/oauth/callback/manual"),
    ("GET", "/api/accounts"),
    ("GET", "/api/accounts/{id}"),
    ("PUT", "/api/accounts/{id}/status"),
    ("PUT", "/api/accounts/{id}/name"),
    ("PUT", "/api/accounts/{id}/type"),
    ("DELETE", "/api/accounts/{id}"),
    ("GET", "/api/accounts/{id}/quotas"),
    ("PUT", "/api/accounts/{id}/quotas/{model}/status"),
    ("GET", "/api/quotas/user"),
    ("GET", "/api/quotas/shared-pool"),
    ("GET", "/api/quotas/consumption"),
    ("GET", "/api/quotas/consumption/daily"),
    ("GET", "/api/quotas/consumption/stats/{model}"),
    ("GET", "/api/quotas/low"),
}
# SPEC §2: the one answer that is not JSON (a browser opens it).
HTML_ENDPOINTS = {"/api/oauth/callback"}

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["", "0", "1", "-1", "1e309", "NaN", "\x00", "é", "😀", "𝟙", "９"])
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FIELDS = st.sampled_from(
    [
        "name",
        "prefer_shared",
        "status",
        "is_shared",
        "user_id",
        "callback_url",
        "model",
        "messages",
        "stream",
        "tools",
        "functions",
        "tool_choice",
        "max_tokens",
        "temperature",
    ]
)
# Bodies: nothing, bytes that are not JSON (or not UTF-8), any JSON, and objects with
# the fields the endpoints read holding values of any type.
BODIES = st.one_of(
    st.none(),
    st.binary(max_size=24),
    st.sampled_from([b"{", b"\xff\xfe{}", b"null", b"[]", b'{"a":1}{', b"{}" * 3, b'"\\ud800"']),
    JSON.map(orjson.dumps),
    st.dictionaries(FIELDS, JSON, max_size=4).map(orjson.dumps),
    st.fixed_dictionaries(
        {"model": st.sampled_from(["gemini-2.5-flash", "", "x" * 300]), "messages": JSON}
    ).map(orjson.dumps),
)
PATH_VALUES = st.one_of(
    st.sampled_from(
        ["1", "0", "-1", "01", "999999999999999999", "9" * 30, "1.5", "１", "²", "%00", "null", "..", "a b"]
    ),
    st.text(min_size=1, max_size=12),
)
# Dates at the calendar's edges, and across them once a time zone shifts them.
EDGE_DATES = st.sampled_from(
    [
        "0001-01-01",
        "9999-12-31",
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59-12:00",
        "0000-01-01",
        "2025-02-30",
        "2025-01-01T25:00:00",
    ]
)
NUMBERS = st.one_of(
    st.integers().map(str),
    st.sampled_from(["nan", "inf", "-0", "1e3", "9" * 25, "-9223372036854775809", "１", " 1", "0x10", ""]),
)
TEXT = st.text(max_size=16)
# Every query parameter an endpoint reads, each present about half the time.
QUERIES = st.fixed_dictionaries(
    {},
    optional={
        "start_date": EDGE_DATES | TEXT,
        "end_date": EDGE_DATES | TEXT,
        "limit": NUMBERS | TEXT,
        "offset": NUMBERS | TEXT,
        "threshold": NUMBERS | TEXT,
        "user_id": NUMBERS | TEXT,
        "code": TEXT,
        "state": TEXT,
        "error": TEXT,
    },
)
# Mostly the route's own method (None) and a caller who may use it, so the handlers
# themselves see the malformed input; sometimes another method or no valid key.
METHODS = st.sampled_from([None] * 7 + ["GET", "PATCH", "DELETE"])
AUTHS = st.sampled_from([0, 0, 0, 1, 1, 1, 2, 3, 4])


def endpoints(app: web.Application) -> list[tuple[str, str]]:
    """(method, path template) of every route (HEAD aside: aiohttp adds it to each GET)."""
    found = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        template = info.get("formatter") or info.get("path")
        if template and route.method != "HEAD":
            found.add((route.method, template))
    return sorted(found)


def fill(template: str, values: list[str]) -> str:
    path = template
    for value in values:
        if "{" not in path:
            break
        start, end = path.index("{"), path.index("}")
        path = path[:start] + quote(value, safe="") + path[end + 1 :]
    return path


def assert_error_shape(path: str, status: int, content_type: str, body: bytes) -> None:
    assert content_type == "application/json", (path, status, content_type, body[:200])
    document = orjson.loads(body)
    error = document["error"]
    if path.startswith("/v1/messages"):  # Anthropic's shape
        assert document["type"] == "error" and set(error) == {"type", "message"}, document
        assert isinstance(error["message"], str) and error["message"]
        return
    assert set(error) == {"message", "type", "code", "param"}, document
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str)
    assert error["code"] is None or isinstance(error["code"], str)
    assert error["param"] is None or isinstance(error["param"], str)
    if path.startswith("/api/"):
        assert document["success"] is False, document


@pytest.fixture
async def auths(client: Any) -> list[dict[str, str]]:
    user = await create_user(client, "fuzz")
    return [
        bearer(ADMIN_KEY),
        bearer(user["api_key"]),
        {},
        {"Authorization": "Bearer sk-nope"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ]


# The routes as the app registers them, so an endpoint added later is fuzzed too.
ROUTES = endpoints(create_app(make_config("postgresql://unused")))


def test_the_fuzzer_reaches_every_endpoint() -> None:
    assert set(ROUTES) >= KNOWN_ENDPOINTS


# One app per route, many examples within it (the fixtures are not rebuilt per example).
@pytest.mark.slow
@pytest.mark.parametrize("route", ROUTES, ids=" ".join)
@settings(max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=METHODS,
    path_values=st.lists(PATH_VALUES, min_size=2, max_size=2),
    query=QUERIES,
    body=BODIES,
    auth=AUTHS,
    json_header=st.booleans(),
)
async def test_every_endpoint_answers_malformed_input_without_a_5xx(
    client: Any,
    auths: list[dict[str, str]],
    route: tuple[str, str],
    method: str | None,
    path_values: list[str],
    query: dict[str, str],
    body: bytes | None,
    auth: int,
    json_header: bool,
) -> None:
    route_method, template = route
    method = method or route_method
    path = fill(template, path_values)
    headers = dict(auths[auth])
    if json_header:
        headers["Content-Type"] = "application/json"
    response = await client.request(method, path, params=query, data=body, headers=headers)
    content = await response.read()
    assert response.status < 500, (method, path, query, body, response.status, content)
    if response.status >= 400 and template not in HTML_ENDPOINTS:
        assert_error_shape(response.url.path, response.status, response.content_type, content)


# --- what the fuzzing found ------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        {"start_date": "0001-01-01"},
        {"end_date": "0001-01-01"},
        {"end_date": "9999-12-31"},
        {"start_date": "9999-12-31", "end_date": "9999-12-31"},
        {"start_date": "0001-01-01T00:00:00+14:00"},
        {"end_date": "0001-01-01T05:00:00+06:00"},
        {"start_date": "9999-12-31T23:00:00-05:00"},
        {"end_date": "9999-12-31T23:59:59.999999-12:00"},
    ],
)
async def test_dates_at_the_edges_of_the_calendar_are_answered(client: Any, query: dict[str, str]) -> None:
    user = await create_user(client)
    for path in (
        "/api/quotas/consumption",
        "/api/quotas/consumption/daily",
        "/api/quotas/consumption/stats/gemini-2.5-flash",
    ):
        response = await client.get(path, params=query, headers=bearer(user["api_key"]))
        assert response.status in (200, 400), await response.text()
        if response.status == 400:
            assert_error_shape(path, 400, response.content_type, await response.read())


async def test_tool_call_arguments_too_deep_to_encode_are_a_400(client: Any) -> None:
    user = await create_user(client)
    deep = '{"a": ' + "[" * 300 + "]" * 300 + "}"
    body = {
        "model": "gemini-2.5-flash",
        "messages": [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": deep}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "ok"},
        ],
    }
    response = await client.post("/v1/chat/completions", json=body, headers=bearer(user["api_key"]))
    assert response.status == 400, await response.text()
    assert (await response.json())["error"]["param"] == "messages[1].tool_calls[0].function.arguments"


async def test_twenty_thousand_messages_are_a_prompt_400(client: Any) -> None:
    # 680 KB of same-role messages froze the event loop for 24 s (issue 11 #12).
    user = await create_user(client)
    body = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hello"}] * 20_000}
    started = time.perf_counter()
    response = await client.post("/v1/chat/completions", json=body, headers=bearer(user["api_key"]))
    elapsed = time.perf_counter() - started
    assert response.status == 400, await response.text()
    assert (await response.json())["error"]["param"] == "messages"
    assert elapsed < 2.0, f"{elapsed:.2f}s"
