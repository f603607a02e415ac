"""Where writer schemas come from: the bundled schema, or a Confluent-compatible registry.

Records carry a 4-byte schema id. The v1 schema has two revisions, both bundled:
the first (``identify_v1_r1.avsc``: identify and erase) and the current one
(``identify_v1.avsc``), which appends the ``alias`` kind and the ``previous_id``
field. The edge writes each record in the first revision that can carry it, so
identifies and erasures keep the first revision's bytes, which workers of every
release read, and only aliases need the current revision.

Without a registry the ids are fixed: ``LOCAL_SCHEMA_ID`` is the first revision,
``LOCAL_ALIAS_SCHEMA_ID`` the current one. With a registry, the edge registers
both under ``<topic>-value`` and writes the ids the registry gives; readers fetch
unknown ids from the registry once and cache them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from importlib import resources
from typing import Any, Protocol
from urllib.parse import quote

import httpx
from fastavro import parse_schema

from traitstream.config import CommonSettings
from traitstream.errors import InvalidRecord, TraitstreamError, TransientError

LOCAL_SCHEMA_ID = 1
"""The first revision of v1, without a registry: identifies and erasures."""
LOCAL_ALIAS_SCHEMA_ID = 2
"""The current revision of v1, without a registry: aliases."""

# What Confluent's own clients send; every compatible registry accepts it.
_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
_ACCEPT = (
    "application/vnd.schemaregistry.v1+json, application/vnd.schemaregistry+json; qs=0.9, "
    "application/json; qs=0.5"
)
_SCHEMA_NOT_FOUND = 40403


def load_v1_text() -> str:
    """The current revision of the v1 schema: what every reader resolves records to."""
    return resources.files("traitstream.avro").joinpath("identify_v1.avsc").read_text("utf-8")


def load_v1_r1_text() -> str:
    """The first revision of the v1 schema (no alias, no ``previous_id``)."""
    return resources.files("traitstream.avro").joinpath("identify_v1_r1.avsc").read_text("utf-8")


def parse(text: str) -> Any:
    return parse_schema(json.loads(text))


class SchemaSource(Protocol):
    """Maps schema ids to parsed writer schemas.

    ``writer_id`` (the first revision's id, for identifies and erasures) and
    ``alias_writer_id`` (the current revision's, for aliases) may block on the network
    the first time they are read and raise ``TransientError`` when the registry cannot
    be reached; after that they never block. ``writer_schema`` may block on
    the network the first time it sees an id; it raises ``InvalidRecord`` for an id
    that does not exist and ``TransientError`` when the registry cannot be reached
    (retrying later can help).
    """

    @property
    def writer_id(self) -> int: ...

    @property
    def alias_writer_id(self) -> int: ...

    def writer_schema(self, schema_id: int) -> Any: ...


class LocalSchemas:
    """The bundled revisions of v1 under ``LOCAL_SCHEMA_ID`` and ``LOCAL_ALIAS_SCHEMA_ID``; no network."""

    def __init__(self) -> None:
        self._schemas = {
            LOCAL_SCHEMA_ID: parse(load_v1_r1_text()),
            LOCAL_ALIAS_SCHEMA_ID: parse(load_v1_text()),
        }

    @property
    def writer_id(self) -> int:
        return LOCAL_SCHEMA_ID

    @property
    def alias_writer_id(self) -> int:
        return LOCAL_ALIAS_SCHEMA_ID

    def writer_schema(self, schema_id: int) -> Any:
        schema = self._schemas.get(schema_id)
        if schema is None:
            raise InvalidRecord(
                "unknown_schema_id",
                f"schema id {schema_id} is unknown (no schema registry configured; the bundled "
                f"schemas have ids {LOCAL_SCHEMA_ID} and {LOCAL_ALIAS_SCHEMA_ID})",
            )
        return schema


class RegistrySchemas:
    """A Confluent-compatible schema registry (``/subjects/…/versions``, ``/schemas/ids/…``).

    Only a 404 with the registry's own "schema not found" code (40403) makes an id
    unknown, and only a schema that is not Avro makes a record invalid: any other
    answer (5xx, a proxy's 404, a body that is not the registry's JSON) says nothing
    about the record, so it is a ``TransientError`` and the batch waits instead of
    being dead-lettered. Credentials may be given in the URL (``https://user:secret@host``).
    """

    def __init__(
        self,
        url: str,
        subject: str,
        *,
        timeout: float = 5.0,
        schema_text: Callable[[], str] = load_v1_r1_text,
    ) -> None:
        """``schema_text``: the bundled schema ``writer_id`` registers (the identify
        schema's first revision unless told)."""
        self._url = url.rstrip("/")
        self._schema_text = schema_text
        self._client = httpx.Client(base_url=self._url, timeout=timeout, headers={"Accept": _ACCEPT})
        self._subject = subject
        self._cache: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._writer_id: int | None = None
        self._alias_writer_id: int | None = None

    def _register(self, subject: str, text: str) -> int:
        """POST the bundled schema; the registry answers the id it already has for an
        identical schema, so registering on every start is idempotent."""
        where = f"schema registry at {_safe_url(self._url)}: cannot register {subject}"
        try:
            response = self._client.post(
                f"/subjects/{quote(subject, safe='')}/versions",
                content=json.dumps({"schema": text}),
                headers={"Content-Type": _CONTENT_TYPE},
            )
        except httpx.HTTPError as exc:
            raise TransientError(f"{where}: {exc}", source="schema_registry") from exc
        if response.status_code != 200:
            detail = f"{where}: answered {response.status_code}: {_detail(response)}"
            if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
                # Incompatible (409) or invalid (422) schema, bad credentials: retrying
                # cannot help; the operator must change the registry or its settings.
                raise TraitstreamError(detail)
            raise TransientError(detail, source="schema_registry")
        schema_id = _json_object(response).get("id")
        if not isinstance(schema_id, int) or isinstance(schema_id, bool):
            raise TransientError(
                f"{where}: no schema id in {response.text[:200]!r}", source="schema_registry"
            )
        return schema_id

    @property
    def writer_id(self) -> int:
        """Registers the first revision on first use: only writers register, so readers
        work with read-only registry credentials and start while the registry is down."""
        if self._writer_id is None:
            self._writer_id = self._register_text(self._schema_text())
        return self._writer_id

    @property
    def alias_writer_id(self) -> int:
        """Registers the current revision on first use, after the first one: a subject
        that checks compatibility (BACKWARD, the registry's default, or FORWARD or FULL)
        accepts it, since it only appends an enum symbol and a field with a default."""
        if self._alias_writer_id is None:
            _ = self.writer_id
            self._alias_writer_id = self._register_text(load_v1_text())
        return self._alias_writer_id

    def _register_text(self, text: str) -> int:
        schema_id = self._register(self._subject, text)
        with self._lock:
            self._cache[schema_id] = parse(text)
        return schema_id

    def writer_schema(self, schema_id: int) -> Any:
        with self._lock:
            cached = self._cache.get(schema_id)
        if cached is not None:
            return cached
        try:
            response = self._client.get(f"/schemas/ids/{schema_id}")
        except httpx.HTTPError as exc:
            raise TransientError(f"schema registry unreachable: {exc}", source="schema_registry") from exc
        body = _json_object(response)
        if response.status_code == 404 and body.get("error_code") == _SCHEMA_NOT_FOUND:
            raise InvalidRecord("unknown_schema_id", f"schema id {schema_id} is not in the registry")
        if response.status_code != 200:
            raise TransientError(
                f"schema registry answered {response.status_code} for schema id {schema_id}: "
                f"{_detail(response)}",
                source="schema_registry",
            )
        text = body.get("schema")
        if not isinstance(text, str):
            raise TransientError(
                f"schema registry answered schema id {schema_id} without a schema: {response.text[:200]!r}",
                source="schema_registry",
            )
        schema_type = body.get("schemaType", "AVRO")
        if schema_type != "AVRO":
            raise InvalidRecord("not_avro", f"schema id {schema_id} is a {schema_type} schema, not Avro")
        try:
            schema = parse(text)
        except Exception as exc:  # json and fastavro raise many types for a bad schema
            raise InvalidRecord(
                "not_avro", f"schema id {schema_id} is not a valid Avro schema: {exc}"
            ) from exc
        with self._lock:
            self._cache[schema_id] = schema
        return schema

    def close(self) -> None:
        self._client.close()


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _detail(response: httpx.Response) -> str:
    """The registry's own error message (``{"error_code": …, "message": …}``), else the body's start."""
    body = _json_object(response)
    if "message" in body:
        return f"{body['message']} (error code {body.get('error_code')})"
    return repr(response.text[:200])


def _safe_url(url: str) -> str:
    """The URL without credentials, for messages and logs."""
    parsed = httpx.URL(url)
    return str(parsed.copy_with(username=None, password=None)) if parsed.userinfo else url


def schema_source(settings: CommonSettings) -> SchemaSource:
    """The writer schemas of a process's settings: the registry's when one is set,
    else the bundled schema."""
    if settings.schema_registry_url:
        return RegistrySchemas(settings.schema_registry_url, f"{settings.topic}-value")
    return LocalSchemas()
