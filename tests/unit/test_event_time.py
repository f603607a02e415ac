"""Event time, as every dialect makes it and the merge orders by it: the sender's clock
skew taken off (``sentAt``), a bound on how far past the receipt a client may date an
event, and ties within one request won by the later identify."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from traitstream.dialects import amplitude, datafast, segment, thrivestack
from traitstream.dialects.common import (
    MAX_EVENTS_PER_REQUEST,
    MAX_FUTURE_SKEW_MS,
    Envelope,
    event_time_ms,
)
from traitstream.errors import InvalidRequest
from traitstream.events import IdentifyEvent
from traitstream.merge import Profile

RECEIVED = 1_700_000_000_000
DAY = 86_400_000
MARGINS = st.integers(0, 2 * DAY)
# Times a client might send: years away on either side of the receipt, to the millisecond.
OFFSETS = st.integers(-3 * 365 * DAY, 3 * 365 * DAY)


def envelope(
    margin: int = MAX_FUTURE_SKEW_MS, received: int = RECEIVED, response_id: str = "r-1"
) -> Envelope:
    return Envelope("ws", response_id, received, margin)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def segment_batch(body: dict[str, object], env: Envelope) -> segment.Result:
    return segment.parse(segment.read_batch(orjson.dumps(body)), env)


def amplitude_identify(identification: object, env: Envelope) -> amplitude.Result:
    return amplitude.parse_identify({"identification": orjson.dumps(identification).decode()}, env)


# --- the bound past the receipt -----------------------------------------------------


@given(offset=OFFSETS, margin=MARGINS)
def test_a_time_past_the_margin_is_the_receipt_time(offset: int, margin: int) -> None:
    env = envelope(margin)
    got = event_time_ms(RECEIVED + offset, env)
    assert got <= RECEIVED + margin
    assert got == (RECEIVED if offset > margin else RECEIVED + offset)


@settings(max_examples=300)
@given(offsets=st.lists(OFFSETS | st.integers(-5, 5), min_size=1, max_size=8), margin=MARGINS)
def test_segment_times_are_bounded_and_counted(offsets: list[int], margin: int) -> None:
    messages = [
        {"type": "identify", "userId": f"u{i}", "timestamp": iso(RECEIVED + offset)}
        for i, offset in enumerate(offsets)
    ]
    result = segment_batch({"batch": messages}, envelope(margin))
    past = [offset > margin for offset in offsets]
    assert [e.event_time_ms for e in result.identifies] == [
        RECEIVED if late else RECEIVED + offset for offset, late in zip(offsets, past, strict=True)
    ]
    assert result.clamped == sum(past)


@settings(max_examples=300)
@given(offsets=st.lists(st.none() | OFFSETS, min_size=1, max_size=8), margin=MARGINS, batch=st.booleans())
def test_amplitude_times_are_bounded_and_counted(offsets: list[int | None], margin: int, batch: bool) -> None:
    items = [
        {"user_id": f"u{i}", "event_type": "$identify"}
        | ({} if offset is None else {"time": RECEIVED + offset})
        for i, offset in enumerate(offsets)
    ]
    env = envelope(margin)
    if batch:
        result = amplitude.parse_batch(
            amplitude.read_batch(orjson.dumps({"api_key": "k", "events": items})), env
        )
    else:
        result = amplitude_identify(items, env)
    expected = [RECEIVED if o is None or o > margin else RECEIVED + o for o in offsets]
    assert [e.event_time_ms for e in result.identifies] == expected
    assert result.clamped == sum(1 for o in offsets if o is not None and o > margin)


def test_dialects_without_a_client_time_are_at_the_receipt_even_with_no_margin() -> None:
    env = envelope(0)
    events = thrivestack.parse(orjson.dumps([{"user_id": "a", "timestamp": "2999-01-01T00:00:00Z"}]), env)
    assert [e.event_time_ms for e in events] == [RECEIVED]
    body = {"user_id": "a", "datafast_visitor_id": str(uuid.uuid4())}
    assert datafast.parse(orjson.dumps(body), env).event.event_time_ms == RECEIVED


def test_the_margin_is_ten_minutes_unless_told() -> None:
    assert Envelope("ws", "r", RECEIVED).max_future_ms == 600_000
    assert event_time_ms(RECEIVED + 600_000, Envelope("ws", "r", RECEIVED)) == RECEIVED + 600_000
    assert event_time_ms(RECEIVED + 600_001, Envelope("ws", "r", RECEIVED)) == RECEIVED


# --- the sender's clock skew (Segment, and RudderStack's bodies) ----------------------


@settings(max_examples=300)
@given(
    queued=st.integers(0, 30 * DAY),
    clock=OFFSETS,
    field=st.sampled_from(["timestamp", "originalTimestamp"]),
    batch_level=st.booleans(),
)
def test_a_senders_clock_offset_changes_nothing(
    queued: int, clock: int, field: str, batch_level: bool
) -> None:
    """An identify made ``queued`` ms before the edge receives it, on a device whose
    clock is ``clock`` ms off: its event time is when it was made, on the edge's
    clock, whatever ``clock`` is (the request's own travel time counts as skew)."""
    made = RECEIVED - queued
    message: dict[str, object] = {"type": "identify", "userId": "u", field: iso(made + clock)}
    body: dict[str, object] = {"batch": [message]}
    sent_at = iso(RECEIVED + clock)
    if batch_level:
        body["sentAt"] = sent_at
    else:
        message["sentAt"] = sent_at
    result = segment_batch(body, envelope(0))
    (event,) = result.identifies
    assert event.event_time_ms == made
    assert result.clamped == 0


@given(timestamp=OFFSETS, sent_at=OFFSETS)
def test_the_correction_is_receipt_less_the_gap_between_sent_and_timestamp(
    timestamp: int, sent_at: int
) -> None:
    body = {"batch": [{"type": "identify", "userId": "u", "timestamp": iso(RECEIVED + timestamp)}]}
    result = segment_batch(body | {"sentAt": iso(RECEIVED + sent_at)}, envelope(DAY))
    corrected = RECEIVED - (sent_at - timestamp)
    assert result.identifies[0].event_time_ms == (RECEIVED if corrected - RECEIVED > DAY else corrected)


def test_the_messages_own_sent_at_comes_before_the_batchs() -> None:
    message = {"type": "identify", "userId": "u", "timestamp": iso(RECEIVED), "sentAt": iso(RECEIVED + 5_000)}
    body = {"batch": [message], "sentAt": iso(RECEIVED + 9_000)}
    assert segment_batch(body, envelope()).identifies[0].event_time_ms == RECEIVED - 5_000


def test_without_sent_at_timestamp_stands_and_original_timestamp_does_not() -> None:
    body = {
        "batch": [
            {"type": "identify", "userId": "u", "timestamp": iso(RECEIVED - 7_000)},
            {"type": "identify", "userId": "u", "originalTimestamp": iso(RECEIVED - 7_000)},
            {"type": "identify", "userId": "u"},
        ]
    }
    times = [e.event_time_ms for e in segment_batch(body, envelope()).identifies]
    assert times == [RECEIVED - 7_000, RECEIVED, RECEIVED]


def test_a_rudderstack_body_is_read_the_same_way() -> None:
    # As RudderStack's SDKs send an identify: the device's time in originalTimestamp,
    # sentAt from the same clock (here 3 hours fast), and fields of its own.
    fast = 3 * 3_600_000
    body = {
        "batch": [
            {
                "type": "identify",
                "channel": "web",
                "userId": "u",
                "anonymousId": "a-1",
                "messageId": "m-1",
                "rudderId": "r-1",
                "originalTimestamp": iso(RECEIVED - 2_000 + fast),
                "sentAt": iso(RECEIVED + fast),
                "traits": {"plan": "pro"},
            }
        ],
        "sentAt": iso(RECEIVED + fast),
    }
    result = segment_batch(body, envelope())
    (event,) = result.identifies
    assert event.event_time_ms == RECEIVED - 2_000 and result.clamped == 0
    assert event.dedupe_key == "m-1" and event.anonymous_ids == ("a-1",)


@pytest.mark.parametrize(
    ("message", "named"),
    [
        ({"timestamp": iso(RECEIVED), "sentAt": "soon"}, "batch[0].sentAt is not an ISO 8601"),
        ({"originalTimestamp": "then", "sentAt": iso(RECEIVED)}, "batch[0].originalTimestamp is not"),
        (
            {"timestamp": "0001-01-01T00:00:00Z", "sentAt": "9999-01-01T00:00:00Z"},
            "batch[0].timestamp is outside",
        ),
    ],
)
def test_bad_times_name_the_field(message: dict[str, object], named: str) -> None:
    with pytest.raises(InvalidRequest, match=re.escape(named)):
        segment_batch({"batch": [{"type": "identify", "userId": "u", **message}]}, envelope())


def test_a_bad_batch_sent_at_names_the_body() -> None:
    body = {"batch": [{"type": "identify", "userId": "u", "timestamp": iso(RECEIVED)}], "sentAt": 3}
    with pytest.raises(InvalidRequest, match=r"body\.sentAt must be an ISO 8601"):
        segment_batch(body, envelope())


# --- ties within one request -----------------------------------------------------------


def test_stamp_ids_sort_as_positions_up_to_the_request_limit() -> None:
    response_id = str(uuid.uuid4())
    ids = [
        IdentifyEvent("ws", "u", "test", 0, 0, response_id, index).stamp_id
        for index in range(MAX_EVENTS_PER_REQUEST)
    ]
    assert sorted(ids) == ids


@pytest.mark.parametrize("index", [-1, 0, 7, 1_999, 2_000, 9_999, 10_000, 2**40])
def test_stamp_ids_are_the_response_id_and_four_digits(index: int) -> None:
    event = IdentifyEvent("ws", "u", "test", 0, 0, "r-9", index)
    assert event.stamp_id == f"r-9:{index:04d}"


def test_the_dedupe_identity_is_unchanged() -> None:
    plain = IdentifyEvent("ws", "u", "test", 0, 0, "r", 7)
    keyed = plain._replace(dedupe_key="k-1")
    assert (plain.event_id, plain.stamp_id) == ("r:7", "r:0007")
    assert (keyed.event_id, keyed.stamp_id) == ("k-1", "r:0007")


@st.composite
def one_request(draw: st.DrawFn) -> tuple[tuple[IdentifyEvent, ...], int]:
    """The identifies of one request (any dialect) of one user, each setting ``plan``
    to its position, all at one time, with or without dedupe keys (any text)."""
    count = draw(st.integers(1, 24))  # past 10; the longest requests are below
    keys = draw(
        st.lists(
            st.none() | st.uuids().map(str) | st.text("0123456789:az", min_size=1, max_size=6),
            min_size=count,
            max_size=count,
        )
    )
    dialect = draw(st.sampled_from(["thrivestack", "segment", "amplitude"]))
    env = envelope(response_id=str(draw(st.uuids())))
    if dialect == "thrivestack":
        items = [
            {"user_id": "u", "traits": {"plan": i}} | ({} if k is None else {"message_id": k})
            for i, k in enumerate(keys)
        ]
        return thrivestack.parse(orjson.dumps(items), env), count
    if dialect == "segment":
        messages = [
            {"type": "identify", "userId": "u", "timestamp": iso(RECEIVED - 1), "traits": {"plan": i}}
            | ({} if k is None else {"messageId": k})
            for i, k in enumerate(keys)
        ]
        return segment_batch({"batch": messages}, env).identifies, count
    identifications = [
        {"user_id": "u", "time": RECEIVED - 1, "user_properties": {"plan": i}}
        | ({} if k is None else {"insert_id": k})
        for i, k in enumerate(keys)
    ]
    return amplitude_identify(identifications, env).identifies, count


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_the_last_identify_of_a_request_wins_in_any_delivery_order(data: st.DataObject) -> None:
    events, count = data.draw(one_request())
    delivered = data.draw(
        st.permutations([*events, *data.draw(st.lists(st.sampled_from(events), max_size=5))])
    )
    profile = Profile()
    for event in delivered:
        profile.apply_event(event)
    assert profile.traits == {"plan": count - 1}


def test_the_last_of_the_longest_request_wins_applied_backwards() -> None:
    items = [{"user_id": "u", "message_id": str(uuid.uuid4()), "traits": {"plan": i}} for i in range(2_000)]
    profile = Profile()
    for event in reversed(thrivestack.parse(orjson.dumps(items), envelope())):
        profile.apply_event(event)
    assert profile.traits == {"plan": 1_999}


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_ties_across_requests_resolve_the_same_way_in_any_order(data: st.DataObject) -> None:
    requests = [data.draw(one_request()) for _ in range(data.draw(st.integers(2, 3)))]
    events = [event._replace(event_time_ms=RECEIVED) for made, _ in requests for event in made]
    reference = Profile()
    for event in sorted(events, key=lambda e: e.stamp_id):
        reference.apply_event(event)
    delivered = Profile()
    for event in data.draw(st.permutations(events)):
        delivered.apply_event(event)
    assert delivered == reference
