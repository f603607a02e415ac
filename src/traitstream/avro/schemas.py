"""Where writer schemas come from: the bundled schema, or a Confluent-compatible registry.

Records carry a 4-byte schema id. Without a registry the edge writes
``LOCAL_SCHEMA_ID`` and every reader knows that id as the bundled v1 schema.
With a registry, the edge registers v1 under ``<topic>-value`` and writes the id
the registry gives; readers fetch unknown ids from the registry once and cache them.
"""

from __future__ import annotations

import json
import threading
from importlib import resources
from typing import Any, Protocol

import httpx
from fastavro import parse_schema

from traitstream.errors import InvalidRecord, TransientError

LOCAL_SCHEMA_ID = 1


def load_v1_text() -> str:
    return resources.files("traitstream.avro").joinpath("identify_v1.avsc").read_text("utf-8")


def parse(text: str) -> Any:
    return parse_schema(json.loads(text))


class SchemaSource(Protocol):
    """Maps schema ids to parsed writer schemas.

    ``writer_id`` never blocks after construction. ``writer_schema`` may block on
    the network the first time it sees an id; it raises ``InvalidRecord`` for an id
    that does not exist and ``TransientError`` when the registry cannot be reached
    (retrying later can help).
    """

    @property
    def writer_id(self) -> int: ...

    def writer_schema(self, schema_id: int) -> Any: ...


class LocalSchemas:
    """The bundled v1 schema under ``LOCAL_SCHEMA_ID``; no network."""

    def __init__(self) -> None:
        self._v1 = parse(load_v1_text())

    @property
    def writer_id(self) -> int:
        return LOCAL_SCHEMA_ID

    def writer_schema(self, schema_id: int) -> Any:
        if schema_id != LOCAL_SCHEMA_ID:
            raise InvalidRecord(
                "unknown_schema_id",
                f"schema id {schema_id} is unknown (no schema registry configured; "
                f"the bundled schema has id {LOCAL_SCHEMA_ID})",
            )
        return self._v1


class RegistrySchemas:
    """A Confluent-compatible schema registry (``/subjects/…/versions``, ``/schemas/ids/…``)."""

    def __init__(self, url: str, subject: str, *, timeout: float = 5.0) -> None:
        self._client = httpx.Client(base_url=url.rstrip("/"), timeout=timeout)
        self._subject = subject
        self._cache: dict[int, Any] = {}
        self._lock = threading.Lock()
        text = load_v1_text()
        try:
            response = self._client.post(
                f"/subjects/{subject}/versions",
                json={"schema": text},
                headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
            )
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise TransientError(
                f"schema registry at {url}: cannot register {subject}: {exc}",
                source="schema_registry",
            ) from exc
        self._writer_id = int(response.json()["id"])
        self._cache[self._writer_id] = parse(text)

    @property
    def writer_id(self) -> int:
        return self._writer_id

    def writer_schema(self, schema_id: int) -> Any:
        with self._lock:
            cached = self._cache.get(schema_id)
        if cached is not None:
            return cached
        try:
            response = self._client.get(f"/schemas/ids/{schema_id}")
        except httpx.HTTPError as exc:
            raise TransientError(f"schema registry unreachable: {exc}", source="schema_registry") from exc
        if response.status_code == 404:
            raise InvalidRecord("unknown_schema_id", f"schema id {schema_id} is not in the registry")
        if response.status_code >= 400:
            raise TransientError(f"schema registry answered {response.status_code}", source="schema_registry")
        schema = parse(response.json()["schema"])
        with self._lock:
            self._cache[schema_id] = schema
        return schema

    def close(self) -> None:
        self._client.close()
