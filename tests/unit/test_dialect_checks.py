"""The dialects' compiled checks (``compiled/_checks.c``) and ``set_operations`` in
``compiled/_merge.c`` against the Python functions they mirror, on random values."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from traitstream import events
from traitstream.dialects import common, thrivestack, traits
from traitstream.errors import RequestError
from traitstream.events import Op, Operation, set_operations, set_operations_python

_checks = common._checks
_merge = events._merge

NOT_IN_USE = "the compiled module is not in use (TRAITSTREAM_IMPL)"
needs_checks = pytest.mark.skipif(_checks is None, reason=NOT_IN_USE)
needs_merge = pytest.mark.skipif(_merge is None, reason=NOT_IN_USE)

# Strings that sometimes hold U+0000, in values and in keys.
_TEXT = st.text(alphabet=st.sampled_from("ab\x00é☃𝄞"), max_size=4)
_SCALARS = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | _TEXT
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=25,
)


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def passes(value: Any, limit: int) -> bool:
    try:
        common.check_value(value, "v", limit)
    except RequestError:
        return False
    return True


@needs_checks
@settings(max_examples=400)
@given(value=_JSON, limit=st.integers(1, 6))
def test_plainly_fine_is_exactly_whether_check_value_passes(value: Any, limit: int) -> None:
    assert _checks is not None
    assert _checks.plainly_fine(value, limit) is passes(value, limit)
    # The Python proof is cheaper to doubt, never wrong.
    if common.plainly_fine_python(value, limit):
        assert _checks.plainly_fine(value, limit)


@needs_checks
def test_plainly_fine_at_the_depth_limit_and_past_it() -> None:
    assert _checks is not None
    assert _checks.plainly_fine(nested(40), 40)
    assert not _checks.plainly_fine(nested(41), 40)
    assert not _checks.plainly_fine(nested(10_000), 40)  # stops at the limit, no deep recursion
    assert not _checks.plainly_fine({"a": ["x\x00"]}, 40)
    assert not _checks.plainly_fine({"a\x00": 1}, 40)


@needs_checks
def test_plainly_fine_leaves_other_types_to_the_python_walk() -> None:
    assert _checks is not None
    assert not _checks.plainly_fine({"a": (1, 2)}, 40)
    assert not _checks.plainly_fine({1: "a"}, 40)
    assert not _checks.plainly_fine(type("Str", (str,), {})("x"), 40)
    with pytest.raises(TypeError):
        _checks.plainly_fine({}, "40")  # type: ignore[arg-type]


# Strings whose characters take the most room in JSON: escapes of six bytes and
# four, characters of two to four bytes in UTF-8.
_WIDE_TEXT = st.text(alphabet=st.sampled_from('a\x00\x1f"\\\né☃𝄞'), max_size=6)
_WIDE_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | _WIDE_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_WIDE_TEXT, inner, max_size=4),
    max_leaves=30,
)


@needs_checks
@settings(max_examples=600)
@given(value=_WIDE_JSON, limit=st.integers(0, 400))
def test_plainly_small_never_passes_what_json_size_measures_over_the_limit(value: Any, limit: int) -> None:
    assert _checks is not None
    if _checks.plainly_small(value, limit):
        assert common.json_size(value, "v") <= limit


@needs_checks
@pytest.mark.parametrize(
    "value",
    [
        -(2**63),
        -2.2250738585072014e-308,
        -1.7976931348623157e308,
        float("nan"),
        False,
        "\x00" * 5,
        {"\x1f": ["\x00", None, 2**63 - 1]},
    ],
)
def test_plainly_small_bounds_the_widest_scalars(value: Any) -> None:
    assert _checks is not None
    bound = next(limit for limit in range(200) if _checks.plainly_small(value, limit))
    assert common.json_size(value, "v") <= bound


@needs_checks
def test_plainly_small_passes_an_ordinary_identify_and_leaves_the_rest_measured() -> None:
    assert _checks is not None
    item = {
        "user_id": "u-1",
        "traits": {"email": "ada@example.com", "seats": 12, "company": {"name": "Acme"}},
        "context": {"ip": "127.0.0.1", "library": {"name": "sdk", "version": "1"}},
    }
    assert _checks.plainly_small(item, common.MAX_EVENT_BYTES)
    assert not _checks.plainly_small({"traits": {"bio": "x" * 6_000}}, common.MAX_EVENT_BYTES)
    assert not _checks.plainly_small({"big": 2**64}, common.MAX_EVENT_BYTES)  # orjson refuses it
    assert _checks.plainly_small(nested(64), common.MAX_EVENT_BYTES)
    assert not _checks.plainly_small(nested(65), common.MAX_EVENT_BYTES)
    assert not _checks.plainly_small(nested(10_000), common.MAX_EVENT_BYTES)  # stops early: no deep recursion
    assert not _checks.plainly_small({"a": (1, 2)}, common.MAX_EVENT_BYTES)
    assert not _checks.plainly_small({1: "a"}, common.MAX_EVENT_BYTES)
    assert not _checks.plainly_small("", -1)
    with pytest.raises(TypeError):
        _checks.plainly_small({}, "40")  # type: ignore[arg-type]


_TRAIT_NAMES = st.sampled_from(
    ["email", "age", "company", "address", "birthday", "enrichment_phone", "plan", "firstName", "id"]
)
_TRAIT_VALUES = (
    _SCALARS
    | st.lists(_TEXT | st.integers(), max_size=2)
    | st.dictionaries(st.sampled_from(["name", "id", "city", "postalCode", "employee_count"]), _SCALARS)
    | st.sampled_from(["2024-01-02", "2024-01-02T03:04:05Z", "not a date"])
)


def outcome(check: Any, value: dict[str, Any], types: dict[str, Any]) -> str | None:
    try:
        check(value, "body.traits", types)
    except RequestError as exc:
        return f"{exc.status} {exc.message}"
    return None


@needs_checks
@settings(max_examples=400)
@given(
    value=st.dictionaries(_TRAIT_NAMES, _TRAIT_VALUES, max_size=5),
    types=st.sampled_from([traits.TYPED, traits.SEGMENT_TYPED]),
)
def test_check_typed_refuses_what_the_python_loop_refuses(
    value: dict[str, Any], types: dict[str, Any]
) -> None:
    assert outcome(traits.check_typed, value, types) == outcome(traits.check_typed_python, value, types)


def test_check_typed_names_the_trait_at_fault() -> None:
    expected = r"body.traits.company.employee_count must be a number, got string"
    with pytest.raises(RequestError, match=expected):
        traits.check_typed({"email": "a@b.c", "company": {"employee_count": "many"}}, "body.traits")


@needs_merge
@settings(max_examples=200)
@given(value=st.dictionaries(_TEXT, _SCALARS, max_size=6))
def test_set_operations_builds_what_the_python_function_builds(value: dict[str, Any]) -> None:
    built = set_operations(value.items())
    assert built == set_operations_python(value.items())
    assert all(type(op) is Operation and op.op is Op.SET for op in built)


@needs_merge
def test_set_operations_takes_any_pairs_and_refuses_what_python_refuses() -> None:
    pairs = [["a", 1], ("b", None)]
    assert set_operations(iter(pairs)) == set_operations_python(iter(pairs))  # type: ignore[arg-type]
    assert set_operations(()) == ()
    for bad in ([("a", 1, 2)], [("a",)], [1], 5):
        with pytest.raises(Exception) as python_error:
            set_operations_python(bad)  # type: ignore[arg-type]
        with pytest.raises(python_error.type):
            set_operations(bad)  # type: ignore[arg-type]


# Thrivestack items: each field sometimes absent, null, or of a kind a check refuses.
_IDS = st.none() | st.sampled_from(["u1", "", "a\x00b", "x" * 255, "x" * 256, 7, ["u"]])
_NAMES = st.none() | st.sampled_from(["Ada", "  Ada ", "", " ", "\u2003Lovelace\u2003", 3])
_TRAITS = (
    st.none()
    | st.sampled_from(["pro", [1]])
    | st.fixed_dictionaries(
        {},
        optional={
            "first_name": _NAMES,
            "last_name": _NAMES,
            "name": st.none() | st.sampled_from(["Countess", 5]),
            "age": st.none() | st.sampled_from([36, "forty", True]),
            "company": st.none()
            | st.sampled_from([{"name": "A"}, {"employee_count": "many"}, "A", {"id": 3}]),
            "enrichment_phone": st.none() | st.sampled_from([["555"], ["555", 7], "555"]),
            "plan": _JSON,
        },
    )
)
_ITEMS = st.fixed_dictionaries(
    {},
    optional={
        "user_id": _IDS,
        "anonymous_id": _IDS,
        "message_id": _IDS,
        "user_traits": _TRAITS,
        "traits": _TRAITS,
        "context": st.none() | st.sampled_from(["web", {"ip": "1.2.3.4"}, {"k": "a\x00"}, nested(50)]),
        "timestamp": st.none()
        | st.sampled_from(["2024-03-01T10:00:00.000Z", "20-11-23T22:28:55.111Z", "soon", 5]),
    },
)


ENVELOPE = common.Envelope("ws", "resp-1", 1_700_000_000_000)


def _outcome(read: Any, item: dict[str, Any]) -> Any:
    try:
        return read(item, "identify[0]")
    except RequestError as exc:
        return f"{exc.status} {exc.message}"


def _event(item: dict[str, Any], where: str) -> Any:
    return thrivestack._event(item, where, 0, ENVELOPE)


@needs_checks
@settings(max_examples=600)
@given(item=_ITEMS)
def test_thrivestack_fields_in_c_give_the_fields_the_checks_give(item: dict[str, Any]) -> None:
    """The compiled read either declines (None) or yields exactly the fields the
    checks one by one yield, and it never passes an item that the checks refuse;
    the event refuses what the checks refuse, with their words."""
    checked = _outcome(thrivestack._checked_fields, item)
    plain = thrivestack._plain_fields(item)
    event = _outcome(_event, item)
    if isinstance(checked, str):
        assert event == checked
        if "timestamp" not in checked:
            assert plain is None
    else:
        fields, created_ms = checked
        assert plain is None or plain == fields
        assert event.profile_created_at_ms == created_ms
        assert (event.user_id, event.dedupe_key, event.anonymous_ids, event.context) == (
            fields[0],
            fields[2],
            fields[3],
            fields[4],
        )
        assert event.operations == set_operations(fields[1].items())


@needs_checks
def test_thrivestack_fields_in_c_take_ordinary_identifies() -> None:
    plain = {
        "user_id": "u1",
        "anonymous_id": "dev-1",
        "message_id": "m-1",
        "user_traits": {"first_name": " Ada ", "age": 36, "company": {"name": "A", "employee_count": 5}},
        "traits": {"last_name": "Lovelace", "enrichment_phone": ["555"], "plan": {"tier": [1, None]}},
        "context": {"ip": "127.0.0.1"},
        "timestamp": "2024-03-01T10:00:00.000Z",
    }
    fields = thrivestack._plain_fields(plain)
    assert fields is not None
    user_id, merged, message_id, anonymous_ids, context = fields
    assert (user_id, message_id, anonymous_ids, context) == ("u1", "m-1", ("dev-1",), {"ip": "127.0.0.1"})
    assert merged["name"] == "Ada Lovelace" and list(merged)[-1] == "name"
    assert merged["first_name"] == " Ada "  # only the filled name is stripped
    assert fields == thrivestack._checked_fields(plain, "body")[0]


@needs_checks
def test_thrivestack_fields_in_c_decline_on_a_failed_check_but_let_interrupts_through() -> None:
    assert _checks is not None

    def refuses(value: Any, name: str) -> None:
        raise ValueError(name)

    def interrupted(value: Any, name: str) -> None:
        raise KeyboardInterrupt

    item = {"user_id": "u1", "traits": {"custom": 1}}
    refusing = traits.TYPED | {"custom": refuses}
    assert _checks.thrivestack_fields(item, refusing, traits.STRING, 255, 40) is None
    with pytest.raises(KeyboardInterrupt):
        _checks.thrivestack_fields(item, traits.TYPED | {"custom": interrupted}, traits.STRING, 255, 40)
