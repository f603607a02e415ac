"""Identify events to and from Avro in the Confluent wire format.

Wire format: magic byte 0, the writer schema id as a 4-byte big-endian int, then
the Avro binary body. ``decode`` reads any writer schema the ``SchemaSource``
knows, resolved against the bundled v1 reader schema, and validates the content:
whatever it returns is safe to apply; whatever is wrong raises ``InvalidRecord``.

Records of exactly the v1 schema (what the edge writes) are encoded and decoded by
the hand-written functions at the end of this module: fastavro interprets the
schema for every record, which made Avro the largest cost of the edge and of the
worker. They produce and read the very same bytes as fastavro (the tests compare
them); any other writer schema goes through fastavro.
"""

from __future__ import annotations

import io
import struct
from typing import Any

import orjson
from fastavro import schemaless_reader, schemaless_writer

from traitstream.avro.schemas import SchemaSource, load_v1_text, parse
from traitstream.dialects.common import MAX_ID_CHARS
from traitstream.errors import InvalidRecord
from traitstream.events import JSON, IdentifyEvent, Kind, Op, Operation

MAGIC = 0
_HEADER = struct.Struct(">bI")
_READER = parse(load_v1_text())
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
    }


def encode(event: IdentifyEvent, schema_id: int, writer_schema: Any = _READER) -> bytes:
    if writer_schema is _READER:
        return _encode_v1(event, _HEADER.pack(MAGIC, schema_id))
    out = io.BytesIO()
    out.write(_HEADER.pack(MAGIC, schema_id))
    schemaless_writer(out, writer_schema, to_record(event))
    return out.getvalue()


_v1_writers: dict[int, tuple[Any, bool]] = {}


def _is_v1(writer: Any) -> bool:
    """Whether a parsed writer schema is the bundled v1 schema (checked once per
    schema object; the object is kept so that its id cannot be reused)."""
    if writer is _READER:
        return True
    known = _v1_writers.get(id(writer))
    if known is None or known[0] is not writer:
        known = (writer, writer == _READER)
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
    if _is_v1(writer):
        try:
            return _fast_v1(data)
        except (ValueError, LookupError):
            pass  # not plainly fine: the full path finds out why
    return _decode_checked(data, writer)


def _decode_checked(data: bytes, writer: Any) -> IdentifyEvent:
    """Decode the body after the header with ``writer`` and check every field, in the
    order that decides which problem a record is refused for."""
    record: Any
    if _is_v1(writer):
        try:
            record, end = _decode_v1(data, _HEADER.size)
        except (_DecodeError, IndexError, UnicodeDecodeError) as exc:
            raise InvalidRecord("avro_decode", f"Avro body does not decode: {exc}") from exc
    else:
        buffer = io.BytesIO(data)
        buffer.seek(_HEADER.size)
        try:
            record = schemaless_reader(buffer, writer, None if writer is _READER else _READER)
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
    if kind not in ("identify", "erase"):
        raise InvalidRecord("invalid_content", f"kind {kind!r} is not identify or erase")
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
    )


# --- the v1 schema by hand -----------------------------------------------------------

_KINDS = ("identify", "erase", "unknown")
_OPS = (
    "set",
    "set_once",
    "unset",
    "add",
    "append",
    "prepend",
    "pre_insert",
    "post_insert",
    "remove",
    "clear_all",
    "unknown",
)
_KIND_BYTE = {Kind.IDENTIFY: b"\x00", Kind.ERASE: b"\x02"}
_OP_BYTE = {Op(name): bytes([index * 2]) for index, name in enumerate(_OPS[:-1])}
_NO_VALUE = frozenset({Op.UNSET, Op.CLEAR_ALL})
# What a timestamp-millis reader can turn into a date (years 1 to 9999).
_MIN_MILLIS = -62_135_596_800_000
_MAX_MILLIS = 253_402_300_799_999


_SMALL = tuple(bytes((n << 1,)) for n in range(64))
"""The one-byte encodings of 0 to 63: most lengths, counts and indexes."""


class _DecodeError(ValueError):
    """The bytes are not a v1 record."""


def _long(value: int) -> bytes:
    if 0 <= value < 64:
        return _SMALL[value]
    encoded = _LONGS.get(value)
    if encoded is None:
        encoded = _varint((value << 1) ^ (value >> 63))
        if len(_LONGS) >= _LONGS_KEPT:
            _LONGS.clear()
        _LONGS[value] = encoded
    return encoded


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_LONGS: dict[int, bytes] = {}
"""Encodings of recent larger longs. Most are times, and the identifies of one
request share their received time (often their event time too): the loop above
costs more than a whole trait, three times per identify."""
_LONGS_KEPT = 4096


def _string(value: str) -> bytes:
    data = value.encode()
    size = len(data)
    return (_SMALL[size] if size < 64 else _long(size)) + data


def _optional_string(value: str | None) -> bytes:
    return b"\x00" if value is None else b"\x02" + _string(value)


def _encode_v1(event: IdentifyEvent, header: bytes = b"") -> bytes:
    """``header`` then the Avro body of ``event`` in the v1 schema.

    The edge's hot path: JSON values go from ``orjson.dumps`` straight into the
    buffer (no round trip through ``str``), and trait names, which repeat from
    one identify to the next, are encoded once."""
    out = bytearray(header)
    out += _KIND_BYTE[event.kind]
    out += _string(event.workspace_id)
    out += _optional_string(event.user_id)
    if event.anonymous_ids:
        out += _long(len(event.anonymous_ids))
        for anonymous_id in event.anonymous_ids:
            out += _string(anonymous_id)
    out += b"\x00"
    out += _string(event.dialect)
    out += _long(event.event_time_ms)
    out += _long(event.received_time_ms)
    if event.profile_created_at_ms is None:
        out += b"\x00"
    else:
        out += b"\x02"
        out += _long(event.profile_created_at_ms)
    out += _string(event.response_id)
    out += _long(event.event_index)
    out += _optional_string(event.dedupe_key)
    if event.context is None:
        out += b"\x00"
    else:
        _some_json(out, event.context)
    operations = event.operations
    if operations:
        out += _long(len(operations))
        names, dumps, small = _TRAIT_NAMES, orjson.dumps, _SOME_SMALL
        for operation in operations:
            op = operation.op
            out += _OP_BYTE[op]
            name = names.get(operation.trait)
            if name is None:
                name = _optional_string(operation.trait)
                if len(names) < _TRAIT_NAMES_KEPT:
                    names[operation.trait] = name
            out += name
            if op in _NO_VALUE:
                out += b"\x00"
            else:  # _some_json, inlined: this loop runs once per trait
                text = dumps(operation.value)
                size = len(text)
                out += small[size] if size < 64 else b"\x02" + _long(size)
                out += text
    out += b"\x00"
    return bytes(out)


_SOME_SMALL = tuple(b"\x02" + bytes((n << 1,)) for n in range(64))
"""The union branch "present" and a one-byte length: most optional strings start so."""
_TRAIT_NAMES: dict[str | None, bytes] = {}
_TRAIT_NAMES_KEPT = 4096


def _some_json(out: bytearray, value: JSON) -> None:
    """Append ``value`` as the present branch of an optional JSON string."""
    text = orjson.dumps(value)
    size = len(text)
    out += _SOME_SMALL[size] if size < 64 else b"\x02" + _long(size)
    out += text


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos

    def long(self) -> int:
        value, self.pos = _long_at(self.data, self.pos)
        return value

    def string(self) -> str:
        byte = self.data[self.pos]
        if byte < 0x80:
            self.pos += 1
            size = byte >> 1 if not byte & 1 else -1
        else:
            size = self.long()
        end = self.pos + size
        if size < 0 or end > len(self.data):
            raise _DecodeError(f"a string of {size} bytes runs past the end of the record")
        text = self.data[self.pos : end].decode()
        self.pos = end
        return text

    def optional_string(self) -> str | None:
        branch = self.data[self.pos]
        if branch == 0:
            self.pos += 1
            return None
        if branch == 2:
            self.pos += 1
            return self.string()
        text: str | None = self.union(self.string)  # a longer encoding of the branch index
        return text

    def union(self, read: Any) -> Any:
        branch = self.long()
        if branch == 0:
            return None
        if branch == 1:
            return read()
        raise _DecodeError(f"union branch {branch} does not exist")

    def symbol(self, symbols: tuple[str, ...]) -> str:
        index = self.long()
        if not 0 <= index < len(symbols):
            raise _DecodeError(f"enum index {index} is out of range")
        return symbols[index]

    def millis(self) -> int:
        value = self.long()
        if not _MIN_MILLIS <= value <= _MAX_MILLIS:
            raise _DecodeError("date value out of range")
        return value

    def array(self, read: Any) -> list[Any]:
        items: list[Any] = []
        while True:
            count = self.long()
            if count == 0:
                return items
            if count < 0:  # a block that states its size in bytes as well
                count = -count
                self.long()
            if count > len(self.data) - self.pos:
                raise _DecodeError(f"an array block of {count} items runs past the end of the record")
            for _ in range(count):
                items.append(read())

    def operation(self) -> dict[str, Any]:
        return {
            "op": self.symbol(_OPS),
            "trait": self.optional_string(),
            "value_json": self.optional_string(),
        }


def _decode_v1(data: bytes, start: int) -> tuple[dict[str, Any], int]:
    """Read one v1 record from ``data[start:]``: (the record, where it ended).
    Raises ``_DecodeError`` (or ``IndexError``, ``UnicodeDecodeError``) for bytes
    that are not one."""
    r = _Reader(data, start)
    record = {
        "kind": r.symbol(_KINDS),
        "workspace_id": r.string(),
        "user_id": r.optional_string(),
        "anonymous_ids": r.array(r.string),
        "dialect": r.string(),
        "event_time": r.millis(),
        "received_time": r.millis(),
        "profile_created_at": r.union(r.millis),
        "response_id": r.string(),
        "event_index": r.long(),
        "dedupe_key": r.optional_string(),
        "context_json": r.optional_string(),
        "operations": r.array(r.operation),
    }
    return record, r.pos


# --- v1 records that are plainly fine, straight to the event ------------------------------
#
# Nearly every record is valid. ``_fast_v1`` reads one straight into an ``IdentifyEvent``
# (no record dict, JSON parsed from the record's bytes) and checks it with the cheapest
# tests that prove it valid. Anything it cannot prove raises ``ValueError`` or
# ``IndexError``, and ``decode`` then takes the full path, which names the first
# problem exactly as before: the fast path decides nothing about invalid records.
# (An unknown enum byte is a ``KeyError``: ``decode`` catches ``LookupError``.)
# Every check of ``_decode_v1`` and ``from_record`` has its counterpart here;
# ``tests/unit/test_codec.py`` compares both paths on random and corrupted records.
# Most records are read as many times as they are delivered, so this is a hot path.

_FAST_KINDS = {0: Kind.IDENTIFY, 2: Kind.ERASE}
_FAST_OPS = {index * 2: Op(name) for index, name in enumerate(_OPS[:-1])}
"""Each known operation by its one-byte enum index (``unknown`` is left to the full path)."""
_NO_TRAIT_BYTE = _OPS.index("clear_all") * 2
_NO_VALUE_BYTES = frozenset({_OPS.index("unset") * 2, _NO_TRAIT_BYTE})
_ADD_BYTE = _OPS.index("add") * 2
_JSON_NUL = b"\\u0000"


_KNOWN_OPERATIONS: dict[bytes, Operation] = {}
"""Operations decoded before, by their bytes: the same trait set to the same value
(a plan, a country, a flag) recurs across identifies. Only operations whose value is
an immutable scalar are kept, so sharing one between events is safe; the bytes
decide everything the checks look at, so a known operation is a valid one."""
_KNOWN_OPERATIONS_KEPT = 8192
_SCALARS = (str, int, float, bool, type(None))


class _NotPlain(ValueError):
    """The fast path cannot prove the record valid."""


def _long_at(data: bytes, pos: int) -> tuple[int, int]:
    byte = data[pos]
    pos += 1
    n = byte & 0x7F
    shift = 7
    while byte & 0x80:
        byte = data[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        shift += 7
    return (n >> 1) ^ -(n & 1), pos


def _bytes_at(data: bytes, pos: int) -> tuple[bytes, int]:
    byte = data[pos]
    if byte < 0x80 and not byte & 1:
        size = byte >> 1
        pos += 1
    else:
        size, pos = _long_at(data, pos)
        if size < 0:
            raise _NotPlain
    end = pos + size
    if end > len(data):
        raise _NotPlain
    return data[pos:end], end


def _text_at(data: bytes, pos: int) -> tuple[str, int]:
    """A string with no NUL (which the full path refuses)."""
    size = data[pos]
    if size < 0x80 and not size & 1:  # _bytes_at, inlined for the usual one-byte length
        end = pos + 1 + (size >> 1)
        if end > len(data):
            raise _NotPlain
        raw = data[pos + 1 : end]
    else:
        raw, end = _bytes_at(data, pos)
    if b"\x00" in raw:
        raise _NotPlain
    return raw.decode(), end


def _optional_text_at(data: bytes, pos: int) -> tuple[str | None, int]:
    branch = data[pos]
    if branch == 0:
        return None, pos + 1
    if branch == 2:
        return _text_at(data, pos + 1)
    raise _NotPlain


def _id_at(data: bytes, pos: int) -> tuple[str, int]:
    """A non-empty id of at most ``MAX_ID_CHARS`` characters with no NUL."""
    text, pos = _text_at(data, pos)
    if not text or len(text) > MAX_ID_CHARS:
        raise _NotPlain
    return text, pos


def _millis_at(data: bytes, pos: int) -> tuple[int, int]:
    byte = data[pos]  # _long_at, inlined: a timestamp takes six bytes or so
    pos += 1
    n = byte & 0x7F
    shift = 7
    while byte & 0x80:
        byte = data[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        shift += 7
    value = (n >> 1) ^ -(n & 1)
    if not _MIN_MILLIS <= value <= _MAX_MILLIS:
        raise _NotPlain
    return value, pos


def _count_at(data: bytes, pos: int) -> tuple[int, int]:
    """The item count of an array block (a negative count is followed by a byte size)."""
    byte = data[pos]
    if byte < 0x80 and not byte & 1:
        return byte >> 1, pos + 1
    count, pos = _long_at(data, pos)
    if count < 0:
        count = -count
        _size, pos = _long_at(data, pos)
    return count, pos


def _json_at(data: bytes, pos: int) -> tuple[JSON, int]:
    """The JSON value of a present ``value_json`` or ``context_json``, holding no NUL."""
    raw, pos = _bytes_at(data, pos)
    if _JSON_NUL in raw:
        raise _NotPlain  # maybe a NUL, maybe only text that says so: the full path walks it
    return orjson.loads(raw), pos


def _fast_v1(data: bytes) -> IdentifyEvent:
    """The event of a valid v1 record (header included); raises ``ValueError`` or
    ``LookupError`` for any record it cannot prove valid."""
    kind = _FAST_KINDS[data[_HEADER.size]]
    workspace_id, pos = _id_at(data, _HEADER.size + 1)
    user_id, pos = _optional_text_at(data, pos)
    if user_id is not None and len(user_id) > MAX_ID_CHARS:
        raise _NotPlain
    anonymous_ids: list[str] = []
    count, pos = _count_at(data, pos)
    while count:
        for _ in range(count):
            anonymous_id, pos = _id_at(data, pos)
            anonymous_ids.append(anonymous_id)
        count, pos = _count_at(data, pos)
    if not user_id and not anonymous_ids:
        raise _NotPlain
    dialect, pos = _text_at(data, pos)
    event_time, pos = _millis_at(data, pos)
    received_time, pos = _millis_at(data, pos)
    branch = data[pos]
    created: int | None = None
    if branch == 2:
        created, pos = _millis_at(data, pos + 1)
    elif branch == 0:
        pos += 1
    else:
        raise _NotPlain
    response_id, pos = _text_at(data, pos)
    if not response_id:
        raise _NotPlain
    event_index, pos = _long_at(data, pos)
    dedupe_key, pos = _optional_text_at(data, pos)
    branch = data[pos]
    context: JSON = None
    if branch == 2:
        context, pos = _json_at(data, pos + 1)
        if context is not None and type(context) is not dict:
            raise _NotPlain
    elif branch == 0:
        pos += 1
    else:
        raise _NotPlain
    operations: list[Operation] = []
    loads, known = orjson.loads, _KNOWN_OPERATIONS
    count, pos = _count_at(data, pos)
    while count:
        for _ in range(count):
            # Inlined for the usual shapes (this loop runs once per trait): a trait name
            # and a value under 64 bytes, whose length is one byte. A length that runs
            # past the end only shortens the slice (which then matches no known
            # operation: its own lengths would say it is longer); the next read past the
            # end (there is always one, at least the final position check) refuses it.
            start, key = pos, None
            if data[pos + 1] == 2 and (size := data[pos + 2]) < 0x80 and not size & 1:
                after = pos + 3 + (size >> 1)
                if data[after] == 2 and (size := data[after + 1]) < 0x80 and not size & 1:
                    key = data[pos : after + 2 + (size >> 1)]
                    operation = known.get(key)
                    if operation is not None:
                        operations.append(operation)
                        pos = after + 2 + (size >> 1)
                        continue
            code = data[pos]
            op = _FAST_OPS[code]
            trait: str | None
            if data[pos + 1] == 2 and (size := data[pos + 2]) < 0x80 and not size & 1:
                start = pos + 3
                pos = start + (size >> 1)
                raw = data[start:pos]
                if b"\x00" in raw:
                    raise _NotPlain
                trait = raw.decode()
            else:
                trait, pos = _optional_text_at(data, pos + 1)
            if not trait and code != _NO_TRAIT_BYTE:
                raise _NotPlain
            value: JSON = None
            if data[pos] == 2:
                if (size := data[pos + 1]) < 0x80 and not size & 1:
                    start = pos + 2
                    pos = start + (size >> 1)
                    raw = data[start:pos]
                else:
                    raw, pos = _bytes_at(data, pos + 1)
                if _JSON_NUL in raw:
                    raise _NotPlain
                value = loads(raw)
                if code == _ADD_BYTE and type(value) is not int and type(value) is not float:
                    raise _NotPlain
            elif data[pos] == 0 and code in _NO_VALUE_BYTES:
                pos += 1
            else:
                raise _NotPlain
            operation = Operation(op, trait, value)
            operations.append(operation)
            if key is not None and type(value) in _SCALARS:
                if len(known) >= _KNOWN_OPERATIONS_KEPT:
                    known.clear()
                known[key] = operation
        count, pos = _count_at(data, pos)
    if pos != len(data):
        raise _NotPlain
    return IdentifyEvent(
        kind=kind,
        workspace_id=workspace_id,
        user_id=user_id or None,
        anonymous_ids=tuple(anonymous_ids),
        dialect=dialect,
        event_time_ms=event_time,
        received_time_ms=received_time,
        profile_created_at_ms=created,
        response_id=response_id,
        event_index=event_index,
        dedupe_key=dedupe_key or None,
        context=context,
        operations=tuple(operations),
    )
