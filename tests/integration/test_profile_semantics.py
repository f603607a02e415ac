"""Profile semantics through the real pipeline: order safety, operations applied once,
anonymous-to-user merges across partitions and workers, reads, erasure, the size cap."""

from __future__ import annotations

import uuid

import httpx
import psycopg
from confluent_kafka import Consumer

from tests.support.publish import event, publish
from tests.support.stack import Stack, wait_until
from traitstream.events import Op, Operation, anonymous_profile_id, user_profile_id
from traitstream.store import keys


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_late_older_writes_never_overwrite_newer_ones(stack: Stack) -> None:
    user = uid("order")
    ws = stack.workspace
    publish(
        stack.bootstrap,
        stack.topic,
        [
            event(ws, user=user, t=3_000, plan="pro", seats=10),
            event(ws, user=user, t=1_000, plan="free", seats=1, color="red"),
            event(ws, user=user, t=2_000, ops=[Operation(Op.UNSET, "color")]),
            event(ws, user=user, t=500, ops=[Operation(Op.SET_ONCE, "first", "a")]),
            event(ws, user=user, t=400, ops=[Operation(Op.SET_ONCE, "first", "b")]),
        ],
    )
    profile = stack.wait_profile(user, lambda p: p["traits"].get("first") == "b")
    assert profile["traits"] == {"plan": "pro", "seats": 10, "first": "b"}


def test_operations_apply_exactly_once_despite_duplicates(stack: Stack) -> None:
    user = uid("ops")
    ws = stack.workspace
    adds = [
        event(ws, user=user, dedupe_key=f"{user}-{i}", ops=[Operation(Op.ADD, "n", 1)]) for i in range(20)
    ]
    appends = [event(ws, user=user, dedupe_key=f"{user}-l", ops=[Operation(Op.APPEND, "l", "x")])]
    # Every record is published twice, as a retrying client would.
    publish(stack.bootstrap, stack.topic, adds + adds + appends + appends)
    profile = stack.wait_profile(user, lambda p: p["traits"].get("n") == 20 and "l" in p["traits"])
    assert profile["traits"] == {"n": 20, "l": ["x"]}


def test_anonymous_profile_merges_into_the_user_across_partitions(stack: Stack) -> None:
    ws = stack.workspace
    pairs = [(uid("user"), uid("device")) for _ in range(24)]
    batch = []
    for i, (user, device) in enumerate(pairs):
        batch.append(event(ws, anon=(device,), t=1_000 + i, seen_as="anonymous", referrer=f"ref{i}"))
        batch.append(event(ws, user=user, anon=(device,), t=2_000 + i, seen_as="user"))
        batch.append(event(ws, anon=(device,), t=3_000 + i, theme="dark"))
    # The anonymous and the identified events have different keys, hence different
    # partitions, consumed by two workers at the same time.
    publish(stack.bootstrap, stack.topic, batch)
    for i, (user, device) in enumerate(pairs):
        profile = stack.wait_profile(user, lambda p: p["traits"].get("theme") == "dark", timeout=30)
        assert profile["traits"] == {"seen_as": "user", "referrer": f"ref{i}", "theme": "dark"}
        assert profile["anonymous_ids"] == [device]
        by_device = httpx.get(
            f"{stack.url}/api/profiles", params={"anonymous_id": device}, headers=stack.headers()
        )
        assert by_device.status_code == 200
        assert by_device.json()["profile_id"] == str(user_profile_id(ws, user))
    with psycopg.connect(stack.database_url) as conn:
        leftover = conn.execute(
            "SELECT count(*) FROM profiles WHERE profile_id = ANY(%s)",
            ([anonymous_profile_id(ws, d) for _, d in pairs],),
        ).fetchone()
    assert leftover == (0,)


def test_anonymous_profile_reads_before_identify(stack: Stack) -> None:
    device = uid("visitor")
    publish(stack.bootstrap, stack.topic, [event(stack.workspace, anon=(device,), plan="trial")])

    def read() -> dict | None:
        r = httpx.get(f"{stack.url}/api/profiles", params={"anonymous_id": device}, headers=stack.headers())
        return r.json() if r.status_code == 200 else None

    profile = wait_until(read, 20, "the anonymous profile")
    assert profile["user_id"] is None and profile["traits"] == {"plan": "trial"}
    assert profile["anonymous_ids"] == [device]
    missing = httpx.get(f"{stack.url}/api/profiles", params={"anonymous_id": "nope"}, headers=stack.headers())
    assert missing.status_code == 404


def test_erasure_travels_the_stream_and_a_later_identify_starts_fresh(stack: Stack) -> None:
    user, device = uid("erase"), uid("device")
    publish(stack.bootstrap, stack.topic, [event(stack.workspace, user=user, anon=(device,), secret="s")])
    stack.wait_profile(user)
    response = httpx.delete(f"{stack.url}/api/profiles/{user}", headers=stack.headers())
    assert response.status_code == 202
    wait_until(lambda: stack.profile(user) is None, 20, "the profile to be erased")
    gone = httpx.get(f"{stack.url}/api/profiles", params={"anonymous_id": device}, headers=stack.headers())
    assert gone.status_code == 404
    assert stack.post("/api/identify", {"user_id": user, "traits": {"fresh": True}}).status_code == 200
    profile = stack.wait_profile(user)
    assert profile["traits"] == {"fresh": True} and profile["anonymous_ids"] == []


def test_reads_need_the_scope_and_stay_in_the_workspace(stack: Stack) -> None:
    user = uid("scoped")
    assert stack.post("/api/identify", {"user_id": user, "traits": {"a": 1}}).status_code == 200
    stack.wait_profile(user)
    writer, stranger = keys.new_secret(), keys.new_secret()
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        keys.register(conn, writer, stack.workspace, frozenset({"identify_api"}))
        keys.register(conn, stranger, "another-workspace", frozenset(keys.SCOPES))
    no_scope = httpx.get(f"{stack.url}/api/profiles/{user}", headers=stack.headers(writer))
    assert no_scope.status_code == 403 and "profiles:read" in no_scope.json()["error"]["message"]
    assert httpx.delete(f"{stack.url}/api/profiles/{user}", headers=stack.headers(writer)).status_code == 403
    other = httpx.get(f"{stack.url}/api/profiles/{user}", headers=stack.headers(stranger))
    assert other.status_code == 404


def test_created_and_updated_at(stack: Stack) -> None:
    user = uid("times")
    body = {"user_id": user, "traits": {"a": 1}, "timestamp": "2021-05-01T10:00:00Z"}
    assert stack.post("/api/identify", body).status_code == 200
    first = stack.wait_profile(user)
    assert first["created_at"].startswith("2021-05-01T10:00:00")
    body = {"user_id": user, "traits": {"a": 2}, "timestamp": "2022-01-01T00:00:00Z"}
    assert stack.post("/api/identify", body).status_code == 200
    second = stack.wait_profile(user, lambda p: p["traits"]["a"] == 2)
    assert second["created_at"] == first["created_at"]
    assert second["updated_at"] > first["updated_at"]


def test_updates_that_would_pass_the_size_cap_are_dead_lettered_whole(stack: Stack) -> None:
    user = uid("big")
    ws = stack.workspace
    chunk = "x" * 30_000
    # 20 updates of about 30 KB: the profile can hold 17 of them under 512 KB.
    publish(stack.bootstrap, stack.topic, [event(ws, user=user, **{f"t{i:02d}": chunk}) for i in range(20)])
    consumer = Consumer(
        {
            "bootstrap.servers": stack.bootstrap,
            "group.id": uid("dlq-reader"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([f"{stack.topic}.dlq"])
    letters = []
    try:

        def collect() -> bool:
            letters.extend(m for m in consumer.consume(50, 0.5) if m.error() is None)
            return (
                len([m for m in letters if dict(m.headers())["traitstream.reason"] == b"profile_too_large"])
                >= 3
            )

        wait_until(collect, 30, "three oversized updates in the dead-letter topic")
    finally:
        consumer.close()
    profile = stack.wait_profile(user, lambda p: len(p["traits"]) == 17)
    assert all(value == chunk for value in profile["traits"].values())
    with psycopg.connect(stack.database_url) as conn:
        size = conn.execute(
            "SELECT octet_length(traits::text) FROM profiles WHERE profile_id = %s",
            (user_profile_id(ws, user),),
        ).fetchone()
    assert size is not None and size[0] <= 512 * 1024

    def dead() -> float:
        return stack.workers_metric("traitstream_worker_dead_letters_total", 'reason="profile_too_large"')

    # A worker counts its dead letters just after the commit that makes the profile visible.
    wait_until(lambda: dead() >= 3, 10, "three dead letters counted")
    assert dead() == 3


def test_unknown_paths_and_bad_anonymous_ids_answer_in_the_error_shape(stack: Stack) -> None:
    unknown = httpx.get(f"{stack.url}/api/nowhere", headers=stack.headers())
    assert unknown.status_code == 404
    assert unknown.json()["error"]["message"] == "no endpoint GET /api/nowhere"
    nul = httpx.get(f"{stack.url}/api/profiles", params={"anonymous_id": "a\x00b"}, headers=stack.headers())
    assert nul.status_code == 400 and "anonymous_id" in nul.json()["error"]["message"]
