"""structlog set-up: JSON lines in production, readable output on a terminal.

The standard library's records (aiohttp's server and access loggers, aiopg) go through the
same processors and renderer, so every line is one event, a traceback included. Those
records are written by code that may quote the raw request: an HTTP parser error quotes
the offending line (``Authorization: Bearer sk-…`` with a control character in it), so
such errors are logged by class and status alone, and secrets are scrubbed from every
foreign record (issue 11 #19).
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, TextIO

import orjson
import structlog
from aiohttp.http_exceptions import HttpProcessingError

from antigv.config import LoggingConfig

# A bearer credential, an API key of ours (``sk-…``) or of Google's, an OAuth token.
_SECRET_RE = re.compile(
    r"(?i)(bearer\s+)\S+|\bsk-[A-Za-z0-9_\-]{8,}|\bAIza[0-9A-Za-z_\-]{20,}|\bya29\.[0-9A-Za-z_\-.]+"
)
_REDACTED = "[redacted]"


def _orjson_dumps(obj: object, default: object = None) -> str:
    return orjson.dumps(obj, default=default).decode()


def redact(text: str) -> str:
    return _SECRET_RE.sub(lambda m: (m.group(1) or "") + _REDACTED, text)


def _foreign_record(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    """A standard-library record: no raw request bytes, no secrets."""
    record: logging.LogRecord | None = event.get("_record")
    exc_info = event.get("exc_info")
    exc = exc_info[1] if isinstance(exc_info, tuple) else None
    if isinstance(exc, HttpProcessingError):
        # A malformed request (bad header, chunking, method, over-long line): its text
        # quotes the input, so only what it was is kept.
        event.pop("exc_info", None)
        event["event"] = "http_protocol_error"
        event["error"] = type(exc).__name__
        event["status"] = exc.code
    else:
        event["event"] = redact(str(event.get("event", "")))
    if record is not None:
        event["logger"] = record.name
    return event


def _redact_exception(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    if isinstance(event.get("exception"), str):
        event["exception"] = redact(event["exception"])
    return event


class _StdlibHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The one root handler this module installs (replaced, not added, on a second call)."""


def configure_logging(config: LoggingConfig, stream: TextIO = sys.stdout) -> None:
    json_lines = config.format == "json" or (config.format == "auto" and not stream.isatty())
    renderer = (
        structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        if json_lines
        else structlog.dev.ConsoleRenderer()
    )
    level = getattr(logging, config.level.upper())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    # aiohttp and aiopg log through the stdlib; keep their warnings, in our format.
    handler = _StdlibHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, _foreign_record],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                _redact_exception,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StdlibHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(level, logging.WARNING))
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
