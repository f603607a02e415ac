"""Which event last wrote each trait, from the stored stamps of every stored form."""

from __future__ import annotations

import orjson

from traitstream.events import IdentifyEvent, Op, Operation
from traitstream.merge import Profile
from traitstream.provenance import provenance


def event(t: int, dialect: str, *ops: Operation, key: str | None = None, index: int = 0) -> IdentifyEvent:
    return IdentifyEvent(
        workspace_id="ws",
        user_id="u",
        dialect=dialect,
        event_time_ms=t,
        received_time_ms=t,
        response_id=f"resp-{t}",
        event_index=index,
        dedupe_key=key,
        operations=ops,
    )


def stored(profile: Profile) -> tuple[dict, dict]:
    """The row as the store keeps it and the reader parses it."""
    return orjson.loads(orjson.dumps(profile.traits)), orjson.loads(profile.meta_text())


def test_each_trait_names_the_event_that_decides_it() -> None:
    profile = Profile()
    profile.apply_event(event(1_700_000_000_000, "segment", Operation(Op.SET, "plan", "free"), key="m-1"))
    profile.apply_event(
        event(1_700_000_000_500, "amplitude", Operation(Op.SET_ONCE, "ref", "ad"), key="ins-2")
    )
    profile.apply_event(
        event(1_700_000_001_000, "thrivestack", Operation(Op.SET, "plan", "pro"), Operation(Op.ADD, "n", 2))
    )
    profile.apply_event(event(1_700_000_002_000, "amplitude", Operation(Op.APPEND, "tags", "a"), index=3))
    profile.apply_event(event(1_600_000_000_000, "segment", Operation(Op.SET, "plan", "late"), key="m-0"))
    assert provenance(*stored(profile)) == {
        "plan": {
            "event_time": "2023-11-14T22:13:21+00:00",
            "source": "thrivestack",
            "message_id": "resp-1700000001000",
            "op": "set",
        },
        "ref": {
            "event_time": "2023-11-14T22:13:20.500000+00:00",
            "source": "amplitude",
            "message_id": "ins-2",
            "op": "set_once",
        },
        "n": {
            "event_time": "2023-11-14T22:13:21+00:00",
            "source": "thrivestack",
            "message_id": "resp-1700000001000",
            "op": "add",
        },
        "tags": {
            "event_time": "2023-11-14T22:13:22+00:00",
            "source": "amplitude",
            "message_id": "resp-1700000002000",
            "op": "append",
        },
    }


def test_a_merged_profile_keeps_each_sides_provenance() -> None:
    user, anonymous = Profile(), Profile()
    user.apply_event(event(2_000, "segment", Operation(Op.SET, "a", 1), key="m-user"))
    anonymous.apply_event(event(1_000, "amplitude", Operation(Op.SET, "b", 2), key="ins-anon"))
    user.absorb(anonymous)
    answer = provenance(*stored(user))
    assert (answer["a"]["source"], answer["a"]["message_id"]) == ("segment", "m-user")
    assert (answer["b"]["source"], answer["b"]["message_id"]) == ("amplitude", "ins-anon")


def test_profiles_stored_before_sources_were_kept_answer_the_time() -> None:
    compact = {"w": {"a": [0, 0], "b": [1, 0]}, "o": {"c": [0, 1]}, "e": [[1_000, "m-1"], [2_000, "r:0"]]}
    first_form = {"w": {"a": [1_000, "m-1", 0]}, "o": {"c": [1_000, "m-1", 1]}}
    unknown = {"source": None, "message_id": None}
    assert provenance({"a": 1, "b": 2, "c": 3}, compact) == {
        "a": {"event_time": "1970-01-01T00:00:01+00:00", **unknown, "op": None},
        "b": {"event_time": "1970-01-01T00:00:02+00:00", **unknown, "op": None},
        "c": {"event_time": "1970-01-01T00:00:01+00:00", **unknown, "op": "set_once"},
    }
    assert provenance({"a": 1, "c": 3}, first_form)["a"] == {
        "event_time": "1970-01-01T00:00:01+00:00",
        **unknown,
        "op": None,
    }
    assert provenance({"z": 1}, {}) == {"z": {"event_time": None, **unknown, "op": None}}


def test_a_trait_written_again_after_an_upgrade_names_its_new_event() -> None:
    old = {"w": {"a": [0, 0], "b": [0, 1]}, "o": {}, "e": [[1_000, "m-1"]]}
    profile = Profile.from_stored({"a": 1, "b": 2}, old, 1_000)
    profile.apply_event(event(5_000, "datafast", Operation(Op.SET, "b", 3)))
    answer = provenance(*stored(profile))
    assert answer["a"]["source"] is None
    assert answer["b"] == {
        "event_time": "1970-01-01T00:00:05+00:00",
        "source": "datafast",
        "message_id": "resp-5000",
        "op": "set",
    }
