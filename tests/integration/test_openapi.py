"""The edge's OpenAPI document: it describes every endpoint, its request body and its
error answers, and a bounded schemathesis run against the running edge finds no
server error and no answer outside the document."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.stack import Stack

OPERATIONS = [
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("POST", "/api/identify"),
    ("POST", "/identify"),
    ("POST", "/2/httpapi"),
    ("POST", "/api/v1/identify"),
    ("POST", "/v1/identify"),
    ("POST", "/v1/batch"),
    ("POST", "/v1/track"),
    ("POST", "/v1/page"),
    ("POST", "/v1/screen"),
    ("POST", "/v1/group"),
    ("POST", "/v1/alias"),
    ("GET", "/api/profiles/{user_id}"),
    ("DELETE", "/api/profiles/{user_id}"),
    ("GET", "/api/profiles"),
]
IDENTIFY_ERRORS = {"400", "401", "403", "413", "500", "503"}
# Amplitude's clients carry the key in the body, not in a header.
KEY_IN_BODY = {"/identify", "/2/httpapi"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 12


@pytest.fixture(scope="module")
def document(stack: Stack) -> dict[str, Any]:
    response = httpx.get(f"{stack.url}/openapi.json", timeout=10)
    assert response.status_code == 200
    return dict(response.json())


@pytest.fixture(scope="module")
def api_schema(stack: Stack) -> BaseSchema:
    return schemathesis.openapi.from_url(f"{stack.url}/openapi.json")


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def test_document_describes_every_endpoint(document: dict[str, Any]) -> None:
    described = {(method.upper(), path) for path, methods in document["paths"].items() for method in methods}
    assert described == set(OPERATIONS)
    schemas = document["components"]["schemas"]
    missing = {ref for ref in refs(document) if ref.removeprefix("#/components/schemas/") not in schemas}
    assert missing == set()
    assert schemas["ThrivestackIdentify"]["required"] == ["user_id"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/identify",
        "/identify",
        "/2/httpapi",
        "/api/v1/identify",
        "/v1/identify",
        "/v1/batch",
        "/v1/alias",
    ],
)
def test_identify_endpoints_document_body_and_errors(document: dict[str, Any], path: str) -> None:
    operation = document["paths"][path]["post"]
    assert operation["requestBody"]["required"] is True
    assert set(operation["responses"]) >= {"200", *IDENTIFY_ERRORS}
    for status in IDENTIFY_ERRORS:
        (content,) = operation["responses"][status]["content"].values()
        assert content["schema"]["$ref"].endswith("Error")


def test_alias_routes_document_the_alias_body(document: dict[str, Any]) -> None:
    body = document["paths"]["/v1/alias"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"] == "#/components/schemas/SegmentAlias"
    alias = document["components"]["schemas"]["SegmentAlias"]
    assert alias["required"] == ["userId", "previousId"]
    assert "alias" in document["components"]["schemas"]["SegmentMessage"]["properties"]["type"]["enum"]


@pytest.mark.parametrize("path", ["/api/profiles/{user_id}", "/api/profiles"])
def test_profile_reads_document_provenance(document: dict[str, Any], path: str) -> None:
    parameters = {p["name"]: p for p in document["paths"][path]["get"]["parameters"]}
    assert parameters["include"]["in"] == "query" and parameters["include"]["required"] is False
    assert "provenance" in str(parameters["include"]["schema"])
    schemas = document["components"]["schemas"]
    provenance = schemas["Profile"]["properties"]["provenance"]
    assert provenance["additionalProperties"] == {"$ref": "#/components/schemas/TraitProvenance"}
    assert schemas["TraitProvenance"]["required"] == ["event_time", "source", "message_id", "op"]


# Schema-violating requests are made only where there is an input to violate.
RUNS = [
    pytest.param(method, path, mode, id=f"{method} {path} {mode.value}")
    for method, path in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or not path.endswith(("z", "metrics"))
]


@pytest.mark.parametrize(("method", "path", "mode"), RUNS)
def test_generated_requests_get_documented_answers(
    stack: Stack, api_schema: BaseSchema, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        if path in KEY_IN_BODY and isinstance(case.body, dict):
            case.body["api_key"] = stack.api_key
        case.call_and_validate(headers=stack.headers(), checks=CHECKS, timeout=30)

    check()
