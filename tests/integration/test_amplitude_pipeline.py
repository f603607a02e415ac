"""The Amplitude dialect through the real edge, broker, workers, Redis and Postgres:
seed 002 verbatim, the user property operations, device ids, dedupe, errors, and
Amplitude's own Python SDK pointed at the edge."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from amplitude import Amplitude, BaseEvent, Config, EventOptions, Identify

from tests.support.seeds import seed_bytes
from tests.support.stack import Stack, metric_sum, wait_until
from traitstream.events import user_profile_id
from traitstream.store import keys


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def identify(stack: Stack, identification: Any, **extra: Any) -> httpx.Response:
    fields = {"api_key": stack.api_key, "identification": orjson.dumps(identification).decode(), **extra}
    return httpx.post(f"{stack.url}/identify", data=fields, timeout=30)


def seed_fields(stack: Stack) -> dict[str, str]:
    fields: dict[str, str] = orjson.loads(seed_bytes("amplitude_002.form.json"))
    return {name: value.replace("{{api_key}}", stack.api_key) for name, value in fields.items()}


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart", "json"])
def test_seed_sample_lands_in_the_profile(stack: Stack, encoding: str) -> None:
    fields = seed_fields(stack)
    url = f"{stack.url}/identify"
    if encoding == "urlencoded":
        response = httpx.post(url, data=fields, timeout=30)
    elif encoding == "multipart":
        response = httpx.post(url, files={name: (None, value) for name, value in fields.items()}, timeout=30)
    else:
        response = httpx.post(url, json=fields, timeout=30)
    assert response.status_code == 200, response.text
    assert response.text == "success"
    assert response.headers["content-type"].startswith("text/plain")
    profile = stack.wait_profile("value", lambda p: p["traits"].get("propertyNameToUpdate") == "newValue")
    assert profile["profile_id"] == str(user_profile_id(stack.workspace, "value"))


def test_operations_device_fields_and_time_order(stack: Stack) -> None:
    user = unique("amp")
    first = {
        "user_id": user,
        "time": 2_000_000,
        "platform": "iOS",
        "country": "Norway",
        "paying": "true",
        "user_properties": {
            "$set": {"plan": "free", "old": 1},
            "$setOnce": {"first_seen": "2024-01-01"},
            "$add": {"logins": 2},
            "$append": {"tags": "a"},
        },
    }
    assert identify(stack, first).status_code == 200
    stack.wait_profile(user, lambda p: p["traits"].get("logins") == 2)
    second = {
        "user_id": user,
        "time": 3_000_000,
        "user_properties": {
            "$set": {"plan": "pro"},
            "$setOnce": {"first_seen": "2030-01-01"},
            "$add": {"logins": 3},
            "$append": {"tags": ["b"]},
            "$unset": {"old": "-"},
        },
    }
    # An older $set arrives late: it must not override plan.
    late = {"user_id": user, "time": 1_000_000, "user_properties": {"plan": "trial"}}
    response = identify(stack, [second, late])
    assert response.status_code == 200, response.text
    profile = stack.wait_profile(user, lambda p: p["traits"].get("logins") == 5)
    assert profile["traits"] == {
        "platform": "iOS",
        "country": "Norway",
        "paying": "true",
        "plan": "pro",
        "first_seen": "2024-01-01",
        "logins": 5,
        "tags": ["a", "b"],
    }


def test_a_time_past_the_margin_is_the_receipt_time(stack: Stack) -> None:
    # A device clock 400 days ahead would otherwise hold plan against every later write.
    user = unique("amp-clock")
    ahead_ms = int(time.time() * 1000) + 400 * 86_400_000

    def clamped() -> float:
        text = httpx.get(f"{stack.url}/metrics").text
        return metric_sum(text, "traitstream_edge_event_time_clamped_total", 'dialect="amplitude"')

    before = clamped()
    events = [
        {"user_id": user, "time": ahead_ms, "user_properties": {"plan": "from-ahead"}},
        {"user_id": unique("amp-clock-other"), "time": ahead_ms - 1000, "user_properties": {"a": 1}},
    ]
    assert identify(stack, events).status_code == 200
    assert clamped() - before == 2
    stack.wait_profile(user, lambda p: p["traits"].get("plan") == "from-ahead")
    later = {"user_id": user, "user_properties": {"plan": "later", "second": True}}
    assert identify(stack, later).status_code == 200
    profile = stack.wait_profile(user, lambda p: p["traits"].get("second") is True)
    assert profile["traits"]["plan"] == "later"


def test_device_id_links_the_anonymous_profile(stack: Stack) -> None:
    user, device = unique("amp-user"), unique("device")
    anonymous = {"device_id": device, "user_properties": {"$set": {"seen_ad": True}}}
    assert identify(stack, anonymous).status_code == 200
    wait_until(
        lambda: (
            httpx.get(
                f"{stack.url}/api/profiles", params={"anonymous_id": device}, headers=stack.headers()
            ).status_code
            == 200
        ),
        30,
        "the anonymous profile",
    )
    assert (
        identify(
            stack, {"user_id": user, "device_id": device, "user_properties": {"plan": "pro"}}
        ).status_code
        == 200
    )
    profile = stack.wait_profile(
        user, lambda p: p["traits"].get("plan") == "pro" and "seen_ad" in p["traits"]
    )
    assert profile["anonymous_ids"] == [device]
    by_device = httpx.get(
        f"{stack.url}/api/profiles", params={"anonymous_id": device}, headers=stack.headers()
    )
    assert by_device.json()["user_id"] == user


def test_retries_with_the_same_insert_id_apply_once(stack: Stack) -> None:
    user = unique("amp-retry")
    for _ in range(3):
        body = {"user_id": user, "insert_id": f"{user}-i1", "user_properties": {"$add": {"n": 1}}}
        assert identify(stack, body).status_code == 200
    assert identify(stack, {"user_id": user, "user_properties": {"$set": {"done": True}}}).status_code == 200
    profile = stack.wait_profile(user, lambda p: p["traits"].get("done") is True)
    assert profile["traits"]["n"] == 1
    with psycopg.connect(stack.database_url) as conn:
        row = conn.execute("SELECT traits->'n' FROM profiles WHERE user_id = %s", (user,)).fetchone()
    assert row == (1,)


def test_amplitude_sdk_identify_lands_in_the_profile(stack: Stack) -> None:
    user = unique("sdk-user")
    answers: list[tuple[str, int]] = []
    client = Amplitude(
        stack.api_key,
        Config(
            server_url=f"{stack.url}/2/httpapi",
            flush_queue_size=10,
            flush_interval_millis=50,
            callback=lambda event, code, message=None: answers.append((event.event_type, code)),
        ),
    )
    try:
        identity = Identify().set("plan", "pro").set_once("first_seen", "2024-02-03").add("logins", 3)
        client.identify(identity, EventOptions(user_id=user, device_id=f"{user}-device"))
        client.track(BaseEvent(event_type="Signed Up", user_id=user, event_properties={"via": "sdk"}))
        client.flush()
        wait_until(lambda: len(answers) == 2, 30, "the SDK's callbacks")
        client.identify(
            Identify().add("logins", 2).set_once("first_seen", "2030-01-01"), EventOptions(user_id=user)
        )
        client.flush()
        wait_until(lambda: len(answers) == 3, 30, "the SDK's third callback")
    finally:
        client.shutdown()
    assert sorted(answers) == [("$identify", 200), ("$identify", 200), ("Signed Up", 200)]
    profile = stack.wait_profile(user, lambda p: p["traits"].get("logins") == 5)
    assert profile["traits"] == {"plan": "pro", "first_seen": "2024-02-03", "logins": 5}
    assert profile["anonymous_ids"] == [f"{user}-device"]
    text = httpx.get(f"{stack.url}/metrics").text
    assert metric_sum(text, "traitstream_edge_ignored_events_total", 'dialect="amplitude",type="event"') >= 1


def test_http_api_answer_and_invalid_event_details(stack: Stack) -> None:
    user = unique("amp-http")
    events = [{"event_type": "$identify", "user_id": user, "user_properties": {"$set": {"a": 1}}}]
    ok = httpx.post(f"{stack.url}/2/httpapi", json={"api_key": stack.api_key, "events": events})
    assert ok.status_code == 200
    body = ok.json()
    assert body["code"] == 200 and body["events_ingested"] == 1 and body["payload_size_bytes"] > 0
    stack.wait_profile(user, lambda p: p["traits"] == {"a": 1})

    bad = httpx.post(
        f"{stack.url}/2/httpapi",
        json={"api_key": stack.api_key, "events": [*events, {"event_type": "Clicked"}]},
    )
    assert bad.status_code == 400
    assert bad.json() == {
        "code": 400,
        "error": "events[1] needs user_id or device_id",
        "events_with_missing_fields": {"user_id": [1]},
    }
    missing = httpx.post(f"{stack.url}/2/httpapi", json={"api_key": stack.api_key})
    assert missing.json() == {"code": 400, "error": "events is required", "missing_field": "events"}


@pytest.mark.parametrize(
    ("identification", "status", "named"),
    [
        ({"user_properties": {"a": 1}}, 400, "identification needs user_id or device_id"),
        (
            {"user_id": "u", "user_properties": {"$add": {"logins": "many"}}},
            400,
            "$add.logins must be a number",
        ),
        ({"user_id": "u", "time": "noon"}, 400, "identification.time"),
    ],
)
def test_bad_identifications_are_refused_naming_the_field(
    stack: Stack, identification: dict, status: int, named: str
) -> None:
    response = identify(stack, identification)
    assert response.status_code == status
    body = response.json()
    assert body["code"] == status and named in body["error"]


def test_malformed_multipart_is_a_400_in_amplitudes_shape(stack: Stack) -> None:
    boundary = "0d37f771f3609e9baf6be26654101f5f"
    response = httpx.post(
        f"{stack.url}/identify",
        content=f"--{boundary}\r\nTrue--{boundary}--\r\n".encode(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == 400 and body["error"].startswith("malformed multipart form data")


def test_limits_are_413_in_amplitudes_shape(stack: Stack) -> None:
    deep: dict = {}
    node = deep
    for _ in range(45):
        node["n"] = {}
        node = node["n"]
    response = identify(stack, {"user_id": "u", "user_properties": {"deep": deep}})
    assert response.status_code == 413
    assert response.json() == {
        "code": 413,
        "error": "identification.user_properties is nested more than 40 levels deep",
    }


def test_keys_are_checked_in_amplitudes_shape(stack: Stack) -> None:
    ident = orjson.dumps({"user_id": "u"}).decode()
    missing = httpx.post(f"{stack.url}/identify", data={"identification": ident})
    assert missing.status_code == 401
    assert missing.json() == {"code": 401, "error": "Invalid API key: missing api_key"}
    unknown = httpx.post(f"{stack.url}/identify", data={"api_key": "nope", "identification": ident})
    assert unknown.status_code == 401
    assert unknown.json() == {"code": 401, "error": "Invalid API key: unknown or revoked api_key"}

    reader = keys.new_secret()
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        keys.register(conn, reader, stack.workspace, frozenset({"profiles:read"}))
    forbidden = httpx.post(f"{stack.url}/identify", data={"api_key": reader, "identification": ident})
    assert forbidden.status_code == 403
    assert "lacks the scope identify:write or identify_api or telemetry_apis" in forbidden.json()["error"]
