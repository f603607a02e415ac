from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from tests.support.seeds import seed_bytes
from traitstream.dialects import thrivestack
from traitstream.dialects.common import MAX_EVENTS_PER_REQUEST, Envelope
from traitstream.errors import InvalidRequest, LimitExceeded
from traitstream.events import Op, Operation

ENV = Envelope("ws", "resp-1", 1_700_000_000_000)


def parse(body: object) -> tuple:
    return thrivestack.parse(orjson.dumps(body), ENV)


@pytest.mark.parametrize("seed", ["thrivestack_000.json", "thrivestack_001.json"])
def test_seed_samples_parse_verbatim(seed: str) -> None:
    (event,) = thrivestack.parse(seed_bytes(seed), ENV)
    sample = orjson.loads(seed_bytes(seed))
    if thrivestack._checks is not None:  # built with the extension: the sample takes the C read
        assert thrivestack._plain_fields(sample) is not None
    assert event.user_id == sample["user_id"]
    assert {op.trait: op.value for op in event.operations} == sample["traits"]
    assert all(op.op is Op.SET for op in event.operations)
    # "20-11-23T22:28:55.111Z" is 2020-11-23 (YY-MM-DD), the profile's creation time.
    assert event.profile_created_at_ms == int(
        datetime(2020, 11, 23, 22, 28, 55, 111000, UTC).timestamp() * 1000
    )
    assert event.event_time_ms == ENV.received_time_ms
    assert event.workspace_id == "ws" and event.response_id == "resp-1"


def test_array_of_identifies_keeps_order_and_index() -> None:
    events = parse([{"user_id": "a"}, {"user_id": "b", "user_traits": {"plan": "pro"}}])
    assert [e.user_id for e in events] == ["a", "b"]
    assert [e.event_index for e in events] == [0, 1]
    assert events[1].operations == (Operation(Op.SET, "plan", "pro"),)


def test_name_is_filled_from_first_and_last_name() -> None:
    (event,) = parse({"user_id": "a", "traits": {"first_name": "Ada", "last_name": "Lovelace"}})
    assert Operation(Op.SET, "name", "Ada Lovelace") in event.operations


def test_given_name_is_kept() -> None:
    (event,) = parse({"user_id": "a", "traits": {"first_name": "Ada", "name": "Countess"}})
    assert {o.trait: o.value for o in event.operations}["name"] == "Countess"


@pytest.mark.parametrize(
    ("traits", "named"),
    [
        ({"age": "forty"}, "body.traits.age must be a number"),
        ({"birthday": "not a date"}, "body.traits.birthday must be an ISO 8601 date"),
        ({"address": "Main St"}, "body.traits.address must be an object"),
        ({"company": {"employee_count": "many"}}, "body.traits.company.employee_count must be a number"),
        ({"enrichment_phone": "555"}, "body.traits.enrichment_phone must be an array of strings"),
        ({"enrichment_phone": ["555", 7]}, "body.traits.enrichment_phone[1] must be a string"),
        ({"enrichment_city": 3}, "body.traits.enrichment_city must be a string"),
        ({"email": ["a@b.c"]}, "body.traits.email must be a string"),
    ],
)
def test_typed_trait_of_wrong_type_names_the_trait(traits: dict, named: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse({"user_id": "a", "traits": traits})
    assert named in caught.value.message


def test_typed_traits_of_the_right_type_pass() -> None:
    traits = {
        "address": {"city": "Oslo", "postal_code": 150},
        "age": 41,
        "birthday": "1985-02-03",
        "company": {"name": "Acme", "id": 7, "employee_count": 12, "plan": "pro"},
        "enrichment_phone": ["+4712345678"],
        "enrichment_employment_title": "CTO",
        "custom": {"anything": [1, None, True]},
        "age_unknown": None,
    }
    (event,) = parse({"user_id": "a", "traits": traits})
    assert {o.trait for o in event.operations} == set(traits)


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"traits": {}}, "body.user_id is required"),
        ({"user_id": 12}, "body.user_id must be a string"),
        ({"user_id": ""}, "body.user_id must be 1 to 255 characters"),
        ({"user_id": "x" * 256}, "body.user_id must be 1 to 255 characters"),
        ({"user_id": "a", "traits": [1]}, "body.traits must be an object"),
        ({"user_id": "a", "timestamp": "yesterday"}, "body.timestamp is not an ISO 8601"),
        ({"user_id": "a", "context": "web"}, "body.context must be an object"),
        ([{"user_id": "a"}, 5], "identify[1] must be a JSON object"),
        ([], "the identify array is empty"),
    ],
)
def test_invalid_bodies_name_the_field(body: object, named: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse(body)
    assert named in caught.value.message


def test_malformed_json_is_a_400() -> None:
    with pytest.raises(InvalidRequest, match="malformed JSON"):
        thrivestack.parse(b'{"user_id": ', ENV)


def test_limits_are_413_naming_the_limit() -> None:
    with pytest.raises(LimitExceeded, match="limit is 2000"):
        parse([{"user_id": "a"}] * (MAX_EVENTS_PER_REQUEST + 1))
    with pytest.raises(LimitExceeded, match="per identify"):
        parse({"user_id": "a", "traits": {"blob": "x" * 33_000}})
    with pytest.raises(LimitExceeded, match="1 MB"):
        thrivestack.parse(b" " * 1_000_001, ENV)
    deep: dict = {}
    node = deep
    for _ in range(41):
        node["n"] = {}
        node = node["n"]
    with pytest.raises(LimitExceeded, match="nested more than 40"):
        parse({"user_id": "a", "traits": {"deep": deep}})


def test_message_id_is_the_dedupe_key() -> None:
    (event,) = parse({"user_id": "a", "message_id": "m-1"})
    assert event.dedupe_key == "m-1" and event.event_id == "m-1"
    (other,) = parse({"user_id": "a"})
    assert other.dedupe_key is None and other.event_id == "resp-1:0"


def _big_body_with(last: str) -> bytes:
    # Built as text: orjson writes at most 254 levels, and these go deeper.
    filler = ",".join(['{"user_id": "u", "traits": {"x": "' + "y" * 100 + '"}}'] * 400)
    return f"[{filler},{last}]".encode()


def test_an_identify_too_deep_for_the_writer_is_refused_as_too_deep() -> None:
    """Bodies over 32 KB measure each identify: one nested past what orjson writes
    (254 levels; its parser reads 1,024) gets the depth error, not a 500."""
    deep = "[" * 300 + "1" + "]" * 300
    envelope = Envelope("w", "r", 1)
    with pytest.raises(LimitExceeded, match=r"identify\[400\]\.traits is nested more than 40 levels deep"):
        thrivestack.parse(_big_body_with('{"user_id": "u", "traits": {"d": ' + deep + "}}"), envelope)
    # A field no dialect reads is dropped, deep or not, as in a small body.
    events = thrivestack.parse(_big_body_with('{"user_id": "u", "other": ' + deep + "}"), envelope)
    assert len(events) == 401
    # Past what the standard library's writer can walk too: refused as too deep.
    deeper = "[" * 1020 + "1" + "]" * 1020
    with pytest.raises(LimitExceeded, match=r"identify\[400\] is nested more than 40 levels deep"):
        thrivestack.parse(_big_body_with('{"user_id": "u", "other": ' + deeper + "}"), envelope)
