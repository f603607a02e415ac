"""Seeds 000 and 001 verbatim through the real edge, broker, workers, Redis and Postgres."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import httpx
import orjson
import psycopg
import pytest

from tests.support.seeds import seed_bytes
from tests.support.stack import Stack, settled, wait_until
from traitstream.events import user_profile_id
from traitstream.exposition import parse_samples
from traitstream.merge import expand_stamps


@pytest.mark.parametrize("seed", ["thrivestack_000.json", "thrivestack_001.json"])
def test_seed_sample_lands_in_the_profile_store(stack: Stack, seed: str) -> None:
    response = stack.post("/api/identify", seed_bytes(seed), headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert body["message"] == "User(s) identified successfully"
    uuid.UUID(body["response_id"])

    sample = orjson.loads(seed_bytes(seed))
    profile = stack.wait_profile(sample["user_id"])
    assert profile["traits"] == sample["traits"]
    assert profile["profile_id"] == str(user_profile_id(stack.workspace, sample["user_id"]))
    assert profile["created_at"].startswith("2020-11-23T22:28:55.111")

    with psycopg.connect(stack.database_url) as conn:
        row = conn.execute(
            "SELECT workspace_id, traits FROM profiles WHERE user_id = %s", (sample["user_id"],)
        ).fetchone()
    assert row == (stack.workspace, sample["traits"])


def test_array_body_and_later_updates_merge(stack: Stack) -> None:
    user = f"arr-{uuid.uuid4().hex[:6]}"
    response = stack.post(
        "/api/identify",
        [
            {"user_id": user, "traits": {"first_name": "Ada", "last_name": "Lovelace", "plan": "free"}},
            {"user_id": f"{user}-2", "user_traits": {"age": 36}},
        ],
    )
    assert response.status_code == 200, response.text
    stack.wait_profile(user, lambda p: p["traits"].get("name") == "Ada Lovelace")
    stack.wait_profile(f"{user}-2", lambda p: p["traits"] == {"age": 36})
    assert stack.post("/api/identify", {"user_id": user, "traits": {"plan": "pro"}}).status_code == 200
    profile = stack.wait_profile(user, lambda p: p["traits"]["plan"] == "pro")
    assert profile["traits"] == {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "plan": "pro",
        "name": "Ada Lovelace",
    }


def test_retry_with_the_same_message_id_applies_once(stack: Stack) -> None:
    user = f"retry-{uuid.uuid4().hex[:6]}"

    def events(outcome: str = "") -> float:
        return stack.workers_metric(
            "traitstream_worker_events_total", f'outcome="{outcome}"' if outcome else ""
        )

    # A worker counts a batch just after the commit that shows its profiles, so the
    # counts are read once they hold still.
    before = settled(events)
    duplicates_before = events("duplicate")
    for _ in range(3):
        body = {"user_id": user, "message_id": f"{user}-m1", "traits": {"n": 1}}
        assert stack.post("/api/identify", body).status_code == 200
    stack.wait_profile(user)
    wait_until(lambda: events("duplicate") - duplicates_before >= 2, 15, "two duplicates counted")
    wait_until(lambda: events() - before >= 3, 15, "three events counted")
    assert events() - before == 3


@pytest.mark.parametrize(
    ("headers", "status", "message"),
    [
        ({}, 401, "missing Bearer token"),
        ({"Authorization": "Bearer nope"}, 401, "unknown or revoked Bearer token"),
    ],
)
def test_auth_errors_in_the_seed_shape(stack: Stack, headers: dict, status: int, message: str) -> None:
    response = httpx.post(f"{stack.url}/api/identify", json={"user_id": "x"}, headers=headers)
    assert response.status_code == status
    body = response.json()
    assert body["success"] is False and body["message"] == message
    uuid.UUID(body["response_id"])


def test_key_without_the_scope_is_403(stack: Stack) -> None:
    from traitstream.store import keys

    secret = keys.new_secret()
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        keys.register(conn, secret, stack.workspace, frozenset({"profiles:read"}))
    response = stack.post("/api/identify", {"user_id": "x"}, key=secret)
    assert response.status_code == 403
    assert "identify_api or telemetry_apis" in response.json()["message"]


def test_bad_input_is_400_and_limits_413(stack: Stack) -> None:
    bad = stack.post("/api/identify", b"{not json", headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and "malformed JSON" in bad.json()["message"]
    typed = stack.post("/api/identify", {"user_id": "x", "traits": {"age": "old"}})
    assert typed.status_code == 400 and "traits.age" in typed.json()["message"]
    big = stack.post("/api/identify", [{"user_id": "x"}] * 2001)
    assert big.status_code == 413 and "2000" in big.json()["message"]


def test_an_oversized_body_is_refused_while_it_arrives(stack: Stack) -> None:
    # 3 MB sent without a length (chunked) is refused once 1 MB has arrived, in
    # Thrivestack's shape, and the connection serves the next call.
    headers = stack.headers() | {"Content-Type": "application/json"}

    def chunks() -> Iterator[bytes]:
        yield b"["
        for _ in range(48):
            yield b" " * 65_536
        yield b"]"

    with httpx.Client(base_url=stack.url, headers=headers, timeout=60) as client:
        streamed = client.post("/api/identify", content=chunks())
        assert streamed.status_code == 413 and streamed.json()["success"] is False
        assert streamed.json()["message"] == "request body exceeds the limit of 1000000 bytes (1 MB)"
        assert streamed.headers["X-Response-Id"] == streamed.json()["response_id"]
        after = client.post("/api/identify", json={"user_id": f"cap-{uuid.uuid4().hex[:6]}"})
        assert after.status_code == 200


def test_a_client_expecting_100_continue_is_refused_before_it_sends(stack: Stack) -> None:
    # The declared length is enough: the 413 comes before any of the body, and says
    # the connection ends, so the client neither sends it nor reuses the connection.
    host, port = stack.url.removeprefix("http://").split(":")
    head = (
        f"POST /api/identify HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {stack.api_key}\r\n"
        "Content-Type: application/json\r\nContent-Length: 5000000\r\nExpect: 100-continue\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(head.encode())
        answer = b""
        while chunk := conn.recv(65_536):  # until the edge closes the connection
            answer += chunk
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 413 Request Entity Too Large"
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"connection: close" in headers.lower()
    assert orjson.loads(body)["message"] == "request body is 5000000 bytes; the limit is 1000000 bytes (1 MB)"


def test_profile_read_404_and_metrics(stack: Stack) -> None:
    missing = httpx.get(f"{stack.url}/api/profiles/nobody-{uuid.uuid4().hex}", headers=stack.headers())
    assert missing.status_code == 404
    text = httpx.get(f"{stack.url}/metrics").text
    assert 'traitstream_edge_requests_total{dialect="thrivestack",status="200"}' in text
    assert "traitstream_edge_request_seconds_bucket" in text
    worker_text = httpx.get(stack.workers[0].metrics_url).text
    for name in (
        "traitstream_worker_events_total",
        "traitstream_worker_batch_seconds",
        "traitstream_end_to_end_seconds",
    ):
        assert name in worker_text


def test_every_answer_carries_the_response_id_header(stack: Stack) -> None:
    ok = stack.post("/api/identify", {"user_id": "header-check"})
    assert ok.headers["X-Response-Id"] == ok.json()["response_id"]
    refused = httpx.post(f"{stack.url}/api/identify", json={"user_id": "x"})
    assert refused.headers["X-Response-Id"] == refused.json()["response_id"]


def test_consumer_lag_is_reported_per_owned_partition_and_drains(stack: Stack) -> None:
    for i in range(40):
        assert stack.post("/api/identify", {"user_id": f"lag-{i}", "traits": {"i": i}}).status_code == 200
    stack.wait_profile("lag-39")

    def lags() -> list[tuple[dict[str, str], float]] | None:
        samples = [
            sample
            for w in stack.workers
            for sample in parse_samples(
                httpx.get(w.metrics_url).text,
                "traitstream_consumer_lag",
            )
        ]
        # Every partition owned by one member, and each drained to zero.
        partitions = {labels["partition"] for labels, _ in samples}
        done = len(partitions) == stack.partitions and all(value == 0 for _, value in samples)
        return samples if done else None

    samples = wait_until(lags, 30, "lag of every partition to be reported as 0")
    assert len(samples) == stack.partitions


def test_a_profile_read_stuck_behind_a_lock_gives_up_and_identifies_go_on(stack: Stack) -> None:
    # A migration that rewrites profiles holds an exclusive lock: reads answer 503
    # after the statement timeout instead of holding the edge's connections, so key
    # lookups, readiness and identifies keep working.
    user = f"locked-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(stack.database_url) as conn:
        conn.execute("LOCK TABLE profiles IN ACCESS EXCLUSIVE MODE")
        read = httpx.get(f"{stack.url}/api/profiles/{user}", headers=stack.headers(), timeout=20)
        assert read.status_code == 503, read.text
        assert httpx.get(f"{stack.url}/readyz", timeout=30).status_code == 200
        accepted = stack.post("/api/identify", {"user_id": user, "traits": {"plan": "pro"}})
        assert accepted.status_code == 200, accepted.text
        conn.rollback()
    assert stack.wait_profile(user, lambda p: p["traits"].get("plan") == "pro")


@pytest.mark.parametrize("dedupe_keys", [False, True], ids=["without-message-ids", "with-message-ids"])
def test_the_last_of_twelve_identifies_in_one_request_wins(stack: Stack, dedupe_keys: bool) -> None:
    # The twelve share the receipt time, so only their positions can order them:
    # item 11 must win, not item 9 (whose id sorts last as text), and not whichever
    # message id sorts last (these sort against the positions).
    user = f"tie-{uuid.uuid4().hex[:8]}"
    items: list[dict[str, object]] = []
    for index in range(12):
        item: dict[str, object] = {"user_id": user, "traits": {"plan": f"v{index}", f"item_{index}": index}}
        if dedupe_keys:
            item["message_id"] = f"{user}-{11 - index:02d}-{uuid.uuid4().hex}"
        items.append(item)
    response = stack.post("/api/identify", items)
    assert response.status_code == 200, response.text
    profile = stack.wait_profile(user, lambda p: all(f"item_{i}" in p["traits"] for i in range(12)))
    assert profile["traits"]["plan"] == "v11"
    with psycopg.connect(stack.database_url) as conn:
        row = conn.execute("SELECT stamps FROM profiles WHERE user_id = %s", (user,)).fetchone()
    assert row is not None
    # The stamp names the request and the position, whatever the message ids.
    assert expand_stamps(row[0])[0]["plan"][1] == f"{response.json()['response_id']}:0011"
