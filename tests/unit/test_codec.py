from __future__ import annotations

import io
import json
import random
import struct
from collections.abc import Callable, Iterator

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from traitstream.avro import codec, v1
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
            "op": rng.choice(v1._OPS),
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


READERS = [
    pytest.param(v1.read_event_python, id="python"),
    pytest.param(v1.read_event, id="compiled" if v1.COMPILED else "python-again"),
]


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


@pytest.mark.parametrize("reader", READERS)
def test_the_fast_path_agrees_with_the_full_checks(
    reader: Callable[[bytes, int], IdentifyEvent], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(v1, "read_event", reader)
    fast, full = 0, 0
    for record, data in _records(3000, seed=11):
        expected = _outcome(lambda d: codec._decode_checked(d, codec._FIRST, codec._FIRST_REVISION), data)
        assert _outcome(lambda d: codec.decode(d, SCHEMAS), data) == expected, record
        try:
            reader(data, 5)
            fast += 1
        except (ValueError, LookupError):
            full += 1
    # Both paths were exercised, each many times.
    assert fast > 300 and full > 300


def test_the_fast_path_of_the_current_revision_agrees_with_the_full_checks() -> None:
    fast, aliases = 0, 0
    for record, data in _records(3000, seed=17, current=True):
        expected = _outcome(lambda d: codec._decode_checked(d, codec._READER, codec._CURRENT_REVISION), data)
        assert _outcome(lambda d: codec.decode(d, SCHEMAS), data) == expected, record
        try:
            event = v1.read_event_python(data, 5, current=True)
            fast += 1
            aliases += event.kind is Kind.ALIAS
        except (ValueError, LookupError):
            pass
    assert fast > 300 and aliases > 100


@pytest.mark.parametrize("reader", READERS)
def test_the_fast_path_takes_what_the_edge_writes(reader: Callable[[bytes, int], IdentifyEvent]) -> None:
    event = EVENT
    data = codec.encode(event, LOCAL_SCHEMA_ID)
    assert reader(data, 5) == event
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
    assert reader(codec.encode(anonymous, LOCAL_SCHEMA_ID), 5) == anonymous


def test_known_operations_are_shared_only_when_immutable() -> None:
    def decoded(value: object) -> Operation:
        event = IdentifyEvent(
            workspace_id="ws",
            user_id="u",
            dialect="test",
            event_time_ms=1,
            received_time_ms=1,
            response_id="r",
            operations=(Operation(Op.SET, "t", value),),
        )
        return v1.read_event_python(codec.encode(event, LOCAL_SCHEMA_ID), 5).operations[0]

    assert decoded("pro") is decoded("pro")
    first, second = decoded({"tier": "pro"}), decoded({"tier": "pro"})
    assert first == second and first.value is not second.value
    first, second = decoded([1]), decoded([1])
    assert first == second and first.value is not second.value


def test_known_operations_stay_few(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(v1, "_KNOWN_OPERATIONS", {})
    monkeypatch.setattr(v1, "_KNOWN_OPERATIONS_KEPT", 10)
    for n in range(25):
        event = EVENT._replace(operations=(Operation(Op.SET, "n", n),))
        assert v1.read_event_python(codec.encode(event, LOCAL_SCHEMA_ID), 5) == event
        assert len(v1._KNOWN_OPERATIONS) <= 10


# --- the compiled functions -------------------------------------------------------------

compiled = pytest.mark.skipif(not v1.COMPILED, reason="the C extension was not built")


@compiled
def test_the_compiled_reader_reads_what_the_python_reader_reads() -> None:
    """The same event or a refusal from both, on random and corrupted records; the
    compiled reader also refuses a varint past 64 bits, which the Python one reads."""
    taken = 0
    for record, data in _records(4000, seed=12):
        python = _read_outcome(v1.read_event_python, data)
        c = _read_outcome(v1._v1c.read_event, data)
        if isinstance(python, IdentifyEvent) and c is None:
            assert not -(2**63) <= python.event_index < 2**63, record
        else:
            assert c == python, record
        taken += isinstance(c, IdentifyEvent)
    assert taken > 500


def _read_outcome(reader: Callable[[bytes, int], IdentifyEvent], data: bytes) -> IdentifyEvent | None:
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
    with pytest.raises(ValueError):
        v1._v1c.read_event(data, 5)


@compiled
def test_the_compiled_encoder_writes_the_python_encoders_bytes() -> None:
    taken = 0
    for record, _data in _records(2000, seed=13):
        try:
            event = codec.from_record(record)
        except InvalidRecord:
            continue
        header = b"\x00" + struct.pack(">I", LOCAL_SCHEMA_ID)
        assert v1._v1c.encode_body(event, header) == v1.encode_body_python(event, header), record
        taken += 1
    assert taken > 300


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
def test_events_the_compiled_encoder_refuses_get_the_python_encoders_answer(event: IdentifyEvent) -> None:
    with pytest.raises(Exception):  # noqa: B017 - whatever the compiled encoder raises
        v1._v1c.encode_body(event, b"")
    assert _encode_outcome(v1.encode_body, event) == _encode_outcome(v1.encode_body_python, event)


def _encode_outcome(encoder: Callable[[IdentifyEvent, bytes], bytes], event: IdentifyEvent) -> object:
    try:
        return encoder(event, b"")
    except Exception as exc:
        return type(exc)


@compiled
def test_a_record_in_another_buffer_type_is_read_all_the_same() -> None:
    data = codec.encode(EVENT, LOCAL_SCHEMA_ID)
    with pytest.raises(ValueError):
        v1._v1c.read_event(bytearray(data), 5)  # type: ignore[arg-type]
    assert codec.decode(bytearray(data), SCHEMAS) == EVENT  # type: ignore[arg-type]


@compiled
def test_the_compiled_reader_shares_the_names_that_repeat() -> None:
    """Trait names, workspace ids and dialects come back as one shared string per
    name (short ASCII ones); anything else is read afresh, and every value still
    equals the Python reader's."""
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

    first, second = (v1._v1c.read_event(record(v), 5) for v in ("a", "b"))
    assert first == v1.read_event_python(record("a"), 5)
    assert second == v1.read_event_python(record("b"), 5)
    assert first.workspace_id is second.workspace_id
    assert first.dialect is second.dialect
    assert first.user_id is not second.user_id  # ids are not names: read afresh
    shared = [a.trait is b.trait for a, b in zip(first.operations, second.operations, strict=True)]
    assert shared == [True, True, False, False, True]
