"""structlog set-up: JSON lines in production, readable output on a terminal."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import orjson
import structlog

from .config import LoggingConfig


def _orjson_dumps(obj: object, default: object = None) -> str:
    return orjson.dumps(obj, default=default).decode()


def configure_logging(config: LoggingConfig, stream: TextIO = sys.stdout) -> None:
    json_lines = config.format == "json" or (config.format == "auto" and not stream.isatty())
    renderer = (
        structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        if json_lines
        else structlog.dev.ConsoleRenderer()
    )
    level = getattr(logging, config.level.upper())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    # aiohttp and aiopg log through the stdlib; keep their warnings, in our format.
    logging.basicConfig(level=max(level, logging.WARNING), stream=stream, format="%(name)s %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
