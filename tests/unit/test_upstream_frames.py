"""Property: whatever text an upstream SSE event carries, the frame parser hands on an object,
skips what is not JSON, or raises a typed upstream error; never anything else (issue 11 item 2)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from antigv.backends.google.stream import _parse_frame
from antigv.core.errors import MalformedUpstreamReply
from antigv.core.failures import UpstreamFailure

_ERROR_KEYS = st.sampled_from(
    [
        "error",
        "code",
        "status",
        "message",
        "details",
        "@type",
        "reason",
        "metadata",
        "retryDelay",
        "quotaResetDelay",
        "quotaResetTimeStamp",
        "response",
        "candidates",
        "content",
        "parts",
        "thought_signature",
        "inline_data",
        "mime_type",
    ]
)
_TYPE_URLS = st.sampled_from(
    ["type.googleapis.com/google.rpc.ErrorInfo", "type.googleapis.com/google.rpc.RetryInfo"]
)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | _TYPE_URLS
    | st.sampled_from(
        ["9999999999999h", "1e400s", "-5s", "0.5s", "99999-12-31T00:00:00Z", "RESOURCE_EXHAUSTED"]
    )
)
JSON_VALUES = st.recursive(
    _SCALARS,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(_ERROR_KEYS | st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=25,
)


@st.composite
def google_errors(draw: st.DrawFn) -> dict[str, Any]:
    """Error objects shaped like Google's (PROTOCOL §8), each field possibly of the wrong type."""
    detail = st.fixed_dictionaries(
        {"@type": _TYPE_URLS},
        optional={
            "reason": JSON_VALUES,
            "retryDelay": JSON_VALUES,
            "metadata": st.fixed_dictionaries(
                {}, optional={"quotaResetDelay": JSON_VALUES, "quotaResetTimeStamp": JSON_VALUES}
            )
            | JSON_VALUES,
        },
    )
    error = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "code": st.sampled_from([400, 401, 403, 404, 429, 500, 503]) | JSON_VALUES,
                "status": st.sampled_from(["RESOURCE_EXHAUSTED", "PERMISSION_DENIED"]) | JSON_VALUES,
                "message": JSON_VALUES,
                "details": st.lists(detail | JSON_VALUES, max_size=3) | JSON_VALUES,
            },
        )
    )
    return {"error": error}


@given(google_errors())
def test_any_google_shaped_error_event_is_a_typed_failure(frame: dict[str, Any]) -> None:
    _check(orjson.dumps(frame).decode())


def _check(payload: str) -> None:
    try:
        frame = _parse_frame(payload)
    except (UpstreamFailure, MalformedUpstreamReply):
        return
    assert frame is None or isinstance(frame, dict)


@given(JSON_VALUES)
def test_any_json_event_is_a_frame_or_a_typed_error(value: Any) -> None:
    _check(orjson.dumps(value).decode())


@given(JSON_VALUES)
def test_any_error_event_is_a_typed_failure(error: Any) -> None:
    _check(orjson.dumps({"error": error}).decode())


@given(st.text(max_size=40))
def test_any_text_is_a_frame_a_skip_or_a_typed_error(payload: str) -> None:
    _check(payload)


@pytest.mark.parametrize("payload", ['["a"]', '"text"', "42", "null", "[]"])
def test_an_event_that_is_no_object_fails_the_reply(payload: str) -> None:
    with pytest.raises(MalformedUpstreamReply):
        _parse_frame(payload)
