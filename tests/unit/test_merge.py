"""The merge rules, and the property that makes traitstream order-safe: for set, unset,
set_once and clear_all, any order and any duplication of a history gives one profile."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from traitstream import merge
from traitstream.events import IdentifyEvent, Op, Operation
from traitstream.merge import Profile

_merge = merge._merge


def event(t: int, *ops: Operation, eid: str | None = None, created: int | None = None) -> IdentifyEvent:
    return IdentifyEvent(
        workspace_id="ws",
        user_id="u",
        dialect="test",
        event_time_ms=t,
        received_time_ms=t,
        response_id=eid or f"e{t}",
        operations=ops,
        profile_created_at_ms=created,
    )


def apply_all(events: list[IdentifyEvent]) -> Profile:
    profile = Profile()
    for e in events:
        profile.apply_event(e)
    return profile


def test_newer_set_wins_whatever_the_arrival_order() -> None:
    new, old = event(20, Operation(Op.SET, "plan", "pro")), event(10, Operation(Op.SET, "plan", "free"))
    assert apply_all([new, old]).traits == {"plan": "pro"}
    assert apply_all([old, new]).traits == {"plan": "pro"}


def test_unset_leaves_a_tombstone_that_older_sets_cannot_pass() -> None:
    profile = apply_all([event(30, Operation(Op.UNSET, "plan")), event(10, Operation(Op.SET, "plan", "x"))])
    assert profile.traits == {}
    profile.apply_event(event(40, Operation(Op.SET, "plan", "y")))
    assert profile.traits == {"plan": "y"}


def test_set_once_never_overwrites_and_earliest_wins() -> None:
    profile = apply_all(
        [
            event(20, Operation(Op.SET_ONCE, "ref", "later")),
            event(10, Operation(Op.SET_ONCE, "ref", "earlier")),
        ]
    )
    assert profile.traits == {"ref": "earlier"}
    profile.apply_event(event(5, Operation(Op.SET, "ref", "explicit")))
    assert profile.traits == {"ref": "explicit"}
    profile.apply_event(event(1, Operation(Op.SET_ONCE, "ref", "ignored")))
    assert profile.traits == {"ref": "explicit"}


def test_clear_all_removes_older_writes_only() -> None:
    profile = apply_all(
        [
            event(10, Operation(Op.SET, "a", 1)),
            event(30, Operation(Op.SET, "b", 2)),
            event(20, Operation(Op.CLEAR_ALL)),
            event(15, Operation(Op.SET, "c", 3)),
        ]
    )
    assert profile.traits == {"b": 2}


def test_later_operation_in_one_event_wins() -> None:
    profile = apply_all(
        [event(10, Operation(Op.SET, "a", 1), Operation(Op.UNSET, "a"), Operation(Op.SET, "b", 2))]
    )
    assert profile.traits == {"b": 2}


def test_add_counts_from_zero_and_ignores_non_numbers() -> None:
    profile = apply_all([event(1, Operation(Op.ADD, "n", 2)), event(2, Operation(Op.ADD, "n", 3.5))])
    assert profile.traits == {"n": 5.5}
    profile.apply_event(event(3, Operation(Op.SET, "s", "text")))
    profile.apply_event(event(4, Operation(Op.ADD, "s", 1)))
    assert profile.traits["s"] == 1


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        (Op.APPEND, ["c", "a"], ["a", "b", "c", "a"]),
        (Op.PREPEND, "z", ["z", "a", "b"]),
        (Op.POST_INSERT, ["b", "c", "c"], ["a", "b", "c"]),
        (Op.PRE_INSERT, ["b", "z"], ["z", "a", "b"]),
        (Op.REMOVE, ["a", "q"], ["b"]),
    ],
)
def test_list_operations(op: Op, value: object, expected: list) -> None:
    profile = apply_all([event(1, Operation(Op.SET, "l", ["a", "b"])), event(2, Operation(op, "l", value))])
    assert profile.traits["l"] == expected


def test_list_operation_on_a_scalar_wraps_it() -> None:
    profile = apply_all([event(1, Operation(Op.SET, "l", "a")), event(2, Operation(Op.APPEND, "l", "b"))])
    assert profile.traits["l"] == ["a", "b"]


def test_created_at_is_the_earliest_seen() -> None:
    profile = apply_all([event(50, created=30), event(40), event(60, created=35)])
    assert profile.created_at_ms == 30


def test_stored_form_round_trips() -> None:
    profile = apply_all(
        [
            event(10, Operation(Op.SET, "a", {"x": 1})),
            event(20, Operation(Op.UNSET, "b")),
            event(5, Operation(Op.SET_ONCE, "c", 3)),
            event(15, Operation(Op.CLEAR_ALL)),
        ]
    )
    stored = Profile.from_stored(profile.traits, profile.meta(), profile.created_at_ms)
    later = event(12, Operation(Op.SET, "a", "old"))
    stored.apply_event(later)
    profile.apply_event(later)
    assert stored == profile
    assert stored.meta() == profile.meta()


def test_stamps_are_used_as_stored_in_json() -> None:
    """A profile read back from its JSON (as the store does) is the same profile, and
    its stamps order against new events' stamps as before."""
    profile = apply_all(
        [
            event(10, Operation(Op.SET, "a", 1), eid="m-1"),
            event(10, Operation(Op.SET, "b", 1), Operation(Op.UNSET, "b"), eid="m-2"),
            event(7, Operation(Op.SET_ONCE, "c", 3)),
            event(9, Operation(Op.CLEAR_ALL)),
        ]
    )
    meta = orjson.loads(orjson.dumps(profile.meta()))
    assert meta == {
        "e": [[10, "m-1:0000"], [10, "m-2:0000"], [9, "e9:0000"]],
        "s": [["test", "m-1"], ["test", "m-2"], ["test", "e9"]],
        "w": {"a": [0, 0], "b": [1, 1]},
        "o": {},
        "c": [2, 0],
    }
    stored = Profile.from_stored(orjson.loads(orjson.dumps(profile.traits)), meta, profile.created_at_ms)
    assert stored == profile
    for later in (
        event(10, Operation(Op.SET, "a", 2), eid="m-0"),  # same millisecond, smaller id: older
        event(10, Operation(Op.SET, "b", 2), eid="m-2"),  # same event, earlier position: older
        event(8, Operation(Op.SET_ONCE, "d", 4)),  # before the clear: gone already
        event(10, Operation(Op.SET, "e", 5), eid="m-3"),
    ):
        stored.apply_event(later)
        profile.apply_event(later)
    assert stored == profile
    assert stored.traits == {"a": 1, "e": 5}


def test_one_identifys_stamps_share_one_entry() -> None:
    profile = apply_all(
        [
            event(10, Operation(Op.SET, "a", 1), Operation(Op.SET, "b", 2), eid="m-1"),
            event(11, Operation(Op.SET_ONCE, "c", 3), Operation(Op.SET, "d", 4), eid="m-2"),
        ]
    )
    assert profile.meta() == {
        "e": [[10, "m-1:0000"], [11, "m-2:0000"]],
        "s": [["test", "m-1"], ["test", "m-2"]],
        "w": {"a": [0, 0], "b": [0, 1], "d": [1, 1]},
        "o": {"c": [1, 0]},
    }


def test_adds_and_list_operations_name_themselves_in_their_stamps() -> None:
    profile = apply_all(
        [
            event(10, Operation(Op.SET, "a", 1), Operation(Op.ADD, "n", 2), eid="m-1"),
            event(11, Operation(Op.APPEND, "l", "x"), Operation(Op.SET, "s", 1), eid="m-2"),
        ]
    )
    profile.apply_event(event(12, Operation(Op.SET, "n", 5), eid="m-3")._replace(dedupe_key="k-3"))
    assert profile.meta() == {
        "e": [[10, "m-1:0000"], [12, "m-3:0000"], [11, "m-2:0000"]],
        "s": [["test", "m-1"], ["test", "k-3"], ["test", "m-2"]],
        "w": {"a": [0, 0], "n": [1, 0], "l": [2, 0], "s": [2, 1]},
        "o": {},
        "p": {"l": "append"},
    }
    again = Profile.from_stored(profile.traits, orjson.loads(orjson.dumps(profile.meta())), None)
    assert again.written["l"] == [11, "m-2:0000", 0, "append"]
    assert again.sources == {
        "m-1:0000": ("test", "m-1"),
        "m-3:0000": ("test", "k-3"),  # the dedupe key is the message id, not the stamp's
        "m-2:0000": ("test", "m-2"),
    }


def test_merging_keeps_the_sources_of_both_profiles() -> None:
    left = apply_all([event(10, Operation(Op.SET, "a", 1), eid="m-1")])
    right = apply_all([event(11, Operation(Op.ADD, "b", 1), eid="m-2")])
    left.absorb(right)
    assert left.meta()["s"] == [["test", "m-1"], ["test", "m-2"]]
    assert left.meta()["w"] == {"a": [0, 0], "b": [1, 0]}
    assert left.meta()["p"] == {"b": "add"}


def test_the_release_before_sources_reads_the_stamps_as_before() -> None:
    """Sources and operations are keys of their own: a reader that knows only w, o, c
    and e (index, position) gets every stamp right, and drops the rest."""
    profile = apply_all([event(10, Operation(Op.SET, "a", 1), Operation(Op.ADD, "n", 1), eid="m-1")])
    meta = orjson.loads(orjson.dumps(profile.meta()))
    pairs = meta["e"]
    first_release = {t: [*pairs[i], position] for t, (i, position) in meta["w"].items()}
    assert first_release == {t: s[:3] for t, s in profile.written.items()}


def test_stamps_written_out_in_full_are_still_read() -> None:
    """Rows written before the compact form keep every stamp whole, without ``e``."""
    first_form = {
        "w": {"a": [10, "m-1:0", 0], "b": [10, "m-2:0", 1]},
        "o": {"c": [7, "x:0", 0]},
        "c": [9, "e9:0", 0],
    }
    stored = Profile.from_stored({"a": 1, "c": 3}, first_form, 5)
    assert stored.written == first_form["w"]
    assert stored.once == first_form["o"]
    assert stored.cleared == [9, "e9:0", 0]
    again = Profile.from_stored(stored.traits, orjson.loads(orjson.dumps(stored.meta())), 5)
    assert again == stored


def test_stamps_stored_with_event_ids_order_against_stamp_ids() -> None:
    """Stamps written when they carried the event id (the dedupe key, or the response
    id and an unpadded position) are read as stored, and a tie with a new write
    resolves by the ids as text, the same way whichever profile sees the other."""
    stored = {"e": [[10, "k-1"], [10, "r:3"]], "w": {"a": [0, 0], "b": [1, 0]}, "o": {}}
    new = event(10, Operation(Op.SET, "a", "new"), Operation(Op.SET, "b", "new"), eid="r")._replace(
        event_index=4
    )
    assert new.stamp_id == "r:0004"  # after "k-1", before "r:3"
    loaded = Profile.from_text('{"a": "old", "b": "old"}', orjson.dumps(stored).decode(), None)
    assert loaded.written == {"a": [10, "k-1", 0], "b": [10, "r:3", 0]}
    loaded.apply_event(new)
    assert loaded.traits == {"a": "new", "b": "old"}
    other_way = apply_all([new])
    other_way.absorb(Profile.from_stored({"a": "old", "b": "old"}, stored, None))
    assert other_way == loaded


# --- properties ------------------------------------------------------------------

TRAITS = st.sampled_from(["a", "b", "c"])
VALUES = st.one_of(
    st.integers(-3, 3), st.text(max_size=3), st.none(), st.lists(st.integers(0, 2), max_size=2)
)


@st.composite
def order_safe_ops(draw: st.DrawFn) -> Operation:
    kind = draw(st.sampled_from([Op.SET, Op.SET, Op.UNSET, Op.SET_ONCE, Op.CLEAR_ALL]))
    if kind is Op.CLEAR_ALL:
        return Operation(kind)
    return Operation(kind, draw(TRAITS), None if kind is Op.UNSET else draw(VALUES))


@st.composite
def histories(draw: st.DrawFn, ops: st.SearchStrategy[Operation]) -> list[IdentifyEvent]:
    count = draw(st.integers(1, 12))
    # Few distinct times, so that ties at the same millisecond are common.
    return [
        event(
            draw(st.integers(0, 5)),
            *draw(st.lists(ops, min_size=1, max_size=3)),
            eid=f"e{i}",
            created=draw(st.none() | st.integers(0, 9)),
        )
        for i in range(count)
    ]


@st.composite
def deliveries(draw: st.DrawFn, history: list[IdentifyEvent]) -> list[IdentifyEvent]:
    """The history reordered, with some events delivered twice (a dedupe that failed
    open is harmless for these operations)."""
    doubled = history + draw(st.lists(st.sampled_from(history), max_size=4))
    return draw(st.permutations(doubled))


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_any_order_and_duplication_gives_the_same_profile(data: st.DataObject) -> None:
    history = data.draw(histories(order_safe_ops()))
    reference = apply_all(sorted(history, key=lambda e: (e.event_time_ms, e.stamp_id)))
    delivered = data.draw(deliveries(history))
    assert apply_all(delivered) == reference


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_adds_sum_the_same_in_any_order(data: st.DataObject) -> None:
    adds = st.builds(Operation, st.just(Op.ADD), TRAITS, st.integers(-100, 100))
    history = data.draw(histories(adds))
    reordered = data.draw(st.permutations(history))
    assert apply_all(reordered).traits == apply_all(history).traits


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_merging_two_profiles_equals_one_profile_of_both_histories(data: st.DataObject) -> None:
    """Anonymous-to-user merge: the join of two profiles is what one profile would be
    had it seen both histories, in either direction."""
    left = data.draw(histories(order_safe_ops()))
    right = [
        event(e.event_time_ms, *e.operations, eid=f"r{i}", created=e.profile_created_at_ms)
        for i, e in enumerate(data.draw(histories(order_safe_ops())))
    ]
    together = apply_all(left + right)
    merged = apply_all(left)
    merged.absorb(apply_all(right))
    other_way = apply_all(right)
    other_way.absorb(apply_all(left))
    assert merged == together
    assert other_way == together


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_a_profile_saved_and_loaded_between_events_is_the_same_profile(data: st.DataObject) -> None:
    """The stored form loses nothing: a worker that saves the profile after some events
    and loads it again before the rest ends where one that kept it in memory does."""
    history = data.draw(histories(order_safe_ops()))
    cut = data.draw(st.integers(0, len(history)))
    kept = apply_all(history[:cut])
    saved = orjson.loads(orjson.dumps(kept.meta()))
    loaded = Profile.from_stored(orjson.loads(orjson.dumps(kept.traits)), saved, kept.created_at_ms)
    assert loaded == kept
    for later in history[cut:]:
        kept.apply_event(later)
        loaded.apply_event(later)
    assert loaded == kept
    assert loaded.meta() == kept.meta()  # the sources of the events it names too


# --- the compiled stamps ------------------------------------------------------------

compiled = pytest.mark.skipif(
    not merge.COMPILED, reason="the compiled module is not in use (TRAITSTREAM_IMPL)"
)


@compiled
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_compiled_stamps_are_the_python_stamps(data: st.DataObject) -> None:
    """Both ways, on profiles of random histories, through the stored text as in the store."""
    profile = apply_all(data.draw(histories(any_ops())))
    if data.draw(st.booleans()):  # some events of a profile stored before sources were kept
        profile.sources = {k: v for k, v in profile.sources.items() if data.draw(st.booleans())}
    state = (profile.written, profile.once, profile.cleared)
    text = _merge.compact_text(*state, profile.sources)
    assert text == orjson.dumps(merge.compact_stamps(*state, profile.sources)).decode()
    assert _merge.expand_text(text) == merge.expand_stamps(orjson.loads(text))
    named = {
        stamp[1] for stamp in [*profile.written.values(), *profile.once.values(), profile.cleared] if stamp
    }
    sources = {k: v for k, v in profile.sources.items() if k in named}
    assert _merge.expand_text(text) == (*state, sources)


def _outcome(function: Callable[[dict], object], meta: dict) -> object:
    try:
        return function(meta)
    except (LookupError, TypeError, ValueError) as exc:
        return type(exc)


@st.composite
def stored_texts(draw: st.DrawFn) -> str:
    """The stored form's text, as orjson writes it, over any names, ids and times
    (orjson escapes some characters: that text is the Python path's to read)."""
    pairs = draw(
        st.lists(st.tuples(st.integers(-62135596800000, 253402300799999), st.text(max_size=8)), max_size=4)
    )
    meta: dict = {"w": {}, "o": {}}
    if pairs:
        refs = st.tuples(st.integers(0, len(pairs) - 1), st.integers(0, 40)).map(list)
        meta["w"] = draw(st.dictionaries(st.text(max_size=6), refs, max_size=5))
        meta["o"] = draw(st.dictionaries(st.text(max_size=6), refs, max_size=2))
        if draw(st.booleans()):
            meta["c"] = draw(refs)
    meta["e"] = [list(pair) for pair in pairs]
    if pairs and draw(st.booleans()):
        source = st.none() | st.tuples(st.text(max_size=6), st.text(max_size=8)).map(list)
        meta["s"] = draw(st.lists(source, min_size=len(pairs), max_size=len(pairs)))
    if draw(st.booleans()):
        names = (
            st.sampled_from(sorted(meta["w"])) if meta["w"] and draw(st.booleans()) else st.text(max_size=6)
        )
        meta["p"] = draw(st.dictionaries(names, st.sampled_from(["add", "append", "é"]), max_size=3))
    return orjson.dumps(meta).decode()


@compiled
@settings(max_examples=500, deadline=None)
@given(text=stored_texts())
def test_stored_text_is_read_as_its_parsed_form_is(text: str) -> None:
    expected = merge.expand_stamps(orjson.loads(text))
    assert merge.expand_stamps_text(text) == expected
    if "\\" not in text:  # nothing escaped: the compiled reader takes it
        assert _merge.expand_text(text) == expected


@compiled
def test_stored_text_shares_its_trait_names() -> None:
    text = '{"w":{"plan":[0,0],"prénom":[0,1]},"o":{},"e":[[1,"m:0"]]}'
    first, second = _merge.expand_text(text), _merge.expand_text(text)
    assert first == second
    (plan_a, name_a), (plan_b, name_b) = list(first[0]), list(second[0])
    assert plan_a is plan_b  # a short ASCII name: one shared string
    assert name_a == name_b and name_a is not name_b  # anything else is read afresh
    assert first[0]["plan"][1] is not second[0]["plan"][1]  # ids are not names


@compiled
@pytest.mark.parametrize(
    "text",
    [
        '{"w":{"a":[10,"m-1:0",0]},"o":{}}',  # the first form: no "e"
        '{"w": {}, "o": {}, "e": []}',  # spaces
        '{"o":{},"w":{},"e":[]}',  # another order
        '{"w":{"a":[1,0]},"o":{},"e":[[1,"x"]]}',  # an index past the pairs
        '{"w":{"a":[-1,0]},"o":{},"e":[[1,"x"]]}',  # Python counts it from the end
        '{"w":{"a":[0.0,0]},"o":{},"e":[[1,"x"]]}',
        '{"w":{"a":[0,0]},"o":{},"e":[[1,"x",2]]}',  # a pair of three
        '{"w":{"a":[0,0]},"o":{},"e":[[1,"x"]],"s":[["s"]]}',  # a source without a message id
        '{"w":{"a":[0,0]},"o":{},"e":[[1,"x"]],"s":[["s",2]]}',
        '{"w":{"a":[0,0]},"o":{},"e":[[1,"x"]],"s":[["s","m","n"]]}',
        '{"w":{"a":[0,0]},"o":{},"e":[[1,"x"]],"s":[]}',  # fewer sources than events
        '{"w":{"a":[0,0]},"o":{},"e":[[1,"x"]],"s":[null,null]}',  # more
        '{"w":{"a":[0,0]},"o":{},"e":[[1,"x"]],"p":{"a":1}}',  # an operation that is not a name
        '{"w":{"a":[0,0]},"o":{},"e":[[1,"x"]],"p":{"a":"add"},"s":[null]}',  # another order
        '{"w":{"a":[0,0,"add"]},"o":{},"e":[[1,"x"]]}',  # an operation in the reference
        '{"w":{"a":[0,0]},"o":{},"e":[[1234567890123456789,"x"]]}',  # 19 digits
        '{"w":{"a":[0,0]},"o":{},"e":[[01,"x"]]}',  # not JSON
        '{"w":{"a":[0,0]},"o":{},"e":[[-0,"x"]]}',
        '{"w":{"a\\"b":[0,0]},"o":{},"e":[[1,"x"]]}',  # an escaped quote
        '{"w":{},"o":{},"c":null,"e":[]}',
        '{"w":{},"o":{},"e":[]} ',  # trailing space
        '{"w":{},"o":{},"e":[]',  # cut short
        '{"w":{"a":[0,0]},"o":{},"e":[[1,"x"]],"f":1}',
        '{"e":[[1,"x"]],"w":{}}',  # no "o"
        "",
    ],
)
def test_stored_text_the_compiled_code_does_not_take_is_read_by_python(text: str) -> None:
    assert _merge.expand_text(text) is None

    def parsed_then_expanded(t: str) -> object:
        return merge.expand_stamps(orjson.loads(t))

    assert _outcome(merge.expand_stamps_text, text) == _outcome(parsed_then_expanded, text)


STAMP_TEXT = st.one_of(st.text(max_size=6), st.sampled_from(["a", "é", 'q"', "b\\", "t\t", "\x7f"]))


@compiled
@settings(max_examples=500, deadline=None)
@given(data=st.data())
def test_stored_text_is_written_as_orjson_writes_the_stored_form(data: st.DataObject) -> None:
    """Any names, ids, times and positions; the text written directly when nothing
    in it needs escaping, by Python (the same text) when something does."""
    stamp = st.tuples(st.integers(-(2**63), 2**63 - 1) | st.just(1.5), STAMP_TEXT, st.integers(0, 40)).map(
        list
    )
    named = st.tuples(st.integers(-(2**63), 2**63 - 1), STAMP_TEXT, st.integers(0, 40), STAMP_TEXT).map(list)
    written = data.draw(st.dictionaries(STAMP_TEXT, stamp | named, max_size=5))
    once = data.draw(st.dictionaries(STAMP_TEXT, stamp, max_size=2))
    cleared = data.draw(st.none() | stamp)
    ids = [s[1] for s in [*written.values(), *once.values(), *([cleared] if cleared else [])]]
    sources = data.draw(
        st.dictionaries(st.sampled_from(ids) if ids else STAMP_TEXT, st.tuples(STAMP_TEXT, STAMP_TEXT))
    )
    expected = orjson.dumps(merge.compact_stamps(written, once, cleared, sources)).decode()
    profile = Profile(traits={}, written=written, once=once, cleared=cleared, sources=sources)
    assert profile.meta_text() == expected
    direct = _merge.compact_text(written, once, cleared, sources)
    assert direct is None or direct == expected

    def plain(text: str) -> bool:
        return not any(c in '"\\' or c < " " for c in text)

    stamps = [*written.items(), *once.items(), *([("", cleared)] if cleared else [])]
    regular = all(type(s[0]) is int and plain(name) and all(map(plain, s[1::2])) for name, s in stamps)
    regular = regular and all(plain(v) for i in set(ids) if i in sources for v in sources[i])
    assert (direct is not None) == regular, expected


@st.composite
def any_ops(draw: st.DrawFn) -> Operation:
    kind = draw(st.sampled_from(list(Op)))
    if kind is Op.CLEAR_ALL:
        return Operation(kind)
    if kind is Op.ADD:
        return Operation(kind, draw(TRAITS), draw(st.integers(-5, 5) | st.floats(-2, 2)))
    return Operation(kind, draw(TRAITS), None if kind is Op.UNSET else draw(VALUES))


@compiled
@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_compiled_events_apply_as_the_python_loop_applies_them(data: st.DataObject) -> None:
    """Every kind of operation, in any order, on a profile loaded from storage or not."""
    history = data.draw(histories(any_ops()))
    start = apply_all(data.draw(histories(order_safe_ops())))
    compiled_profile = Profile.from_stored(start.traits, start.meta(), start.created_at_ms)
    for e in history:
        compiled_profile.apply_event(e)
    with pytest.MonkeyPatch.context() as python_only:
        python_only.setattr(merge, "_merge", None)
        python_profile = Profile.from_stored(start.traits, start.meta(), start.created_at_ms)
        for e in history:
            python_profile.apply_event(e)
    assert compiled_profile == python_profile
