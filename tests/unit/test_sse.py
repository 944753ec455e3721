from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from antigv.backends.google.sse import SSEParser

LINE_ENDINGS = ("\n", "\r\n", "\r")
FIELD_VALUE = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=12)


def parse(*chunks: bytes) -> list[str]:
    parser = SSEParser()
    events = [data for chunk in chunks for data in parser.feed(chunk)]
    return events + parser.close()


@st.composite
def data_line(draw: st.DrawFn) -> tuple[str, str]:
    """(line as written, value the parser must report)."""
    value = draw(FIELD_VALUE)
    prefix = draw(st.sampled_from(["data: ", "data:"]))
    reported = value[1:] if prefix == "data:" and value.startswith(" ") else value
    return prefix + value, reported


@st.composite
def noise_line(draw: st.DrawFn) -> str:
    field = draw(st.sampled_from([":", ": keep-alive ", "event: ", "id: ", "retry: ", "dataless: "]))
    return field + draw(FIELD_VALUE)


@st.composite
def sse_stream(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    """A byte stream built from random events, and the data the parser must report for it."""
    lines: list[str] = []
    expected: list[str] = []
    for _ in range(draw(st.integers(0, 5))):
        event_data = []
        for _ in range(draw(st.integers(0, 3))):
            if draw(st.booleans()):
                written, reported = draw(data_line())
                lines.append(written)
                event_data.append(reported)
            else:
                lines.append(draw(noise_line()))
        lines.append("")
        if event_data:
            expected.append("\n".join(event_data))
    if draw(st.booleans()):
        written, reported = draw(data_line())
        lines.append(written)  # a last event that the stream ends without terminating
        expected.append(reported)
    text = ""
    for line in lines:
        ending = draw(st.sampled_from(LINE_ENDINGS))
        if text.endswith("\r") and not line and ending != "\r":
            ending = "\r"  # "\r" then "\n" would be one line break, not an empty line
        text += line + ending
    return text.encode(), expected


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cut % (len(data) + 1) for cut in cuts), len(data)]
    return [data[start:end] for start, end in pairwise(bounds)]


@given(sse_stream())
def test_whole_stream_yields_the_events_it_was_built_from(stream: tuple[bytes, list[str]]) -> None:
    data, expected = stream
    assert parse(data) == expected


@given(sse_stream(), st.lists(st.integers(min_value=0), max_size=20))
def test_any_split_yields_the_same_events(stream: tuple[bytes, list[str]], cuts: list[int]) -> None:
    data, expected = stream
    assert parse(*split_at(data, cuts)) == expected


@given(sse_stream())
def test_one_byte_at_a_time_yields_the_same_events(stream: tuple[bytes, list[str]]) -> None:
    data, expected = stream
    assert parse(*(data[i : i + 1] for i in range(len(data)))) == expected


def test_event_is_returned_as_soon_as_its_blank_line_arrives() -> None:
    parser = SSEParser()
    assert parser.feed(b'data: {"a": 1}\n') == []
    assert parser.feed(b"\n") == ['{"a": 1}']
    assert parser.close() == []


def test_crlf_line_endings() -> None:
    assert parse(b"data: one\r\n\r\ndata: two\r\n\r\n") == ["one", "two"]


def test_crlf_split_between_reads_is_one_line_break() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: one\r") == []
    assert parser.feed(b"\ndata: two\r") == []
    assert parser.feed(b"\n") == []
    assert parser.feed(b"\r\n") == ["one\ntwo"]


def test_lone_cr_line_endings() -> None:
    assert parse(b"data: one\r\rdata: two\r\r") == ["one", "two"]


def test_multi_line_data_is_joined_with_newline() -> None:
    assert parse(b"data: first\ndata:second\ndata:  third\n\n") == ["first\nsecond\n third"]


def test_comments_and_other_fields_are_ignored() -> None:
    stream = b": heartbeat\nevent: message\nid: 7\nretry: 100\ndata: x\n\n: only a comment\n\n"
    assert parse(stream) == ["x"]


def test_field_without_colon() -> None:
    assert parse(b"data\n\nid\n\n") == [""]


def test_trailing_event_without_blank_line_is_flushed_on_close() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\n\ndata: last") == ["a"]
    assert parser.close() == ["last"]


def test_non_ascii_split_inside_a_character() -> None:
    encoded = "data: 天气 🌤️ ok\n\n".encode()
    cut = encoded.index("🌤".encode()) + 2
    parser = SSEParser()
    assert parser.feed(encoded[:cut]) == []
    assert parser.feed(encoded[cut:]) == ["天气 🌤️ ok"]


def test_unicode_line_separators_inside_data_do_not_split_lines() -> None:
    assert parse("data: a\u2028b\x85c\x0cd\n\n".encode()) == ["a\u2028b\x85c\x0cd"]


def test_leading_byte_order_mark_is_dropped() -> None:
    assert parse(b"\xef\xbb", b"\xbfdata: x\n\n") == ["x"]


def test_done_sentinel_is_just_data() -> None:
    assert parse(b"data: [DONE]\n\n") == ["[DONE]"]


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    assert parse(b"data: a\xffb\n\n") == ["a\ufffdb"]


# Issue 11 item 23: only data is progress; keep-alive comments are not.


@given(st.lists(noise_line(), max_size=8), st.lists(st.integers(min_value=0), max_size=10))
def test_comments_and_other_fields_are_never_data_in_progress(lines: list[str], cuts: list[int]) -> None:
    parser = SSEParser()
    for piece in split_at("".join(line + "\n" for line in lines).encode(), cuts):
        assert parser.feed(piece) == []
        assert not parser.in_data


def test_a_data_line_in_progress_is_progress() -> None:
    parser = SSEParser()
    assert not parser.in_data
    assert parser.feed(b": keep-alive\n\n") == [] and not parser.in_data
    assert parser.feed(b'data: {"a": ') == [] and parser.in_data  # a long line still arriving
    assert parser.feed(b"1}\n") == [] and parser.in_data  # the event waits for its blank line
    assert parser.feed(b"\n") == ['{"a": 1}'] and not parser.in_data
    assert parser.feed(b": keep-alive\n") == [] and not parser.in_data
