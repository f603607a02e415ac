"""The log formats operators and log shippers depend on: one JSON object per line,
structured fields as top-level keys, exceptions included, nothing lost to formatting."""

from __future__ import annotations

import io
import json
import logging
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from traitstream import logs


def record(
    msg: str = "batch applied", *args: Any, extra: dict[str, Any] | None = None, **kwargs: Any
) -> logging.LogRecord:
    logger = logging.getLogger("traitstream.test")
    return logger.makeRecord(
        logger.name, logging.INFO, __file__, 1, msg, args, kwargs.pop("exc_info", None), extra=extra, **kwargs
    )


def formatted(rec: logging.LogRecord) -> dict[str, Any]:
    line = logs.JsonFormatter().format(rec)
    assert "\n" not in line
    parsed = json.loads(line)
    assert isinstance(parsed, dict)
    return parsed


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """``setup`` replaces the root logger's handlers; put them back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_fixed_fields_and_percent_args() -> None:
    rec = record("retrying in %.1fs: %s", 0.4, "postgres down")
    line = formatted(rec)
    assert line["msg"] == "retrying in 0.4s: postgres down"
    assert line["level"] == "info"
    assert line["logger"] == "traitstream.test"
    stamp = datetime.fromisoformat(line["ts"])
    assert stamp.utcoffset() is not None and stamp.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert abs(stamp.timestamp() - rec.created) < 0.001


def test_extra_fields_appear_with_their_json_types() -> None:
    ids = [str(uuid.uuid4()) for _ in range(3)]
    line = formatted(
        record(
            extra={
                "records": 3,
                "applied": 2,
                "partitions": [0, 4],
                "response_ids": ids,
                "ratio": 0.5,
                "dry_run": False,
                "profile": None,
            }
        )
    )
    assert line["records"] == 3
    assert line["partitions"] == [0, 4]
    assert line["response_ids"] == ids
    assert line["ratio"] == 0.5
    assert line["dry_run"] is False
    assert line["profile"] is None


def test_standard_record_attributes_do_not_leak() -> None:
    line = formatted(record(extra={"response_id": "r-1"}))
    assert set(line) == {"ts", "level", "logger", "msg", "response_id"}


def test_an_extra_field_cannot_hide_the_level_or_time() -> None:
    line = formatted(record(extra={"level": "fake", "ts": "yesterday", "logger": "x"}))
    assert line["level"] == "info"
    assert line["logger"] == "traitstream.test"
    assert line["extra_level"] == "fake"
    assert line["extra_ts"] == "yesterday"


def test_exceptions_are_included_on_the_same_line() -> None:
    try:
        raise ValueError("schema id 7 is unknown\nsecond line")
    except ValueError:
        rec = record("request failed", exc_info=sys.exc_info(), extra={"response_id": "r-2"})
    line = formatted(rec)
    assert line["msg"] == "request failed"
    assert line["response_id"] == "r-2"
    assert line["exc"].startswith("Traceback (most recent call last):")
    assert "ValueError: schema id 7 is unknown\nsecond line" in line["exc"]


def test_stack_info_is_included() -> None:
    line = formatted(record(sinfo="Stack (most recent call last):\n  File x"))
    assert line["stack"].startswith("Stack (most recent call last):")


def test_values_json_cannot_encode_never_break_the_line() -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

        __str__ = __repr__

    when = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    line = formatted(record(extra={"obj": Opaque(), "when": when, "by_partition": {0: 5, 3: 1}}))
    assert line["obj"] == "<opaque>"
    assert line["when"] == "2024-01-02T03:04:05+00:00"
    assert line["by_partition"] == {"0": 5, "3": 1}
    huge = formatted(record(extra={"offset": 2**70, "ok": "yes"}))
    assert huge["offset"] == str(2**70)
    assert huge["ok"] == "yes"
    assert huge["msg"] == "batch applied"


def test_setup_json_writes_one_object_per_line(
    root_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    logs.setup("json")
    log = logging.getLogger("traitstream.worker.consumer")
    log.info("batch applied", extra={"records": 2, "response_ids": ["a", "b"]})
    log.warning("transient failure, retrying in %.1fs: %s", 0.2, "redis: connection\nrefused")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("request failed", extra={"response_id": "r-3"})
    log.debug("not shown at info")

    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    parsed = [json.loads(line) for line in lines]
    assert [p["level"] for p in parsed] == ["info", "warning", "error"]
    assert parsed[0]["response_ids"] == ["a", "b"]
    assert parsed[1]["msg"] == "transient failure, retrying in 0.2s: redis: connection\nrefused"
    assert "RuntimeError: boom" in parsed[2]["exc"]


def test_setup_auto_is_text_at_a_terminal_and_json_otherwise(
    root_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    logs.setup("auto")
    logging.getLogger("traitstream.edge").info("request refused: %s", "no user_id", extra={"status": 400})
    text = terminal.getvalue()
    assert text.rstrip("\n").endswith("INFO traitstream.edge request refused: no user_id status=400")

    piped = io.StringIO()
    monkeypatch.setattr("sys.stderr", piped)
    logs.setup("auto")
    logging.getLogger("traitstream.edge").info("edge ready to serve", extra={"port": 8080})
    assert json.loads(piped.getvalue())["port"] == 8080


def test_setup_takes_a_level_name(root_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    logs.setup("json", "debug")
    logging.getLogger("traitstream.test").debug("visible")
    assert json.loads(stream.getvalue())["level"] == "debug"


def test_text_format_keeps_the_traceback_after_the_fields() -> None:
    try:
        raise KeyError("k")
    except KeyError:
        rec = record("request failed", exc_info=sys.exc_info(), extra={"response_id": "r-4"})
    text = logs.TextFormatter().format(rec)
    first, rest = text.split("\n", 1)
    assert first.endswith("request failed response_id=r-4")
    assert rest.startswith("Traceback (most recent call last):")
