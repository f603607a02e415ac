"""Profile reads and erasure: ``/api/profiles``.

Reads take ``?include=provenance`` (the only value): the answer then also says,
per trait, which event last wrote it (``provenance.py``).
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from traitstream.dialects.common import id_string
from traitstream.edge.auth import basic_username, bearer_token, require_scope
from traitstream.edge.context import EdgeContext, json_response
from traitstream.errors import InvalidRequest, NotFound, RequestError
from traitstream.events import IdentifyEvent, Kind
from traitstream.store.keys import ApiKey

DIALECT = "profiles"


PROVENANCE = "provenance"
_INCLUDE = Query(
    None,
    description="provenance: also answer, per trait, which event last wrote it",
    json_schema_extra={"enum": [PROVENANCE]},
)


def _provenance(include: str | None) -> bool:
    if include is None:
        return False
    if include != PROVENANCE:
        raise InvalidRequest(
            f"query parameter include must be {PROVENANCE!r}, got {include!r}", field="include"
        )
    return True


def error_shape(error: RequestError, response_id: str) -> dict[str, object]:
    return {"error": {"status": error.status, "message": error.message, "response_id": response_id}}


def router(ctx: EdgeContext) -> APIRouter:
    api = APIRouter(tags=["profiles"])

    async def authorize(request: Request, scope: str) -> ApiKey:
        header = request.headers.get("authorization")
        key = await ctx.auth.resolve(bearer_token(header) or basic_username(header))
        require_scope(key, (scope,))
        return key

    @api.get("/api/profiles/{user_id}", summary="Read a user's profile")
    async def by_user(user_id: str, request: Request, include: str | None = _INCLUDE) -> Response:
        async def run(response_id: str) -> Response:
            key = await authorize(request, "profiles:read")
            profile = await ctx.reader.by_user(
                key.workspace_id, id_string(user_id, "user_id"), with_provenance=_provenance(include)
            )
            if profile is None:
                raise NotFound(f"no profile for user_id {user_id!r}")
            return json_response(profile)

        return await ctx.handle(DIALECT, request, error_shape, run)

    @api.get("/api/profiles", summary="Find a profile by anonymous id")
    async def by_anonymous(
        request: Request, anonymous_id: str | None = None, include: str | None = _INCLUDE
    ) -> Response:
        async def run(response_id: str) -> Response:
            key = await authorize(request, "profiles:read")
            if not anonymous_id:
                raise InvalidRequest("query parameter anonymous_id is required", field="anonymous_id")
            profile = await ctx.reader.by_anonymous_id(
                key.workspace_id,
                id_string(anonymous_id, "anonymous_id"),
                with_provenance=_provenance(include),
            )
            if profile is None:
                raise NotFound(f"no profile for anonymous_id {anonymous_id!r}")
            return json_response(profile)

        return await ctx.handle(DIALECT, request, error_shape, run)

    @api.delete("/api/profiles/{user_id}", status_code=202, summary="Erase a user's profile")
    async def erase(user_id: str, request: Request) -> Response:
        async def run(response_id: str) -> Response:
            key = await authorize(request, "profiles:delete")
            envelope = ctx.envelope(key.workspace_id, response_id)
            event = IdentifyEvent(
                kind=Kind.ERASE,
                workspace_id=key.workspace_id,
                user_id=id_string(user_id, "user_id"),
                dialect=DIALECT,
                event_time_ms=envelope.received_time_ms,
                received_time_ms=envelope.received_time_ms,
                response_id=response_id,
            )
            await ctx.publisher.publish([event])
            return json_response({"status": "accepted", "response_id": response_id}, 202)

        return await ctx.handle(DIALECT, request, error_shape, run)

    return api
