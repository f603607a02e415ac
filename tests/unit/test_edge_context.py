"""The one wrapper every route goes through: answers, statuses and the response id."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
import psycopg
import pytest
from fastapi import Request
from fastapi.responses import Response
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from traitstream.config import EdgeSettings
from traitstream.dialects.common import Envelope
from traitstream.edge.context import EdgeContext, json_response
from traitstream.errors import LimitExceeded, RequestError
from traitstream.metrics import EdgeMetrics


def shape(error: RequestError, response_id: str) -> dict[str, Any]:
    return {"message": error.message, "id": response_id}


def run(handler: Any) -> Response:
    ctx = EdgeContext(publisher=None, auth=None, reader=None, metrics=EdgeMetrics())  # type: ignore[arg-type]
    request = Request({"type": "http", "method": "POST", "path": "/x", "headers": [], "query_string": b""})
    return asyncio.run(ctx.handle("test", request, shape, handler))


def body(response: Response) -> dict[str, Any]:
    return dict(orjson.loads(bytes(response.body)))


def test_success_carries_the_response_id_header() -> None:
    async def ok(response_id: str) -> Response:
        return json_response({"id": response_id})

    response = run(ok)
    assert response.status_code == 200
    assert response.headers["X-Response-Id"] == body(response)["id"]


@pytest.mark.parametrize(
    ("raised", "status", "text"),
    [
        (LimitExceeded("too big"), 413, "too big"),
        (psycopg.OperationalError("connection refused"), 503, "cannot be reached"),
        (RuntimeError("bug"), 500, "internal error"),
    ],
)
def test_errors_map_to_statuses_in_the_dialect_shape(raised: Exception, status: int, text: str) -> None:
    async def fail(response_id: str) -> Response:
        raise raised

    response = run(fail)
    assert response.status_code == status
    assert text in body(response)["message"]
    assert body(response)["id"] == response.headers["X-Response-Id"]


def test_json_response_writes_integers_beyond_64_bits_exactly() -> None:
    # A profile read back from PostgreSQL can hold any number a client once sent.
    big = {"traits": {"huge": 10**29, "negative": -(2**70), "name": "Ada"}}
    response = json_response(big)
    expected = b'{"traits":{"huge":100000000000000000000000000000,"negative":-1180591620717411303424,'
    assert response.body == expected + b'"name":"Ada"}}'
    assert json_response({"small": 1}).body == b'{"small":1}'


def test_envelopes_carry_the_configured_margin() -> None:
    ctx = EdgeContext(
        publisher=None,  # type: ignore[arg-type]
        auth=None,  # type: ignore[arg-type]
        reader=None,  # type: ignore[arg-type]
        metrics=EdgeMetrics(),
        clock=lambda: 1_700_000_000.5,
        max_future_skew_ms=42_000,
    )
    assert ctx.envelope("ws", "r") == Envelope("ws", "r", 1_700_000_000_500, 42_000)
    assert EdgeContext(None, None, None, EdgeMetrics()).envelope("ws", "r").max_future_ms == 600_000  # type: ignore[arg-type]


def test_clamped_times_are_counted_and_logged_once_per_request(caplog: pytest.LogCaptureFixture) -> None:
    metrics = EdgeMetrics()
    ctx = EdgeContext(None, None, None, metrics, max_future_skew_ms=600_000)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="traitstream.edge.context"):
        ctx.count_clamped("segment", "r-1", 0, 5)
        ctx.count_clamped("segment", "r-2", 3, 5)
        ctx.count_clamped("amplitude", "r-3", 1, 1)
    lines = [(r.response_id, r.dialect, r.clamped, r.identifies) for r in caplog.records]  # type: ignore[attr-defined]
    assert lines == [("r-2", "segment", 3, 5), ("r-3", "amplitude", 1, 1)]
    assert all(r.max_future_skew_s == 600 for r in caplog.records)  # type: ignore[attr-defined]
    counted = {
        s.labels["dialect"]: s.value
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
        for s in family.samples
        if s.name == "traitstream_edge_event_time_clamped_total"
    }
    assert counted == {"segment": 3.0, "amplitude": 1.0}


def test_the_margin_setting_is_in_seconds_and_not_negative(monkeypatch: pytest.MonkeyPatch) -> None:
    assert EdgeSettings().max_future_skew_s == 600
    monkeypatch.setenv("TRAITSTREAM_MAX_FUTURE_SKEW_S", "30")
    assert EdgeSettings().max_future_skew_s == 30
    monkeypatch.setenv("TRAITSTREAM_MAX_FUTURE_SKEW_S", "-1")
    with pytest.raises(ValidationError, match="max_future_skew_s"):
        EdgeSettings()
