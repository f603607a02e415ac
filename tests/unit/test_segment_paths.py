"""The Segment-compatible paths beside /v1/identify and /v1/batch: single messages of
the types that change no profile, RudderStack's context.traits, and which write key a
request carries."""

from __future__ import annotations

import base64

import orjson
import pytest
from starlette.requests import Request

from traitstream.dialects import segment, segment_single
from traitstream.dialects.common import Envelope
from traitstream.edge.routes.segment import write_key
from traitstream.edge.routes.segment_paths import paths
from traitstream.errors import InvalidRequest, LimitExceeded, Unauthorized

ENV = Envelope("ws", "resp-1", 1_700_000_000_000)


def test_every_short_route_and_the_beacon_path_are_served() -> None:
    served = {p.path for p in paths()}
    assert {"/v1/i", "/v1/b", "/v1/t", "/v1/p", "/v1/s", "/v1/g", "/v1/a", "/beacon/v1/batch"} <= served
    assert {"/v1/track", "/v1/page", "/v1/screen", "/v1/group", "/v1/alias"} <= served


@pytest.mark.parametrize("kind", sorted(segment_single.ROUTES))
def test_a_single_message_is_accepted_and_ignored(kind: str) -> None:
    _, short = segment_single.ROUTES[kind]
    read = segment_single.reader(kind, short)
    for body in ({"userId": "u", "writeKey": "k"}, {"type": kind, "userId": "u", "writeKey": "k"}):
        request = read(orjson.dumps(body))
        assert request.write_key == "k"
        result = segment.parse(request, ENV)
        assert result.identifies == () and result.ignored == (kind,)
    with pytest.raises(InvalidRequest, match=f"body.type must be {kind} on {short}, got 'identify'"):
        read(b'{"type": "identify", "userId": "u"}')
    with pytest.raises(InvalidRequest, match="must be a JSON object"):
        read(b"[1]")
    with pytest.raises(LimitExceeded, match="32 KB per event"):
        read(b'{"p":"' + b"x" * 33_000 + b'"}')
    with pytest.raises(InvalidRequest, match="writeKey must be a string"):
        read(b'{"writeKey": 3}')


def test_traits_in_context_traits_are_the_identifys_traits() -> None:
    body = {"userId": "u", "context": {"traits": {"plan": "pro", "seats": 1}}, "traits": {"seats": 2}}
    (event,) = segment.parse(segment.read_identify(orjson.dumps(body)), ENV).identifies
    assert {op.trait: op.value for op in event.operations} == {"plan": "pro", "seats": 2}
    with pytest.raises(InvalidRequest, match=r"body.context.traits must be an object"):
        segment.parse(segment.read_identify(b'{"userId": "u", "context": {"traits": 1}}'), ENV)


def request(authorization: str | None = None, query: str = "") -> Request:
    headers = [] if authorization is None else [(b"authorization", authorization.encode())]
    return Request({"type": "http", "headers": headers, "query_string": query.encode(), "method": "POST"})


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def test_one_write_key_from_wherever_it_is() -> None:
    assert write_key(request(basic("k")), None) == "k"
    assert write_key(request("Bearer k"), "k") == "k"
    assert write_key(request(), "k") == "k"
    assert write_key(request(query="writeKey=k"), None) == "k"
    assert write_key(request(), None) is None
    for given in (request(basic("k")), request(query="writeKey=k")):
        with pytest.raises(Unauthorized, match="two different write keys"):
            write_key(given, "other")
