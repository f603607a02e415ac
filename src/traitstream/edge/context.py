"""What every route needs, and the one wrapper that times, counts and shapes errors."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from fastapi import Request
from fastapi.responses import Response
from psycopg_pool import PoolTimeout

from traitstream.dialects.common import MAX_FUTURE_SKEW_MS, Envelope
from traitstream.edge.auth import Authenticator
from traitstream.edge.publisher import Publisher
from traitstream.errors import InternalError, RequestError, Unavailable
from traitstream.metrics import EdgeMetrics
from traitstream.store.reads import ProfileReader

log = logging.getLogger(__name__)

ErrorShape = Callable[[RequestError, str], Any]
"""(error, response id) -> the JSON body a dialect answers errors with."""


def json_response(body: Any, status: int = 200) -> Response:
    try:
        content = orjson.dumps(body)
    except orjson.JSONEncodeError:
        # orjson refuses integers beyond 64 bits, and PostgreSQL keeps any number a
        # client sent (a profile read back can hold one): write those exactly.
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    return Response(content, status_code=status, media_type="application/json")


@dataclass(frozen=True, slots=True)
class EdgeContext:
    publisher: Publisher
    auth: Authenticator
    reader: ProfileReader
    metrics: EdgeMetrics
    clock: Callable[[], float] = time.time
    max_future_skew_ms: int = MAX_FUTURE_SKEW_MS
    """How far past its receipt an identify may be dated (``Envelope.max_future_ms``)."""

    def envelope(self, workspace_id: str, response_id: str) -> Envelope:
        return Envelope(workspace_id, response_id, int(self.clock() * 1000), self.max_future_skew_ms)

    def count_clamped(self, dialect: str, response_id: str, clamped: int, identifies: int) -> None:
        """Count the ``clamped`` identifies of an accepted request that were dated past
        the margin, and say so in one line for the request (not one per identify)."""
        if not clamped:
            return
        self.metrics.count_clamped(dialect, clamped)
        log.info(
            "event times past the margin taken as the receipt time",
            extra={
                "response_id": response_id,
                "dialect": dialect,
                "clamped": clamped,
                "identifies": identifies,
                "max_future_skew_s": self.max_future_skew_ms / 1000,
            },
        )

    async def handle(
        self,
        dialect: str,
        request: Request,
        error_shape: ErrorShape,
        handler: Callable[[str], Awaitable[Response]],
    ) -> Response:
        """Run ``handler(response_id)``; turn a ``RequestError`` into the dialect's
        error shape; count and time every request."""
        response_id = str(uuid.uuid4())
        started = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            response = await handler(response_id)
        except RequestError as exc:
            log.info(
                "request refused: %s",
                exc.message,
                extra={
                    "response_id": response_id,
                    "dialect": dialect,
                    "status": exc.status,
                    "path": request.url.path,
                },
            )
            response = json_response(error_shape(exc, response_id), exc.status)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            # Keys and profiles live in PostgreSQL: while it is away, say so and let
            # clients retry, as for a broker outage.
            log.warning(
                "database unavailable: %s", exc, extra={"response_id": response_id, "dialect": dialect}
            )
            error: RequestError = Unavailable("the key and profile store cannot be reached now; retry later")
            response = json_response(error_shape(error, response_id), error.status)
        except Exception:
            log.exception("request failed", extra={"response_id": response_id, "dialect": dialect})
            error = InternalError("internal error; nothing was accepted")
            response = json_response(error_shape(error, response_id), error.status)
        finally:
            self.metrics.in_flight.dec()
        # Every dialect's answer carries the id, even those whose body has no room for it.
        response.headers["X-Response-Id"] = response_id
        self.metrics.request_seconds.observe(time.perf_counter() - started)
        self.metrics.count_request(dialect, response.status_code)
        return response
