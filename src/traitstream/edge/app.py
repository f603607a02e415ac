"""``create_app``: the edge's FastAPI application.

Dependencies are opened in ``lifespan`` (or handed in by a test) and passed to
each dialect's router through one ``EdgeContext``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from psycopg_pool import AsyncConnectionPool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message, Receive, Scope, Send

from traitstream import __version__
from traitstream.avro.schemas import schema_source
from traitstream.config import EdgeSettings
from traitstream.dialects.common import MAX_BODY_BYTES, body_too_large
from traitstream.edge.auth import Authenticator
from traitstream.edge.context import EdgeContext, json_response
from traitstream.edge.publisher import KafkaPublisher
from traitstream.edge.routes import amplitude, datafast, profiles, segment, thrivestack
from traitstream.metrics import EdgeMetrics
from traitstream.runtime import tune_gc, warn_if_not_compiled
from traitstream.store.reads import ProfileReader

log = logging.getLogger(__name__)

_STATEMENT_TIMEOUT_MS = 5_000


def create_app(
    settings: EdgeSettings,
    metrics: EdgeMetrics | None = None,
    publisher: KafkaPublisher | None = None,
) -> FastAPI:
    """Build the app. Nothing connects here: the pool opens in ``lifespan``, the
    producer connects in the background, and ``lifespan`` closes them all."""
    metrics = metrics or EdgeMetrics()
    # A short wait for a connection (during a database outage requests answer 503
    # quickly), and a cap on every statement: a read stuck behind a lock (a
    # migration rewriting profiles) must not hold the connections that key lookups
    # and readiness checks need.
    pool = AsyncConnectionPool(
        settings.database_url,
        min_size=1,
        max_size=8,
        open=False,
        timeout=5,
        kwargs={"options": f"-c statement_timeout={_STATEMENT_TIMEOUT_MS}"},
    )
    publisher = publisher or KafkaPublisher(
        settings.kafka_bootstrap,
        settings.topic,
        schema_source(settings),
        metrics,
        settings.produce_timeout_s,
        settings.produce_linger_ms,
    )
    ctx = EdgeContext(
        publisher=publisher,
        auth=Authenticator(pool, settings.key_cache_s),
        reader=ProfileReader(pool),
        metrics=metrics,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await pool.open()
        publisher.start_serving()
        tune_gc()  # everything built so far lives as long as the process
        log.info("edge ready to serve", extra={"port": settings.http_port, "topic": settings.topic})
        warn_if_not_compiled()
        try:
            yield
        finally:
            publisher.stop_serving()
            await asyncio.to_thread(publisher.close)
            await pool.close()

    app = EdgeApp(
        title="traitstream edge",
        version=__version__,
        lifespan=lifespan,
        description="Identify calls in the Thrivestack, Amplitude, DataFast and Segment dialects.",
        # The edge reports through Prometheus; FastAPI's own OpenTelemetry hooks
        # would otherwise look up providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # Unknown paths and methods answer in the same shape as the profile routes.
        message = (
            f"no endpoint {request.method} {request.url.path}"
            if exc.status_code in (404, 405)
            else str(exc.detail)
        )
        return json_response({"error": {"status": exc.status_code, "message": message}}, exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return json_response(
            {"error": {"status": 400, "message": f"{where}: {first.get('msg', 'invalid')}"}}, 400
        )

    @app.get("/healthz", tags=["operations"], summary="The process is up")
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.get("/readyz", tags=["operations"], summary="The broker and the key store are reachable")
    async def readyz() -> Response:
        checks = await _readiness(publisher, pool)
        ok = all(checks.values())
        return json_response({"ready": ok, "checks": checks}, 200 if ok else 503)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    routers = [module.router(ctx) for module in (thrivestack, amplitude, datafast, segment, profiles)]
    for api in routers:
        app.include_router(api)
    app.direct = direct_endpoints(routers)
    app.openapi = _openapi(app)  # type: ignore[method-assign]
    return app


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


class EdgeApp(FastAPI):
    """FastAPI, with ``direct`` endpoints served straight from the ASGI call. For an
    endpoint that only reads the raw request, FastAPI's middleware (error pages,
    telemetry, its own body limit), routing, dependency solving and exit stacks do
    nothing useful, yet they cost more than parsing and producing a single identify.
    The routes stay declared in FastAPI, so the OpenAPI document is unchanged; each
    endpoint caps its body (``CappedReceive``) and shapes its own errors, and its
    answer leaves in one write (``send_whole``)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.direct: dict[tuple[str, str], Endpoint] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            endpoint = self.direct.get((scope["method"], scope["path"]))
            if endpoint is not None:
                scope["app"] = self
                await _serve_direct(endpoint, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


async def _serve_direct(endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
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
    await send_whole(response, scope, receive, send)


async def send_whole(response: Response, scope: Scope, receive: Receive, send: Send) -> None:
    """Send ``response`` to the connection in one write.

    uvicorn writes a response's status line and headers as soon as they are sent,
    and its body next: for an answer of a few hundred bytes that is two sends, two
    segments on the wire, and a client that wakes once for each. Under uvicorn,
    ``send`` is the method of the request's cycle, whose ``transport`` it writes
    to; for the length of this response that transport collects the writes instead,
    and hands them on together before the cycle reports the response complete.
    Under any other server (or a uvicorn whose cycle no longer looks so) the
    response goes out as usual."""
    cycle: Any = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    finish = getattr(cycle, "on_response", None)
    if not (hasattr(transport, "write") and hasattr(transport, "is_closing") and callable(finish)):
        await response(scope, receive, send)
        return
    whole = OneWrite(transport)

    def restore() -> None:
        if cycle.transport is whole:
            cycle.transport = transport
            whole.flush()

    def finished() -> None:
        # uvicorn's send calls this once the body is written, and under h11 it
        # serves the next pipelined request at once: the answer must be out first.
        restore()
        finish()

    cycle.transport, cycle.on_response = whole, finished
    try:
        await response(scope, receive, send)
    finally:
        restore()
        if cycle.on_response is finished:
            cycle.on_response = finish


class OneWrite:
    """Stands in for a connection's transport while a response is sent: collects
    its writes until ``flush`` (or ``close``) hands them on as one."""

    __slots__ = ("_parts", "_transport")

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self._parts.append(data)

    def is_closing(self) -> bool:
        return bool(self._transport.is_closing())

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def flush(self) -> None:
        if self._parts:
            data = b"".join(self._parts)  # a lone part comes back as itself, uncopied
            self._parts.clear()
            if not self._transport.is_closing():  # the client left: nobody to answer
                self._transport.write(data)


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


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The generated document, completed: each dialect's component schemas, the
    security schemes, and the answers of the routes that declare none themselves."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            components = schema.setdefault("components", {})
            schemas = components.setdefault("schemas", {})
            for module in (thrivestack, amplitude, datafast, segment):
                schemas.update(module.SCHEMAS)
            schemas.update(_SCHEMAS)
            # Parameter errors are answered 400 (see validation_error), never 422.
            for unused in ("HTTPValidationError", "ValidationError"):
                schemas.pop(unused, None)
            components["securitySchemes"] = {
                "bearerAuth": {"type": "http", "scheme": "bearer", "description": "An API key"},
                "basicAuth": {"type": "http", "scheme": "basic", "description": "An API key as the username"},
            }
            _complete(schema["paths"])
            app.openapi_schema = schema
        return app.openapi_schema

    return build


def _json(name: str, description: str) -> dict[str, Any]:
    schema = {"$ref": f"#/components/schemas/{name}"}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _complete(paths: dict[str, Any]) -> None:
    profile_errors = {
        str(status): _json("ProfileError", f"Refused ({status}); the message says why")
        for status in (400, 401, 403, 404, 500)
    }
    profile_paths = {path: methods for path, methods in paths.items() if path.startswith("/api/profiles")}
    for methods in profile_paths.values():
        for method, operation in methods.items():
            responses = operation["responses"]
            responses.pop("422", None)
            operation["security"] = [{"bearerAuth": []}, {"basicAuth": []}]
            if method == "delete":
                responses["202"] = _json("ProfileErasure", "The erasure is durably queued")
                responses.update({k: v for k, v in profile_errors.items() if k != "404"})
                responses["503"] = _json("ProfileError", "The broker cannot take the erasure now")
            else:
                responses["200"] = _json("Profile", "The profile")
                responses.update(profile_errors)
    paths["/healthz"]["get"]["responses"]["200"] = _json("Health", "The process is up")
    paths["/readyz"]["get"]["responses"] = {
        "200": _json("Readiness", "Broker, database and Redis are reachable"),
        "503": _json("Readiness", "A dependency is not reachable; checks says which"),
    }
    paths["/metrics"]["get"]["responses"]["200"] = {
        "description": "Prometheus text exposition",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }


_SCHEMAS: dict[str, Any] = {
    "Profile": {
        "type": "object",
        "required": ["profile_id", "user_id", "traits", "anonymous_ids", "created_at", "updated_at"],
        "properties": {
            "profile_id": {"type": "string", "format": "uuid"},
            "user_id": {"type": ["string", "null"]},
            "traits": {"type": "object"},
            "anonymous_ids": {"type": "array", "items": {"type": "string"}},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
        },
    },
    "ProfileErasure": {
        "type": "object",
        "required": ["status", "response_id"],
        "properties": {"status": {"type": "string", "enum": ["accepted"]}, "response_id": {"type": "string"}},
    },
    "ProfileError": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["status", "message"],
                "properties": {
                    "status": {"type": "integer"},
                    "message": {"type": "string"},
                    "response_id": {"type": "string"},
                },
            }
        },
    },
    "Health": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
    "Readiness": {
        "type": "object",
        "required": ["ready", "checks"],
        "properties": {
            "ready": {"type": "boolean"},
            "checks": {"type": "object", "additionalProperties": {"type": "boolean"}},
        },
    },
}


async def _readiness(publisher: KafkaPublisher, pool: AsyncConnectionPool) -> dict[str, bool]:
    """What the edge needs to take identifies: the broker, and the database that
    holds the API keys. Redis is the workers' alone; its outage must not take the
    edges out of a load balancer."""

    async def database() -> bool:
        try:
            async with pool.connection(timeout=2) as conn:
                await conn.execute("SELECT 1")
            return True
        except Exception:
            return False

    async def broker() -> bool:
        return await asyncio.to_thread(publisher.ready, 2.0)

    results = await asyncio.gather(broker(), database())
    return dict(zip(("broker", "database"), results, strict=True))
