"""One fuzz target per compiled entry point that sees outside input.

Each takes the fuzzer's bytes, runs the compiled code and its Python reference
on the same input, and raises ``Mismatch`` when they disagree: the same value,
or the same error class and message, for every input. AddressSanitizer, loaded
into the process, stops it at the first bad memory access of the compiled code.

- ``avro_read``: Avro bodies from any producer (``_v1c.read_event``, the fast
  decoder) against the reference (``binary.read_record`` with
  ``record.from_record``), and the reference against fastavro's reading.
- ``avro_encode``: events made of request data (``_v1c.encode_body``) against
  the reference's bytes (``binary.encode_body``).
- ``dialects``: request bodies of every dialect, parsed with the compiled checks
  (``_checks``: ``plainly_fine``, ``plainly_small``, ``check_typed``,
  ``thrivestack_fields``; ``_merge.set_operations``) and with Python alone.
- ``stamps``: stored stamp text (``_merge.expand_text``, ``compact_text``) and the
  merge loop (``_merge.apply_operations``) against ``merge.py``'s functions.
"""

from __future__ import annotations

import contextlib
import io
import struct
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from fastavro import schemaless_reader

from traitstream import events, merge
from traitstream.avro import codec, fast
from traitstream.avro.record import from_record
from traitstream.avro.schemas import LOCAL_SCHEMA_ID
from traitstream.dialects import amplitude, common, datafast, segment, thrivestack, traits
from traitstream.dialects.common import Envelope
from traitstream.errors import InvalidRecord
from traitstream.events import IdentifyEvent, Kind, Op, Operation

HEADER = b"\x00" + struct.pack(">I", LOCAL_SCHEMA_ID)
ENVELOPE = Envelope("fuzz", "00000000-0000-4000-8000-000000000000", 1_700_000_000_000)


class Mismatch(AssertionError):
    """The compiled code and its Python reference disagree on one input."""


def outcome(call: Callable[[], Any]) -> Any:
    """What ``call`` gives: its value, or its error's class and message."""
    try:
        return ("value", call())
    except Exception as exc:  # any error is an outcome to compare
        return ("error", type(exc).__name__, str(exc))


# --- Avro ----------------------------------------------------------------------------


def avro_read(data: bytes) -> None:
    assert fast.READ is not None, "the compiled codec is not in use"
    record = HEADER + data
    try:
        event = fast.READ(record, len(HEADER))
    except (ValueError, LookupError):
        event = None  # declined: the reference decides
    try:
        reference: Any = codec.decode_reference(record)
    except InvalidRecord as exc:
        reference = exc
    if event is not None and event != reference:
        raise Mismatch(f"fast decoder read {event!r}, the reference {reference!r}, from {record!r}")
    # The reference may refuse what fastavro reads (fastavro takes a negative enum
    # index as Python's negative indexing: -3 reads as the third symbol from the
    # end), never the other way round, and never read another event.
    if not isinstance(reference, InvalidRecord) and reference != _fastavro_read(record):
        raise Mismatch(
            f"the reference read {reference!r}, fastavro {_fastavro_read(record)!r}, from {record!r}"
        )


def _fastavro_read(record: bytes) -> Any:
    """What fastavro makes of the body, checked by ``from_record``: an event or the refusal."""
    buffer = io.BytesIO(record)
    buffer.seek(len(HEADER))
    try:
        decoded = schemaless_reader(buffer, codec._FIRST, None)
        if buffer.tell() != len(record):
            return InvalidRecord("avro_decode", "trailing bytes")
        return from_record(decoded)  # type: ignore[arg-type]
    except InvalidRecord as exc:
        return exc
    except Exception as exc:  # fastavro raises many types for corrupt input
        return InvalidRecord("avro_decode", str(exc))


class _Bytes:
    """Values drawn from the fuzzer's bytes, in order; zeros once they run out."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def byte(self) -> int:
        value = self.data[self.pos] if self.pos < len(self.data) else 0
        self.pos += 1
        return value

    def chunk(self) -> bytes:
        size = self.byte()
        out = self.data[self.pos : self.pos + size]
        self.pos += size
        return out

    def text(self) -> str:
        return self.chunk().decode("utf-8", errors="surrogateescape" if self.byte() & 1 else "replace")

    def integer(self) -> int:
        raw = self.chunk()[:9]
        return int.from_bytes(raw, "little", signed=True) if raw else 0

    def json(self) -> Any:
        raw = self.chunk()
        with contextlib.suppress(orjson.JSONDecodeError):
            return orjson.loads(raw)
        return raw.decode("utf-8", errors="replace")


def _event(source: _Bytes) -> IdentifyEvent:
    ops = list(Op)
    operations = []
    for _ in range(source.byte() % 8):
        op = ops[source.byte() % len(ops)]
        trait = None if op is Op.CLEAR_ALL and source.byte() & 1 else source.text()
        operations.append(Operation(op, trait, None if op in (Op.UNSET, Op.CLEAR_ALL) else source.json()))
    return IdentifyEvent(
        kind=Kind.ERASE if source.byte() & 1 else Kind.IDENTIFY,
        workspace_id=source.text(),
        user_id=source.text() if source.byte() & 1 else None,
        anonymous_ids=tuple(source.text() for _ in range(source.byte() % 3)),
        dialect=source.text(),
        event_time_ms=source.integer(),
        received_time_ms=source.integer(),
        profile_created_at_ms=source.integer() if source.byte() & 1 else None,
        response_id=source.text(),
        event_index=source.integer(),
        dedupe_key=source.text() if source.byte() & 1 else None,
        context=source.json() if source.byte() & 1 else None,
        operations=tuple(operations),
    )


def avro_encode(data: bytes) -> None:
    assert fast.ENCODE is not None, "the compiled codec is not in use"
    event = _event(_Bytes(data))
    try:
        written = fast.ENCODE(event, HEADER)
    except Exception:  # declined: the reference encodes (or refuses) it
        return
    reference = outcome(lambda: codec.encode_reference(event, HEADER))
    if reference != ("value", written):
        raise Mismatch(f"fast encoder wrote {written!r}, the reference gave {reference!r}, for {event!r}")


# --- the dialects' checks ------------------------------------------------------------

_CHECKED_MODULES = (common, traits, thrivestack)


@contextlib.contextmanager
def python_checks() -> Iterator[None]:
    """The dialects with their Python checks only, as with ``TRAITSTREAM_IMPL=python``."""
    saved = [module._checks for module in _CHECKED_MODULES], events._merge
    try:
        for module in _CHECKED_MODULES:
            module._checks = None  # type: ignore[assignment]
        events._merge = None  # type: ignore[assignment]
        yield
    finally:
        for module, kept in zip(_CHECKED_MODULES, saved[0], strict=True):
            module._checks = kept  # type: ignore[assignment]
        events._merge = saved[1]  # type: ignore[assignment]


def _parses(body: bytes) -> list[Callable[[], Any]]:
    text = body.decode("utf-8", errors="replace")
    return [
        lambda: thrivestack.parse(body, ENVELOPE),
        lambda: datafast.parse(body, ENVELOPE, "site"),
        lambda: amplitude.parse_identify({"identification": text}, ENVELOPE),
        lambda: segment.parse(segment.read_batch(body), ENVELOPE),
        lambda: segment.parse(segment.read_identify(body), ENVELOPE),
    ]


def dialects(data: bytes) -> None:
    compiled = [outcome(parse) for parse in _parses(data)]
    with python_checks():
        python = [outcome(parse) for parse in _parses(data)]
    if compiled != python:
        raise Mismatch(
            f"the dialects parse {data!r} as {compiled!r} with the compiled checks, {python!r} without"
        )
    with contextlib.suppress(orjson.JSONDecodeError):
        _values(orjson.loads(data))


def _values(value: Any) -> None:
    """The compiled checks on the body's value itself, against their references."""
    checks = common._checks
    assert checks is not None, "the compiled checks are not in use"
    for limit in (0, 3, 40):
        fine = outcome(lambda limit=limit: checks.plainly_fine(value, limit))  # type: ignore[misc]
        reference = outcome(lambda limit=limit: common.check_value(value, "v", limit))  # type: ignore[misc]
        if fine == ("value", True) and reference[0] != "value":
            raise Mismatch(f"plainly_fine passed {value!r} (limit {limit}), check_value gave {reference!r}")
    for limit in (0, 64, 4096):
        if checks.plainly_small(value, limit):
            size = common.json_size(value, "v")
            if size > limit:
                raise Mismatch(f"plainly_small passed {value!r} for {limit} bytes, it takes {size}")
    if isinstance(value, dict):
        compiled = outcome(lambda: traits.check_typed(value, "traits"))
        python = outcome(lambda: traits.check_typed_python(value, "traits"))
        if compiled != python:
            raise Mismatch(f"check_typed of {value!r}: {compiled!r} compiled, {python!r} in Python")
        pairs = outcome(lambda: events.set_operations(value.items()))
        if pairs != outcome(lambda: events.set_operations_python(value.items())):
            raise Mismatch(f"set_operations of {value!r} differ")


# --- stored stamps and the merge loop -------------------------------------------------


def stamps(data: bytes) -> None:
    compiled_merge = merge._merge
    assert compiled_merge is not None, "the compiled merge is not in use"
    text = data.decode("utf-8", errors="surrogateescape" if data[:1] == b"\xff" else "replace")
    expanded = outcome(lambda: compiled_merge.expand_text(text))
    if expanded[0] != "value":
        raise Mismatch(
            f"expand_text raised {expanded!r} for {text!r}: it returns None for what it does not take"
        )
    if expanded[1] is not None:
        reference = outcome(lambda: merge.expand_stamps(orjson.loads(text)))
        if reference != expanded:
            raise Mismatch(f"expand_text read {expanded!r}, the reference {reference!r}, from {text!r}")
        _compact(*expanded[1])
    with contextlib.suppress(orjson.JSONDecodeError):
        value = orjson.loads(data)
        if isinstance(value, dict):
            _merge_loop(value)


def _compact(written: dict[str, Any], once: dict[str, Any], cleared: Any, sources: dict[str, Any]) -> None:
    compiled_merge = merge._merge
    assert compiled_merge is not None
    text = compiled_merge.compact_text(written, once, cleared, sources)
    if text is not None:
        reference = orjson.dumps(merge.compact_stamps(written, once, cleared, sources)).decode()
        if text != reference:
            raise Mismatch(f"compact_text wrote {text!r}, the reference {reference!r}")


def _merge_loop(value: dict[str, Any]) -> None:
    """The keys of a JSON object as trait names, its values as the sets, unsets and
    list operations of two events, applied with the compiled loop and without."""
    ops = list(Op)
    operations = tuple(
        Operation(ops[index % len(ops)], key if index % len(ops) != 9 else None, item)
        for index, (key, item) in enumerate(value.items())
    )
    history = [
        IdentifyEvent("ws", "u", "fuzz", 5, 5, "b", operations=operations),
        IdentifyEvent("ws", "u", "fuzz", 5, 5, "a", operations=operations[::-1]),
    ]

    def applied() -> Any:
        profile = merge.Profile()
        for event in history:
            profile.apply_event(event)
        return profile, profile.meta_text()

    compiled = outcome(applied)
    saved = merge._merge
    merge._merge = None  # type: ignore[assignment]
    try:
        python = outcome(applied)
    finally:
        merge._merge = saved
    if compiled != python:
        raise Mismatch(f"the merge of {value!r} gave {compiled!r} compiled, {python!r} in Python")


TARGETS: dict[str, Callable[[bytes], None]] = {
    "avro_read": avro_read,
    "avro_encode": avro_encode,
    "dialects": dialects,
    "stamps": stamps,
}
