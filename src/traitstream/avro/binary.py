"""The bundled v1 schema's Avro binary, written and read by hand: the reference codec.

Two revisions of v1 are written and read here (``avro/schemas.py``): the first,
which carries identifies and erasures, and the current one, which appends the
``alias`` kind and the ``previous_id`` field and carries aliases.

fastavro interprets the schema for every record: on the bench's identifies its
writer cost five to six times this encoder's CPU (docs/performance.md). Records
of exactly one of the two revisions (what the edge writes) go through these
functions; ``codec`` adds the Confluent header, turns errors into
``InvalidRecord``, and uses fastavro only for other writer schemas, which need
resolving. The bytes and records are fastavro's (tests/unit/test_bench.py
compares both on random events), and the compiled fast path (``avro/fast.py``)
gives what these give.

- ``encode_body``: an identify or erasure to its body in the first revision;
  ``encode_alias``: an alias to its body in the current one.
- ``read_record``: a body to the record dict fastavro would return, refusing
  what is not a v1 record (``DecodeError``); ``record.from_record`` checks it.

A new field of the schema is a line in each, in the schema's order: in the
encoder its encoding (``_optional_string`` for a nullable string), in
``read_record`` its read (``r.optional_string()``).
"""

from __future__ import annotations

from typing import Any

import orjson

from traitstream.events import JSON, IdentifyEvent, Kind, Op

KINDS = ("identify", "erase", "unknown")
KINDS_CURRENT = (*KINDS, "alias")
OPS = (
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
_ALIAS_BYTE = KINDS_CURRENT.index("alias") * 2
_OP_BYTE = {Op(name): bytes([index * 2]) for index, name in enumerate(OPS[:-1])}
_NO_VALUE = frozenset({Op.UNSET, Op.CLEAR_ALL})
# What a timestamp-millis reader can turn into a date (years 1 to 9999).
_MIN_MILLIS = -62_135_596_800_000
_MAX_MILLIS = 253_402_300_799_999


_SMALL = tuple(bytes((n << 1,)) for n in range(64))
"""The one-byte encodings of 0 to 63: most lengths, counts and indexes."""


class DecodeError(ValueError):
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


def encode_body(event: IdentifyEvent, header: bytes = b"") -> bytes:
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
                if len(names) >= _TRAIT_NAMES_KEPT:
                    names.clear()  # as the other memos here: start again rather than freeze the first
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


def encode_alias(event: IdentifyEvent, header: bytes = b"") -> bytes:
    """``header`` then the Avro body of an alias in the current revision: the first
    revision's fields, with the alias symbol, then ``previous_id``."""
    out = bytearray(encode_body(event._replace(kind=Kind.IDENTIFY), header))
    out[len(header)] = _ALIAS_BYTE
    out += _optional_string(event.previous_id)
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
            raise DecodeError(f"a string of {size} bytes runs past the end of the record")
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
        raise DecodeError(f"union branch {branch} does not exist")

    def symbol(self, symbols: tuple[str, ...]) -> str:
        index = self.long()
        if not 0 <= index < len(symbols):
            raise DecodeError(f"enum index {index} is out of range")
        return symbols[index]

    def millis(self) -> int:
        value = self.long()
        if not _MIN_MILLIS <= value <= _MAX_MILLIS:
            raise DecodeError("date value out of range")
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
                raise DecodeError(f"an array block of {count} items runs past the end of the record")
            for _ in range(count):
                items.append(read())

    def operation(self) -> dict[str, Any]:
        return {
            "op": self.symbol(OPS),
            "trait": self.optional_string(),
            "value_json": self.optional_string(),
        }


def read_record(data: bytes, start: int, current: bool = False) -> tuple[dict[str, Any], int]:
    """Read one v1 record (of the current revision when ``current``, else of the
    first) from ``data[start:]``: (the record, where it ended). Raises
    ``DecodeError`` (or ``IndexError``, ``UnicodeDecodeError``) for bytes that are
    not one."""
    r = _Reader(data, start)
    record = {
        "kind": r.symbol(KINDS_CURRENT if current else KINDS),
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
        "previous_id": r.optional_string() if current else None,
    }
    return record, r.pos


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
