"""``POST /api/identify``: the Thrivestack dialect (seeds 000 and 001)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from traitstream.dialects import thrivestack
from traitstream.edge.auth import bearer_token, require_scope
from traitstream.edge.context import EdgeContext, json_response
from traitstream.errors import RequestError

SCOPES = ("identify_api", "telemetry_apis")


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
            }
        },
    )
    async def identify(request: Request) -> Response:
        async def run(response_id: str) -> Response:
            key = await ctx.auth.resolve(bearer_token(request.headers.get("authorization")), "Bearer token")
            require_scope(key, SCOPES)
            events = thrivestack.parse(await request.body(), ctx.envelope(key.workspace_id, response_id))
            await ctx.publisher.publish(events)
            ctx.metrics.identifies.labels(thrivestack.DIALECT).inc(len(events))
            return json_response(
                {
                    "success": True,
                    "message": "User(s) identified successfully",
                    "response_id": response_id,
                }
            )

        return await ctx.handle(thrivestack.DIALECT, request, error_shape, run)

    return api
