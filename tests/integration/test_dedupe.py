"""The dedupe claims' script against a real Redis: the same answers as one
``SET NX GET EX`` per record would give."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.support.stack import REDIS_URL
from traitstream.events import IdentifyEvent
from traitstream.worker.dedupe import RedisDeduper, claim_key
from traitstream.worker.records import Positioned

TOPIC = "identify"


def record(workspace: str, partition: int, offset: int, key: str) -> Positioned:
    event = IdentifyEvent(
        workspace_id=workspace,
        user_id="u",
        dialect="test",
        event_time_ms=1,
        received_time_ms=1,
        response_id="r",
        dedupe_key=key,
    )
    return Positioned(partition, offset, event)


@pytest.fixture
def workspace() -> Iterator[str]:
    name = f"dedupe-test-{uuid.uuid4().hex}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"dedupe:{name}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def deduper() -> Iterator[RedisDeduper]:
    client = RedisDeduper(REDIS_URL, ttl_s=600)
    yield client
    client.close()


def test_first_sightings_own_claims_and_duplicates(deduper: RedisDeduper, workspace: str) -> None:
    a, b = record(workspace, 0, 10, "a"), record(workspace, 1, 20, "b")
    assert deduper.first_seen(TOPIC, [a, b]) == [True, True]
    # The same records again (a batch retried after a failed commit): their own claims.
    assert deduper.first_seen(TOPIC, [a, b]) == [True, True]
    # The same events at other positions (client retries): duplicates.
    again = [record(workspace, 2, 5, "a"), record(workspace, 1, 21, "b"), record(workspace, 0, 11, "c")]
    assert deduper.first_seen(TOPIC, again) == [False, False, True]
    assert deduper.first_seen("other-topic", [a]) == [False]


def test_a_duplicate_within_one_batch(deduper: RedisDeduper, workspace: str) -> None:
    records = [record(workspace, 0, 1, "x"), record(workspace, 0, 2, "x"), record(workspace, 0, 3, "y")]
    assert deduper.first_seen(TOPIC, records) == [True, False, True]


def test_claims_hold_their_position_and_expire(deduper: RedisDeduper, workspace: str) -> None:
    a = record(workspace, 3, 7, "a")
    deduper.first_seen(TOPIC, [a])
    client = redis.Redis.from_url(REDIS_URL)
    try:
        assert client.get(claim_key(a)) == f"{TOPIC}:3:7".encode()
        assert 0 < client.ttl(claim_key(a)) <= 600
    finally:
        client.close()


def test_release_lets_another_copy_claim(deduper: RedisDeduper, workspace: str) -> None:
    a = record(workspace, 0, 1, "a")
    assert deduper.first_seen(TOPIC, [a]) == [True]
    deduper.release([a])
    assert deduper.first_seen(TOPIC, [record(workspace, 0, 9, "a")]) == [True]


def test_a_redis_that_lost_the_script_gets_it_again(deduper: RedisDeduper, workspace: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.script_flush()
    finally:
        client.close()
    assert deduper.first_seen(TOPIC, [record(workspace, 0, 1, "a")]) == [True]
    assert deduper.first_seen(TOPIC, []) == []


def test_a_full_batch(deduper: RedisDeduper, workspace: str) -> None:
    records = [record(workspace, i % 12, i, f"e{i % 1500}") for i in range(2000)]
    flags = deduper.first_seen(TOPIC, records)
    assert flags == [i < 1500 for i in range(2000)]
