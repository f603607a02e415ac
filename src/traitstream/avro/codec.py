"""Identify events to and from Avro in the Confluent wire format.

Wire format: magic byte 0, the writer schema id as a 4-byte big-endian int, then
the Avro binary body. ``decode`` reads any writer schema the ``SchemaSource``
knows, resolved against the bundled v1 reader schema, and validates the content:
whatever it returns is safe to apply; whatever is wrong raises ``InvalidRecord``.

Records of exactly one of the two revisions of v1 (what the edge writes: the first
for identifies and erasures, the current one for aliases) are encoded and decoded
by the hand-written functions of ``avro/v1.py``, byte for byte as fastavro would;
any other writer schema goes through fastavro.

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

import orjson
from fastavro import schemaless_reader, schemaless_writer

from traitstream.avro import v1
from traitstream.avro.schemas import SchemaSource, load_v1_r1_text, load_v1_text, parse
from traitstream.dialects.common import MAX_ID_CHARS
from traitstream.errors import InvalidRecord
from traitstream.events import JSON, IdentifyEvent, Kind, Op, Operation

MAGIC = 0
_HEADER = struct.Struct(">bI")
_READER = parse(load_v1_text())
_FIRST = parse(load_v1_r1_text())
_OPS_NEEDING_TRAIT = frozenset(Op) - {Op.CLEAR_ALL}
_OPS_NEEDING_VALUE = _OPS_NEEDING_TRAIT - {Op.UNSET}
_OP_OF = {op.value: op for op in Op}  # a dict lookup costs a fraction of Op(value)


def _dumps(value: JSON) -> str:
    return orjson.dumps(value).decode()


def to_record(event: IdentifyEvent) -> dict[str, Any]:
    return {
        "kind": event.kind.value,
        "workspace_id": event.workspace_id,
        "user_id": event.user_id,
        "anonymous_ids": list(event.anonymous_ids),
        "dialect": event.dialect,
        "event_time": event.event_time_ms,
        "received_time": event.received_time_ms,
        "profile_created_at": event.profile_created_at_ms,
        "response_id": event.response_id,
        "event_index": event.event_index,
        "dedupe_key": event.dedupe_key,
        "context_json": None if event.context is None else _dumps(event.context),
        "operations": [
            {
                "op": op.op.value,
                "trait": op.trait,
                "value_json": None if op.op in (Op.UNSET, Op.CLEAR_ALL) else _dumps(op.value),
            }
            for op in event.operations
        ],
        "previous_id": event.previous_id,
    }


def writer_id(event: IdentifyEvent, schemas: SchemaSource) -> int:
    """The id of the revision ``encode`` writes ``event`` in: the current one for an
    alias, the first for anything else. May block and raise as ``SchemaSource`` says."""
    return schemas.alias_writer_id if event.kind is Kind.ALIAS else schemas.writer_id


def encode(event: IdentifyEvent, schema_id: int, writer_schema: Any = _READER) -> bytes:
    """The record of ``event`` under ``schema_id``. By default in the bundled revision
    its kind needs, and ``schema_id`` must be that revision's (``writer_id``); with a
    ``writer_schema``, in that schema."""
    if writer_schema is _READER:
        return v1.encode_body(event, _HEADER.pack(MAGIC, schema_id))
    out = io.BytesIO()
    out.write(_HEADER.pack(MAGIC, schema_id))
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
    revision = _revision(writer)
    try:
        if revision == _FIRST_REVISION:
            return v1.read_event(data, _HEADER.size)
        if revision == _CURRENT_REVISION:  # aliases only, from this edge: rare enough for Python
            return v1.read_event_python(data, _HEADER.size, current=True)
    except (ValueError, LookupError):
        pass  # not plainly fine: the full path finds out why
    return _decode_checked(data, writer, revision)


def _decode_checked(data: bytes, writer: Any, revision: int) -> IdentifyEvent:
    """Decode the body after the header with ``writer`` and check every field, in the
    order that decides which problem a record is refused for."""
    record: Any
    if revision != _OTHER:
        try:
            record, end = v1.read_record(data, _HEADER.size, current=revision == _CURRENT_REVISION)
        except (v1.DecodeError, IndexError, UnicodeDecodeError) as exc:
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


def _loads(text: str | None, where: str) -> JSON:
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidRecord("invalid_content", f"{where} is not valid JSON: {exc}") from exc


def _millis(value: Any) -> int:
    # fastavro returns aware datetimes for timestamp-millis; publishers may send plain ints.
    if isinstance(value, int):
        return value
    return int(value.timestamp() * 1000)


def _has_nul(value: JSON) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in k or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _check_text(record: dict[str, Any]) -> None:
    """PostgreSQL stores no NUL character and indexes no huge id: refuse them here, with
    a reason, instead of letting the store reject the batch."""
    ids = [record["workspace_id"], record["user_id"], *record["anonymous_ids"]]
    for name, value in zip(("workspace_id", "user_id"), ids, strict=False):
        if value is not None and len(value) > MAX_ID_CHARS:
            raise InvalidRecord("invalid_content", f"{name} is longer than {MAX_ID_CHARS} characters")
    if any(len(a) > MAX_ID_CHARS for a in record["anonymous_ids"]):
        raise InvalidRecord("invalid_content", f"an anonymous id is longer than {MAX_ID_CHARS} characters")
    texts = [*ids, record["response_id"], record["dedupe_key"], record["dialect"]]
    texts += [raw["trait"] for raw in record["operations"]]
    if any(t is not None and "\x00" in t for t in texts):
        raise InvalidRecord("invalid_content", "an id, trait name or dialect holds a NUL character")


def _check_json_nul(text: str | None, value: JSON, where: str) -> None:
    # JSON spells NUL as \u0000; only then is the parsed value worth walking.
    if text is not None and "\\u0000" in text and _has_nul(value):
        raise InvalidRecord("invalid_content", f"{where} holds a NUL character")


def from_record(record: dict[str, Any]) -> IdentifyEvent:
    _check_text(record)
    kind = record["kind"]
    if kind not in ("identify", "erase", "alias"):
        raise InvalidRecord("invalid_content", f"kind {kind!r} is not identify, erase or alias")
    workspace_id = record["workspace_id"]
    if not workspace_id:
        raise InvalidRecord("invalid_content", "workspace_id is empty")
    user_id = record["user_id"]
    anonymous_ids = tuple(record["anonymous_ids"])
    if not user_id and not anonymous_ids:
        raise InvalidRecord("invalid_content", "neither user_id nor anonymous_ids is set")
    if any(not a for a in anonymous_ids):
        raise InvalidRecord("invalid_content", "anonymous_ids holds an empty id")
    if not record["response_id"]:
        raise InvalidRecord("invalid_content", "response_id is empty")
    previous_id = _previous_id(record, kind)
    operations = []
    for index, raw in enumerate(record["operations"]):
        where = f"operations[{index}]"
        if raw["op"] == "unknown":
            raise InvalidRecord("invalid_content", f"{where}.op is not an operation this reader knows")
        op = _OP_OF.get(raw["op"]) or Op(raw["op"])
        trait = raw["trait"]
        if op in _OPS_NEEDING_TRAIT and not trait:
            raise InvalidRecord("invalid_content", f"{where}: {op.value} needs a trait name")
        if op in _OPS_NEEDING_VALUE and raw["value_json"] is None:
            raise InvalidRecord("invalid_content", f"{where}: {op.value} of {trait!r} needs value_json")
        value = _loads(raw["value_json"], f"{where}.value_json")
        _check_json_nul(raw["value_json"], value, f"{where}.value_json")
        if op is Op.ADD and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise InvalidRecord("invalid_content", f"{where}: add of {trait!r} needs a number")
        operations.append(Operation(op, trait, value))
    context = _loads(record["context_json"], "context_json")
    _check_json_nul(record["context_json"], context, "context_json")
    if context is not None and not isinstance(context, dict):
        raise InvalidRecord("invalid_content", "context_json is not a JSON object")
    created = record["profile_created_at"]
    return IdentifyEvent(
        kind=Kind(kind),
        workspace_id=workspace_id,
        user_id=user_id or None,
        anonymous_ids=anonymous_ids,
        dialect=record["dialect"],
        event_time_ms=_millis(record["event_time"]),
        received_time_ms=_millis(record["received_time"]),
        profile_created_at_ms=None if created is None else _millis(created),
        response_id=record["response_id"],
        event_index=record["event_index"],
        dedupe_key=record["dedupe_key"] or None,
        context=context,
        operations=tuple(operations),
        previous_id=previous_id,
    )


def _previous_id(record: dict[str, Any], kind: str) -> str | None:
    previous_id: str | None = record.get("previous_id")
    if kind != "alias":
        if previous_id is not None:
            raise InvalidRecord(
                "invalid_content", f"previous_id is set on a record of kind {kind}; only an alias has one"
            )
        return None
    if not previous_id:
        raise InvalidRecord("invalid_content", "an alias needs previous_id")
    if len(previous_id) > MAX_ID_CHARS:
        raise InvalidRecord("invalid_content", f"previous_id is longer than {MAX_ID_CHARS} characters")
    if "\x00" in previous_id:
        raise InvalidRecord("invalid_content", "previous_id holds a NUL character")
    if not record["user_id"]:
        raise InvalidRecord("invalid_content", "an alias needs user_id")
    if record["operations"]:
        raise InvalidRecord("invalid_content", "an alias carries no operations")
    return previous_id
