"""Profile change records to and from Avro in the Confluent wire format.

Schema ``schemas/profile_change/v1.avsc``. Without a registry the records carry
``LOCAL_CHANGE_SCHEMA_ID``; with one, the id the registry gives the schema under
``<changes topic>-value`` (registered by the first relay that publishes).

A record is written in two steps. When the batch is applied, ``Body`` writes
every field but the last, ``version``, by hand (fastavro interprets the schema
for every record, several times the cost); the outbox keeps those bytes. The
relay adds the Confluent header and the version (``with_version``): it never
encodes anything else, and a record published twice is the same bytes. The
bytes are fastavro's, byte for byte (tests/unit/test_changes.py compares them).
"""

from __future__ import annotations

import io
import struct
from importlib import resources
from typing import Any, Protocol

from fastavro import schemaless_reader, schemaless_writer

from traitstream.avro.schemas import RegistrySchemas, parse
from traitstream.config import CommonSettings
from traitstream.errors import InvalidRecord

LOCAL_CHANGE_SCHEMA_ID = 3
"""The bundled profile change schema's id when no registry is configured (1 and 2 are the
identify schema's revisions)."""

_HEADER = struct.Struct(">bI")


def load_change_v1_text() -> str:
    return resources.files("traitstream.avro").joinpath("profile_change_v1.avsc").read_text("utf-8")


SCHEMA = parse(load_change_v1_text())


class ChangeSchemaSource(Protocol):
    """Maps schema ids to parsed writer schemas, as ``schemas.SchemaSource`` does, for
    the profile change records. ``writer_id`` may block on the network the first time
    it is read (a registry) and raise ``TransientError``; ``writer_schema`` raises
    ``InvalidRecord`` for an id that does not exist."""

    @property
    def writer_id(self) -> int: ...

    def writer_schema(self, schema_id: int) -> Any: ...


class LocalChangeSchemas:
    """The bundled schema under ``LOCAL_CHANGE_SCHEMA_ID``; no network."""

    @property
    def writer_id(self) -> int:
        return LOCAL_CHANGE_SCHEMA_ID

    def writer_schema(self, schema_id: int) -> Any:
        if schema_id != LOCAL_CHANGE_SCHEMA_ID:
            raise InvalidRecord(
                "unknown_schema_id",
                f"schema id {schema_id} is unknown (no schema registry configured; "
                f"the bundled profile change schema has id {LOCAL_CHANGE_SCHEMA_ID})",
            )
        return SCHEMA


def change_schemas(settings: CommonSettings) -> ChangeSchemaSource:
    if settings.schema_registry_url:
        return RegistrySchemas(
            settings.schema_registry_url, f"{settings.changes_topic}-value", schema_text=load_change_v1_text
        )
    return LocalChangeSchemas()


def encode(record: dict[str, Any], schema_id: int) -> bytes:
    """A whole record, through fastavro (the reference ``Body`` is checked against)."""
    out = io.BytesIO()
    out.write(_HEADER.pack(0, schema_id))
    schemaless_writer(out, SCHEMA, record)
    return out.getvalue()


_SMALL = tuple(bytes((n << 1,)) for n in range(64))
"""The one-byte encodings of 0 to 63: most lengths and counts."""
_KIND_INDEX = {"update": b"\x00", "merge": b"\x02", "erase": b"\x04"}
_NULL, _SOME = b"\x00", b"\x02"


def long_bytes(value: int) -> bytes:
    """An Avro long: zigzag, then base-128 varint."""
    if 0 <= value < 64:
        return _SMALL[value]
    n = (value << 1) ^ (value >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def string_bytes(value: str) -> bytes:
    data = value.encode()
    size = len(data)
    return (_SMALL[size] if size < 64 else long_bytes(size)) + data


def json_bytes(data: bytes | None) -> bytes:
    """A ``["null", "string"]`` of JSON text already serialized (orjson's bytes)."""
    if data is None:
        return _NULL
    size = len(data)
    return _SOME + (_SMALL[size] if size < 64 else long_bytes(size)) + data


def optional_string_bytes(value: str | None) -> bytes:
    return _NULL if value is None else _SOME + string_bytes(value)


def provenance_bytes(event_time: int, source: str | None, message_id: str | None, op: str) -> bytes:
    """The last four fields of a trait change, which every change one write made shares."""
    return (
        long_bytes(event_time)
        + optional_string_bytes(source)
        + optional_string_bytes(message_id)
        + string_bytes(op)
    )


def body(
    workspace_id: str,
    profile_id: str,
    user_id: str | None,
    kind: str,
    changes: list[bytes],
    merged_from: list[str],
    applied_time: int,
) -> bytes:
    """Every field but ``version``; ``changes`` each as ``change_bytes`` wrote it."""
    out = [
        string_bytes(workspace_id),
        string_bytes(profile_id),
        optional_string_bytes(user_id),
        _KIND_INDEX[kind],
    ]
    if changes:
        out.append(long_bytes(len(changes)))
        out.extend(changes)
    out.append(_NULL)  # the arrays' end (an empty array is just this)
    if merged_from:
        out.append(long_bytes(len(merged_from)))
        out.extend(string_bytes(m) for m in merged_from)
    out.append(_NULL)
    out.append(long_bytes(applied_time))
    return b"".join(out)


def change_bytes(trait: str, old_json: bytes | None, new_json: bytes | None, provenance: bytes) -> bytes:
    return string_bytes(trait) + json_bytes(old_json) + json_bytes(new_json) + provenance


def with_version(body_bytes: bytes, version: int, schema_id: int) -> bytes:
    """The record as published: header, the body written at apply time, the version."""
    return _HEADER.pack(0, schema_id) + body_bytes + long_bytes(version)


def decode(data: bytes, schemas: ChangeSchemaSource) -> dict[str, Any]:
    """A record of any writer schema ``schemas`` knows, read as v1. Raises
    ``InvalidRecord`` naming what is wrong."""
    if len(data) < _HEADER.size or data[0] != 0:
        raise InvalidRecord("not_wire_format", "not in the Confluent wire format (magic byte 0, schema id)")
    _magic, schema_id = _HEADER.unpack_from(data)
    writer = schemas.writer_schema(schema_id)
    try:
        record = schemaless_reader(io.BytesIO(data[_HEADER.size :]), writer, SCHEMA)
    except Exception as exc:  # fastavro raises many types for a body that does not decode
        raise InvalidRecord("not_avro", f"the body is not a profile change record: {exc}") from exc
    if not isinstance(record, dict):
        raise InvalidRecord("not_avro", "the body is not a profile change record")
    return record
