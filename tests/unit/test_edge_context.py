"""The one wrapper every route goes through: answers, statuses and the response id."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import psycopg
import pytest
from fastapi import Request
from fastapi.responses import Response

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
