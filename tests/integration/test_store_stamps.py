"""Profiles written before the stamps moved from jsonb to json keep their stamps, and
the store reads and writes them as the merge rules expect."""

from __future__ import annotations

import json
from collections.abc import Iterator

import psycopg
import pytest

from tests.support.stack import scratch_database
from traitstream.events import IdentifyEvent, Op, Operation, user_profile_id
from traitstream.store.database import migrate
from traitstream.store.profiles import Positioned, ProfileStore

WS = "ws-stamps"
TOPIC = "identify-stamps"


def identify(offset: int, time_ms: int, **traits: object) -> Positioned:
    event = IdentifyEvent(
        workspace_id=WS,
        user_id="u1",
        dialect="test",
        event_time_ms=time_ms,
        received_time_ms=time_ms,
        response_id=f"r{offset}",
        operations=tuple(Operation(Op.SET, k, v) for k, v in traits.items()),
    )
    return Positioned(0, offset, event)


@pytest.fixture
def database_before_json_stamps() -> Iterator[str]:
    """A database as it was before migration 0004, holding one profile."""
    with scratch_database("ts_stamps") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ALTER TABLE profiles ALTER COLUMN trait_meta TYPE jsonb USING trait_meta::jsonb")
            conn.execute("ALTER TABLE profiles ALTER COLUMN trait_meta SET DEFAULT '{}'::jsonb")
            conn.execute("DELETE FROM schema_migrations WHERE version = '0004_trait_meta_json'")
            conn.execute(
                "INSERT INTO profiles (profile_id, workspace_id, user_id, traits, trait_meta, created_at,"
                " updated_at) VALUES (%s, %s, 'u1', %s::jsonb, %s::jsonb, now(), now())",
                (
                    user_profile_id(WS, "u1"),
                    WS,
                    json.dumps({"plan": "pro", "seats": 3}),
                    json.dumps({"w": {"plan": [2000, "old:0", 0], "seats": [1000, "old:1", 0]}, "o": {}}),
                ),
            )
        yield url


def test_stamps_stored_as_jsonb_survive_the_migration(database_before_json_stamps: str) -> None:
    url = database_before_json_stamps
    assert migrate(url) == ["0004_trait_meta_json"]
    store = ProfileStore(url, TOPIC)
    try:
        store.applied_offsets([0], None)
        # Older than the stored plan, newer than the stored seats.
        result = store.apply([identify(0, 1500, plan="free", seats=10)], {0: 1})
        assert len(result.applied) == 1
    finally:
        store.close()
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT traits, trait_meta, pg_typeof(trait_meta)::text FROM profiles WHERE user_id = 'u1'"
        ).fetchone()
    assert row is not None
    traits, meta, kind = row
    assert traits == {"plan": "pro", "seats": 10}
    assert meta["w"] == {"plan": [2000, "old:0", 0], "seats": [1500, "r0:0", 1]}
    assert kind == "json"


def test_a_worker_of_the_previous_release_can_still_write(database_before_json_stamps: str) -> None:
    """During a rolling upgrade older workers send the stamps as jsonb."""
    url = database_before_json_stamps
    migrate(url)
    with psycopg.connect(url) as conn:
        conn.execute(
            "UPDATE profiles SET trait_meta = %s::jsonb WHERE user_id = 'u1'",
            (json.dumps({"w": {"plan": [3000, "x:0", 0]}, "o": {}}),),
        )
        meta = conn.execute("SELECT trait_meta FROM profiles WHERE user_id = 'u1'").fetchone()
    assert meta is not None and meta[0]["w"]["plan"] == [3000, "x:0", 0]
