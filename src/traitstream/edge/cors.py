"""CORS on the ingestion routes, so that browser SDKs on other sites can send identifies.

``Cors`` is ASGI middleware around the whole edge, ahead of its direct fast path:
only a request to an ingestion route that carries an ``Origin`` header meets it (a
server-side SDK sends none, and pays one dictionary lookup and a scan of its
headers). For such a request:

- a preflight (``OPTIONS``) is answered here, 204, with the methods, headers and
  lifetime the browser may use;
- any other request goes on to its route, and its answer (errors included) leaves
  with ``Access-Control-Allow-Origin`` naming the origin;
- an origin outside the allowed list is refused with 403 in the route's own error
  shape, carrying the CORS headers so that the page can read why.

The origin is echoed rather than answered with ``*``: ``sendBeacon`` and
``fetch(…, {keepalive: true})`` send credentials, and a browser accepts no wildcard
for those. Allowing credentials grants a page nothing here: the ingestion routes
authenticate by write key alone and set or read no cookie. Every other route
(profiles, operations) never carries CORS headers.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Mapping

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from traitstream.edge.context import ErrorShape, json_response
from traitstream.errors import Forbidden
from traitstream.origins import AllowedOrigins

log = logging.getLogger(__name__)

ALLOW_METHODS = "POST, OPTIONS"
ALLOW_HEADERS = (
    "Authorization",
    "Content-Type",
    "Content-Encoding",
    # analytics.js counts its retries in a header.
    "X-Retry-Count",
    # RudderStack's browser SDK: its anonymous id, when it sent, and its retries.
    "AnonymousId",
    "SentAt",
    "RSA-Retry-Attempt",
    "RSA-Retry-Reason",
    "RSA-Since-First-Attempt",
    "RSA-Since-Last-Attempt",
)
MAX_AGE_S = 86_400
"""How long a browser may keep a preflight's answer (Chromium caps it at 2 hours)."""

Refusal = Callable[[str, str], Response]
"""(message, response id) -> a route's answer to a refused origin, in its dialect's shape."""


class Cors:
    """ASGI middleware: CORS for the paths of ``refusals`` (see the module's doc)."""

    __slots__ = ("_allowed", "_app", "_refusals")

    def __init__(self, app: ASGIApp, allowed: AllowedOrigins, refusals: Mapping[str, Refusal]) -> None:
        self._app = app
        self._allowed = allowed
        self._refusals = dict(refusals)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refuse = self._refusals.get(scope["path"]) if scope["type"] == "http" else None
        origin = None if refuse is None else _origin(scope)
        if refuse is None or origin is None:
            await self._app(scope, receive, send)
            return
        headers = _cors_headers(origin)
        if not self._allowed.allows(origin.decode("latin-1")):
            await _send(self._refused(origin, scope, refuse), headers, send)
        elif scope["method"] == "OPTIONS":
            await _send(Response(status_code=204), [*headers, *_PREFLIGHT], send)
        else:

            async def send_with_cors(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message = {**message, "headers": [*message.get("headers", ()), *headers]}
                await send(message)

            await self._app(scope, receive, send_with_cors)

    def _refused(self, origin: bytes, scope: Scope, refuse: Refusal) -> Response:
        text = origin.decode("latin-1")
        response_id = str(uuid.uuid4())
        log.info(
            "origin refused",
            extra={"origin": text, "path": scope["path"], "response_id": response_id},
        )
        response = refuse(
            f"the origin {text!r} may not send here: it is not among the edge's allowed "
            "origins (TRAITSTREAM_CORS_ORIGINS)",
            response_id,
        )
        response.headers["X-Response-Id"] = response_id
        return response


def cors_refusals(routes: Iterable[tuple[APIRouter, ErrorShape]]) -> dict[str, Refusal]:
    """Each path of the routers, with its answer to a refused origin in the shape of
    the dialect that serves it."""

    def refusal(shape: ErrorShape) -> Refusal:
        def refuse(message: str, response_id: str) -> Response:
            error = Forbidden(message)
            return json_response(shape(error, response_id), error.status)

        return refuse

    return {
        route.path: refusal(shape)
        for api, shape in routes
        for route in api.routes
        if isinstance(route, APIRoute)
    }


_PREFLIGHT = [
    (b"access-control-allow-methods", ALLOW_METHODS.encode()),
    (b"access-control-allow-headers", ", ".join(ALLOW_HEADERS).encode()),
    (b"access-control-max-age", str(MAX_AGE_S).encode()),
]


def _cors_headers(origin: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b"access-control-allow-origin", origin),
        (b"access-control-allow-credentials", b"true"),
        (b"access-control-expose-headers", b"X-Response-Id"),
        (b"vary", b"Origin"),
    ]


async def _send(response: Response, headers: list[tuple[bytes, bytes]], send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": [*response.raw_headers, *headers],
        }
    )
    await send({"type": "http.response.body", "body": response.body})


def _origin(scope: Scope) -> bytes | None:
    for key, value in scope["headers"]:
        if key == b"origin":
            return bytes(value)
    return None
