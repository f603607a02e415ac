"""Aliases in the batch planner: previousId's profile merges into userId's, and the
previous id resolves to the merged profile afterwards."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_plan import WS, Store, ev
from traitstream.events import IdentifyEvent, Kind, Op, Operation, anonymous_profile_id, user_profile_id
from traitstream.worker.plan import lock_names

U0, U1, U2 = (user_profile_id(WS, u) for u in ("u0", "u1", "u2"))
D0, D1 = (anonymous_profile_id(WS, d) for d in ("d0", "d1"))


def alias(t: int, previous: str, user: str, anon: tuple[str, ...] = ()) -> IdentifyEvent:
    return ev(t, user=user, anon=anon, kind=Kind.ALIAS)._replace(previous_id=previous)


def test_an_anonymous_previous_id_merges_like_an_identify_with_it() -> None:
    store = Store()
    store.run(ev(1, anon=("d1",), plan="free", city="Oslo"))
    store.run(ev(5, user="u1", plan="pro"), alias(6, "d1", "u1"))
    assert set(store.rows) == {U1}
    assert store.traits(U1) == {"plan": "pro", "city": "Oslo"}
    assert store.links[(WS, "d1")] == U1
    store.run(ev(7, anon=("d1",), city="Bergen"))  # later anonymous events land in the user's profile
    assert store.traits(U1) == {"plan": "pro", "city": "Bergen"}


def test_an_earlier_user_is_absorbed_with_its_identities() -> None:
    store = Store()
    store.run(ev(1, user="u0", anon=("d0",), plan="free", email="old@x"), ev(2, anon=("d9",), seen=1))
    store.run(ev(2, user="u0", anon=("d9",)))  # u0 has two anonymous ids now
    store.run(ev(3, user="u1", plan="pro"))
    store.run(ev(4, user="u0", email="new@x"))
    # The alias's batch loads neither d0 nor d9: their links follow u0's profile all the same.
    store.run(alias(5, "u0", "u1"))
    assert set(store.rows) == {U1}
    assert store.traits(U1) == {"plan": "pro", "email": "new@x", "seen": 1}
    assert store.links == {(WS, "d0"): U1, (WS, "d9"): U1, (WS, "u0"): U1}
    assert store.aliases == {(WS, "u0"): U1}
    assert store.rows[U1].user_id == "u1"
    # Later identifies of the previous user id land in the merged profile.
    store.run(ev(6, user="u0", plan="team"))
    assert set(store.rows) == {U1} and store.traits(U1)["plan"] == "team"
    # And its erasure erases the merged profile, with every id that resolved to it.
    store.run(ev(7, user="u0", kind=Kind.ERASE))
    assert store.rows == {} and store.links == {} and store.aliases == {}
    store.run(ev(8, user="u0", plan="fresh"))
    assert store.traits(U0) == {"plan": "fresh"}


def test_set_once_keeps_the_earliest_across_the_merge() -> None:
    store = Store()
    once = (Operation(Op.SET_ONCE, "first_seen", "later"),)
    store.run(ev(9, user="u1")._replace(operations=once))
    store.run(ev(2, user="u0")._replace(operations=(Operation(Op.SET_ONCE, "first_seen", "earlier"),)))
    store.run(alias(10, "u0", "u1"))
    assert store.traits(U1) == {"first_seen": "earlier"}
    assert store.rows[U1].profile.created_at_ms == 2


def test_an_unknown_previous_id_resolves_to_the_user_in_both_namespaces() -> None:
    store = Store()
    store.run(alias(1, "p", "u1"))
    assert store.aliases == {(WS, "p"): U1} and store.links == {(WS, "p"): U1}
    store.run(ev(2, user="p", a=1), ev(3, anon=("p",), b=2))
    assert set(store.rows) == {U1} and store.traits(U1) == {"a": 1, "b": 2}


def test_a_device_of_another_user_is_not_merged_and_counts_as_conflict() -> None:
    store = Store()
    store.run(ev(1, user="u2", anon=("d1",), plan="other"))
    store.run(alias(2, "d1", "u1"))
    assert store.traits(U2) == {"plan": "other"} and store.links[(WS, "d1")] == U2
    assert store.conflicts == 1
    assert U1 in store.rows and store.traits(U1) == {}


def test_aliases_chain_and_their_ids_follow() -> None:
    store = Store()
    store.run(ev(1, user="u0", a=0))
    store.run(alias(2, "u0", "u1"))
    store.run(ev(3, user="u2", c=2))
    store.run(alias(4, "u1", "u2"))
    assert set(store.rows) == {U2} and store.traits(U2) == {"a": 0, "c": 2}
    assert store.aliases == {(WS, "u0"): U2, (WS, "u1"): U2}
    store.run(ev(5, user="u0", a=5))
    assert store.traits(U2) == {"a": 5, "c": 2}


def test_an_alias_applied_again_changes_nothing() -> None:
    store = Store()
    store.run(ev(1, user="u0", anon=("d0",), a=1), ev(2, user="u1", b=2))
    store.run(alias(3, "u0", "u1", anon=("d1",)))
    before = (store.traits(U1).copy(), dict(store.links), dict(store.aliases), set(store.rows))
    store.run(alias(3, "u0", "u1", anon=("d1",)))
    assert (store.traits(U1), store.links, store.aliases, set(store.rows)) == before


def test_an_alias_to_itself_is_only_an_identify() -> None:
    store = Store()
    store.run(ev(1, user="u1", a=1), alias(2, "u1", "u1"))
    assert set(store.rows) == {U1} and store.aliases == {} and store.traits(U1) == {"a": 1}


def test_lock_names_cover_the_previous_id_in_both_namespaces() -> None:
    assert lock_names([alias(1, "p", "u1")]) == [f"{WS}\x1fa\x1fp", f"{WS}\x1fu\x1fp", f"{WS}\x1fu\x1fu1"]


def test_an_alias_that_would_pass_the_size_cap_is_refused_whole() -> None:
    store = Store()
    store.run(ev(1, user="u0", big="x" * 600), ev(2, user="u1", other="y" * 600))
    assert store.run(alias(3, "u0", "u1"), cap=1000) == [0]
    assert set(store.rows) == {U0, U1} and store.aliases == {}


histories = st.lists(
    st.tuples(
        st.sampled_from(["identify", "alias", "anon"]),
        st.sampled_from(["u0", "u1", "u2"]),
        st.sampled_from(["u0", "u1", "d0", "d1"]),
        st.sampled_from(["a", "b"]),
        st.integers(0, 3),
    ),
    max_size=8,
)


def _events(history: list[tuple[str, str, str, str, int]]) -> list[IdentifyEvent]:
    out = []
    for t, (kind, user, other, trait, value) in enumerate(history):
        if kind == "alias":
            out.append(alias(t, other, user))
        elif kind == "anon":
            out.append(ev(t, anon=(other,), **{trait: value}))
        else:
            out.append(ev(t, user=user, **{trait: value}))
    return out


@settings(max_examples=150, deadline=None)
@given(histories)
def test_one_batch_plans_what_a_batch_per_event_does(history: list[tuple[str, str, str, str, int]]) -> None:
    events = _events(history)
    together, apart = Store(), Store()
    together.run(*events)
    for event in events:
        apart.run(event)
    assert {k: r.profile.traits for k, r in together.rows.items()} == {
        k: r.profile.traits for k, r in apart.rows.items()
    }
    assert (together.links, together.aliases) == (apart.links, apart.aliases)
