"""``POST /v1/identify`` and ``POST /v1/batch``, and the paths of ``segment_paths``
(``/v1/alias`` among them): the Segment-compatible dialect, which RudderStack's SDKs
speak as well.

Credentials, first found wins: Basic auth with the write key as the username (what
Segment's SDKs send), ``Authorization: Bearer``, or ``writeKey`` in the body.
Bodies may be gzip-encoded. Errors are ``{"success": false, "code": "<code>",
"message": "…"}``; Segment's SDKs read ``code`` and ``message`` from them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from traitstream.dialects import segment, segment_single
from traitstream.edge.auth import IDENTIFY_SCOPES, basic_username, bearer_token, require_scope
from traitstream.edge.context import EdgeContext, json_response
from traitstream.edge.routes import segment_paths
from traitstream.errors import LimitExceeded, RequestError, Unauthorized

ERROR_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    413: "payload_too_large",
    500: "internal_error",
    503: "unavailable",
}


_Route = segment_paths.Route
_IDENTIFY = segment_paths.IDENTIFY
_BATCH = segment_paths.BATCH


def error_shape(error: RequestError, response_id: str) -> dict[str, object]:
    return {"success": False, "code": ERROR_CODES.get(error.status, "error"), "message": error.message}


def router(ctx: EdgeContext) -> APIRouter:
    api = APIRouter(tags=["segment"])
    for kind in segment.IGNORED_TYPES:
        ctx.metrics.ignored.labels(segment.DIALECT, kind)
    ctx.metrics.event_time_clamped.labels(segment.DIALECT)

    async def accept(request: Request, response_id: str, route: _Route) -> Response:
        read, limit, too_large = route
        try:
            raw = await request.body()
        except LimitExceeded:
            # Past the edge's 1 MB cap for every body: Segment's clients know only
            # Segment's limits, so the refusal names the route's own.
            raise too_large() from None
        message = read(segment.decompress(raw, request.headers.get("content-encoding"), limit))
        key = await ctx.auth.resolve(write_key(request, message.write_key), "write key")
        require_scope(key, IDENTIFY_SCOPES)
        result = segment.parse(message, ctx.envelope(key.workspace_id, response_id))
        if result.identifies:
            await ctx.publisher.publish(result.identifies)
            ctx.metrics.count_identifies(segment.DIALECT, len(result.identifies))
            ctx.count_clamped(segment.DIALECT, response_id, result.clamped, len(result.identifies))
        for kind in result.ignored:
            ctx.metrics.ignored.labels(segment.DIALECT, kind).inc()
        return json_response({"success": True})

    @api.post(
        "/v1/identify",
        summary="Identify a user (Segment-compatible)",
        openapi_extra=_openapi("SegmentIdentify"),
    )
    async def identify(request: Request) -> Response:
        async def run(response_id: str) -> Response:
            return await accept(request, response_id, _IDENTIFY)

        return await ctx.handle(segment.DIALECT, request, error_shape, run)

    @api.post(
        "/v1/batch",
        summary="Send a batch of messages (Segment-compatible); identify messages update profiles",
        openapi_extra=_openapi("SegmentBatch"),
    )
    async def batch(request: Request) -> Response:
        async def run(response_id: str) -> Response:
            return await accept(request, response_id, _BATCH)

        return await ctx.handle(segment.DIALECT, request, error_shape, run)

    def endpoint(route: _Route) -> Callable[[Request], Awaitable[Response]]:
        async def serve(request: Request) -> Response:
            async def run(response_id: str) -> Response:
                return await accept(request, response_id, route)

            return await ctx.handle(segment.DIALECT, request, error_shape, run)

        return serve

    for path in segment_paths.paths():
        api.add_api_route(
            path.path,
            endpoint(path.route),
            methods=["POST"],
            summary=path.summary,
            openapi_extra=_openapi(path.body),
            include_in_schema=path.documented,
        )

    return api


def write_key(request: Request, in_body: str | None) -> str | None:
    """The request's key: from ``Authorization`` (Basic username or Bearer), the body's
    ``writeKey``, or the query's ``writeKey``. Two that differ are refused rather than
    one of them chosen, so that a page cannot pass off its key as another's."""
    header = request.headers.get("authorization")
    found = {
        key
        for key in (
            basic_username(header) or bearer_token(header),
            in_body,
            request.query_params.get("writeKey"),
        )
        if key
    }
    if len(found) > 1:
        raise Unauthorized(
            "the request names two different write keys (in the Authorization header, "
            "body.writeKey or ?writeKey=); send one"
        )
    return found.pop() if found else None


# --- OpenAPI ------------------------------------------------------------------------------


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _openapi(body: str) -> dict[str, Any]:
    errors = {
        str(status): {
            "description": f"Refused ({status}); the message names the field or limit at fault",
            "content": {"application/json": {"schema": _ref("SegmentError")}},
        }
        for status in ERROR_CODES
    }
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(body)}}},
        "responses": {
            "200": {
                "description": "Durably accepted",
                "content": {"application/json": {"schema": _ref("SegmentAccepted")}},
            },
            **errors,
        },
        "security": [{"basicAuth": []}, {"bearerAuth": []}],
    }


_ID = {"type": "string", "minLength": 1, "maxLength": 255}
_ADDRESS = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "country": {"type": "string"},
        "postalCode": {"type": ["string", "number"]},
        "state": {"type": "string"},
        "street": {"type": "string"},
    },
}
_COMPANY = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "id": {"type": ["string", "number"]},
        "industry": {"type": "string"},
        "employee_count": {"type": "number"},
        "plan": {"type": "string"},
    },
}
_STRING_TRAITS = (
    "avatar",
    "description",
    "email",
    "firstName",
    "gender",
    "lastName",
    "name",
    "phone",
    "title",
    "username",
    "website",
)
_IDENTIFY_FIELDS: dict[str, Any] = {
    "type": {"type": "string", "enum": ["identify"]},
    "userId": _ID,
    "anonymousId": _ID | {"description": "An anonymous id of the profile"},
    "messageId": _ID | {"description": "Dedupe key: a retry with the same messageId applies once"},
    "timestamp": {
        "type": "string",
        "format": "date-time",
        "description": "Event time, by the sender's clock; at most ten minutes past the receipt by default",
    },
    "originalTimestamp": {
        "type": "string",
        "format": "date-time",
        "description": "Event time by the sender's clock, used with sentAt when timestamp is absent",
    },
    "sentAt": {
        "type": "string",
        "format": "date-time",
        "description": "When the sender sent it, by the same clock: corrects the event time for its skew",
    },
    "traits": _ref("SegmentTraits"),
    "context": {"type": "object"},
    "integrations": {"type": "object"},
}
_ALIAS_FIELDS: dict[str, Any] = {
    "type": {"type": "string", "enum": ["alias"]},
    "userId": _ID,
    "previousId": _ID | {"description": "The earlier id: an anonymous id or an earlier user id"},
    "anonymousId": _ID,
    "messageId": _ID | {"description": "Dedupe key: a retry with the same messageId applies once"},
    "timestamp": {"type": "string", "format": "date-time", "description": "Event time"},
    "context": {"type": "object"},
    "integrations": {"type": "object"},
}

SCHEMAS: dict[str, Any] = {
    "SegmentTraits": {
        "type": "object",
        "description": "Reserved traits are checked for their types; others are free-form",
        "properties": {
            **{name: {"type": "string"} for name in _STRING_TRAITS},
            "address": _ADDRESS,
            "company": _COMPANY,
            "age": {"type": "number"},
            "birthday": {"type": "string", "format": "date"},
            "createdAt": {
                "type": "string",
                "format": "date-time",
                "description": "When the profile was created",
            },
            "id": {"type": ["string", "number"]},
        },
    },
    "SegmentIdentify": {
        "type": "object",
        "properties": _IDENTIFY_FIELDS | {"writeKey": {"type": "string"}},
        "anyOf": [{"required": ["userId"]}, {"required": ["anonymousId"]}],
        "description": "At most 32 KB",
    },
    "SegmentAlias": {
        "type": "object",
        "required": ["userId", "previousId"],
        "properties": _ALIAS_FIELDS | {"writeKey": {"type": "string"}},
        "description": "At most 32 KB. The previous id's profile merges into the user's; "
        "later events naming the previous id (as userId or anonymousId) reach the user's profile",
    },
    "SegmentMessage": {
        "type": "object",
        "required": ["type"],
        "properties": _IDENTIFY_FIELDS
        | _ALIAS_FIELDS
        | {
            "type": {
                "type": "string",
                "enum": ["identify", "alias", *segment.IGNORED_TYPES],
                "description": "identify updates the profile; alias merges previousId's profile into "
                "userId's; the other types are accepted and not stored",
            }
        },
        "description": "At most 32 KB",
    },
    "SegmentBatch": {
        "type": "object",
        "required": ["batch"],
        "properties": {
            "batch": {"type": "array", "items": _ref("SegmentMessage"), "minItems": 1, "maxItems": 2000},
            "writeKey": {"type": "string"},
            "context": {"type": "object", "description": "Merged under each message's context"},
            "sentAt": {"type": "string", "format": "date-time"},
        },
        "description": "At most 500 KB",
    },
    "SegmentAccepted": {
        "type": "object",
        "required": ["success"],
        "properties": {"success": {"type": "boolean", "enum": [True]}},
    },
    "SegmentError": {
        "type": "object",
        "required": ["success", "code", "message"],
        "properties": {
            "success": {"type": "boolean", "enum": [False]},
            "code": {"type": "string", "enum": sorted(ERROR_CODES.values())},
            "message": {"type": "string"},
        },
    },
}
SCHEMAS.update(
    {
        f"Segment{kind.capitalize()}": {
            "type": "object",
            "properties": {
                "type": {"type": "string", "enum": [kind]},
                "userId": _ID,
                "anonymousId": _ID,
                "messageId": _ID,
                "writeKey": {"type": "string"},
            },
            "description": f"One {kind} message, at most 32 KB; accepted and not stored",
        }
        for kind in segment_single.ROUTES
    }
)
