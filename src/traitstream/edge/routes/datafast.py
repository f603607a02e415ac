"""``POST /api/v1/identify``: the DataFast dialect.

Credentials: ``Authorization: Bearer <key>``.

* A website key is any key of the workspace whose secret does not start with
  ``dft_`` (``df_`` keys included) with an identify scope. A key created with
  ``--website-id`` belongs to that website; ``?websiteId=`` is optional with it
  and must name the same website.
* An account token (``dft_…``) needs the scope ``identify:write`` and
  ``?websiteId=`` naming a website of its workspace.

A website is known in a workspace while a live key of that workspace carries its
id (see ``store.keys.WEBSITE_SQL``); any other ``websiteId`` is a 404.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from traitstream.dialects import datafast
from traitstream.dialects.common import id_string
from traitstream.edge.auth import IDENTIFY_SCOPES, bearer_token, require_scope
from traitstream.edge.context import EdgeContext, json_response
from traitstream.errors import Forbidden, InvalidRequest, NotFound, RequestError
from traitstream.store.keys import ApiKey

ACCOUNT_TOKEN_PREFIX = "dft_"
ACCOUNT_SCOPE = "identify:write"
ERROR_STATUSES = (400, 401, 403, 404, 413, 500, 503)
SUCCESS_MESSAGE = "User identified successfully"


def error_shape(error: RequestError, response_id: str) -> dict[str, object]:
    return {"status": "error", "error": {"code": error.status, "message": error.message}}


def router(ctx: EdgeContext) -> APIRouter:
    api = APIRouter(tags=["datafast"])

    async def website_for(key: ApiKey, token: str, requested: str | None) -> str | None:
        """The website the call is for; raises 400, 403 or 404 naming ``websiteId``."""
        website = None if requested is None else id_string(requested, "websiteId")
        if token.startswith(ACCOUNT_TOKEN_PREFIX):
            require_scope(key, (ACCOUNT_SCOPE,))
            if website is None:
                raise InvalidRequest(
                    "query parameter websiteId is required with an account token (dft_…)", field="websiteId"
                )
        else:
            require_scope(key, IDENTIFY_SCOPES)
            if key.website_id is not None:
                if website is not None and website != key.website_id:
                    raise Forbidden(
                        f"this website key belongs to another website than websiteId {website!r}",
                        field="websiteId",
                    )
                return key.website_id
            if website is None:
                return None
        if not await ctx.auth.website_known(key.workspace_id, website):
            raise NotFound(f"no website {website!r} (websiteId) in this workspace", field="websiteId")
        return website

    @api.post(
        "/api/v1/identify",
        summary="Link a visitor to a user and store profile metadata (DataFast)",
        openapi_extra={
            "parameters": [_WEBSITE_PARAMETER],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("DataFastIdentify")}},
            },
            "responses": _RESPONSES,
            "security": [{"bearerAuth": []}],
        },
    )
    async def identify(request: Request) -> Response:
        async def run(response_id: str) -> Response:
            token = bearer_token(request.headers.get("authorization"))
            key = await ctx.auth.resolve(token, "Bearer token")
            website = await website_for(key, token or "", request.query_params.get("websiteId"))
            identified = datafast.parse(
                await request.body(), ctx.envelope(key.workspace_id, response_id), website
            )
            await ctx.publisher.publish([identified.event])
            ctx.metrics.count_identifies(datafast.DIALECT, 1)
            return json_response(
                {
                    "status": "success",
                    "data": {"message": SUCCESS_MESSAGE, "profileId": identified.profile_id},
                }
            )

        return await ctx.handle(datafast.DIALECT, request, error_shape, run)

    return api


# --- OpenAPI ------------------------------------------------------------------------------


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_WEBSITE_PARAMETER = {
    "name": "websiteId",
    "in": "query",
    "required": False,
    "description": "The website; required with an account token (dft_…)",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}

SCHEMAS: dict[str, Any] = {
    "DataFastIdentify": {
        "type": "object",
        "required": ["user_id", "datafast_visitor_id"],
        "properties": {
            "user_id": {"type": "string", "minLength": 1, "maxLength": 255},
            "datafast_visitor_id": {"type": "string", "format": "uuid"},
        },
        "additionalProperties": {"description": "Stored as the profile trait of the same name"},
    },
    "DataFastIdentified": {
        "type": "object",
        "required": ["status", "data"],
        "properties": {
            "status": {"type": "string", "enum": ["success"]},
            "data": {
                "type": "object",
                "required": ["message", "profileId"],
                "properties": {
                    "message": {"type": "string"},
                    "profileId": {"type": "string", "format": "uuid"},
                },
            },
        },
    },
    "DataFastError": {
        "type": "object",
        "required": ["status", "error"],
        "properties": {
            "status": {"type": "string", "enum": ["error"]},
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "integer"}, "message": {"type": "string"}},
            },
        },
    },
}

_RESPONSES: dict[str, Any] = {
    "200": {
        "description": "Durably accepted; profileId is the profile the user's traits land in",
        "content": {"application/json": {"schema": _ref("DataFastIdentified")}},
    },
    **{
        str(status): {
            "description": f"Refused ({status}); the message names the field or limit at fault",
            "content": {"application/json": {"schema": _ref("DataFastError")}},
        }
        for status in ERROR_STATUSES
    },
}
