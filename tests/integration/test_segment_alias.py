"""Alias through the real edge, broker, workers, Redis and Postgres: Segment's own
Python library, analytics.js's route, and a RudderStack-shaped body."""

from __future__ import annotations

import base64
import uuid

import httpx
import orjson
import psycopg
from segment.analytics import Client

from tests.support.stack import Stack, wait_until
from traitstream.events import user_profile_id


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def by_anonymous_id(stack: Stack, anonymous_id: str) -> dict | None:
    response = httpx.get(
        f"{stack.url}/api/profiles",
        params={"anonymous_id": anonymous_id},
        headers=stack.headers(),
        timeout=10,
    )
    return response.json() if response.status_code == 200 else None


def test_segment_library_alias_absorbs_an_earlier_user(stack: Stack) -> None:
    old, new, device = unique("old-user"), unique("new-user"), unique("device")
    errors: list[Exception] = []
    client = Client(
        write_key=stack.api_key, host=stack.url, sync_mode=True, on_error=lambda e, _b: errors.append(e)
    )
    client.identify(old, {"plan": "free", "email": "old@example.com"}, anonymous_id=device, timestamp=None)
    client.identify(new, {"plan": "pro"})
    stack.wait_profile(old)
    stack.wait_profile(new)
    client.alias(old, new)
    assert errors == []
    merged = stack.wait_profile(new, lambda p: "email" in p["traits"])
    assert merged["traits"] == {"plan": "pro", "email": "old@example.com"}
    assert merged["user_id"] == new
    assert merged["profile_id"] == str(user_profile_id(stack.workspace, new))
    # The earlier user's device moved along; the previous id resolves to the user's profile.
    assert set(merged["anonymous_ids"]) == {device, old}
    assert stack.profile(old) == merged
    assert by_anonymous_id(stack, device) == merged
    with psycopg.connect(stack.database_url) as conn:
        rows = conn.execute("SELECT count(*) FROM profiles WHERE user_id = %s", (old,)).fetchone()
        aliases = conn.execute(
            "SELECT profile_id FROM user_aliases WHERE workspace_id = %s AND user_id = %s",
            (stack.workspace, old),
        ).fetchall()
    assert rows == (0,)
    assert aliases == [(user_profile_id(stack.workspace, new),)]
    # A later identify of the previous user id lands in the merged profile.
    client.identify(old, {"seats": 3})
    assert stack.wait_profile(new, lambda p: "seats" in p["traits"])["traits"]["seats"] == 3
    assert stack.profile(old) is not None and stack.profile(old)["user_id"] == new


def test_analytics_js_route_merges_an_anonymous_profile(stack: Stack) -> None:
    anonymous, user = unique("ajs-anon"), unique("ajs-user")
    seen = stack.post("/v1/identify", {"anonymousId": anonymous, "traits": {"theme": "dark"}})
    assert seen.status_code == 200, seen.text
    wait_until(lambda: by_anonymous_id(stack, anonymous), 30, "the anonymous profile")
    # analytics.js: the write key in a text/plain JSON body, no Authorization header.
    body = {"previousId": anonymous, "userId": user, "writeKey": stack.api_key, "type": "alias"}
    response = httpx.post(
        f"{stack.url}/v1/a", content=orjson.dumps(body), headers={"Content-Type": "text/plain"}, timeout=10
    )
    assert response.status_code == 200 and response.json() == {"success": True}
    merged = stack.wait_profile(user, lambda p: p["traits"].get("theme") == "dark")
    assert merged["anonymous_ids"] == [anonymous]
    assert by_anonymous_id(stack, anonymous) == merged
    stack.post("/v1/identify", {"anonymousId": anonymous, "traits": {"theme": "light"}})
    stack.wait_profile(user, lambda p: p["traits"].get("theme") == "light")


def test_rudderstack_alias_body_on_v1_alias(stack: Stack) -> None:
    anonymous, user = unique("rs-anon"), unique("rs-user")
    stack.post("/v1/identify", {"anonymousId": anonymous, "traits": {"country": "NO"}})
    wait_until(lambda: by_anonymous_id(stack, anonymous), 30, "the anonymous profile")
    body = {
        "type": "alias",
        "previousId": anonymous,
        "userId": user,
        "anonymousId": anonymous,
        "messageId": unique("rs-msg"),
        "rudderId": str(uuid.uuid4()),
        "channel": "web",
        "originalTimestamp": "2024-05-01T10:00:00.000Z",
        "sentAt": "2024-05-01T10:00:01.000Z",
        "context": {"library": {"name": "RudderLabs JavaScript SDK", "version": "3.0.0"}},
    }
    response = httpx.post(f"{stack.url}/v1/alias", json=body, headers=basic(stack.api_key), timeout=10)
    assert response.status_code == 200, response.text
    assert stack.wait_profile(user, lambda p: "country" in p["traits"])["anonymous_ids"] == [anonymous]


def test_a_retried_alias_applies_once(stack: Stack) -> None:
    old, new = unique("retry-old"), unique("retry-new")
    stack.post("/v1/identify", {"userId": old, "traits": {"a": 1}})
    stack.wait_profile(old)
    message = {"previousId": old, "userId": new, "messageId": unique("alias-msg")}

    def duplicates() -> float:
        return stack.workers_metric("traitstream_worker_events_total", 'outcome="duplicate"')

    wait_until(lambda: _quietly(duplicates), 30, "the workers' metrics")
    before = duplicates()
    assert stack.post("/v1/alias", message).status_code == 200
    stack.wait_profile(new, lambda p: p["traits"] == {"a": 1})
    # The user writes again, then the client retries the alias: nothing changes.
    stack.post("/v1/identify", {"userId": new, "traits": {"b": 2}})
    stack.wait_profile(new, lambda p: p["traits"] == {"a": 1, "b": 2})
    assert stack.post("/v1/alias", message).status_code == 200
    wait_until(lambda: duplicates() - before >= 1, 30, "the retried alias counted as a duplicate")
    assert stack.profile(new)["traits"] == {"a": 1, "b": 2}
    with psycopg.connect(stack.database_url) as conn:
        count = conn.execute(
            "SELECT count(*) FROM profiles WHERE workspace_id = %s AND user_id IN (%s, %s)",
            (stack.workspace, old, new),
        ).fetchone()
    assert count == (1,)


def _quietly(read: object) -> bool:
    try:
        read()  # type: ignore[operator]
    except httpx.HTTPError:
        return False
    return True


def test_alias_refusals_name_the_field(stack: Stack) -> None:
    missing = stack.post("/v1/alias", {"userId": "u"})
    assert missing.status_code == 400
    assert missing.json() == {
        "success": False,
        "code": "invalid_request",
        "message": "body.previousId is required for an alias",
    }
    in_batch = stack.post("/v1/batch", {"batch": [{"type": "alias", "previousId": "p"}]})
    assert in_batch.status_code == 400
    assert in_batch.json()["message"] == "batch[0].userId is required for an alias"
    unauthorized = httpx.post(f"{stack.url}/v1/a", json={"previousId": "p", "userId": "u"}, timeout=10)
    assert unauthorized.status_code == 401
