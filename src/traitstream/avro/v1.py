"""The bundled v1 schema's records, written and read by hand.

Two revisions of v1 are written and read here (``avro/schemas.py``): the first,
which carries identifies and erasures, and the current one, which appends the
``alias`` kind and the ``previous_id`` field and carries aliases. The functions
take the first revision's layout unless told ``current``; ``encode_body`` writes
an alias in the current one.

fastavro interprets the schema for every record, which made Avro the largest cost
of the edge and of the worker. Records of exactly the v1 schema (what the edge
writes) go through these functions instead; ``codec`` chooses, adds the Confluent
header and turns errors into ``InvalidRecord``. The bytes are fastavro's, byte for
byte (the tests compare both directions on random events).

- ``encode_body``: an event to its Avro body.
- ``read_record``: a body to the record dict fastavro would return, refusing
  what is not a v1 record (``DecodeError``); ``codec.from_record`` checks it.
- ``read_event``: a body straight to the event when the cheapest checks prove it
  valid; otherwise it raises, and ``codec`` takes the two steps above instead.

``encode_body`` and ``read_event`` run once per identify on the edge and once per
delivered record on the workers, so they also exist in C (``_v1c.c``, built at
install when a compiler is there; ``COMPILED`` tells). The Python functions
``encode_body_python`` and ``read_event_python`` are the reference: the C code
does exactly what they do, hands them whatever it does not take, and the tests
compare the two on random and corrupted records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from traitstream.dialects.common import MAX_ID_CHARS
from traitstream.events import JSON, IdentifyEvent, Kind, Op, Operation

_KINDS = ("identify", "erase", "unknown")
_KINDS_CURRENT = (*_KINDS, "alias")
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
_ALIAS_BYTE = _KINDS_CURRENT.index("alias") * 2
_OP_BYTE = {Op(name): bytes([index * 2]) for index, name in enumerate(_OPS[:-1])}
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


def encode_body_python(event: IdentifyEvent, header: bytes = b"") -> bytes:
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


def encode_alias_python(event: IdentifyEvent, header: bytes = b"") -> bytes:
    """``header`` then the Avro body of an alias in the current revision: the first
    revision's fields, with the alias symbol, then ``previous_id``."""
    out = bytearray(encode_body_python(event._replace(kind=Kind.IDENTIFY), header))
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
            "op": self.symbol(_OPS),
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
        "kind": r.symbol(_KINDS_CURRENT if current else _KINDS),
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


# --- v1 records that are plainly fine, straight to the event ------------------------------
#
# Nearly every record is valid. ``read_event`` reads one straight into an ``IdentifyEvent``
# (no record dict, JSON parsed from the record's bytes) and checks it with the cheapest
# tests that prove it valid. Anything it cannot prove raises ``ValueError`` or
# ``IndexError``, and ``decode`` then takes the full path, which names the first
# problem exactly as before: the fast path decides nothing about invalid records.
# (An unknown enum byte is a ``KeyError``: ``decode`` catches ``LookupError``.)
# Every check of ``read_record`` and ``from_record`` has its counterpart here;
# ``tests/unit/test_codec.py`` compares both paths on random and corrupted records.
# Most records are read as many times as they are delivered, so this is a hot path.

_FAST_KINDS = {0: Kind.IDENTIFY, 2: Kind.ERASE}
_FAST_KINDS_CURRENT = _FAST_KINDS | {_ALIAS_BYTE: Kind.ALIAS}
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
    value, pos = _long_at(data, pos)
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


def read_event_python(data: bytes, start: int, current: bool = False) -> IdentifyEvent:
    """The event of a valid v1 record (of the current revision when ``current``, else
    of the first) whose body starts at ``start``; raises ``ValueError`` or
    ``LookupError`` for any record it cannot prove valid."""
    kind = (_FAST_KINDS_CURRENT if current else _FAST_KINDS)[data[start]]
    workspace_id, pos = _id_at(data, start + 1)
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
    previous_id = None
    if current:
        previous_id, pos = _optional_text_at(data, pos)
        if previous_id is not None and (not previous_id or len(previous_id) > MAX_ID_CHARS):
            raise _NotPlain
    if (kind is Kind.ALIAS) != (previous_id is not None) or (
        kind is Kind.ALIAS and (not user_id or operations)
    ):
        raise _NotPlain
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
        previous_id=previous_id,
    )


# --- the compiled functions, when they were built --------------------------------------

try:
    from traitstream.avro import _v1c
except ImportError:  # installed without a C compiler: the Python functions serve alone
    _v1c = None  # type: ignore[assignment]

COMPILED = _v1c is not None
"""Whether ``encode_body`` and ``read_event`` run in C."""

if _v1c is not None:
    _v1c.bind(
        IdentifyEvent,
        Operation,
        tuple(_FAST_KINDS[byte] for byte in sorted(_FAST_KINDS)),
        tuple(Op(name) for name in _OPS[:-1]),
        {Kind(name): index for index, name in enumerate(_KINDS[:-1])},
        {Op(name): index for index, name in enumerate(_OPS[:-1])},
        orjson.loads,
        orjson.dumps,
        _NotPlain,
        MAX_ID_CHARS,
    )


def encode_body(event: IdentifyEvent, header: bytes = b"") -> bytes:
    """``header`` then the Avro body of ``event`` in the v1 schema (``encode_body_python``):
    an alias in the current revision (``encode_alias_python``), anything else in the first."""
    if event.kind is Kind.ALIAS:
        return encode_alias_python(event, header)
    if _v1c is not None:
        try:
            return _v1c.encode_body(event, header)
        except Exception:  # not an ordinary event: the reference decides, and raises what it raises
            pass
    return encode_body_python(event, header)


read_event: Callable[[bytes, int], IdentifyEvent] = read_event_python if _v1c is None else _v1c.read_event
"""The event of a valid v1 record whose body starts at ``start`` (``read_event_python``)."""
