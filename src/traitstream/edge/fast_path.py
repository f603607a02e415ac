"""The identify routes served straight from the ASGI call, ahead of FastAPI.

For an endpoint that only reads the raw request, FastAPI's middleware (error pages,
telemetry, its own body limit), routing, dependency solving and exit stacks do
nothing useful, yet they cost more than parsing and producing a single identify.
The routes stay declared in FastAPI, so the OpenAPI document is unchanged; each
endpoint caps its body (``CappedReceive``) and shapes its own errors.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.types import Message, Receive, Scope, Send

from traitstream.dialects.common import MAX_BODY_BYTES, body_too_large
from traitstream.edge.context import json_response

log = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]


def direct_endpoints(routers: Iterable[APIRouter]) -> dict[tuple[str, str], Endpoint]:
    """(method, path) of every route without path parameters whose endpoint reads
    nothing but the raw ``Request``: all the identify routes."""
    table: dict[tuple[str, str], Endpoint] = {}
    for route in (route for api in routers for route in api.routes):
        if not isinstance(route, APIRoute) or "{" in route.path:
            continue
        inputs = route.dependant
        takes_more = (
            inputs.path_params
            or inputs.query_params
            or inputs.header_params
            or inputs.cookie_params
            or inputs.body_params
            or inputs.dependencies
        )
        if inputs.request_param_name and not takes_more:
            for method in route.methods or ():
                table[(method, route.path)] = route.endpoint
    return table


class FastPath:
    """An ASGI app: the ``direct`` endpoints answered here, everything else (other
    routes, the lifespan) handed to ``app``."""

    __slots__ = ("app", "direct")

    def __init__(self, app: FastAPI, direct: dict[tuple[str, str], Endpoint]) -> None:
        self.app = app
        self.direct = direct

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            endpoint = self.direct.get((scope["method"], scope["path"]))
            if endpoint is not None:
                scope["app"] = self.app
                await serve_direct(endpoint, scope, receive, send)
                return
        await self.app(scope, receive, send)


async def serve_direct(endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
    """Call ``endpoint`` with a capped body and send its answer; a bug in it is
    answered 500 with an id to find its log line by."""
    capped = CappedReceive(scope, receive)
    try:
        response = await endpoint(Request(scope, capped))
    except Exception:  # the endpoints answer their own errors; this is the last resort
        # An id of its own, as on every other answer, so that a client's report of
        # the failure finds its log line.
        response_id = str(uuid.uuid4())
        log.exception("request failed", extra={"path": scope["path"], "response_id": response_id})
        response = json_response({"error": {"status": 500, "message": "internal error"}}, 500)
        response.headers["X-Response-Id"] = response_id
    if capped.refused_unread and (_header(scope, b"expect") or b"").lower() == b"100-continue":
        # The client waits to send the body (RFC 9110, 10.1.1): say that the
        # connection ends here, rather than leave it out of step.
        response.headers["Connection"] = "close"
    await response(scope, receive, send)


class CappedReceive:
    """``receive`` for an identify route. No dialect takes a body over
    ``MAX_BODY_BYTES``, so a larger one is refused as soon as its declared length
    or the bytes received so far say so, instead of being held in memory whole
    first: reading raises ``LimitExceeded``, which the route answers 413 in its
    dialect's shape. The server reads and drops the rest of such a body."""

    __slots__ = ("_declared", "_receive", "_received", "refused_unread")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self._receive = receive
        self._declared = _content_length(scope)
        self._received = 0
        self.refused_unread = False
        """Refused from the declared length, before any of the body was read."""

    async def __call__(self) -> Message:
        if self._declared is not None and self._declared > MAX_BODY_BYTES:
            self.refused_unread = True
            raise body_too_large(self._declared)
        message = await self._receive()
        if message["type"] == "http.request":
            self._received += len(message.get("body", b""))
            if self._received > MAX_BODY_BYTES:
                raise body_too_large(None)
        return message


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


def _content_length(scope: Scope) -> int | None:
    try:
        return int(_header(scope, b"content-length") or b"")
    except ValueError:
        return None
