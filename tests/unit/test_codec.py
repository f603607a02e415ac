from __future__ import annotations

import io
import json
import random
import struct
from collections.abc import Callable, Iterator

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from traitstream.avro import binary, codec, fast
from traitstream.avro.schemas import (
    LOCAL_ALIAS_SCHEMA_ID,
    LOCAL_SCHEMA_ID,
    LocalSchemas,
    load_v1_r1_text,
    load_v1_text,
)
from traitstream.errors import InvalidRecord
from traitstream.events import IdentifyEvent, Kind, Op, Operation

SCHEMAS = LocalSchemas()

EVENT = IdentifyEvent(
    workspace_id="ws",
    user_id="u1",
    anonymous_ids=("dev-1",),
    dialect="amplitude",
    event_time_ms=1_700_000_000_123,
    received_time_ms=1_700_000_000_456,
    profile_created_at_ms=1_600_000_000_000,
    response_id="r1",
    event_index=3,
    dedupe_key="insert-1",
    context={"ip": "127.0.0.1", "nested": {"a": [1, 2]}},
    operations=(
        Operation(Op.SET, "plan", {"tier": "pro", "seats": 3}),
        Operation(Op.SET_ONCE, "first_seen", "2024-01-01"),
        Operation(Op.UNSET, "old"),
        Operation(Op.ADD, "logins", 1),
        Operation(Op.APPEND, "tags", ["a", "b"]),
        Operation(Op.REMOVE, "tags", "c"),
        Operation(Op.CLEAR_ALL),
    ),
)


def test_round_trip_in_confluent_wire_format() -> None:
    data = codec.encode(EVENT, LOCAL_SCHEMA_ID)
    assert data[0] == 0
    assert struct.unpack(">I", data[1:5])[0] == LOCAL_SCHEMA_ID
    assert codec.decode(data, SCHEMAS) == EVENT


def test_erase_round_trips() -> None:
    erase = IdentifyEvent("ws", "u1", "profiles", 1, 1, "r", kind=Kind.ERASE)
    assert codec.decode(codec.encode(erase, LOCAL_SCHEMA_ID), SCHEMAS) == erase


ALIAS = IdentifyEvent(
    workspace_id="ws",
    user_id="u1",
    anonymous_ids=("dev-1",),
    dialect="segment",
    event_time_ms=1_700_000_000_123,
    received_time_ms=1_700_000_000_456,
    response_id="r2",
    event_index=1,
    dedupe_key="alias-1",
    context={"library": {"name": "analytics-python"}},
    kind=Kind.ALIAS,
    previous_id="old-user",
)


def test_an_alias_is_written_in_the_current_revision_and_round_trips() -> None:
    assert codec.writer_id(ALIAS, SCHEMAS) == LOCAL_ALIAS_SCHEMA_ID
    assert codec.writer_id(EVENT, SCHEMAS) == codec.writer_id(EVENT._replace(kind=Kind.ERASE), SCHEMAS)
    assert codec.writer_id(EVENT, SCHEMAS) == LOCAL_SCHEMA_ID
    data = codec.encode(ALIAS, LOCAL_ALIAS_SCHEMA_ID)
    assert codec.decode(data, SCHEMAS) == ALIAS
    # The bytes are fastavro's for the current revision.
    out = io.BytesIO()
    out.write(data[:5])
    schemaless_writer(out, parse_schema(json.loads(load_v1_text())), codec.to_record(ALIAS))
    assert out.getvalue() == data


def test_identifies_keep_the_first_revisions_bytes() -> None:
    """What every worker release reads: the edge writes identifies and erasures as before."""
    out = io.BytesIO()
    out.write(b"\x00" + struct.pack(">I", LOCAL_SCHEMA_ID))
    schemaless_writer(out, parse_schema(json.loads(load_v1_r1_text())), codec.to_record(EVENT))
    assert codec.encode(EVENT, LOCAL_SCHEMA_ID) == out.getvalue()


def test_records_of_the_current_revision_from_other_services_decode() -> None:
    """Identifies written with the current revision (previous_id null) read as identifies."""
    out = io.BytesIO()
    out.write(b"\x00" + struct.pack(">I", LOCAL_ALIAS_SCHEMA_ID))
    schemaless_writer(out, parse_schema(json.loads(load_v1_text())), codec.to_record(EVENT))
    assert codec.decode(out.getvalue(), SCHEMAS) == EVENT


def test_a_reader_of_the_first_revision_sees_an_alias_as_unknown() -> None:
    """What a worker that knows only the first revision makes of an alias it reaches
    through a registry: the enum's default, a kind it refuses (dead-lettered)."""
    body = codec.encode(ALIAS, LOCAL_ALIAS_SCHEMA_ID)[5:]
    old = parse_schema(json.loads(load_v1_r1_text()))
    record = schemaless_reader(io.BytesIO(body), parse_schema(json.loads(load_v1_text())), old)
    assert record["kind"] == "unknown" and "previous_id" not in record
    with pytest.raises(InvalidRecord, match="kind 'unknown'"):
        codec.from_record(record)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"previous_id": None}, "an alias needs previous_id"),
        ({"previous_id": ""}, "an alias needs previous_id"),
        ({"previous_id": "p" * 256}, "previous_id is longer than 255"),
        ({"previous_id": "a\x00b"}, "previous_id holds a NUL"),
        ({"user_id": None}, "an alias needs user_id"),
        ({"operations": [{"op": "set", "trait": "a", "value_json": "1"}]}, "an alias carries no operations"),
        ({"kind": "identify"}, "only an alias has one"),
    ],
)
def test_an_invalid_alias_is_refused(changes: dict, named: str) -> None:
    out = io.BytesIO()
    out.write(b"\x00" + struct.pack(">I", LOCAL_ALIAS_SCHEMA_ID))
    schemaless_writer(out, parse_schema(json.loads(load_v1_text())), codec.to_record(ALIAS) | changes)
    with pytest.raises(InvalidRecord) as caught:
        codec.decode(out.getvalue(), SCHEMAS)
    assert caught.value.reason == "invalid_content"
    assert named in caught.value.message


def test_v1_records_stay_readable_by_the_reader() -> None:
    """A record written by another service with the first revision of the v1 schema
    file itself (not our encoder), using only required fields, decodes with every
    default filled in."""
    schema = parse_schema(json.loads(load_v1_r1_text()))
    record = {
        "kind": "identify",
        "workspace_id": "ws",
        "user_id": "u9",
        "dialect": "billing-service",
        "event_time": 1_700_000_000_000,
        "received_time": 1_700_000_000_000,
        "response_id": "svc-42",
        "operations": [{"op": "add", "trait": "credits", "value_json": "5"}],
    }
    out = io.BytesIO()
    out.write(b"\x00" + struct.pack(">I", LOCAL_SCHEMA_ID))
    schemaless_writer(out, schema, record)
    event = codec.decode(out.getvalue(), SCHEMAS)
    assert event.user_id == "u9" and event.anonymous_ids == () and event.dedupe_key is None
    assert event.operations == (Operation(Op.ADD, "credits", 5),)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not_avro"),
        (b'{"user_id": "x"}', "not_avro"),
        (b"\x00\x00\x00\x00\x09" + b"\x00" * 10, "unknown_schema_id"),
        (b"\x00\x00\x00\x00\x01\xff\xff\xff", "avro_decode"),
    ],
)
def test_undecodable_records_name_their_reason(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidRecord) as caught:
        codec.decode(data, SCHEMAS)
    assert caught.value.reason == reason


def _with(**changes: object) -> bytes:
    record = codec.to_record(EVENT) | changes
    out = io.BytesIO()
    out.write(b"\x00" + struct.pack(">I", LOCAL_SCHEMA_ID))
    schemaless_writer(out, parse_schema(json.loads(load_v1_r1_text())), record)
    return out.getvalue()


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"workspace_id": ""}, "workspace_id is empty"),
        ({"user_id": None, "anonymous_ids": []}, "neither user_id nor anonymous_ids"),
        ({"operations": [{"op": "add", "trait": "n", "value_json": '"x"'}]}, "add of 'n' needs a number"),
        ({"operations": [{"op": "set", "trait": None, "value_json": "1"}]}, "set needs a trait name"),
        ({"operations": [{"op": "set", "trait": "a", "value_json": "{oops"}]}, "not valid JSON"),
        ({"context_json": "[1]"}, "context_json is not a JSON object"),
        ({"user_id": "u" * 256}, "user_id is longer than 255"),
        ({"anonymous_ids": ["a" * 300]}, "anonymous id is longer than 255"),
        ({"user_id": "a\x00b"}, "holds a NUL character"),
        (
            {"operations": [{"op": "set", "trait": "t", "value_json": '"x\\u0000y"'}]},
            "value_json holds a NUL",
        ),
        ({"context_json": '{"ip": "\\u0000"}'}, "context_json holds a NUL"),
    ],
)
def test_valid_avro_with_invalid_content_is_refused(changes: dict, named: str) -> None:
    with pytest.raises(InvalidRecord) as caught:
        codec.decode(_with(**changes), SCHEMAS)
    assert caught.value.reason == "invalid_content"
    assert named in caught.value.message


def test_schema_file_in_the_package_is_the_published_one() -> None:
    from pathlib import Path

    published = Path(__file__).resolve().parents[2] / "schemas" / "identify" / "v1.avsc"
    assert json.loads(published.read_text()) == json.loads(load_v1_text())


# --- the fast path for plainly valid v1 records -------------------------------------


def _outcome(decoder: object, data: bytes) -> object:
    try:
        return decoder(data)  # type: ignore[operator]
    except InvalidRecord as exc:
        return (exc.reason, exc.message)


def _random_record(rng: random.Random, current: bool = False) -> dict:
    """A v1 record, valid or not in any of the ways the checks look for."""

    def text(valid: bool = True) -> str:
        alphabet = "aé中😀-_" if valid else 'aé中😀"\\\x00 '
        return "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 5, 40, 70, 300])))

    def json_text() -> str | None:
        return rng.choice(
            [
                None,
                "1",
                "-2.5",
                "1e5",
                "true",
                "null",
                '"x"',
                '"\\u0000"',
                '"\\\\u0000 is text"',
                '{"a": [1, {"b": "\\u00e9"}]}',
                "[1, 2",
                '"' + text() + '"',
                json.dumps({"k": text(False)}),
                json.dumps("x" * rng.randrange(60, 200)),
                "",
                # Near the compiled reader's plain scalars: parsed in place or by orjson alike.
                "0",
                "-0",
                "007",
                "-",
                "--1",
                " 1",
                "1 ",
                "999999999999999999",
                "-12345678901234567890",
                "tru",
                "nulls",
                '"tab\there"',
                '"del\x7f"',
                '"' + text() + '\\"',
                '"' + "é" * rng.randrange(1, 9) + '"',
            ]
        )

    def operation() -> dict:
        return {
            "op": rng.choice(binary.OPS),
            "trait": rng.choice([None, "", "plan", text(False)]),
            "value_json": json_text(),
        }

    kinds = ["identify", "identify", "erase", "unknown", *(["alias"] * 4 if current else [])]
    return {
        "previous_id": rng.choice([None, "", "p1", text(False), "p" * 256]) if current else None,
        "kind": rng.choice(kinds),
        "workspace_id": rng.choice(["ws", "", text(False)]),
        "user_id": rng.choice([None, "", "u1", text(False), "u" * 256]),
        "anonymous_ids": rng.choice([[], ["d1"], ["d1", ""], [text(False)], ["a" * 256]]),
        "dialect": rng.choice(["thrivestack", text(False)]),
        "event_time": rng.randrange(-(2**45), 2**45),
        "received_time": rng.randrange(0, 2**42),
        "profile_created_at": rng.choice([None, rng.randrange(-(10**12), 10**13)]),
        "response_id": rng.choice(["r1", "", text(False)]),
        "event_index": rng.randrange(-(2**40), 2**40),
        "dedupe_key": rng.choice([None, "", "k", text(False)]),
        "context_json": rng.choice([None, "null", "[1]", '{"ip": "1.2.3.4"}', json_text()]),
        "operations": [
            operation() for _ in range(rng.choice([0, 0, 0, 1, 3] if current else [0, 1, 3, 9, 70]))
        ],
    }


def _corrupt(rng: random.Random, data: bytes) -> bytes:
    body = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        where = rng.randrange(5, len(body) + 1)
        action = rng.randrange(4)
        if action == 0 and where < len(body):
            body[where] = rng.randrange(256)
        elif action == 1:
            del body[where : where + rng.randrange(1, 4)]
        elif action == 2:
            body[where:where] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3)))
        else:
            del body[where:]
    return bytes(body)


def _records(count: int, seed: int, current: bool = False) -> Iterator[tuple[dict, bytes]]:
    """Random v1 records (of the first revision, or the current one), valid or not,
    half of them corrupted after encoding."""
    rng = random.Random(seed)
    schema = parse_schema(json.loads(load_v1_text() if current else load_v1_r1_text()))
    for index in range(count):
        out = io.BytesIO()
        out.write(b"\x00" + struct.pack(">I", LOCAL_ALIAS_SCHEMA_ID if current else LOCAL_SCHEMA_ID))
        record = _random_record(rng, current) if index % 3 else codec.to_record(ALIAS if current else EVENT)
        schemaless_writer(out, schema, record)
        yield record, out.getvalue() if index % 2 else _corrupt(rng, out.getvalue())


compiled = pytest.mark.skipif(fast.READ is None, reason="the compiled codec is not in use (TRAITSTREAM_IMPL)")


def test_decode_gives_what_the_reference_gives() -> None:
    """Whichever path decodes, the answer is the reference's: the same event, or
    the same reason and message, on random and corrupted records."""
    taken = 0
    for record, data in _records(3000, seed=11):
        expected = _outcome(lambda d: codec.decode_reference(d, codec._FIRST), data)
        assert _outcome(lambda d: codec.decode(d, SCHEMAS), data) == expected, record
        taken += isinstance(_read_outcome(fast.READ, data), IdentifyEvent)
    if fast.READ is not None:
        assert taken > 300  # the fast path took many, and declined many more


def test_records_of_the_current_revision_decode_by_the_reference() -> None:
    aliases = 0
    for record, data in _records(3000, seed=17, current=True):
        outcome = _outcome(lambda d: codec.decode(d, SCHEMAS), data)
        assert outcome == _outcome(lambda d: codec.decode_reference(d, codec._READER), data), record
        aliases += isinstance(outcome, IdentifyEvent) and outcome.kind is Kind.ALIAS
    assert aliases > 100


def test_encode_gives_what_the_reference_gives() -> None:
    taken = 0
    for record, _data in _records(2000, seed=13):
        try:
            event = codec.from_record(record)
        except InvalidRecord:
            continue
        header = b"\x00" + struct.pack(">I", LOCAL_SCHEMA_ID)
        assert codec.encode(event, LOCAL_SCHEMA_ID) == codec.encode_reference(event, header), record
        taken += 1
    assert taken > 300


@compiled
def test_the_fast_path_takes_what_the_edge_writes() -> None:
    assert fast.READ is not None
    event = EVENT
    data = codec.encode(event, LOCAL_SCHEMA_ID)
    assert fast.READ(data, 5) == event
    anonymous = IdentifyEvent(
        workspace_id="ws",
        user_id=None,
        anonymous_ids=("d1", "d2"),
        dialect="segment",
        event_time_ms=-1,
        received_time_ms=0,
        response_id="r",
        operations=(Operation(Op.UNSET, "a"), Operation(Op.SET, "long", "x" * 300)),
        kind=Kind.ERASE,
    )
    assert fast.READ(codec.encode(anonymous, LOCAL_SCHEMA_ID), 5) == anonymous


def test_the_compiled_codec_was_written_for_the_bundled_schema() -> None:
    """A change to identify_v1_r1.avsc needs its lines in compiled/_v1c.c too;
    until then the fast path stays off. This says which constant to update."""
    assert fast.bundled_fingerprint() == fast.SCHEMA_FINGERPRINT


@compiled
def test_the_compiled_reader_reads_what_the_reference_reads() -> None:
    """Where the compiled reader takes a record, its event is the reference's."""
    taken = 0
    for record, data in _records(4000, seed=12):
        c = _read_outcome(fast.READ, data)
        if c is not None:
            assert c == codec.decode_reference(data, codec._FIRST), record
            taken += 1
    assert taken > 500


def _read_outcome(reader: Callable[[bytes, int], IdentifyEvent] | None, data: bytes) -> IdentifyEvent | None:
    if reader is None:
        return None
    try:
        return reader(data, 5)
    except (ValueError, LookupError):
        return None


@compiled
@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\x04",  # a kind no enum has
        b"\x00\x04ws\x02\x04u1\x00\x04ts" + b"\xff" * 11,  # a time of more than 64 bits
        b"\x00\x04ws\x02\x04u1\x00\x04ts\x02\x02\x00\x02r\x80\x80\x80\x80\x80\x80\x80\x80\x80\x02\x00\x00\x00",
        b"\x00\x04ws\x02\x04u1\x01" + b"\xff" * 9 + b"\x01",  # an array count of -2**63
    ],
)
def test_the_compiled_reader_refuses_what_it_cannot_prove(body: bytes) -> None:
    data = b"\x00" + struct.pack(">I", LOCAL_SCHEMA_ID) + body
    assert fast.READ is not None
    with pytest.raises(ValueError):
        fast.READ(data, 5)


@compiled
@pytest.mark.parametrize(
    "event",
    [
        EVENT._replace(event_index=2**64),  # past 64 bits: the Python encoder's bytes
        EVENT._replace(operations=(Operation(Op.SET, "t", 1), Operation("nope", "t", 1))),  # type: ignore[arg-type]
        EVENT._replace(user_id=7),  # type: ignore[arg-type]
        EVENT._replace(context={"bad": object()}),
        EVENT._replace(workspace_id="\ud800"),
        EVENT._replace(operations=((Op.SET, "t", 1),)),  # a plain tuple, not an Operation
    ],
)
def test_events_the_compiled_encoder_refuses_get_the_references_answer(event: IdentifyEvent) -> None:
    assert fast.ENCODE is not None
    with pytest.raises(Exception):  # noqa: B017 - whatever the compiled encoder raises
        fast.ENCODE(event, b"")
    header = b"\x00" + struct.pack(">I", LOCAL_SCHEMA_ID)
    assert _encode_outcome(lambda e: codec.encode(e, LOCAL_SCHEMA_ID), event) == _encode_outcome(
        lambda e: codec.encode_reference(e, header), event
    )


def _encode_outcome(encoder: Callable[[IdentifyEvent], bytes], event: IdentifyEvent) -> object:
    try:
        return encoder(event)
    except Exception as exc:
        return type(exc)


@compiled
def test_a_record_in_another_buffer_type_is_read_all_the_same() -> None:
    data = codec.encode(EVENT, LOCAL_SCHEMA_ID)
    assert fast.READ is not None
    with pytest.raises(ValueError):
        fast.READ(bytearray(data), 5)  # type: ignore[arg-type]
    assert codec.decode(bytearray(data), SCHEMAS) == EVENT  # type: ignore[arg-type]


@compiled
def test_the_compiled_reader_shares_the_names_that_repeat() -> None:
    """Trait names, workspace ids and dialects come back as one shared string per
    name (short ASCII ones); anything else is read afresh, and every value still
    equals the reference's."""
    names = ["plan", "x" * 64, "y" * 65, "prénom", "plan "]

    def record(value: str) -> bytes:
        event = IdentifyEvent(
            workspace_id="ws-shared",
            user_id=f"user-{value}",
            dialect="amplitude",
            event_time_ms=1,
            received_time_ms=1,
            response_id=f"r-{value}",
            operations=tuple(Operation(Op.SET, name, value) for name in names),
        )
        return codec.encode(event, LOCAL_SCHEMA_ID)

    assert fast.READ is not None
    first, second = (fast.READ(record(v), 5) for v in ("a", "b"))
    assert first == codec.decode_reference(record("a"))
    assert second == codec.decode_reference(record("b"))
    assert first.workspace_id is second.workspace_id
    assert first.dialect is second.dialect
    assert first.user_id is not second.user_id  # ids are not names: read afresh
    shared = [a.trait is b.trait for a, b in zip(first.operations, second.operations, strict=True)]
    assert shared == [True, True, False, False, True]


def test_a_negative_enum_index_is_refused_where_fastavro_would_wrap_it() -> None:
    """Found by fuzzing: fastavro reads enum index -3 as the third symbol from the
    end (``remove``), which is one reason the hand-written codec is the reference."""
    record = codec.encode(EVENT._replace(operations=(Operation(Op.SET, "plan", "pro"),)), LOCAL_SCHEMA_ID)
    corrupt = record.replace(b"\x02\x00\x02\x08plan", b"\x02\x05\x02\x08plan")
    assert corrupt != record
    with pytest.raises(InvalidRecord) as refused:
        codec.decode(corrupt, SCHEMAS)
    assert refused.value.reason == "avro_decode" and "enum index -3" in refused.value.message
    body = io.BytesIO(corrupt)
    body.seek(5)
    assert schemaless_reader(body, codec._FIRST, None)["operations"][0]["op"] == "remove"  # type: ignore[index,call-overload]
