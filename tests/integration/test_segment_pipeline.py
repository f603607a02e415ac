"""The Segment-compatible dialect through the real edge, broker, workers, Redis and
Postgres, with Segment's own Python library pointed at the edge."""

from __future__ import annotations

import base64
import gzip
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from segment.analytics import Client
from segment.analytics.request import APIError

from tests.support.stack import Stack, metric_sum, wait_until
from traitstream.merge import expand_stamps
from traitstream.store import keys


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def test_segment_library_identify_lands_in_the_profile(stack: Stack) -> None:
    user, anonymous = unique("seg-user"), unique("seg-anon")
    errors: list[Exception] = []
    client = Client(
        write_key=stack.api_key, host=stack.url, sync_mode=True, on_error=lambda e, _b: errors.append(e)
    )
    client.identify(
        user,
        {
            "firstName": "Ada",
            "lastName": "Lovelace",
            "email": "ada@example.com",
            "createdAt": "2015-02-03T04:05:06Z",
        },
        anonymous_id=anonymous,
    )
    # Other message types ride in the same kind of batch: accepted and not stored.
    client.track(user, "Signed Up", {"plan": "pro"})
    client.page(user, "Docs", "Intro")
    client.identify(user, {"plan": "pro"})
    assert errors == []
    profile = stack.wait_profile(user, lambda p: p["traits"].get("plan") == "pro")
    assert profile["traits"] == {
        "firstName": "Ada",
        "lastName": "Lovelace",
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "createdAt": "2015-02-03T04:05:06Z",
        "plan": "pro",
    }
    assert profile["anonymous_ids"] == [anonymous]
    assert profile["created_at"].startswith("2015-02-03T04:05:06")
    text = httpx.get(f"{stack.url}/metrics").text
    assert metric_sum(text, "traitstream_edge_ignored_events_total", 'dialect="segment",type="track"') >= 1
    assert metric_sum(text, "traitstream_edge_ignored_events_total", 'dialect="segment",type="page"') >= 1


def test_segment_library_sees_refusals_as_api_errors(stack: Stack) -> None:
    client = Client(write_key="not-a-key", host=stack.url, sync_mode=True)
    with pytest.raises(APIError) as caught:
        client.identify("someone", {"plan": "pro"})
    assert caught.value.status == 401
    assert caught.value.code == "unauthorized"
    assert caught.value.message == "unknown or revoked write key"


def test_identify_endpoint_with_each_credential(stack: Stack) -> None:
    user = unique("seg-direct")
    url = f"{stack.url}/v1/identify"
    by_basic = httpx.post(url, json={"userId": user, "traits": {"a": 1}}, headers=basic(stack.api_key))
    assert by_basic.status_code == 200 and by_basic.json() == {"success": True}
    by_bearer = httpx.post(url, json={"userId": user, "traits": {"b": 2}}, headers=stack.headers())
    assert by_bearer.status_code == 200
    in_body = httpx.post(url, json={"userId": user, "traits": {"c": 3}, "writeKey": stack.api_key})
    assert in_body.status_code == 200
    gzipped = httpx.post(
        url,
        content=gzip.compress(orjson.dumps({"userId": user, "traits": {"d": 4}})),
        headers={**basic(stack.api_key), "Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert gzipped.status_code == 200, gzipped.text
    profile = stack.wait_profile(user, lambda p: len(p["traits"]) == 4)
    assert profile["traits"] == {"a": 1, "b": 2, "c": 3, "d": 4}


def test_timestamps_order_writes_and_message_id_dedupes(stack: Stack) -> None:
    user = unique("seg-order")
    batch = [
        {
            "type": "identify",
            "userId": user,
            "timestamp": "2024-01-02T00:00:00Z",
            "traits": {"plan": "pro"},
            "messageId": f"{user}-m2",
        },
        {
            "type": "identify",
            "userId": user,
            "timestamp": "2024-01-01T00:00:00Z",
            "traits": {"plan": "free"},
            "messageId": f"{user}-m1",
        },
        {"type": "track", "userId": user, "event": "x"},
    ]

    def duplicates() -> float:
        return stack.workers_metric("traitstream_worker_events_total", 'outcome="duplicate"')

    def metrics_up() -> bool:
        try:
            duplicates()
        except httpx.HTTPError:
            return False
        return True

    wait_until(metrics_up, 30, "the workers' metrics")
    before = duplicates()
    responses = [stack.post("/v1/batch", {"batch": batch}) for _ in range(2)]
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    wait_until(lambda: duplicates() - before >= 2, 30, "the resent identifies counted as duplicates")
    profile = stack.wait_profile(user)
    assert profile["traits"] == {"plan": "pro"}
    with psycopg.connect(stack.database_url) as conn:
        row = conn.execute("SELECT stamps FROM profiles WHERE user_id = %s", (user,)).fetchone()
    # The first request's copy was applied; its stamp names that request and position.
    assert row is not None
    assert expand_stamps(row[0])[0]["plan"][1] == f"{responses[0].headers['X-Response-Id']}:0000"


@pytest.mark.parametrize(
    ("path", "payload", "status", "message"),
    [
        ("/v1/identify", {"traits": {"a": 1}}, 400, "body needs userId or anonymousId"),
        (
            "/v1/identify",
            {"userId": "u", "traits": {"firstName": 3}},
            400,
            "body.traits.firstName must be a string",
        ),
        ("/v1/batch", {"batch": [{"type": "purchase", "userId": "u"}]}, 400, "batch[0].type must be one of"),
        (
            "/v1/identify",
            {"userId": "u", "traits": {"blob": "x" * 33_000}},
            413,
            "the limit of 32 KB per event",
        ),
        (
            "/v1/batch",
            {"batch": [{"type": "track", "userId": "u", "p": "x" * 30_000}] * 18},
            413,
            "the limit of 500 KB per batch",
        ),
    ],
)
def test_refusals_name_the_field_or_limit(
    stack: Stack, path: str, payload: dict, status: int, message: str
) -> None:
    response = stack.post(path, payload)
    assert response.status_code == status
    error = response.json()
    assert error["success"] is False and error["code"] in ("invalid_request", "payload_too_large")
    assert message in error["message"]


def test_missing_key_and_missing_scope(stack: Stack) -> None:
    missing = httpx.post(f"{stack.url}/v1/identify", json={"userId": "u"})
    assert missing.status_code == 401
    assert missing.json() == {"success": False, "code": "unauthorized", "message": "missing write key"}
    reader = keys.new_secret()
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        keys.register(conn, reader, stack.workspace, frozenset({"profiles:read"}))
    forbidden = httpx.post(
        f"{stack.url}/v1/batch", json={"batch": [{"type": "identify", "userId": "u"}]}, headers=basic(reader)
    )
    assert forbidden.status_code == 403
    assert forbidden.json()["code"] == "forbidden"


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def clamped_count(stack: Stack) -> float:
    text = httpx.get(f"{stack.url}/metrics").text
    return metric_sum(text, "traitstream_edge_event_time_clamped_total", 'dialect="segment"')


def edge_lines(stack: Stack, message: str) -> list[dict[str, Any]]:
    assert stack.edge is not None
    lines = [orjson.loads(raw) for raw in stack.edge.log_text().splitlines() if raw.startswith("{")]
    return [line for line in lines if line.get("msg") == message]


@pytest.mark.parametrize("sent_at", [False, True], ids=["timestamp-only", "with-sentAt"])
def test_a_clock_400_days_ahead_does_not_freeze_a_trait(stack: Stack, sent_at: bool) -> None:
    # A device whose clock runs 400 days ahead. Without sentAt its time is past the
    # margin and taken as the receipt time; with sentAt from the same clock, the skew
    # correction brings it back. Either way a later write wins.
    user = unique("seg-clock")
    ahead = iso(datetime.now(UTC) + timedelta(days=400))
    message: dict[str, object] = {"userId": user, "timestamp": ahead, "traits": {"plan": "ahead", "first": 1}}
    if sent_at:
        message["sentAt"] = ahead
    before = clamped_count(stack)
    started_ms = int(time.time() * 1000)
    assert stack.post("/v1/identify", message).status_code == 200
    answered_ms = int(time.time() * 1000)
    stack.wait_profile(user, lambda p: p["traits"].get("plan") == "ahead")

    later = {"userId": user, "timestamp": iso(datetime.now(UTC)), "traits": {"plan": "later", "second": 2}}
    assert stack.post("/v1/identify", later).status_code == 200
    profile = stack.wait_profile(user, lambda p: p["traits"].get("second") == 2)
    assert profile["traits"]["plan"] == "later"

    with psycopg.connect(stack.database_url) as conn:
        row = conn.execute("SELECT stamps FROM profiles WHERE user_id = %s", (user,)).fetchone()
    assert row is not None
    assert started_ms <= expand_stamps(row[0])[0]["first"][0] <= answered_ms  # dated at its receipt
    assert clamped_count(stack) - before == (0 if sent_at else 1)


def test_clamped_times_are_counted_and_logged_once_per_request(stack: Stack) -> None:
    users = [unique("seg-ahead") for _ in range(4)]
    ahead = iso(datetime.now(UTC) + timedelta(days=2))
    batch = [{"type": "identify", "userId": u, "timestamp": ahead, "traits": {"a": 1}} for u in users[:3]]
    batch.append({"type": "identify", "userId": users[3], "traits": {"a": 1}})
    before = clamped_count(stack)
    response = stack.post("/v1/batch", {"batch": batch})
    assert response.status_code == 200, response.text
    response_id = response.headers["X-Response-Id"]
    assert clamped_count(stack) - before == 3

    def logged() -> list[dict[str, Any]]:
        return [
            line
            for line in edge_lines(stack, "event times past the margin taken as the receipt time")
            if line.get("response_id") == response_id
        ]

    [line] = wait_until(logged, 10, "the edge's line naming the response id")
    assert line["dialect"] == "segment" and line["clamped"] == 3 and line["identifies"] == 4
