from __future__ import annotations

import urllib.parse

import orjson
import pytest

from tests.support.seeds import seed_bytes
from traitstream.dialects import amplitude
from traitstream.dialects.common import MAX_EVENTS_PER_REQUEST, Envelope
from traitstream.errors import InvalidRequest, LimitExceeded
from traitstream.events import IdentifyEvent, Op, Operation

ENV = Envelope("ws", "resp-1", 1_700_000_000_000)
FORM = "application/x-www-form-urlencoded"


def identify(identification: object) -> tuple[IdentifyEvent, ...]:
    return amplitude.parse_identify({"identification": orjson.dumps(identification).decode()}, ENV).identifies


def batch(events: object, api_key: str = "k") -> amplitude.Result:
    body = orjson.dumps({"api_key": api_key, "events": events})
    return amplitude.parse_batch(amplitude.read_batch(body), ENV)


def nested(depth: int) -> dict:
    root: dict = {}
    node = root
    for _ in range(depth - 1):
        node["n"] = {}
        node = node["n"]
    return root


def test_seed_form_sample_parses_verbatim() -> None:
    fields = orjson.loads(seed_bytes("amplitude_002.form.json"))
    fields["api-key"] = "secret-key"
    form = amplitude.read_fields(urllib.parse.urlencode(fields).encode(), FORM)
    assert amplitude.api_key_of(form) == "secret-key"
    (event,) = amplitude.parse_identify(form, ENV).identifies
    assert event.user_id == "value"
    assert event.operations == (Operation(Op.SET, "propertyNameToUpdate", "newValue"),)
    assert event.dialect == "amplitude" and event.workspace_id == "ws"
    assert event.event_time_ms == ENV.received_time_ms
    assert event.anonymous_ids == () and event.dedupe_key is None


@pytest.mark.parametrize("content_type", [FORM, None, "text/plain"])
def test_form_body_with_either_key_spelling(content_type: str | None) -> None:
    for name in ("api_key", "api-key"):
        body = urllib.parse.urlencode({name: "k1", "identification": '{"user_id": "u"}'}).encode()
        fields = amplitude.read_fields(body, content_type)
        assert amplitude.api_key_of(fields) == "k1"
        assert amplitude.parse_identify(fields, ENV).identifies[0].user_id == "u"


@pytest.mark.parametrize(
    "identification",
    ['[{"user_id": "u", "user_properties": {"a": 1}}]', {"user_id": "u", "user_properties": {"a": 1}}],
)
def test_json_body_takes_identification_as_text_or_json(identification: object) -> None:
    body = orjson.dumps({"api_key": "k", "identification": identification})
    fields = amplitude.read_fields(body, "application/json")
    (event,) = amplitude.parse_identify(fields, ENV).identifies
    assert event.user_id == "u" and event.operations == (Operation(Op.SET, "a", 1),)


def test_array_keeps_order_and_index() -> None:
    events = identify([{"user_id": "a"}, {"device_id": "d-1"}])
    assert [(e.user_id, e.anonymous_ids, e.event_index) for e in events] == [
        ("a", (), 0),
        (None, ("d-1",), 1),
    ]


def test_ids_time_and_insert_id() -> None:
    (event,) = identify({"user_id": "u", "device_id": "dev", "insert_id": "ins-1", "time": 1_600_000_000_123})
    assert event.anonymous_ids == ("dev",)
    assert event.dedupe_key == "ins-1" and event.event_id == "ins-1"
    assert event.event_time_ms == 1_600_000_000_123
    assert event.received_time_ms == ENV.received_time_ms


def test_every_operation_maps_to_the_event_operation() -> None:
    properties = {
        "$set": {"plan": "pro"},
        "$setOnce": {"first_seen": "2024-01-02T03:04:05Z"},
        "$add": {"logins": 2, "score": -1.5},
        "$append": {"tags": "a"},
        "$prepend": {"tags": ["z"]},
        "$unset": {"old": "-"},
        "$preInsert": {"list": 1},
        "$postInsert": {"list": [2, 3]},
        "$remove": {"list": 4},
        "$clearAll": "-",
    }
    (event,) = identify({"user_id": "u", "platform": "iOS", "user_properties": properties})
    assert event.operations == (
        Operation(Op.CLEAR_ALL),
        Operation(Op.SET, "platform", "iOS"),
        Operation(Op.SET, "plan", "pro"),
        Operation(Op.SET_ONCE, "first_seen", "2024-01-02T03:04:05Z"),
        Operation(Op.ADD, "logins", 2),
        Operation(Op.ADD, "score", -1.5),
        Operation(Op.APPEND, "tags", "a"),
        Operation(Op.PREPEND, "tags", ["z"]),
        Operation(Op.UNSET, "old"),
        Operation(Op.PRE_INSERT, "list", 1),
        Operation(Op.POST_INSERT, "list", [2, 3]),
        Operation(Op.REMOVE, "list", 4),
    )


def test_device_and_location_fields_are_kept_under_their_names() -> None:
    fields = {name: f"v-{name}" for name in amplitude.DEVICE_FIELDS}
    (event,) = identify({"user_id": "u", **fields, "paying": True, "groups": '{"org": ["a", "b"]}'})
    got = {op.trait: op.value for op in event.operations}
    assert got == {**fields, "paying": True, "groups": {"org": ["a", "b"]}}
    assert all(op.op is Op.SET for op in event.operations)


def test_dates_stay_strings() -> None:
    (event,) = identify(
        {"user_id": "u", "user_properties": {"signup": "2024-05-06", "at": "2024-05-06T07:08:09Z"}}
    )
    assert [op.value for op in event.operations] == ["2024-05-06", "2024-05-06T07:08:09Z"]


@pytest.mark.parametrize(
    ("identification", "named"),
    [
        ({"user_properties": {"a": 1}}, "identification needs user_id or device_id"),
        ([{"user_id": "a"}, {"platform": "x"}], "identification[1] needs user_id or device_id"),
        ({"user_id": 5}, "identification.user_id must be a string"),
        ({"user_id": "u", "device_id": ""}, "identification.device_id must be 1 to 255 characters"),
        ({"user_id": "u", "time": "yesterday"}, "identification.time must be milliseconds"),
        ({"user_id": "u", "time": 1e20}, "identification.time is outside the years"),
        ({"user_id": "u", "user_properties": [1]}, "identification.user_properties must be an object"),
        (
            {"user_id": "u", "user_properties": {"$add": {"logins": "2"}}},
            "user_properties.$add.logins must be a number",
        ),
        (
            {"user_id": "u", "user_properties": {"$add": {"on": True}}},
            "user_properties.$add.on must be a number",
        ),
        (
            {"user_id": "u", "user_properties": {"$inc": {"a": 1}}},
            "user_properties.$inc is not a user property operation",
        ),
        (
            {"user_id": "u", "user_properties": {"$set": {"a": 1}, "b": 2}},
            "user_properties.b is a plain property beside",
        ),
        ({"user_id": "u", "user_properties": {"$set": 3}}, "user_properties.$set must be an object"),
        ({"user_id": "u", "user_properties": {"a": "x\x00y"}}, "user_properties.a contains a NUL"),
        ({"user_id": "u", "platform": {"os": "x"}}, "identification.platform must be a string"),
        ({"user_id": "u", "groups": "[not json"}, "identification.groups is not valid JSON"),
        ({"user_id": "u", "groups": [1]}, "identification.groups must be an object"),
        ([], "the identification array is empty"),
        ([{"user_id": "a"}, 3], "identification[1] must be a JSON object"),
        (7, "identification must be a JSON object or array"),
    ],
)
def test_invalid_identifications_name_the_field(identification: object, named: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        identify(identification)
    assert named in caught.value.message


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"api_key": "k"}, "identification is required"),
        ({"api_key": "k", "identification": "{oops"}, "identification is not valid JSON"),
    ],
)
def test_invalid_fields_name_the_field(fields: dict, named: str) -> None:
    with pytest.raises(InvalidRequest, match=named):
        amplitude.parse_identify(fields, ENV)


def test_request_bodies_that_cannot_be_read() -> None:
    with pytest.raises(InvalidRequest, match="malformed form data"):
        amplitude.read_fields(b"api_key=k&identification=%ff%fe", FORM)
    with pytest.raises(InvalidRequest, match="malformed JSON"):
        amplitude.read_fields(b'{"api_key": ', "application/json")
    with pytest.raises(InvalidRequest, match="JSON body must be an object"):
        amplitude.read_fields(b"[1]", "application/json")
    with pytest.raises(InvalidRequest, match="api_key must be a string"):
        amplitude.api_key_of({"api_key": 7})
    assert amplitude.api_key_of({"identification": "{}"}) is None


def test_limits_are_413_naming_the_limit() -> None:
    with pytest.raises(LimitExceeded, match="nested more than 40"):
        identify({"user_id": "u", "user_properties": {"$set": {"deep": nested(40)}}})
    identify({"user_id": "u", "user_properties": {"deep": nested(39)}})
    with pytest.raises(LimitExceeded, match="limit is 2000"):
        identify([{"user_id": "u"}] * (MAX_EVENTS_PER_REQUEST + 1))
    with pytest.raises(LimitExceeded, match="per identify"):
        identify({"user_id": "u", "user_properties": {"blob": "x" * 33_000}})
    with pytest.raises(LimitExceeded, match="1 MB"):
        amplitude.read_fields(b"a" * 1_000_001, FORM)


def test_http_api_identify_events_and_ignored_events() -> None:
    result = batch(
        [
            {
                "event_type": "$identify",
                "user_id": "u",
                "insert_id": "i1",
                "time": 5_000,
                "user_properties": {"$set": {"plan": "pro"}, "$add": {"n": 1}},
            },
            {"event_type": "Button Clicked", "device_id": "d1", "event_properties": {"x": 1}},
            {"event_type": "$groupidentify", "user_id": "u", "group_properties": {"$set": {"a": 1}}},
        ]
    )
    (event,) = result.identifies
    assert event.event_index == 0 and event.dedupe_key == "i1" and event.event_time_ms == 5_000
    assert event.operations == (Operation(Op.SET, "plan", "pro"), Operation(Op.ADD, "n", 1))
    assert result.ignored == ("event", "groupidentify")


def test_http_api_batch_shape() -> None:
    read = amplitude.read_batch(b'{"api_key": "k", "events": [{"event_type": "$identify", "user_id": "u"}]}')
    assert read.api_key == "k" and len(read.events) == 1 and read.size > 0


@pytest.mark.parametrize(
    ("body", "error", "named"),
    [
        ({"api_key": "k"}, InvalidRequest, "events is required"),
        ({"api_key": "k", "events": {}}, InvalidRequest, "events must be an array"),
        ({"api_key": "k", "events": []}, InvalidRequest, "the events array is empty"),
        ({"api_key": "k", "events": [1]}, InvalidRequest, "events[0] must be a JSON object"),
        ([1], InvalidRequest, "must be a JSON object with api_key and events"),
        ({"events": [{"event_type": "x", "user_id": "u"}] * 2001}, LimitExceeded, "limit is 2000"),
        ({"events": [{"event_type": "x", "user_id": "u", "p": "x" * 33_000}]}, LimitExceeded, "per event"),
    ],
)
def test_http_api_bodies_name_the_field(body: object, error: type, named: str) -> None:
    with pytest.raises(error) as caught:
        amplitude.read_batch(orjson.dumps(body))
    assert named in caught.value.message


@pytest.mark.parametrize(
    ("event", "named"),
    [
        ({"user_id": "u"}, "events[0].event_type is required"),
        ({"event_type": "", "user_id": "u"}, "events[0].event_type must be a non-empty string"),
        ({"event_type": "Clicked"}, "events[0] needs user_id or device_id"),
        (
            {"event_type": "$identify", "user_id": "u", "user_properties": {"$add": {"n": "1"}}},
            "events[0].user_properties.$add.n must be a number",
        ),
    ],
)
def test_http_api_events_name_the_field(event: dict, named: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        batch([event])
    assert named in caught.value.message


def test_refused_http_api_events_carry_their_index() -> None:
    with pytest.raises(amplitude.InvalidEvent) as missing:
        batch([{"event_type": "$identify", "user_id": "u"}, {"event_type": "x"}])
    assert missing.value.index == 1 and missing.value.missing and missing.value.field == "user_id"
    with pytest.raises(amplitude.InvalidEvent) as invalid:
        batch([{"event_type": "$identify", "user_id": "u", "time": "noon"}])
    assert invalid.value.index == 0 and not invalid.value.missing and invalid.value.field == "events[0].time"
    with pytest.raises(amplitude.MissingField) as top:
        amplitude.read_batch(b'{"api_key": "k"}')
    assert top.value.field == "events" and not isinstance(top.value, amplitude.InvalidEvent)
