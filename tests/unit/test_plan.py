"""Batch planning: anonymous-to-user merges, conflicts, erasure and the size cap."""

from __future__ import annotations

import uuid

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from traitstream.events import IdentifyEvent, Kind, Op, Operation, anonymous_profile_id, user_profile_id
from traitstream.merge import Profile
from traitstream.worker.plan import (
    AnonKey,
    StoredProfile,
    UserKey,
    lock_names,
    plan_batch,
    rows_to_load,
)
from traitstream.worker.sizing import growth_bound, loose_growth

WS = "ws"
NOW = 1_000


def ev(
    t: int,
    user: str | None = None,
    anon: tuple[str, ...] = (),
    kind: Kind = Kind.IDENTIFY,
    **traits: object,
) -> IdentifyEvent:
    return IdentifyEvent(
        workspace_id=WS,
        user_id=user,
        anonymous_ids=anon,
        dialect="test",
        event_time_ms=t,
        received_time_ms=t,
        response_id=f"r{t}",
        kind=kind,
        operations=tuple(Operation(Op.SET, k, v) for k, v in traits.items()),
    )


class Store:
    """Applies plans to in-memory rows, as the Postgres store does, batch after batch:
    links and aliases of merged profiles follow them, deletes cascade to both."""

    def __init__(self) -> None:
        self.rows: dict[uuid.UUID, StoredProfile] = {}
        self.links: dict[AnonKey, uuid.UUID] = {}
        self.aliases: dict[UserKey, uuid.UUID] = {}
        self.conflicts = 0

    def run(self, *events: IdentifyEvent, cap: int = 512 * 1024) -> list[int]:
        wanted = rows_to_load(events, self.links, self.aliases)
        loaded = {i: self.rows[i] for i in wanted if i in self.rows}
        plan = plan_batch(events, dict(self.links), loaded, NOW, cap, aliases=dict(self.aliases))

        def final(pid: uuid.UUID) -> uuid.UUID | None:
            while pid in plan.moves:
                pid = plan.moves[pid]
            return pid if pid in plan.upserts else None

        for stored, planned in ((self.links, plan.links), (self.aliases, plan.aliases)):
            for key, pid in stored.items():
                target = final(pid) if pid in plan.moves else None
                if target is not None:
                    planned.setdefault(key, target)  # type: ignore[arg-type]
        for pid in plan.deletes:
            self.rows.pop(pid, None)
            self.links = {k: v for k, v in self.links.items() if v != pid}
            self.aliases = {k: v for k, v in self.aliases.items() if v != pid}
        self.rows.update(plan.upserts)
        self.links.update(plan.links)
        self.aliases.update(plan.aliases)
        self.conflicts += plan.conflicts
        return plan.rejected

    def traits(self, pid: uuid.UUID) -> dict:
        return self.rows[pid].profile.traits


USER = user_profile_id(WS, "u1")
ANON = anonymous_profile_id(WS, "d1")


def test_anonymous_events_build_an_anonymous_profile() -> None:
    store = Store()
    store.run(ev(1, anon=("d1",), plan="free"))
    assert store.traits(ANON) == {"plan": "free"}
    assert store.rows[ANON].user_id is None
    assert store.links[(WS, "d1")] == ANON


def test_identify_with_the_anonymous_id_merges_the_anonymous_profile() -> None:
    store = Store()
    store.run(ev(1, anon=("d1",), plan="free", referrer="ad"))
    store.run(ev(2, user="u1", anon=("d1",), plan="pro"))
    assert ANON not in store.rows
    assert store.traits(USER) == {"plan": "pro", "referrer": "ad"}
    assert store.links[(WS, "d1")] == USER
    # Later anonymous events of that device go to the user's profile.
    store.run(ev(3, anon=("d1",), theme="dark"))
    assert store.traits(USER)["theme"] == "dark"
    assert ANON not in store.rows


def test_merge_keeps_the_newer_value_per_trait() -> None:
    store = Store()
    store.run(ev(10, user="u1", plan="enterprise"))
    store.run(ev(5, anon=("d1",), plan="free", color="red"))
    store.run(ev(7, user="u1", anon=("d1",)))
    assert store.traits(USER) == {"plan": "enterprise", "color": "red"}


def test_same_batch_merge_matches_separate_batches() -> None:
    events = [ev(1, anon=("d1",), a=1), ev(2, user="u1", anon=("d1",), b=2), ev(3, anon=("d1",), c=3)]
    together, apart = Store(), Store()
    together.run(*events)
    for e in events:
        apart.run(e)
    assert together.traits(USER) == apart.traits(USER) == {"a": 1, "b": 2, "c": 3}
    assert together.links == apart.links


def test_an_id_of_another_user_is_not_merged_and_counts_as_conflict() -> None:
    store = Store()
    store.run(ev(1, user="u1", anon=("d1",), who="one"))
    wanted = rows_to_load([ev(2, user="u2", anon=("d1",))], store.links)
    plan = plan_batch(
        [ev(2, user="u2", anon=("d1",), who="two")],
        store.links,
        {i: store.rows[i] for i in wanted if i in store.rows},
        NOW,
    )
    assert plan.conflicts == 1
    assert (WS, "d1") not in plan.links
    u2 = user_profile_id(WS, "u2")
    assert plan.upserts[u2].profile.traits == {"who": "two"}
    assert USER not in plan.upserts


def test_erase_removes_profile_and_links_and_a_later_identify_starts_fresh() -> None:
    store = Store()
    store.run(ev(1, user="u1", anon=("d1",), plan="pro"))
    store.run(ev(2, user="u1", kind=Kind.ERASE))
    assert USER not in store.rows and (WS, "d1") not in store.links
    store.run(ev(3, user="u1", plan="free"))
    assert store.traits(USER) == {"plan": "free"}


def test_erase_then_identify_in_one_batch() -> None:
    store = Store()
    store.run(ev(1, user="u1", old=True))
    wanted = rows_to_load([ev(2, user="u1")], store.links)
    plan = plan_batch(
        [ev(2, user="u1", kind=Kind.ERASE), ev(3, user="u1", new=True)],
        store.links,
        {i: store.rows[i] for i in wanted},
        NOW,
    )
    # Deleted first (dropping its identities), then written fresh.
    assert USER in plan.deletes
    assert plan.upserts[USER].profile.traits == {"new": True}


def test_size_cap_refuses_the_whole_event_and_nothing_else() -> None:
    store = Store()
    rejected = store.run(
        ev(1, user="u1", small="x"),
        ev(2, user="u1", big="y" * 900, other="z"),
        ev(3, user="u2", fine="ok"),
        cap=600,
    )
    assert rejected == [1]
    assert store.traits(USER) == {"small": "x"}
    assert store.traits(user_profile_id(WS, "u2")) == {"fine": "ok"}


def test_size_cap_counts_what_is_already_stored() -> None:
    store = Store()
    store.run(ev(1, user="u1", a="x" * 400), cap=600)
    stored = store.rows[USER]
    stored.traits_bytes = len('{"a":"' + "x" * 400 + '"}')
    assert store.run(ev(2, user="u1", b="y" * 300), cap=600) == [0]
    # Overwriting a value with one of the same size fits.
    assert store.run(ev(3, user="u1", a="z" * 400), cap=600) == []
    assert store.traits(USER) == {"a": "z" * 400}


def test_removes_of_absent_traits_grow_no_profile_past_the_cap() -> None:
    store = Store()
    store.run(ev(1, user="u1", kept=["a", "b"]))
    for t in range(2, 32):
        removes = tuple(Operation(Op.REMOVE, f"absent-{t}-{i:04d}", "v") for i in range(1_500))
        event = IdentifyEvent(WS, "u1", "test", t, t, f"r{t}", operations=removes)
        assert store.run(event, cap=2_000) == []
    store.run(IdentifyEvent(WS, "u1", "test", 40, 40, "r40", operations=(Operation(Op.REMOVE, "kept", "a"),)))
    assert store.traits(USER) == {"kept": ["b"]}
    assert len(orjson.dumps(store.traits(USER))) <= 2_000


@pytest.mark.parametrize(
    ("start", "amount"), [(0.1, 0.2), (1, 0.1), (9, 1), (2**62, 2**62 - 1), (-0.5, 1e-300), (1e300, 1e300)]
)
def test_the_exact_bound_covers_what_an_add_stores(start: float, amount: float) -> None:
    profile = Profile(traits={"n": start})
    event = IdentifyEvent(WS, "u1", "test", 1, 1, "r1", operations=(Operation(Op.ADD, "n", amount),))
    before = len(orjson.dumps(profile.traits))
    bound = growth_bound(profile.traits, event)
    profile.apply_event(event)
    assert len(orjson.dumps(profile.traits)) - before <= bound


def test_a_refused_anonymous_event_creates_no_profile() -> None:
    store = Store()
    assert store.run(ev(1, anon=("d1",), big="x" * 1000), cap=100) == [0]
    assert store.rows == {} and store.links == {}


def test_lock_names_are_sorted_and_cover_users_and_anonymous_ids() -> None:
    names = lock_names([ev(1, user="b", anon=("z",)), ev(2, anon=("a",)), ev(3, user="b")])
    assert names == sorted(names)
    assert len(names) == 3


def test_profile_state_round_trip_through_storage_keeps_merge_rules() -> None:
    profile = Profile()
    profile.apply_event(ev(5, user="u1", plan="pro"))
    stored = Profile.from_stored(profile.traits, profile.meta(), profile.created_at_ms)
    stored.apply_event(ev(3, user="u1", plan="old"))
    assert stored.traits == {"plan": "pro"}


# --- the loose size bound -------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(alphabet=st.sampled_from('aé中😀"\\\n\x01\x1f'), max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def operations(draw: st.DrawFn) -> Operation:
    op = draw(st.sampled_from([Op.SET, Op.SET, Op.SET_ONCE, Op.UNSET, Op.APPEND, Op.REMOVE, Op.CLEAR_ALL]))
    if op is Op.CLEAR_ALL:
        return Operation(op)
    trait = draw(st.sampled_from(["a", "b", "é", "name"]))
    return Operation(op, trait, None if op is Op.UNSET else draw(JSON_VALUES))


@st.composite
def events(draw: st.DrawFn) -> IdentifyEvent:
    user = draw(st.sampled_from([None, "u1", "u2"]))
    anon = tuple(draw(st.lists(st.sampled_from(["d1", "d2"]), max_size=2, unique=True)))
    if user is None and not anon:
        anon = ("d1",)
    return IdentifyEvent(
        workspace_id=WS,
        user_id=user,
        anonymous_ids=anon,
        dialect="test",
        event_time_ms=draw(st.integers(0, 5)),
        received_time_ms=0,
        response_id=f"r{draw(st.integers(0, 10**6))}",
        kind=draw(st.sampled_from([Kind.IDENTIFY] * 9 + [Kind.ERASE])),
        operations=tuple(draw(st.lists(operations(), max_size=4))),
    )


@settings(max_examples=400, deadline=None)
@given(traits=st.dictionaries(st.sampled_from(["a", "b", "é", "name"]), JSON_VALUES), event=events())
def test_the_loose_bound_never_counts_less_than_the_exact_one(traits: dict, event: IdentifyEvent) -> None:
    loose, replaced = loose_growth(traits, event)
    assert loose >= growth_bound(traits, event)
    assert growth_bound(replaced, event) == growth_bound(traits, event)


def test_the_loose_bound_raises_for_a_value_json_cannot_hold() -> None:
    event = IdentifyEvent(WS, "u1", "test", 1, 1, "r", operations=(Operation(Op.SET, "a", [2**70]),))
    with pytest.raises(TypeError):
        loose_growth({}, event)


@settings(max_examples=300, deadline=None)
@given(
    batches=st.lists(st.lists(events(), min_size=1, max_size=8), min_size=1, max_size=3),
    cap=st.integers(2, 400),
)
def test_the_size_cap_decides_as_the_exact_bound_alone_would(
    batches: list[list[IdentifyEvent]], cap: int
) -> None:
    """The planner with its loose bound, against one that measures every event exactly."""
    import traitstream.worker.plan as plan

    def exact_only(traits: dict, event: IdentifyEvent) -> tuple[int, dict]:
        return growth_bound(traits, event), loose_growth(traits, event)[1]

    fast, exact = Store(), Store()
    for batch in batches:
        got = fast.run(*batch, cap=cap)
        original = plan.loose_growth
        plan.loose_growth = exact_only  # type: ignore[assignment]
        try:
            want = exact.run(*batch, cap=cap)
        finally:
            plan.loose_growth = original
        assert got == want
        assert {i: r.profile.traits for i, r in fast.rows.items()} == {
            i: r.profile.traits for i, r in exact.rows.items()
        }
        # Between batches the store reads each row's size back, as the database does.
        for store in (fast, exact):
            for row in store.rows.values():
                row.traits_bytes = len(orjson.dumps(row.profile.traits))
