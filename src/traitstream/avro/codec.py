"""Identify events to and from Avro in the Confluent wire format.

Wire format: magic byte 0, the writer schema id as a 4-byte big-endian int, then
the Avro binary body. ``decode`` reads any writer schema the ``SchemaSource``
knows, resolved against the bundled v1 reader schema, and validates the content:
whatever it returns is safe to apply; whatever is wrong raises ``InvalidRecord``.

Records of exactly one of the two revisions of v1 (what the edge writes: the first
for identifies and erasures, the current one for aliases) have one reference each
way, ``avro/binary.py`` with ``record.from_record``, and one fast path for the
first revision, the compiled codec of ``avro/fast.py`` where it serves: it gives
what the reference gives and hands it whatever it declines. Any other writer
schema (a registry's later version, another producer's) goes through fastavro,
which resolves it against the bundled one, and the same ``record.from_record``.

A worker of a release that knows only the first revision refuses an alias, and
dead-letters it with the reason (``dlq replay`` sends it back once the workers know
it): without a registry the current revision's id is unknown to it
(``unknown_schema_id``); with one, its reader maps the ``alias`` symbol to the
enum's default ``unknown`` and refuses that kind (``invalid_content``).
"""

from __future__ import annotations

import io
import struct
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from traitstream.avro import binary, fast
from traitstream.avro.record import from_record, to_record
from traitstream.avro.schemas import SchemaSource, load_v1_r1_text, load_v1_text, parse
from traitstream.errors import InvalidRecord
from traitstream.events import IdentifyEvent, Kind

__all__ = ["MAGIC", "decode", "decode_reference", "encode", "encode_reference", "from_record", "to_record"]

MAGIC = 0
_HEADER = struct.Struct(">bI")
_READER = parse(load_v1_text())
_FIRST = parse(load_v1_r1_text())


def writer_id(event: IdentifyEvent, schemas: SchemaSource) -> int:
    """The id of the revision ``encode`` writes ``event`` in: the current one for an
    alias, the first for anything else. May block and raise as ``SchemaSource`` says."""
    return schemas.alias_writer_id if event.kind is Kind.ALIAS else schemas.writer_id


def encode(event: IdentifyEvent, schema_id: int, writer_schema: Any = _READER) -> bytes:
    """The record of ``event`` under ``schema_id``. By default in the bundled revision
    its kind needs, and ``schema_id`` must be that revision's (``writer_id``); with a
    ``writer_schema``, in that schema."""
    header = _HEADER.pack(MAGIC, schema_id)
    if writer_schema is _READER and fast.ENCODE is not None and event.kind is not Kind.ALIAS:
        try:
            return fast.ENCODE(event, header)
        except Exception:  # not an ordinary event: the reference decides, and raises what it raises
            pass
    return encode_reference(event, header, writer_schema)


def encode_reference(event: IdentifyEvent, header: bytes, writer_schema: Any = _READER) -> bytes:
    """``header`` then the body of ``event``'s record, without the fast path."""
    if writer_schema is _READER:
        if event.kind is Kind.ALIAS:
            return binary.encode_alias(event, header)
        return binary.encode_body(event, header)
    out = io.BytesIO()
    out.write(header)
    schemaless_writer(out, writer_schema, to_record(event))
    return out.getvalue()


_OTHER, _FIRST_REVISION, _CURRENT_REVISION = 0, 1, 2
_v1_writers: dict[int, tuple[Any, int]] = {}


def _revision(writer: Any) -> int:
    """Which bundled revision of v1 a parsed writer schema is, if any (checked once per
    schema object; the object is kept so that its id cannot be reused)."""
    known = _v1_writers.get(id(writer))
    if known is None or known[0] is not writer:
        revision = _FIRST_REVISION if writer == _FIRST else _CURRENT_REVISION if writer == _READER else _OTHER
        known = (writer, revision)
        if len(_v1_writers) < 1000:
            _v1_writers[id(writer)] = known
    return known[1]


def decode(data: bytes | None, schemas: SchemaSource) -> IdentifyEvent:
    """Decode and validate one record value. Raises ``InvalidRecord``; may raise
    ``TransientError`` when a registry must be asked and cannot be reached."""
    if not data or len(data) < _HEADER.size:
        raise InvalidRecord("not_avro", "record value is empty or shorter than the 5-byte header")
    magic, schema_id = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise InvalidRecord("not_avro", f"magic byte is {magic}, expected 0 (Confluent wire format)")
    writer = schemas.writer_schema(schema_id)
    if fast.READ is not None and _revision(writer) == _FIRST_REVISION:
        try:
            return fast.READ(data, _HEADER.size)
        except (ValueError, LookupError):
            pass  # not plainly fine: the reference finds out why
    return decode_reference(data, writer)


def decode_reference(data: bytes, writer: Any = _FIRST) -> IdentifyEvent:
    """Decode the body after the header without the fast path and check every field
    (``from_record``): a body of a bundled revision by ``binary.read_record``, any
    other with fastavro, resolved from ``writer`` to the bundled schema."""
    record: Any
    revision = _revision(writer)
    if revision != _OTHER:
        try:
            record, end = binary.read_record(data, _HEADER.size, current=revision == _CURRENT_REVISION)
        except (binary.DecodeError, IndexError, UnicodeDecodeError) as exc:
            raise InvalidRecord("avro_decode", f"Avro body does not decode: {exc}") from exc
    else:
        buffer = io.BytesIO(data)
        buffer.seek(_HEADER.size)
        try:
            record = schemaless_reader(buffer, writer, _READER)
        except Exception as exc:  # fastavro raises many types for corrupt input
            raise InvalidRecord("avro_decode", f"Avro body does not decode: {exc}") from exc
        end = buffer.tell()
    if end != len(data):
        raise InvalidRecord("avro_decode", f"{len(data) - end} trailing bytes after the Avro body")
    if not isinstance(record, dict):
        raise InvalidRecord("avro_decode", "Avro body is not a record")
    return from_record(record)
