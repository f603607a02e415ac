"""``POST /api/identify``: the Thrivestack dialect, with the reserved traits of the Segment spec."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from traitstream.dialects import thrivestack
from traitstream.dialects.traits import ENRICHMENT
from traitstream.edge.auth import bearer_token, require_scope
from traitstream.edge.context import EdgeContext, json_response
from traitstream.errors import RequestError

SCOPES = ("identify_api", "telemetry_apis")
ERROR_STATUSES = (400, 401, 403, 413, 500, 503)


def error_shape(error: RequestError, response_id: str) -> dict[str, object]:
    return {"success": False, "message": error.message, "response_id": response_id}


_BODY_SCHEMA = {
    "oneOf": [
        {"$ref": "#/components/schemas/ThrivestackIdentify"},
        {
            "type": "array",
            "items": {"$ref": "#/components/schemas/ThrivestackIdentify"},
            "maxItems": 2000,
        },
    ]
}


def router(ctx: EdgeContext) -> APIRouter:
    api = APIRouter(tags=["thrivestack"])

    @api.post(
        "/api/identify",
        summary="Identify one user or an array of users (Thrivestack)",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _BODY_SCHEMA}},
            },
            "responses": _RESPONSES,
            "security": [{"bearerAuth": []}],
        },
    )
    async def identify(request: Request) -> Response:
        async def run(response_id: str) -> Response:
            key = await ctx.auth.resolve(bearer_token(request.headers.get("authorization")), "Bearer token")
            require_scope(key, SCOPES)
            events = thrivestack.parse(await request.body(), ctx.envelope(key.workspace_id, response_id))
            await ctx.publisher.publish(events)
            ctx.metrics.count_identifies(thrivestack.DIALECT, len(events))
            return json_response(
                {
                    "success": True,
                    "message": "User(s) identified successfully",
                    "response_id": response_id,
                }
            )

        return await ctx.handle(thrivestack.DIALECT, request, error_shape, run)

    return api


# --- OpenAPI ------------------------------------------------------------------------------


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_STRING = {"type": "string"}
_RESERVED_STRINGS = (
    "avatar",
    "description",
    "email",
    "first_name",
    "gender",
    "last_name",
    "name",
    "phone",
    "title",
    "username",
    "website",
)

SCHEMAS: dict[str, Any] = {
    "ThrivestackTraits": {
        "type": "object",
        "description": "Reserved and enrichment_* traits are checked for their types; others are free-form",
        "properties": {
            **{name: _STRING for name in _RESERVED_STRINGS},
            "address": {
                "type": "object",
                "properties": {
                    "city": _STRING,
                    "country": _STRING,
                    "postal_code": {"type": ["string", "number"]},
                    "state": _STRING,
                    "street": _STRING,
                },
            },
            "age": {"type": "number"},
            "birthday": {"type": "string", "format": "date"},
            "company": {
                "type": "object",
                "properties": {
                    "name": _STRING,
                    "id": {"type": ["string", "number"]},
                    "industry": _STRING,
                    "employee_count": {"type": "number"},
                    "plan": _STRING,
                },
            },
            **{name: _STRING for name in ENRICHMENT},
            "enrichment_phone": {"type": "array", "items": _STRING},
        },
    },
    "ThrivestackIdentify": {
        "type": "object",
        "required": ["user_id"],
        "properties": {
            "user_id": {"type": "string", "minLength": 1, "maxLength": 255},
            "traits": _ref("ThrivestackTraits"),
            "user_traits": _ref("ThrivestackTraits"),
            "timestamp": {
                "type": "string",
                "description": "ISO 8601: when the user's profile was created (YY-MM-DD is read as 20YY)",
            },
            "context": {"type": "object"},
            "message_id": {"type": "string", "minLength": 1, "maxLength": 255},
            "anonymous_id": {"type": "string", "minLength": 1, "maxLength": 255},
        },
    },
    "ThrivestackAnswer": {
        "type": "object",
        "required": ["success", "message", "response_id"],
        "properties": {
            "success": {"type": "boolean", "enum": [True]},
            "message": _STRING,
            "response_id": {"type": "string", "format": "uuid"},
        },
    },
    "ThrivestackError": {
        "type": "object",
        "required": ["success", "message", "response_id"],
        "properties": {
            "success": {"type": "boolean", "enum": [False]},
            "message": _STRING,
            "response_id": {"type": "string", "format": "uuid"},
        },
    },
}

_RESPONSES: dict[str, Any] = {
    "200": {
        "description": "Every identify is durably accepted",
        "content": {"application/json": {"schema": _ref("ThrivestackAnswer")}},
    },
    **{
        str(status): {
            "description": f"Refused ({status}); the message names the field or limit at fault",
            "content": {"application/json": {"schema": _ref("ThrivestackError")}},
        }
        for status in ERROR_STATUSES
    },
}
