"""CORS on the ingestion routes, through the whole edge app (its direct fast path
included): preflights, headers on every answer, refused origins, and none of it on
the profile and operations routes. Nothing here reaches a database or a broker."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import orjson
import pytest
from pydantic import ValidationError
from starlette.types import ASGIApp

from tests.support.asgi import Chunks, http_scope
from traitstream.config import EdgeSettings
from traitstream.edge.app import create_app
from traitstream.edge.cors import ALLOW_HEADERS
from traitstream.edge.publisher import KafkaPublisher
from traitstream.origins import AllowedOrigins

INGESTION = (
    "/api/identify",
    "/identify",
    "/2/httpapi",
    "/api/v1/identify",
    "/v1/identify",
    "/v1/batch",
    "/v1/i",
    "/v1/b",
    "/v1/a",
    "/v1/t",
    "/beacon/v1/batch",
)
PAGE = "http://127.0.0.1:5000"


def app(origins: str = "*") -> ASGIApp:
    # No route reached here publishes: a stand-in keeps the producer from connecting.
    return create_app(EdgeSettings(cors_origins=origins), publisher=cast(KafkaPublisher, object()))


def call(
    edge: ASGIApp, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    scope = http_scope(method, path, [*raw, (b"content-length", str(len(body)).encode())])
    asyncio.run(edge(scope, Chunks(body), send))
    start = sent[0]
    answer = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], answer, b"".join(m.get("body", b"") for m in sent[1:])


@pytest.mark.parametrize("path", INGESTION)
def test_preflight_answers_204_with_what_browsers_may_send(path: str) -> None:
    status, headers, body = call(
        app(),
        "OPTIONS",
        path,
        {
            "Origin": PAGE,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,authorization",
        },
    )
    assert status == 204 and body == b""
    assert headers["access-control-allow-origin"] == PAGE
    assert headers["access-control-allow-methods"] == "POST, OPTIONS"
    allowed = {h.strip().lower() for h in headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "content-encoding"} <= allowed
    assert int(headers["access-control-max-age"]) > 0
    assert headers["vary"] == "Origin"


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/identify", "message"),
        ("/v1/i", "message"),
        ("/v1/t", "message"),
        ("/api/identify", "message"),
        ("/api/v1/identify", "error"),
        ("/2/httpapi", "error"),
    ],
)
def test_errors_of_the_routes_carry_the_cors_headers(path: str, field: str) -> None:
    status, headers, body = call(app(), "POST", path, {"Origin": PAGE, "Content-Type": "text/plain"}, b"{")
    assert status in (400, 401)
    assert headers["access-control-allow-origin"] == PAGE
    assert headers["access-control-expose-headers"] == "X-Response-Id"
    assert field in orjson.loads(body)


def test_an_origin_outside_the_list_is_refused_naming_it_in_the_routes_shape() -> None:
    edge = app("https://shop.example.com, https://www.example.com/")
    evil = "https://evil.example.net"
    status, headers, body = call(edge, "POST", "/v1/i", {"Origin": evil}, b'{"userId":"u"}')
    assert status == 403
    assert headers["access-control-allow-origin"] == evil  # so that the page can read why
    error = orjson.loads(body)
    assert error["success"] is False and error["code"] == "forbidden"
    assert "'https://evil.example.net'" in error["message"] and "TRAITSTREAM_CORS_ORIGINS" in error["message"]
    status, _, body = call(edge, "OPTIONS", "/api/v1/identify", {"Origin": evil})
    assert status == 403 and orjson.loads(body)["error"]["code"] == 403
    # Listed origins compare without case or trailing slash.
    status, headers, _ = call(edge, "OPTIONS", "/v1/i", {"Origin": "https://WWW.example.com"})
    assert status == 204 and headers["access-control-allow-origin"] == "https://WWW.example.com"


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/profiles/u"), ("OPTIONS", "/api/profiles/u"), ("GET", "/healthz"), ("GET", "/metrics")],
)
def test_profile_and_operations_routes_never_carry_cors(method: str, path: str) -> None:
    status, headers, _ = call(app(), method, path, {"Origin": PAGE})
    assert status != 204
    assert not any(name.startswith("access-control-") for name in headers)


def test_without_an_origin_nothing_changes() -> None:
    status, headers, _ = call(app(), "POST", "/v1/identify", {}, b"{")
    assert status == 400 and not any(name.startswith("access-control-") for name in headers)
    status, _, _ = call(app(), "OPTIONS", "/v1/identify", {})
    assert status == 405


def test_allowed_origins_setting() -> None:
    assert AllowedOrigins.parse("*").allows("https://anything.example")
    listed = AllowedOrigins.parse("https://a.example,http://127.0.0.1:3000")
    assert listed.allows("http://127.0.0.1:3000") and not listed.allows("http://127.0.0.1:3001")
    assert not listed.allows("null")
    for bad in (
        "",
        " , ",
        "a.example",
        "https://a.example/path",
        "https://a.example?q",
        "https://a.example,*",
    ):
        with pytest.raises(ValueError, match="CORS origin"):
            AllowedOrigins.parse(bad)
    default_port = AllowedOrigins.parse("https://shop.example:443,http://web.example:80")
    assert default_port.allows("https://shop.example") and default_port.allows("http://web.example")
    assert not default_port.allows("https://shop.example:8443")
    assert "AnonymousId" in ALLOW_HEADERS
    with pytest.raises(ValidationError, match="cors_origins"):
        EdgeSettings(cors_origins="shop.example.com")
