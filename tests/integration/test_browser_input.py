"""What a browser may send the edge, and what it is told when it is wrong: origins
outside the allowed list, analytics.js's routes and text/plain bodies, a write key in
the body against another in the header, size caps and gzip bounds on every new route.
An edge whose allowed origins are a list, over the real broker, workers and store."""

from __future__ import annotations

import gzip
import time
import uuid
from collections.abc import Iterator

import httpx
import orjson
import pytest

from tests.support.sdks import node_ready, run_node
from tests.support.stack import Broker, Stack, metric_sum

ALLOWED = "https://shop.example.com"
OTHER = "https://elsewhere.example.net"
ROUTES = ["/api/identify", "/identify", "/2/httpapi", "/api/v1/identify", "/v1/identify", "/v1/i", "/v1/b"]
SHORT = ["/v1/t", "/v1/p", "/v1/s", "/v1/g", "/v1/track", "/v1/page", "/v1/screen", "/v1/group"]


@pytest.fixture(scope="module")
def stack(kafka: Broker, database_url: str) -> Iterator[Stack]:
    running = Stack(kafka.bootstrap, database_url, extra_env={"TRAITSTREAM_CORS_ORIGINS": ALLOWED})
    try:
        running.start(workers=1)
        yield running
    finally:
        running.stop()


def post(stack: Stack, path: str, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(f"{stack.url}{path}", content=body, headers=headers, timeout=30)


def page(body: object) -> bytes:
    return orjson.dumps(body)


def cors_of(response: httpx.Response) -> str | None:
    return response.headers.get("access-control-allow-origin")


@pytest.mark.parametrize("path", ROUTES)
def test_preflights_from_the_allowed_origin_and_from_another(stack: Stack, path: str) -> None:
    asked = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    allowed = httpx.options(f"{stack.url}{path}", headers={"Origin": ALLOWED, **asked})
    assert allowed.status_code == 204 and cors_of(allowed) == ALLOWED
    refused = httpx.options(f"{stack.url}{path}", headers={"Origin": OTHER, **asked})
    assert refused.status_code == 403 and cors_of(refused) == OTHER
    assert OTHER in refused.text


def test_a_page_of_another_origin_is_refused_and_nothing_is_stored(stack: Stack) -> None:
    user = f"other-{uuid.uuid4().hex[:8]}"
    refused = post(
        stack,
        "/v1/i",
        page({"userId": user, "writeKey": stack.api_key}),
        Origin=OTHER,
        **{"Content-Type": "text/plain"},
    )
    assert refused.status_code == 403
    assert refused.json()["code"] == "forbidden" and f"'{OTHER}'" in refused.json()["message"]
    assert cors_of(refused) == OTHER and refused.headers["x-response-id"]
    # The same request from the allowed origin goes through, and only that one lands.
    accepted = post(
        stack,
        "/v1/i",
        page({"userId": user, "writeKey": stack.api_key, "traits": {"via": "page"}}),
        Origin=ALLOWED,
    )
    assert accepted.status_code == 200 and accepted.json() == {"success": True}
    assert cors_of(accepted) == ALLOWED and accepted.headers["vary"] == "Origin"
    assert stack.wait_profile(user)["traits"] == {"via": "page"}


def test_the_profile_routes_never_answer_a_browser_with_cors(stack: Stack) -> None:
    response = httpx.get(f"{stack.url}/api/profiles/nobody", headers={"Origin": ALLOWED, **stack.headers()})
    assert response.status_code == 404 and cors_of(response) is None
    preflight = httpx.options(f"{stack.url}/api/profiles/nobody", headers={"Origin": ALLOWED})
    assert preflight.status_code == 405 and cors_of(preflight) is None


def test_text_plain_json_with_the_write_key_in_the_body(stack: Stack) -> None:
    user = f"beacon-{uuid.uuid4().hex[:8]}"
    batch = {"writeKey": stack.api_key, "batch": [{"type": "identify", "userId": user, "traits": {"a": 1}}]}
    for path in ("/v1/b", f"/beacon/v1/batch?writeKey={stack.api_key}"):
        body = {k: v for k, v in batch.items() if "?" not in path or k != "writeKey"}
        response = post(
            stack, path, page(body), Origin=ALLOWED, **{"Content-Type": "text/plain;charset=UTF-8"}
        )
        assert response.status_code == 200, response.text
    assert stack.wait_profile(user)["traits"] == {"a": 1}


def test_a_write_key_in_the_body_never_overrides_another_in_the_header(stack: Stack) -> None:
    body = page({"userId": "u", "writeKey": "someone-elses-key"})
    for path in ("/v1/identify", "/v1/i", "/v1/t", "/v1/b?writeKey=someone-elses-key"):
        data = page({"batch": [{"type": "identify", "userId": "u"}]}) if path.startswith("/v1/b") else body
        refused = post(stack, path, data, Origin=ALLOWED, **stack.headers())
        assert refused.status_code == 401, (path, refused.text)
        assert "two different write keys" in refused.json()["message"]
        assert cors_of(refused) == ALLOWED
    same = post(stack, "/v1/i", page({"userId": "u", "writeKey": stack.api_key}), **stack.headers())
    assert same.status_code == 200


@pytest.mark.parametrize("path", SHORT)
def test_other_message_types_are_accepted_and_ignored(stack: Stack, path: str) -> None:
    kind = {"t": "track", "p": "page", "s": "screen", "g": "group"}.get(path[4:], path[4:])
    before = metric_sum(
        httpx.get(f"{stack.url}/metrics").text, "traitstream_edge_ignored_events_total", f'type="{kind}"'
    )
    message = {"type": kind, "userId": "u", "writeKey": stack.api_key, "event": "Clicked", "previousId": "p"}
    response = post(stack, path, page(message), Origin=ALLOWED, **{"Content-Type": "text/plain"})
    assert response.status_code == 200 and response.json() == {"success": True}
    assert cors_of(response) == ALLOWED
    after = metric_sum(
        httpx.get(f"{stack.url}/metrics").text, "traitstream_edge_ignored_events_total", f'type="{kind}"'
    )
    assert after == before + 1
    wrong = post(stack, path, page(message | {"type": "identify"}), **stack.headers())
    assert wrong.status_code == 400 and f"body.type must be {kind} on {path}" in wrong.json()["message"]


def test_an_alias_from_a_page_merges_its_anonymous_profile(stack: Stack) -> None:
    anonymous, user = f"page-anon-{uuid.uuid4().hex[:8]}", f"page-user-{uuid.uuid4().hex[:8]}"
    seen = page({"anonymousId": anonymous, "traits": {"theme": "dark"}, "writeKey": stack.api_key})
    assert post(stack, "/v1/i", seen, Origin=ALLOWED, **{"Content-Type": "text/plain"}).status_code == 200
    alias = page({"type": "alias", "previousId": anonymous, "userId": user, "writeKey": stack.api_key})
    response = post(stack, "/v1/a", alias, Origin=ALLOWED, **{"Content-Type": "text/plain"})
    assert response.status_code == 200 and cors_of(response) == ALLOWED
    assert stack.wait_profile(user, lambda p: "theme" in p["traits"])["anonymous_ids"] == [anonymous]
    wrong = post(stack, "/v1/a", page({"type": "identify", "userId": "u"}), **stack.headers())
    assert wrong.status_code == 400 and "body.type must be alias on /v1/a" in wrong.json()["message"]


@pytest.mark.parametrize(
    ("path", "size", "limit"),
    [
        ("/v1/i", 33_000, "32 KB per event"),
        ("/v1/t", 33_000, "32 KB per event"),
        ("/v1/a", 33_000, "32 KB per event"),
        ("/v1/b", 520_000, "500 KB per batch"),
        ("/beacon/v1/batch", 520_000, "500 KB per batch"),
        ("/v1/b", 1_100_000, "500 KB per batch"),
    ],
)
def test_size_caps_hold_on_every_new_route(stack: Stack, path: str, size: int, limit: str) -> None:
    response = post(stack, path, b'{"pad":"' + b"x" * size + b'"}', Origin=ALLOWED, **stack.headers())
    assert response.status_code == 413 and response.json()["message"].endswith(f"the limit of {limit}")
    assert cors_of(response) == ALLOWED


@pytest.mark.parametrize(
    ("path", "expanded", "limit"),
    [
        ("/v1/i", 40_000, "32 KB per event"),
        ("/v1/t", 40_000, "32 KB"),
        ("/v1/b", 600_000, "500 KB per batch"),
    ],
)
def test_gzip_bodies_are_bounded_once_inflated(stack: Stack, path: str, expanded: int, limit: str) -> None:
    bomb = gzip.compress(b'{"pad":"' + b"x" * expanded + b'"}')
    assert len(bomb) < 4_000
    response = post(stack, path, bomb, Origin=ALLOWED, **stack.headers(), **{"Content-Encoding": "gzip"})
    assert response.status_code == 413 and limit in response.json()["message"]
    assert cors_of(response) == ALLOWED
    broken = post(stack, path, bomb[:40], Origin=ALLOWED, **stack.headers(), **{"Content-Encoding": "gzip"})
    assert broken.status_code == 400 and "does not decompress" in broken.json()["message"]
    other = post(stack, path, b"{}", **stack.headers(), **{"Content-Encoding": "br"})
    assert other.status_code == 400 and "'br' is not supported" in other.json()["message"]


def test_a_browser_on_another_origin_is_stopped_at_the_preflight(stack: Stack) -> None:
    # Chromium serves the page from 127.0.0.1 on a port of its own: not the listed origin.
    node_ready()
    user = f"stopped-{uuid.uuid4().hex[:8]}"
    report = run_node(
        "browser.mjs",
        {
            "sdk": "rudderstack",
            "edge": stack.url,
            "writeKey": stack.api_key,
            "userId": user,
            "traits": {"a": 1},
            "settleMs": 1500,
        },
    )
    assert any("blocked by CORS policy" in line for line in report["console"]), report["console"]
    time.sleep(2)
    assert stack.profile(user) is None
