"""The stream watchdog (issue 11 item 23) and the frame spelling (PROTOCOL §13.8), driven
without a network or the wall clock."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from antigv.backends.google.stream import _camel_case_parts, _IdleWatchdog, _parse_frame


class _Handle:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualLoop:
    """The two loop methods the watchdog uses, on a clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[tuple[float, int, _Handle, Callable[[], None]]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> _Handle:
        handle = _Handle()
        heapq.heappush(self._timers, (when, next(self._order), handle, callback))
        return handle

    def advance_to(self, moment: float) -> None:
        while self._timers and self._timers[0][0] <= moment:
            when, _, handle, callback = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            if not handle.cancelled:
                callback()
        self.now = moment


class Content:
    def __init__(self) -> None:
        self.failed: BaseException | None = None

    def set_exception(self, exc: BaseException) -> None:
        self.failed = exc


def watchdog(first: float = 5.0, idle: float = 2.0, total: float = 100.0) -> tuple[ManualLoop, Content, Any]:
    loop, content = ManualLoop(), Content()
    return loop, content, _IdleWatchdog(loop, content, first, idle, total)  # type: ignore[arg-type]


def test_first_byte_then_idle_limits() -> None:
    loop, content, dog = watchdog()
    loop.advance_to(4.9)
    assert content.failed is None
    dog.touch()  # data at 4.9: the idle limit (2 s) from now on
    loop.advance_to(6.8)
    assert content.failed is None
    dog.touch()
    loop.advance_to(8.7)
    assert content.failed is None
    loop.advance_to(8.8)
    assert isinstance(content.failed, TimeoutError) and dog.expired == "idle"


def test_no_data_at_all_fails_at_the_first_byte_limit() -> None:
    loop, content, dog = watchdog()
    loop.advance_to(4.99)
    assert content.failed is None
    loop.advance_to(5.0)
    assert isinstance(content.failed, TimeoutError) and dog.expired == "idle"


def test_a_steady_stream_is_cut_at_the_total_cap() -> None:
    loop, content, dog = watchdog(total=10.0)
    moment = 0.0
    while content.failed is None and moment < 20:
        moment += 1.0
        loop.advance_to(moment)
        if content.failed is None:
            dog.touch()
    assert moment == 10.0 and dog.expired == "total"


def test_the_total_cap_applies_before_the_first_byte_limit() -> None:
    loop, _, dog = watchdog(first=30.0, total=3.0)
    loop.advance_to(3.0)
    assert dog.expired == "total"


# --- frames -----------------------------------------------------------------------------------


def frame(*parts: dict[str, Any]) -> str:
    return orjson.dumps(
        {"response": {"candidates": [{"content": {"role": "model", "parts": list(parts)}}]}, "traceId": "t"}
    ).decode()


def parts_of(parsed: dict[str, Any]) -> list[dict[str, Any]]:
    return parsed["response"]["candidates"][0]["content"]["parts"]


def test_snake_case_part_fields_read_as_camel_case() -> None:
    parsed = _parse_frame(
        frame(
            {"text": "", "thought": True, "thought_signature": "sig-1"},
            {"inline_data": {"mime_type": "image/png", "data": "AAAA"}},
            {"inlineData": {"mime_type": "image/jpeg", "data": "BBBB"}},
            {"functionCall": {"name": "f", "args": {}}, "thought_signature": "sig-2"},
        )
    )
    assert parsed is not None
    assert parts_of(parsed) == [
        {"text": "", "thought": True, "thoughtSignature": "sig-1"},
        {"inlineData": {"mimeType": "image/png", "data": "AAAA"}},
        {"inlineData": {"mimeType": "image/jpeg", "data": "BBBB"}},
        {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "sig-2"},
    ]


def test_camel_case_frames_are_left_alone() -> None:
    payload = frame({"text": "thought_signature is a word here", "thoughtSignature": "s"})
    assert _parse_frame(payload) == orjson.loads(payload)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3),
    max_leaves=12,
)
KEYS = st.sampled_from(
    ["response", "candidates", "content", "parts", "thought_signature", "inline_data", "mime_type"]
)
SHAPED = st.recursive(
    JSON, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3), max_leaves=20
)


@given(st.dictionaries(KEYS, SHAPED, max_size=3))
def test_renaming_takes_any_frame_shape(value: dict[str, Any]) -> None:
    _camel_case_parts(value)  # malformed shapes are the translator's to judge, not an error here
