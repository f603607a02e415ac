"""The edge's OpenAPI document: what FastAPI generates from the routes, completed
with each dialect's component schemas, the security schemes, and the answers of
the routes that declare none themselves."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from traitstream.edge.routes import amplitude, datafast, segment, thrivestack
from traitstream.events import Op


def document_builder(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """``app.openapi``: the document, built once on first use."""

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
            # Parameter errors are answered 400 (edge.app, validation_error), never 422.
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
            "provenance": {
                "type": "object",
                "description": "With ?include=provenance: which event last wrote each trait",
                "additionalProperties": {"$ref": "#/components/schemas/TraitProvenance"},
            },
        },
    },
    "TraitProvenance": {
        "type": "object",
        "description": "The event whose write decides a trait. Profiles stored before provenance was "
        "kept name only the event's time until the trait is written again (the rest null; op is "
        "still set_once where it is one)",
        "required": ["event_time", "source", "message_id", "op"],
        "properties": {
            "event_time": {"type": ["string", "null"], "format": "date-time"},
            "source": {
                "type": ["string", "null"],
                "description": "The dialect the event arrived in (thrivestack, amplitude, datafast, "
                "segment), or the name of the service that published it",
            },
            "message_id": {
                "type": ["string", "null"],
                "description": "The client's dedupe key (message_id, messageId, insert_id), else "
                "the response id of the request that carried the event",
            },
            "op": {
                "type": ["string", "null"],
                "enum": [*(op.value for op in Op if op is not Op.UNSET and op is not Op.CLEAR_ALL), None],
            },
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
