"""Logs: one JSON event per line, stdlib records included, never a key (issue 11 #19)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest
import structlog

from antigv.app import create_app
from antigv.config import LoggingConfig
from antigv.ops.logs import configure_logging, redact
from tests.conftest import make_config
from tests.test_errors import _raw_exchange

SECRET = "sk-" + "S3cr3tKeyValue" * 3


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """The production set-up, writing to a buffer; undone afterwards, so that later tests'
    ``capture_logs`` still sees every logger (none stays bound to this configuration)."""
    saved = structlog.get_config()
    stream = io.StringIO()
    configure_logging(LoggingConfig(level="info", format="json"), stream)
    structlog.configure(cache_logger_on_first_use=False)
    yield stream
    structlog.configure(**saved)
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, logging.StreamHandler) and h.stream is stream]:
        root.removeHandler(handler)


def events(stream: io.StringIO) -> list[dict]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


async def test_a_malformed_header_line_is_logged_as_one_event_without_the_key(
    aiohttp_client, db_dsn, log_stream
):
    client = await aiohttp_client(create_app(make_config(db_dsn)))
    raw = f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SECRET}\x01zz\r\n\r\n".encode()
    received = await _raw_exchange(client, raw, within=3)
    assert received.startswith(b"HTTP/1.")

    text = log_stream.getvalue()
    assert SECRET not in text and "S3cr3tKeyValue" not in text
    logged = events(log_stream)  # every line parses: one event each
    protocol = [e for e in logged if e["event"] == "http_protocol_error"]
    assert len(protocol) == 1, logged
    assert protocol[0]["status"] == 400
    assert protocol[0]["logger"] == "aiohttp.server"
    assert "exception" not in protocol[0]


def test_stdlib_tracebacks_are_one_line_and_scrubbed(log_stream):
    try:
        raise RuntimeError(f"token ya29.abcdefghijkl and Authorization: Bearer {SECRET}")
    except RuntimeError:
        logging.getLogger("aiohttp.server").exception("Error handling request from %s", "127.0.0.1")
    (event,) = events(log_stream)
    assert event["event"] == "Error handling request from 127.0.0.1"
    assert event["level"] == "error"
    assert "RuntimeError" in event["exception"]
    assert SECRET not in event["exception"] and "ya29.abcdefghijkl" not in event["exception"]


def test_configuring_twice_keeps_one_handler(log_stream):
    configure_logging(LoggingConfig(level="info", format="json"), log_stream)
    logging.getLogger("aiopg").warning("pool closed")
    assert [e["event"] for e in events(log_stream)] == ["pool closed"]


@pytest.mark.parametrize(
    "text",
    [
        f"Bearer {SECRET}",
        f"key={SECRET}",
        "x-goog-api-key: AIzaSyA1234567890abcdefghijk",
        "ya29.a0AfH6SM-x.y",
    ],
)
def test_redact_removes_credentials(text):
    assert redact(text) != text
    assert "[redacted]" in redact(text)
