"""Profile change records, built by the pure core (``worker/changes.py``) from a planned
batch, and the property the stream promises: replaying a profile's changes from its
first version gives exactly its traits, whatever the batches held."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given, note, settings
from hypothesis import strategies as st

from traitstream.avro import changes as change_codec
from traitstream.events import IdentifyEvent, Kind, Op, Operation, user_profile_id
from traitstream.merge import Profile
from traitstream.worker.changes import (
    ERASE,
    MERGE,
    OutboxEntry,
    Snapshot,
    Touched,
    batch_changes,
    diff,
    replay,
    same_value,
)
from traitstream.worker.plan import AnonKey, StoredProfile, plan_batch
from traitstream.worker.relay import shards_of

WS = "ws"


def ev(
    t: int,
    *ops: Operation,
    user: str | None = "u",
    anon: tuple[str, ...] = (),
    key: str | None = None,
    kind: Kind = Kind.IDENTIFY,
) -> IdentifyEvent:
    return IdentifyEvent(
        workspace_id=WS,
        user_id=user,
        dialect="segment",
        event_time_ms=t,
        received_time_ms=t,
        response_id=f"r{t}-{user}-{anon}",
        anonymous_ids=anon,
        dedupe_key=key,
        operations=ops,
        kind=kind,
    )


def s(trait: str, value: Any) -> Operation:
    return Operation(Op.SET, trait, value)


class Store:
    """The profile store, in memory, as the worker's transaction leaves it; and the
    change stream, as the outbox would publish it."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.rows: dict[uuid.UUID, tuple[str, str | None, str, str, int | None]] = {}
        self.links: dict[AnonKey, uuid.UUID] = {}
        self.aliases: dict[tuple[str, str], uuid.UUID] = {}
        self.versions: dict[uuid.UUID, int] = {}
        self.stream: dict[uuid.UUID, list[tuple[int, dict[str, Any] | None]]] = {}

    def load(self) -> dict[uuid.UUID, StoredProfile]:
        """Every stored profile, as a batch reads them: from their stored text."""
        return {
            p: StoredProfile(p, ws, user, Profile.from_text(traits, meta, created), 0)
            for p, (ws, user, traits, meta, created) in self.rows.items()
        }

    def apply(self, events: list[IdentifyEvent], now_ms: int = 10_000) -> list[OutboxEntry]:
        loaded = self.load()
        before = {p: Snapshot(r.workspace_id, r.user_id, dict(r.profile.traits)) for p, r in loaded.items()}
        plan = plan_batch(events, self.links, loaded, now_ms, aliases=self.aliases, track=True)
        written = {
            p: Touched(r.workspace_id, r.user_id, r.profile, r.events) for p, r in plan.upserts.items()
        }
        entries = batch_changes(before, written, plan.erased, plan.absorbed, plan.merged, now_ms)
        for p in plan.deletes:
            self.rows.pop(p, None)
            self.links = {k: v for k, v in self.links.items() if v != p}
            self.aliases = {k: v for k, v in self.aliases.items() if v != p}
        for p, r in plan.upserts.items():
            self.rows[p] = (
                r.workspace_id,
                r.user_id,
                orjson.dumps(r.profile.traits).decode(),
                r.profile.meta_text(),
                r.profile.created_at_ms,
            )
        self.links.update(plan.links)
        self.aliases.update(plan.aliases)
        # The versions, as store/outbox.py's statement gives them.
        steps: dict[uuid.UUID, int] = {}
        for e in entries:
            steps[e.profile_id] = max(steps.get(e.profile_id, 0), e.step)
        for e in entries:
            version = self.versions.get(e.profile_id, 0) + e.step
            self.stream.setdefault(e.profile_id, []).append((version, record_of(e, version)))
        for p, n in steps.items():
            self.versions[p] = self.versions.get(p, 0) + n
        return entries

    def traits(self, profile_id: uuid.UUID) -> dict[str, Any]:
        return dict(orjson.loads(self.rows[profile_id][2]))


def record_of(entry: OutboxEntry, version: int) -> dict[str, Any] | None:
    """The record as published, read back with fastavro; and fastavro writes the same bytes."""
    if entry.body is None:
        return None
    data = change_codec.with_version(entry.body, version, change_codec.LOCAL_CHANGE_SCHEMA_ID)
    record = change_codec.decode(data, change_codec.LocalChangeSchemas())
    assert change_codec.encode(record, change_codec.LOCAL_CHANGE_SCHEMA_ID) == data
    assert record["kind"] == entry.kind
    return record


def records(entries: list[OutboxEntry]) -> list[dict[str, Any] | None]:
    return [record_of(e, e.step) for e in entries]


def canonical(traits: dict[str, Any]) -> bytes:
    return orjson.dumps(traits, option=orjson.OPT_SORT_KEYS)


# --- the difference ------------------------------------------------------------------


def test_values_equal_in_python_but_not_as_json_are_changes() -> None:
    assert not same_value(1, True)
    assert not same_value(1, 1.0)
    assert not same_value([1], [True])
    assert same_value({"a": [1, "x"]}, {"a": [1, "x"]})
    changed = diff({"a": 1, "b": 2, "k": [1]}, {"a": True, "c": 3, "k": [1]})
    assert [trait for trait, _old, _new in changed] == ["a", "c", "b"]  # sets in order, then removals
    assert changed[0][1:] == (1, True)


def test_a_batch_that_changes_nothing_publishes_nothing() -> None:
    store = Store()
    store.apply([ev(20, s("plan", "pro"), key="m1")])
    assert store.apply([ev(10, s("plan", "free"), key="late")]) == []  # older: loses
    assert store.apply([ev(20, s("plan", "pro"), key="m1")]) == []  # the same write again


def test_one_record_per_profile_per_batch_with_each_changes_provenance() -> None:
    store = Store()
    entries = store.apply(
        [
            ev(10, s("plan", "free"), key="m1"),
            ev(20, s("plan", "pro"), Operation(Op.ADD, "n", 2), key="m2"),
            ev(30, Operation(Op.SET_ONCE, "ref", "ad"), user="u"),
        ]
    )
    assert len(entries) == 1 and entries[0].step == 1
    record = records(entries)[0]
    assert record is not None and record["kind"] == "update"
    by_trait = {c["trait"]: c for c in record["changes"]}
    assert by_trait["plan"] == {
        "trait": "plan",
        "old_json": None,
        "new_json": '"pro"',
        "event_time": 20,
        "source": "segment",
        "message_id": "m2",
        "op": "set",
    }
    assert by_trait["n"]["op"] == "add" and by_trait["n"]["new_json"] == "2"
    assert by_trait["ref"]["op"] == "set_once" and by_trait["ref"]["message_id"] == "r30-u-()"
    assert entries[0].key() == f"{WS}:{user_profile_id(WS, 'u')}".encode()


def test_a_merge_names_the_merged_profile_and_tombstones_its_key() -> None:
    store = Store()
    store.apply([ev(10, s("color", "red"), user=None, anon=("a1",))])
    anon_id = next(iter(store.rows))
    entries = store.apply([ev(20, s("plan", "pro"), anon=("a1",))])
    user_id = user_profile_id(WS, "u")
    assert [(e.profile_id, e.body is None) for e in entries] == [(anon_id, True), (user_id, False)]
    record = records(entries)[1]
    assert record is not None and record["kind"] == MERGE and record["merged_from"] == [str(anon_id)]
    color = next(c for c in record["changes"] if c["trait"] == "color")
    # The value's own write, which the merged profile's stamps and sources kept.
    assert color["op"] == "set" and color["event_time"] == 10 and color["source"] == "segment"


def test_an_erasure_is_an_erase_record_then_a_tombstone_then_a_fresh_start() -> None:
    store = Store()
    store.apply([ev(10, s("plan", "pro"))])
    entries = store.apply([ev(20, kind=Kind.ERASE), ev(30, s("seats", 2))])
    assert [(e.step, e.kind) for e in entries] == [(1, ERASE), (1, "tombstone"), (2, "update")]
    assert entries[1].body is None
    erase = records(entries)[0]
    assert erase is not None and erase["changes"][0]["old_json"] == '"pro"'
    assert erase["changes"][0]["new_json"] is None
    profile = user_profile_id(WS, "u")
    assert [v for v, _r in store.stream[profile]] == [1, 2, 2, 3]


def test_the_shards_of_every_partition_cover_every_shard_once() -> None:
    owned = [shards_of([p], 12) for p in range(12)]
    assert set().union(*owned) == set(range(64))
    assert sum(len(o) for o in owned) == 64
    assert shards_of([], 12) == set() and shards_of([0], 0) == set()


# --- the wire format ---------------------------------------------------------------------


def test_schema_file_in_the_package_is_the_published_one() -> None:
    published = Path(__file__).resolve().parents[2] / "schemas" / "profile_change" / "v1.avsc"
    assert json.loads(published.read_text()) == json.loads(change_codec.load_change_v1_text())


def test_records_round_trip_through_the_wire_format() -> None:
    store = Store()
    entries = store.apply([ev(10, s("plan", "pro"), Operation(Op.UNSET, "gone"), s("big", "x" * 200))])
    data = change_codec.with_version(entries[0].body or b"", 7, change_codec.LOCAL_CHANGE_SCHEMA_ID)
    assert data[0] == 0 and int.from_bytes(data[1:5]) == change_codec.LOCAL_CHANGE_SCHEMA_ID
    record = change_codec.decode(data, change_codec.LocalChangeSchemas())
    assert record["version"] == 7 and record["changes"][1]["new_json"] == '"' + "x" * 200 + '"'
    assert change_codec.encode(record, change_codec.LOCAL_CHANGE_SCHEMA_ID) == data


@given(
    st.text(),
    st.uuids(),
    st.none() | st.text(),
    st.sampled_from(["update", "merge", "erase"]),
    st.lists(
        st.tuples(
            st.text(),
            st.none() | st.text(),
            st.none() | st.text(),
            st.integers(-(2**63), 2**63 - 1),
            st.none() | st.text(),
            st.none() | st.text(),
            st.text(),
        ),
        max_size=70,
    ),
    st.lists(st.uuids().map(str), max_size=3),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(0, 2**62),
)
def test_the_hand_written_body_is_fastavros_byte_for_byte(
    workspace: str,
    profile: uuid.UUID,
    user: str | None,
    kind: str,
    changes: list[tuple[str, str | None, str | None, int, str | None, str | None, str]],
    merged: list[str],
    applied: int,
    version: int,
) -> None:
    written = change_codec.body(
        workspace,
        str(profile),
        user,
        kind,
        [
            change_codec.change_bytes(
                trait,
                None if old is None else old.encode(),
                None if new is None else new.encode(),
                change_codec.provenance_bytes(when, source, message_id, op),
            )
            for trait, old, new, when, source, message_id, op in changes
        ],
        merged,
        applied,
    )
    record = {
        "workspace_id": workspace,
        "profile_id": str(profile),
        "user_id": user,
        "kind": kind,
        "changes": [
            dict(
                zip(
                    ["trait", "old_json", "new_json", "event_time", "source", "message_id", "op"],
                    c,
                    strict=True,
                )
            )
            for c in changes
        ],
        "merged_from": merged,
        "applied_time": applied,
        "version": version,
    }
    data = change_codec.with_version(written, version, 5)
    assert data == change_codec.encode(record, 5)


# --- replay rebuilds the profile -----------------------------------------------------------

TRAITS = st.sampled_from(["a", "b", "c"])
VALUES = st.one_of(
    st.integers(-2, 2), st.booleans(), st.text(max_size=2), st.lists(st.integers(0, 2), max_size=2)
)


@st.composite
def operations(draw: st.DrawFn) -> Operation:
    op = draw(
        st.sampled_from(
            [
                Op.SET,
                Op.SET,
                Op.UNSET,
                Op.SET_ONCE,
                Op.ADD,
                Op.APPEND,
                Op.REMOVE,
                Op.POST_INSERT,
                Op.CLEAR_ALL,
            ]
        )
    )
    if op is Op.CLEAR_ALL:
        return Operation(op)
    if op is Op.ADD:
        return Operation(op, draw(TRAITS), draw(st.integers(-3, 3)))
    return Operation(op, draw(TRAITS), None if op is Op.UNSET else draw(VALUES))


@st.composite
def events(draw: st.DrawFn) -> IdentifyEvent:
    user = draw(st.sampled_from([None, "u1", "u2"]))
    anon = tuple(draw(st.lists(st.sampled_from(["a1", "a2"]), max_size=2, unique=True)))
    if user is None and not anon:
        anon = ("a1",)
    kind = draw(st.sampled_from([Kind.ERASE, Kind.ALIAS, *[Kind.IDENTIFY] * 8]))
    previous = None
    if kind is Kind.ALIAS:  # previousId -> userId: the previous id's profiles merge in
        user, anon, previous = (
            draw(st.sampled_from(["u1", "u2"])),
            (),
            draw(st.sampled_from(["u1", "u2", "a1"])),
        )
    ops = () if kind is not Kind.IDENTIFY else tuple(draw(st.lists(operations(), min_size=1, max_size=3)))
    t = draw(st.integers(0, 50))
    key = draw(st.none() | st.sampled_from(["k1", "k2", "k3"]))
    response = f"r{draw(st.integers(0, 10**6))}"
    return IdentifyEvent(WS, user, "amplitude", t, t, response, 0, anon, None, key, None, ops, kind, previous)


@settings(max_examples=300, deadline=None)
@given(batches=st.lists(st.lists(events(), min_size=1, max_size=5), min_size=1, max_size=6))
def test_replaying_a_profiles_changes_from_version_one_gives_its_traits(
    batches: list[list[IdentifyEvent]],
) -> None:
    store = Store()
    for number, batch in enumerate(batches):
        note(f"batch {number}: {batch}")
        store.apply(batch, now_ms=1000 + number)
    for profile_id, stream in store.stream.items():
        versions = sorted({v for v, _r in stream if v})
        assert versions == list(range(1, len(versions) + 1)), f"versions with gaps: {versions}"
        records = [r for _v, r in stream]
        if profile_id in store.rows:
            assert canonical(replay(records)) == canonical(store.traits(profile_id))
        else:
            assert stream[-1][1] is None, "a profile that is gone must end with a tombstone"
    for profile_id in store.rows:
        if store.traits(profile_id):
            assert profile_id in store.stream, "a profile with traits that never published a change"
