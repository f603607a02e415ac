"""Profile ids: the same on every machine and in every release."""

from __future__ import annotations

import uuid

import pytest

from traitstream import events
from traitstream.events import (
    PROFILE_NAMESPACE,
    Op,
    Operation,
    anonymous_profile_id,
    set_operations,
    user_profile_id,
)

# Around SHA-1's block edges (a name of 55 bytes or more takes a second block for
# its length), and past the compiled code's stack buffer of 512 bytes.
NAMES = ["u1", "bench-user-00001234", "", "é中😀", "a" * 255, "\x00", "x\x1fuser\x1fy"]
NAMES += ["b" * n for n in (30, 31, 32, 33, 40, 41, 94, 95, 96, 97, 488, 489, 490, 1000)]


@pytest.mark.parametrize("name", NAMES)
def test_the_python_profile_id_is_uuid5(name: str) -> None:
    made = events._uuid5(f"ws\x1fuser\x1f{name}")
    assert made == uuid.uuid5(PROFILE_NAMESPACE, f"ws\x1fuser\x1f{name}")
    assert made.is_safe is uuid.SafeUUID.unknown


@pytest.mark.parametrize("name", NAMES)
def test_profile_ids_are_uuid5_of_workspace_and_id(name: str) -> None:
    for made, expected in (
        (user_profile_id("ws", name), uuid.uuid5(PROFILE_NAMESPACE, f"ws\x1fuser\x1f{name}")),
        (anonymous_profile_id("ws", name), uuid.uuid5(PROFILE_NAMESPACE, f"ws\x1fanonymous\x1f{name}")),
    ):
        assert made == expected
        assert (made.version, made.variant, made.is_safe) == (5, uuid.RFC_4122, expected.is_safe)
        assert str(made) == str(expected) and hash(made) == hash(expected)


def test_profile_ids_do_not_change_between_releases() -> None:
    """Stored rows are keyed by these ids: a release that made others would orphan them."""
    assert str(user_profile_id("acme", "user-42")) == "f54e4711-0567-5ed0-be93-48bf21c8d3b0"


def test_set_operations_are_sets_in_order() -> None:
    made = set_operations([("plan", "pro"), ("seats", 3), ("plan", None)])
    assert made == (
        Operation(Op.SET, "plan", "pro"),
        Operation(Op.SET, "seats", 3),
        Operation(Op.SET, "plan", None),
    )
    assert all(type(operation) is Operation for operation in made)
    assert made[1].trait == "seats" and made[1].value == 3
    assert set_operations({}.items()) == ()
