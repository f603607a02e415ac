"""``create_app``: the edge's ASGI application.

Dependencies are opened in ``lifespan`` (or handed in by a test) and passed to
each dialect's router through one ``EdgeContext``. The routes are FastAPI's; the
identify routes among them are answered ahead of it (``fast_path``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from psycopg_pool import AsyncConnectionPool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

from traitstream import __version__
from traitstream.avro.schemas import schema_source
from traitstream.config import EdgeSettings
from traitstream.edge.auth import Authenticator
from traitstream.edge.context import EdgeContext, json_response
from traitstream.edge.cors import Cors, cors_refusals
from traitstream.edge.fast_path import FastPath, direct_endpoints
from traitstream.edge.openapi import document_builder
from traitstream.edge.publisher import KafkaPublisher
from traitstream.edge.routes import amplitude, datafast, profiles, segment, thrivestack
from traitstream.metrics import EdgeMetrics
from traitstream.origins import AllowedOrigins
from traitstream.runtime import tune_gc, warn_if_not_compiled
from traitstream.store.reads import ProfileReader

log = logging.getLogger(__name__)

_STATEMENT_TIMEOUT_MS = 5_000


def create_app(
    settings: EdgeSettings,
    metrics: EdgeMetrics | None = None,
    publisher: KafkaPublisher | None = None,
) -> ASGIApp:
    """Build the app. Nothing connects here: the pool opens in ``lifespan``, the
    producer connects in the background, and ``lifespan`` closes them all.

    What it returns is what the server runs: the fast path in front of FastAPI.
    A middleware that must see every request (identifies included) wraps that."""
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
        max_future_skew_ms=round(settings.max_future_skew_s * 1000),
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
            metrics.close()

    app = FastAPI(
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
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    ingestion = {module: module.router(ctx) for module in (thrivestack, amplitude, datafast, segment)}
    routers = [*ingestion.values(), profiles.router(ctx)]
    for api in routers:
        app.include_router(api)
    app.openapi = document_builder(app)  # type: ignore[method-assign]
    return Cors(
        FastPath(app, direct_endpoints(routers)),
        AllowedOrigins.parse(settings.cors_origins),
        cors_refusals((api, m.error_shape) for m, api in ingestion.items()),
    )


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
