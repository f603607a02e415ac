"""The edge's cap on identify bodies: an oversized body is refused while it
arrives, not after it was held in memory whole; and the app that serves the
identify routes ahead of FastAPI (no network: a fake ASGI receive and send)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from fastapi import FastAPI, Request, Response

from tests.support.asgi import Chunks, http_scope
from traitstream.dialects.common import MAX_BODY_BYTES
from traitstream.edge.context import EdgeContext
from traitstream.edge.fast_path import CappedReceive, FastPath, direct_endpoints
from traitstream.edge.routes import segment as segment_routes
from traitstream.errors import LimitExceeded
from traitstream.metrics import EdgeMetrics


def scope(content_length: int | None = None) -> dict[str, Any]:
    headers = [(b"content-type", b"application/json")]
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    return {"type": "http", "headers": headers}


async def read_all(receive: Any) -> list[dict[str, Any]]:
    messages = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message["more_body"]:
            return messages


CHUNK = 400_000  # three of them pass MAX_BODY_BYTES


def test_a_body_of_exactly_the_limit_passes_unchanged() -> None:
    chunks = (b"a" * CHUNK, b"b" * CHUNK, b"c" * (MAX_BODY_BYTES - 2 * CHUNK))
    messages = asyncio.run(read_all(CappedReceive(scope(MAX_BODY_BYTES), Chunks(*chunks))))
    assert b"".join(m["body"] for m in messages) == b"".join(chunks)
    assert [m["more_body"] for m in messages] == [True, True, False]


def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    inner = Chunks(b"x" * CHUNK)
    capped = CappedReceive(scope(MAX_BODY_BYTES + 1), inner)
    with pytest.raises(LimitExceeded, match="request body is 1000001 bytes; the limit is 1000000 bytes"):
        asyncio.run(read_all(capped))
    assert inner.calls == 0 and capped.refused_unread


def test_an_undeclared_body_is_refused_once_past_the_limit() -> None:
    # Chunked transfer: no length up front, so the count of what arrived decides.
    inner = Chunks(*(b"x" * CHUNK for _ in range(4)))
    capped = CappedReceive(scope(), inner)
    with pytest.raises(LimitExceeded, match="request body exceeds the limit of 1000000 bytes"):
        asyncio.run(read_all(capped))
    assert inner.calls == 3  # the fourth chunk is never asked for
    assert not capped.refused_unread  # some of it was read


def test_a_disconnect_is_handed_on() -> None:
    inner = Chunks()
    message = asyncio.run(CappedReceive(scope(), inner)())
    assert message == {"type": "http.disconnect"}


# --- FastPath: the identify routes, served ahead of FastAPI --------------------------


def call(app: FastPath, method: str, path: str, body: bytes = b"{}") -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    request_scope = http_scope(method, path, scope(len(body))["headers"])
    asyncio.run(app(request_scope, Chunks(body), send))
    return sent


def test_a_direct_route_that_raises_still_answers_500() -> None:
    async def broken(request: Request) -> Response:
        raise RuntimeError("a bug")

    app = FastPath(FastAPI(), {("POST", "/api/identify"): broken})
    start, body = call(app, "POST", "/api/identify")
    assert start["status"] == 500
    assert orjson.loads(body["body"]) == {"error": {"status": 500, "message": "internal error"}}
    # Like every other answer, it carries an id to find its log line by.
    headers = dict(start["headers"])
    assert len(headers[b"x-response-id"]) == 36


def test_segment_routes_refuse_bodies_past_the_cap_with_segments_own_limits() -> None:
    ctx = EdgeContext(publisher=None, auth=None, reader=None, metrics=EdgeMetrics())  # type: ignore[arg-type]
    app = FastPath(FastAPI(), direct_endpoints([segment_routes.router(ctx)]))
    for path, limit in (("/v1/identify", "32 KB per event"), ("/v1/batch", "500 KB per batch")):
        start, body = call(app, "POST", path, b"x" * (MAX_BODY_BYTES + 1))
        assert start["status"] == 413
        error = orjson.loads(body["body"])
        assert error["code"] == "payload_too_large" and error["message"].endswith(f"the limit of {limit}")


def test_a_direct_route_reads_its_body_through_the_cap() -> None:
    async def echo(request: Request) -> Response:
        try:
            return Response(await request.body(), media_type="application/json")
        except LimitExceeded as exc:  # as every identify route's handler answers it
            return Response(exc.message, status_code=413)

    app = FastPath(FastAPI(), {("POST", "/api/identify"): echo})
    start, body = call(app, "POST", "/api/identify", b'{"user_id":"u"}')
    assert start["status"] == 200 and body["body"] == b'{"user_id":"u"}'
    start, body = call(app, "POST", "/api/identify", b"x" * (MAX_BODY_BYTES + 1))
    assert start["status"] == 413 and b"the limit is" in body["body"]


def test_other_paths_and_methods_go_on_to_fastapi() -> None:
    async def never(request: Request) -> Response:
        raise AssertionError("not a direct route")

    app = FastPath(FastAPI(), {("POST", "/api/identify"): never})
    for method, path in (("GET", "/api/identify"), ("POST", "/elsewhere")):
        start, body = call(app, method, path)
        assert start["status"] == 404 and body["body"] == b'{"detail":"Not Found"}'
