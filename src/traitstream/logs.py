"""Logging setup: JSON lines when not writing to a terminal, readable text otherwise.

Structured fields travel in ``extra={...}``; both formatters emit every field a
record carries beyond the standard ones. A JSON line is always one line (newlines
in messages and tracebacks are escaped) and always valid JSON, whatever the fields
hold: a log call must never fail because of what it logs.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
_FIXED = ("ts", "level", "logger", "msg", "exc", "stack")


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra={...}`` fields of a record, in the order they were given."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            # A field named like a fixed key must not hide the level or the message.
            line[f"extra_{key}" if key in _FIXED else key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        try:
            return orjson.dumps(line, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        except orjson.JSONEncodeError:
            # Integers past 64 bits and the like: fall back to text for every field.
            return orjson.dumps({k: v if isinstance(v, str) else repr(v) for k, v in line.items()}).decode()


class TextFormatter(logging.Formatter):
    """``time LEVEL logger message key=value …`` for people at a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = " ".join(f"{k}={v}" for k, v in extra_fields(record).items())
        if not fields:
            return text
        head, sep, tail = text.partition("\n")
        return f"{head} {fields}{sep}{tail}"


def setup(fmt: str = "auto", level: int | str = logging.INFO) -> None:
    """Send every log line to stderr: ``fmt`` is json, text or auto (json unless
    stderr is a terminal); ``level`` a number or a name such as ``"debug"``."""
    handler = logging.StreamHandler(sys.stderr)
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper() if isinstance(level, str) else level)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
