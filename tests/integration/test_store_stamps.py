"""Profiles written before the stamps' migrations (0004: jsonb to json; 0005: a
compact form in a column of their own) keep their stamps, the store reads and writes
them as the merge rules expect, and the undo script of 0005 gives them back in full."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support.stack import scratch_database
from traitstream.events import IdentifyEvent, Op, Operation, user_profile_id
from traitstream.merge import expand_stamps
from traitstream.store.database import migrate, pending_migrations, wait_for_migrations
from traitstream.store.profiles import ProfileStore
from traitstream.worker.records import Positioned

WS = "ws-stamps"
TOPIC = "identify-stamps"
UNDO_0005 = Path(__file__).parents[2] / "deploy" / "sql" / "undo-0005-compact-stamps.sql"


def identify(offset: int, time_ms: int, *operations: Operation, **traits: object) -> Positioned:
    """Sets of ``traits``, then ``operations``."""
    event = IdentifyEvent(
        workspace_id=WS,
        user_id="u1",
        dialect="test",
        event_time_ms=time_ms,
        received_time_ms=time_ms,
        response_id=f"r{offset}",
        operations=(*(Operation(Op.SET, k, v) for k, v in traits.items()), *operations),
    )
    return Positioned(0, offset, event)


@pytest.fixture
def database_before_json_stamps() -> Iterator[str]:
    """A database as it was before migration 0004, holding one profile."""
    with scratch_database("ts_stamps") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ALTER TABLE profiles DROP COLUMN stamps")
            conn.execute("ALTER TABLE profiles ALTER COLUMN trait_meta SET NOT NULL")
            conn.execute("ALTER TABLE profiles ALTER COLUMN trait_meta TYPE jsonb USING trait_meta::jsonb")
            conn.execute("ALTER TABLE profiles ALTER COLUMN trait_meta SET DEFAULT '{}'::jsonb")
            conn.execute(
                "DELETE FROM schema_migrations"
                " WHERE version IN ('0004_trait_meta_json', '0005_compact_stamps')"
            )
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


def apply(url: str, *records: Positioned) -> None:
    store = ProfileStore(url, TOPIC)
    try:
        store.applied_offsets([0], None)
        result = store.apply(list(records), {0: records[-1].offset + 1})
        assert len(result.applied) == len(records)
    finally:
        store.close()


def stored_row(url: str) -> tuple[dict, dict | None, dict | None]:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT traits, trait_meta, stamps FROM profiles WHERE user_id = 'u1'").fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def test_stamps_stored_as_jsonb_survive_the_migrations(database_before_json_stamps: str) -> None:
    url = database_before_json_stamps
    assert migrate(url) == ["0004_trait_meta_json", "0005_compact_stamps"]
    # Older than the stored plan, newer than the stored seats.
    apply(url, identify(0, 1500, plan="free", seats=10))
    traits, first_form, stamps = stored_row(url)
    assert traits == {"plan": "pro", "seats": 10}
    assert first_form is None  # rewritten in the compact form
    assert stamps is not None
    written, once, cleared, _sources = expand_stamps(stamps)
    assert written == {"plan": [2000, "old:0", 0], "seats": [1500, "r0:0000", 1]}
    assert once == {} and cleared is None


def test_stamps_are_stored_compact(database_before_json_stamps: str) -> None:
    url = database_before_json_stamps
    migrate(url)
    apply(url, identify(0, 3000, plan="team", seats=4, region="eu"))
    _traits, first_form, stamps = stored_row(url)
    assert first_form is None
    assert stamps == {
        "e": [[3000, "r0:0000"]],
        "s": [["test", "r0"]],
        "w": {"plan": [0, 0], "seats": [0, 1], "region": [0, 2]},
        "o": {},
    }


def test_a_worker_of_the_previous_release_can_still_write(database_before_json_stamps: str) -> None:
    """During a rolling upgrade older workers write the stamps in full, as jsonb; the
    store reads them and the merge rules still hold."""
    url = database_before_json_stamps
    migrate(url)
    with psycopg.connect(url) as conn:
        conn.execute(
            "UPDATE profiles SET trait_meta = %s::jsonb WHERE user_id = 'u1'",
            (json.dumps({"w": {"plan": [3000, "x:0", 0], "seats": [1000, "old:1", 0]}, "o": {}}),),
        )
    apply(url, identify(0, 2000, plan="free", seats=8))
    traits, _first_form, stamps = stored_row(url)
    assert traits == {"plan": "pro", "seats": 8}
    assert stamps is not None and expand_stamps(stamps)[0]["plan"] == [3000, "x:0", 0]


def test_the_undo_script_writes_the_stamps_out_in_full(database_before_json_stamps: str) -> None:
    url = database_before_json_stamps
    migrate(url)
    apply(
        url,
        identify(0, 1500, plan="free", seats=10),
        identify(1, 2500, Operation(Op.SET_ONCE, "region", "eu"), Operation(Op.CLEAR_ALL)),
        identify(2, 2600, plan="team"),
    )
    _traits, _first_form, compact = stored_row(url)
    assert compact is not None
    with psycopg.connect(url) as conn:
        conn.execute(UNDO_0005.read_text("utf-8").encode())
    traits, first_form, stamps = stored_row(url)
    assert stamps is None
    assert first_form is not None and "e" not in first_form
    written, once, cleared, _sources = expand_stamps(compact)
    assert first_form == {"w": written, "o": once, "c": cleared}
    assert cleared == [2500, "r1:0000", 1]
    assert traits == {"plan": "team"}
    # What the older release reads: its form is read by this one too.
    apply(url, identify(3, 2550, plan="pro", seats=2))
    traits, _first_form, stamps = stored_row(url)
    assert traits == {"plan": "team", "seats": 2}


def test_the_undo_script_leaves_out_what_the_first_form_left_out(database_before_json_stamps: str) -> None:
    """No clear_all: no "c"; a set_once that holds: kept in "o" with its full stamp."""
    url = database_before_json_stamps
    migrate(url)
    apply(url, identify(0, 1500, Operation(Op.SET_ONCE, "region", "eu"), seats=10))
    _traits, _first_form, compact = stored_row(url)
    assert compact is not None
    with psycopg.connect(url) as conn:
        conn.execute(UNDO_0005.read_text("utf-8").encode())
    _traits, first_form, _stamps = stored_row(url)
    assert first_form == {
        "w": {"plan": [2000, "old:0", 0], "seats": [1500, "r0:0000", 0]},
        "o": {"region": [1500, "r0:0000", 1]},
    }


def test_a_worker_waits_for_the_migrations_it_needs(database_before_json_stamps: str) -> None:
    url = database_before_json_stamps
    assert pending_migrations(url) == ["0004_trait_meta_json", "0005_compact_stamps"]
    waits: list[float] = []

    def migrate_meanwhile(seconds: float) -> None:
        waits.append(seconds)
        migrate(url)  # the rollout's migration finishes while the worker waits

    wait_for_migrations(url, every_s=0.5, sleep=migrate_meanwhile)
    assert waits == [0.5]
    assert pending_migrations(url) == []


def test_a_database_never_migrated_has_every_migration_pending() -> None:
    with scratch_database("ts_unmigrated") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP TABLE schema_migrations")
        assert pending_migrations(url)[0] == "0001_init"
