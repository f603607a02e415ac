from __future__ import annotations

import orjson
import pytest

from tests.support.seeds import seed_bytes
from traitstream.dialects import datafast
from traitstream.dialects.common import Envelope
from traitstream.errors import InvalidRequest, LimitExceeded
from traitstream.events import Op, Operation, user_profile_id

ENV = Envelope("ws", "resp-1", 1_700_000_000_000)
VISITOR = "a3ab2331-989f-4cfa-91c6-2461c9e3c6bd"


def parse(body: object, website_id: str | None = None) -> datafast.Identified:
    return datafast.parse(orjson.dumps(body), ENV, website_id)


def test_seed_sample_parses_verbatim() -> None:
    identified = datafast.parse(seed_bytes("datafast_003.json"), ENV)
    event = identified.event
    assert event.user_id == "user_123"
    assert event.anonymous_ids == (VISITOR,)
    assert event.operations == (
        Operation(Op.SET, "email", "jane@example.com"),
        Operation(Op.SET, "plan", "pro"),
    )
    assert identified.profile_id == str(user_profile_id("ws", "user_123"))
    assert event.dialect == "datafast" and event.event_time_ms == ENV.received_time_ms
    assert event.context is None and event.dedupe_key is None


def test_every_other_top_level_field_is_a_trait_whatever_its_type() -> None:
    # DataFast's own examples send company as a string: no reserved-trait types apply here.
    body = {
        "user_id": "u",
        "datafast_visitor_id": VISITOR.upper(),
        "company": "Acme",
        "age": "forty",
        "tags": ["a"],
        "meta": {"x": None},
        "gone": None,
    }
    event = parse(body).event
    assert {op.trait: op.value for op in event.operations} == {
        "company": "Acme",
        "age": "forty",
        "tags": ["a"],
        "meta": {"x": None},
        "gone": None,
    }


def test_website_travels_in_the_context() -> None:
    assert parse({"user_id": "u", "datafast_visitor_id": VISITOR}, "site-1").event.context == {
        "website_id": "site-1"
    }


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"datafast_visitor_id": VISITOR}, "body.user_id is required"),
        ({"user_id": "u"}, "body.datafast_visitor_id is required"),
        ({"user_id": "", "datafast_visitor_id": VISITOR}, "body.user_id must be 1 to 255 characters"),
        ({"user_id": "x" * 256, "datafast_visitor_id": VISITOR}, "body.user_id must be 1 to 255 characters"),
        ({"user_id": 12, "datafast_visitor_id": VISITOR}, "body.user_id must be a string"),
        ({"user_id": "u", "datafast_visitor_id": "visitor-1"}, "body.datafast_visitor_id must be a UUID"),
        (
            {"user_id": "u", "datafast_visitor_id": VISITOR.replace("-", "")},
            "datafast_visitor_id must be a UUID",
        ),
        ({"user_id": "u", "datafast_visitor_id": 5}, "body.datafast_visitor_id must be a string"),
        ({"user_id": "u", "datafast_visitor_id": VISITOR, "note": "a\x00b"}, "body.note contains a NUL"),
        ([{"user_id": "u"}], "the body must be a JSON object, got array"),
    ],
)
def test_invalid_bodies_name_the_field(body: object, named: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse(body)
    assert named in caught.value.message


def test_malformed_json_is_a_400() -> None:
    with pytest.raises(InvalidRequest, match="malformed JSON"):
        datafast.parse(b'{"user_id": ', ENV)


def test_limits_are_413_naming_the_limit() -> None:
    deep: dict = {}
    node = deep
    for _ in range(40):
        node["n"] = {}
        node = node["n"]
    with pytest.raises(LimitExceeded, match="nested more than 40"):
        parse({"user_id": "u", "datafast_visitor_id": VISITOR, "deep": deep})
    with pytest.raises(LimitExceeded, match="per identify"):
        parse({"user_id": "u", "datafast_visitor_id": VISITOR, "blob": "x" * 33_000})
