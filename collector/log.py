"""structlog set-up: JSON lines in production, readable lines on a terminal."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

from collector.redaction import error_text

__all__ = ["configure_logging", "redact"]

_SECRET_KEYS = frozenset({"authorization", "token", "password", "secret", "api_key", "cookie"})
_BEARER = re.compile(r"(?i)\b(bearer\s+)(?!<token>)[A-Za-z0-9._~+/=-]+")


def redact(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """Defense in depth: nothing logs credentials on purpose, and this makes sure of it."""
    for key, value in event.items():
        if key.lower() in _SECRET_KEYS:
            event[key] = "[redacted]"
        elif isinstance(value, str):
            if "earer" in value:
                value = _BEARER.sub(r"\1[redacted]", value)
            event[key] = error_text(value)  # an object store's error may quote a secret
    return event


def configure_logging(format: str = "auto", level: str = "info") -> None:
    if format == "auto":
        format = "console" if sys.stderr.isatty() else "json"
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer()
        if format == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
