"""``POST /identify`` and ``POST /2/httpapi``: the Amplitude dialect.

The key travels in the body (``api_key``), as Amplitude's clients send it. Errors
use the HTTP API v2 body ``{"code": <status>, "error": "<message>"}``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from traitstream.dialects import amplitude
from traitstream.dialects.common import MAX_BODY_BYTES, body_too_large
from traitstream.edge.auth import IDENTIFY_SCOPES, require_scope
from traitstream.edge.context import EdgeContext, json_response
from traitstream.errors import InvalidRequest, RequestError
from traitstream.events import JSON
from traitstream.store.keys import ApiKey

ERROR_STATUSES = (400, 401, 403, 413, 500, 503)


def error_shape(error: RequestError, response_id: str) -> dict[str, object]:
    """Amplitude's error body, with the details its SDKs act on: ``missing_field``, the
    events to drop (``events_with_missing_fields``, ``events_with_invalid_fields``), and
    the ``Invalid API key:`` prefix that makes them stop retrying with a bad key."""
    message = error.message
    if error.status in (401, 403):
        message = f"Invalid API key: {message}"
    body: dict[str, object] = {"code": error.status, "error": message}
    if isinstance(error, amplitude.InvalidEvent):
        listed = "events_with_missing_fields" if error.missing else "events_with_invalid_fields"
        body[listed] = {(error.field or "event").rsplit(".", 1)[-1]: [error.index]}
    elif isinstance(error, amplitude.MissingField):
        body["missing_field"] = error.field
    return body


def router(ctx: EdgeContext) -> APIRouter:
    api = APIRouter(tags=["amplitude"])
    ctx.metrics.event_time_clamped.labels(amplitude.DIALECT)

    async def authorize(api_key: str | None) -> ApiKey:
        key = await ctx.auth.resolve(api_key, "api_key")
        require_scope(key, IDENTIFY_SCOPES)
        return key

    @api.post(
        "/identify",
        summary="Identify users (Amplitude Identify API)",
        response_class=PlainTextResponse,
        openapi_extra={"requestBody": _IDENTIFY_BODY, "responses": _responses(_IDENTIFY_OK)},
    )
    async def identify(request: Request) -> Response:
        async def run(response_id: str) -> Response:
            body = await request.body()
            content_type = request.headers.get("content-type")
            if amplitude.media_type(content_type) == "multipart/form-data":
                fields = await _multipart(request, len(body))
            else:
                fields = amplitude.read_fields(body, content_type)
            key = await authorize(amplitude.api_key_of(fields))
            result = amplitude.parse_identify(fields, ctx.envelope(key.workspace_id, response_id))
            await ctx.publisher.publish(result.identifies)
            ctx.metrics.count_identifies(amplitude.DIALECT, len(result.identifies))
            ctx.count_clamped(amplitude.DIALECT, response_id, result.clamped, len(result.identifies))
            return PlainTextResponse("success")

        return await ctx.handle(amplitude.DIALECT, request, error_shape, run)

    @api.post(
        "/2/httpapi",
        summary="Upload events (Amplitude HTTP API v2); $identify events update profiles",
        openapi_extra={"requestBody": _BATCH_BODY, "responses": _responses(_BATCH_OK)},
    )
    async def http_api(request: Request) -> Response:
        async def run(response_id: str) -> Response:
            batch = amplitude.read_batch(await request.body())
            key = await authorize(batch.api_key)
            envelope = ctx.envelope(key.workspace_id, response_id)
            result = amplitude.parse_batch(batch, envelope)
            if result.identifies:
                await ctx.publisher.publish(result.identifies)
                ctx.metrics.count_identifies(amplitude.DIALECT, len(result.identifies))
                ctx.count_clamped(amplitude.DIALECT, response_id, result.clamped, len(result.identifies))
            for kind in result.ignored:
                ctx.metrics.ignored.labels(amplitude.DIALECT, kind).inc()
            return json_response(
                {
                    "code": 200,
                    "events_ingested": len(batch.events),
                    "payload_size_bytes": batch.size,
                    "server_upload_time": envelope.received_time_ms,
                }
            )

        return await ctx.handle(amplitude.DIALECT, request, error_shape, run)

    return api


async def _multipart(request: Request, size: int) -> dict[str, JSON]:
    """Form fields of a ``multipart/form-data`` body (as some HTTP tools send forms)."""
    if size > MAX_BODY_BYTES:
        raise body_too_large(size)
    try:
        form = await request.form(max_files=0, max_fields=100)
    except MultiPartException as exc:
        raise InvalidRequest(f"malformed multipart form data: {exc.message}") from exc
    except HTTPException as exc:  # what Starlette turns that error into inside an app
        raise InvalidRequest(f"malformed multipart form data: {exc.detail}") from exc
    fields: dict[str, JSON] = {}
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            raise InvalidRequest(f"form field {name} must be text, not a file", field=name)
        fields.setdefault(name, value)
    return fields


# --- OpenAPI ------------------------------------------------------------------------------


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _responses(ok: dict[str, Any]) -> dict[str, Any]:
    errors = {
        str(status): {
            "description": f"Refused ({status}); the message names the field or limit at fault",
            "content": {"application/json": {"schema": _ref("AmplitudeError")}},
        }
        for status in ERROR_STATUSES
    }
    return {"200": ok, **errors}


_ID = {"type": "string", "minLength": 1, "maxLength": 255}
_IDENTIFICATION_FIELDS: dict[str, Any] = {
    "user_id": _ID | {"description": "Required unless device_id is given"},
    "device_id": _ID | {"description": "Required unless user_id is given; an anonymous id of the profile"},
    "insert_id": _ID | {"description": "Dedupe key: a retry with the same insert_id applies once"},
    "time": {"type": "integer", "minimum": 0, "description": "Event time, epoch milliseconds"},
    "user_properties": {
        "type": "object",
        "description": "Plain properties (meaning $set) or the operations $set, $setOnce, $add, $append, "
        "$prepend, $unset, $preInsert, $postInsert, $remove, $clearAll",
    },
    "groups": {"type": "object", "description": "Group type to group name(s); kept as the trait groups"},
    **{
        field: {"type": "string", "description": "Kept as the trait of the same name"}
        for field in amplitude.DEVICE_FIELDS
    },
}
_EVENT_INDEXES = {
    "type": "object",
    "description": "Field name to the indexes (in events) of the events refused for it",
    "additionalProperties": {"type": "array", "items": {"type": "integer"}},
}
_ONE_ID = [{"required": ["user_id"]}, {"required": ["device_id"]}]

SCHEMAS: dict[str, Any] = {
    "AmplitudeIdentification": {
        "type": "object",
        "properties": _IDENTIFICATION_FIELDS,
        "anyOf": _ONE_ID,
    },
    "AmplitudeIdentifyForm": {
        "type": "object",
        "required": ["api_key", "identification"],
        "properties": {
            "api_key": {"type": "string", "description": "The API key (also accepted as api-key)"},
            "identification": {
                "type": "string",
                "description": "A JSON object or array of AmplitudeIdentification, as text",
            },
        },
    },
    "AmplitudeIdentifyJson": {
        "type": "object",
        "required": ["api_key", "identification"],
        "properties": {
            "api_key": {"type": "string", "description": "The API key (also accepted as api-key)"},
            "identification": {
                "oneOf": [
                    {"type": "string", "description": "JSON text of an object or array"},
                    _ref("AmplitudeIdentification"),
                    {
                        "type": "array",
                        "items": _ref("AmplitudeIdentification"),
                        "minItems": 1,
                        "maxItems": 2000,
                    },
                ]
            },
        },
    },
    "AmplitudeEvent": {
        "type": "object",
        "required": ["event_type"],
        "properties": _IDENTIFICATION_FIELDS
        | {
            "event_type": {
                "type": "string",
                "minLength": 1,
                "description": "$identify updates the profile; other events are accepted and not stored",
            }
        },
        "anyOf": _ONE_ID,
    },
    "AmplitudeBatch": {
        "type": "object",
        "required": ["api_key", "events"],
        "properties": {
            "api_key": {"type": "string"},
            "events": {"type": "array", "items": _ref("AmplitudeEvent"), "minItems": 1, "maxItems": 2000},
            "options": {"type": "object", "description": "Accepted and ignored (min_id_length)"},
        },
    },
    "AmplitudeBatchAccepted": {
        "type": "object",
        "required": ["code", "events_ingested", "payload_size_bytes", "server_upload_time"],
        "properties": {
            "code": {"type": "integer", "enum": [200]},
            "events_ingested": {"type": "integer"},
            "payload_size_bytes": {"type": "integer"},
            "server_upload_time": {"type": "integer"},
        },
    },
    "AmplitudeError": {
        "type": "object",
        "required": ["code", "error"],
        "properties": {
            "code": {"type": "integer"},
            "error": {"type": "string"},
            "missing_field": {"type": "string"},
            "events_with_missing_fields": _EVENT_INDEXES,
            "events_with_invalid_fields": _EVENT_INDEXES,
        },
    },
}

_IDENTIFY_BODY = {
    "required": True,
    "content": {
        "application/x-www-form-urlencoded": {"schema": _ref("AmplitudeIdentifyForm")},
        "multipart/form-data": {"schema": _ref("AmplitudeIdentifyForm")},
        "application/json": {"schema": _ref("AmplitudeIdentifyJson")},
    },
}
_IDENTIFY_OK = {
    "description": "Every identification is durably accepted",
    "content": {"text/plain": {"schema": {"type": "string", "enum": ["success"]}}},
}
_BATCH_BODY = {"required": True, "content": {"application/json": {"schema": _ref("AmplitudeBatch")}}}
_BATCH_OK = {
    "description": "Accepted: $identify events are durably queued, other events ignored",
    "content": {"application/json": {"schema": _ref("AmplitudeBatchAccepted")}},
}
