from __future__ import annotations

import gzip
from datetime import UTC, datetime

import orjson
import pytest

from traitstream.dialects import segment, segment_single
from traitstream.dialects.common import Envelope
from traitstream.errors import InvalidRequest, LimitExceeded
from traitstream.events import Kind, Op, Operation

ENV = Envelope("ws", "resp-1", 1_700_000_000_000)


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def identify(body: object) -> segment.Result:
    return segment.parse(segment.read_identify(orjson.dumps(body)), ENV)


def batch(body: object) -> segment.Result:
    return segment.parse(segment.read_batch(orjson.dumps(body)), ENV)


def test_identify_maps_ids_traits_time_and_message_id() -> None:
    result = identify(
        {
            "type": "identify",
            "userId": "u1",
            "anonymousId": "anon-1",
            "messageId": "m-1",
            "timestamp": "2023-03-04T05:06:07.890Z",
            "traits": {"email": "a@b.c", "plan": "pro"},
            "context": {"ip": "127.0.0.1"},
            "writeKey": "wk",
        }
    )
    (event,) = result.identifies
    assert result.ignored == ()
    assert event.user_id == "u1" and event.anonymous_ids == ("anon-1",)
    assert event.dedupe_key == "m-1"
    assert event.event_time_ms == ms("2023-03-04T05:06:07.890")
    assert event.context == {"ip": "127.0.0.1"}
    assert event.operations == (Operation(Op.SET, "email", "a@b.c"), Operation(Op.SET, "plan", "pro"))
    assert segment.read_identify(b'{"userId": "u", "writeKey": "wk"}').write_key == "wk"


def test_camel_case_reserved_traits_and_name() -> None:
    (event,) = identify(
        {
            "userId": "u",
            "traits": {
                "firstName": "Ada",
                "lastName": "Lovelace",
                "createdAt": "2015-02-03T04:05:06Z",
                "address": {"postalCode": "N1", "city": "London"},
                "company": {"name": "Acme", "employee_count": 5},
            },
        }
    ).identifies
    traits = {op.trait: op.value for op in event.operations}
    assert traits["name"] == "Ada Lovelace"
    assert traits["createdAt"] == "2015-02-03T04:05:06Z"
    assert event.profile_created_at_ms == ms("2015-02-03T04:05:06")
    # No timestamp: the received time.
    assert event.event_time_ms == ENV.received_time_ms


def test_snake_case_names_fill_name_too_and_given_name_wins() -> None:
    (event,) = identify({"userId": "u", "traits": {"first_name": "Grace", "last_name": "Hopper"}}).identifies
    assert Operation(Op.SET, "name", "Grace Hopper") in event.operations
    (other,) = identify({"userId": "u", "traits": {"firstName": "Ada", "name": "Countess"}}).identifies
    assert {o.trait: o.value for o in other.operations}["name"] == "Countess"


def test_numeric_ids_become_strings_and_anonymous_only_is_fine() -> None:
    (event,) = identify({"userId": 42, "messageId": 7}).identifies
    assert event.user_id == "42" and event.dedupe_key == "7"
    (anonymous,) = identify({"anonymousId": "anon-9", "traits": {"a": 1}}).identifies
    assert anonymous.user_id is None and anonymous.anonymous_ids == ("anon-9",)


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"traits": {"a": 1}}, "body needs userId or anonymousId"),
        ({"userId": True}, "body.userId must be a string"),
        ({"userId": ""}, "body.userId must be 1 to 255 characters"),
        ({"userId": "u", "traits": [1]}, "body.traits must be an object"),
        ({"userId": "u", "traits": {"firstName": 3}}, "body.traits.firstName must be a string"),
        ({"userId": "u", "traits": {"createdAt": "soon"}}, "body.traits.createdAt must be an ISO 8601 date"),
        ({"userId": "u", "traits": {"age": "old"}}, "body.traits.age must be a number"),
        (
            {"userId": "u", "traits": {"address": {"postalCode": []}}},
            "body.traits.address.postalCode must be",
        ),
        (
            {"userId": "u", "traits": {"company": {"employeeCount": "x"}}},
            "company.employeeCount must be a number",
        ),
        ({"userId": "u", "timestamp": "today"}, "body.timestamp is not an ISO 8601"),
        ({"userId": "u", "context": "web"}, "body.context must be an object"),
        ({"userId": "u", "type": "track"}, "body.type must be identify"),
        ({"userId": "u", "writeKey": 5}, "body.writeKey must be a string"),
        ([{"userId": "u"}], "the body must be a JSON object"),
    ],
)
def test_invalid_identify_names_the_field(body: object, named: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        identify(body)
    assert named in caught.value.message


def test_batch_keeps_identifies_and_ignores_other_types() -> None:
    result = batch(
        {
            "batch": [
                {"type": "track", "userId": "u", "event": "Signed Up"},
                {"type": "identify", "userId": "u", "traits": {"plan": "pro"}, "context": {"a": 1}},
                {"type": "page", "anonymousId": "x"},
                {"type": "screen"},
                {"type": "group", "groupId": "g"},
                {"type": "alias", "previousId": "p", "userId": "u", "messageId": "m-6"},
            ],
            "context": {"a": 0, "b": 2},
            "writeKey": "wk",
        }
    )
    event, alias = result.identifies
    assert event.event_index == 1
    assert event.context == {"a": 1, "b": 2}
    assert (alias.kind, alias.previous_id, alias.user_id, alias.event_index) == (Kind.ALIAS, "p", "u", 5)
    assert alias.dedupe_key == "m-6" and alias.context == {"a": 0, "b": 2} and alias.operations == ()
    assert result.ignored == ("track", "page", "screen", "group")


def alias(body: object) -> segment.Result:
    return segment.parse(segment_single.reader("alias", "/v1/alias")(orjson.dumps(body)), ENV)


def test_alias_maps_previous_id_user_id_time_and_message_id() -> None:
    (event,) = alias(
        {
            "previousId": "anon-1",
            "userId": "u-1",
            "anonymousId": "anon-2",
            "messageId": "m-1",
            "timestamp": "2023-11-01T10:00:00Z",
            "context": {"library": {"name": "analytics-python"}},
            "writeKey": "wk",
        }
    ).identifies
    assert event.kind is Kind.ALIAS
    assert (event.previous_id, event.user_id, event.anonymous_ids) == ("anon-1", "u-1", ("anon-2",))
    assert event.event_time_ms == ms("2023-11-01T10:00:00")
    assert event.dedupe_key == "m-1" and event.context == {"library": {"name": "analytics-python"}}
    assert event.operations == () and event.dialect == "segment"
    assert alias({"type": "alias", "previousId": 7, "userId": 8}).identifies[0].previous_id == "7"


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"userId": "u"}, "body.previousId is required for an alias"),
        ({"previousId": "p"}, "body.userId is required for an alias"),
        ({"previousId": "", "userId": "u"}, "body.previousId"),
        ({"previousId": "p" * 256, "userId": "u"}, "body.previousId"),
        ({"previousId": ["p"], "userId": "u"}, "body.previousId"),
        ({"type": "identify", "previousId": "p", "userId": "u"}, "body.type must be alias on /v1/alias"),
    ],
)
def test_a_bad_alias_is_refused_naming_the_field(body: dict[str, object], named: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        alias(body)
    assert named in caught.value.message


def test_identify_route_refuses_an_alias_body() -> None:
    with pytest.raises(InvalidRequest, match=r"body\.type must be identify on /v1/identify"):
        identify({"type": "alias", "previousId": "p", "userId": "u"})


def test_original_timestamp_is_corrected_by_the_senders_clock_skew() -> None:
    (event,) = batch(
        {
            "batch": [{"type": "identify", "userId": "u", "originalTimestamp": "2024-01-01T00:00:00Z"}],
            "sentAt": "2024-01-01T00:00:10Z",
        }
    ).identifies
    assert event.event_time_ms == ENV.received_time_ms - 10_000


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"writeKey": "k"}, "body.batch is required"),
        ({"batch": {}}, "body.batch must be an array"),
        ({"batch": []}, "the batch array is empty"),
        ({"batch": [3]}, "batch[0] must be a JSON object"),
        ({"batch": [{"userId": "u"}]}, "batch[0].type is required"),
        (
            {"batch": [{"type": "purchase", "userId": "u"}]},
            "batch[0].type must be one of identify, alias, track",
        ),
        ({"batch": [{"type": "identify"}]}, "batch[0] needs userId or anonymousId"),
    ],
)
def test_invalid_batch_names_the_field(body: object, named: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        batch(body)
    assert named in caught.value.message


def test_limits_are_413_naming_the_limit() -> None:
    with pytest.raises(LimitExceeded, match="32 KB per event"):
        identify({"userId": "u", "traits": {"blob": "x" * 33_000}})
    with pytest.raises(LimitExceeded, match="500 KB per batch"):
        batch({"batch": [{"type": "identify", "userId": "u", "traits": {"b": "x" * 30_000}}] * 18})
    with pytest.raises(LimitExceeded, match="32768 bytes per event"):
        batch({"batch": [{"type": "track", "userId": "u", "properties": {"b": "x" * 33_000}}]})
    with pytest.raises(LimitExceeded, match="limit is 2000"):
        batch({"batch": [{"type": "track"}] * 2001})
    deep: dict = {}
    node = deep
    for _ in range(40):
        node["n"] = {}
        node = node["n"]
    with pytest.raises(LimitExceeded, match="nested more than 40"):
        identify({"userId": "u", "traits": {"deep": deep}})


def test_gzip_bodies_are_read_within_the_limit() -> None:
    body = orjson.dumps({"userId": "u"})
    assert segment.decompress(gzip.compress(body), "gzip", segment.MAX_EVENT_BYTES) == body
    assert segment.decompress(body, None, 10) == body
    bomb = gzip.compress(b" " * 10_000_000)
    inflated = segment.decompress(bomb, "gzip", segment.MAX_EVENT_BYTES)
    assert len(inflated) == segment.MAX_EVENT_BYTES + 1
    with pytest.raises(LimitExceeded, match="32 KB per event"):
        segment.read_identify(inflated)
    with pytest.raises(InvalidRequest, match="does not decompress"):
        segment.decompress(b"not gzip", "gzip", 100)
    with pytest.raises(InvalidRequest, match="ends before its gzip stream does"):
        segment.decompress(gzip.compress(body)[:-9], "gzip", 100)
    with pytest.raises(InvalidRequest, match="Content-Encoding 'br' is not supported"):
        segment.decompress(body, "br", 100)


def test_identify_endpoint_needs_no_type() -> None:
    for body in ({"userId": "u"}, {"userId": "u", "type": None}, {"userId": "u", "type": "identify"}):
        (event,) = identify(body).identifies
        assert event.user_id == "u"
