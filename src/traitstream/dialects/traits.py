"""Typed traits: the reserved traits of the Segment spec and Thrivestack's ``enrichment_*``.

A trait named here must have the stated type (or be null, which sets it to null);
any other trait is free-form JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, datetime

from traitstream import native
from traitstream.dialects.common import type_name
from traitstream.errors import InvalidRequest
from traitstream.events import JSON

if native.use("traitstream.compiled._checks"):
    from traitstream.compiled import _checks
else:  # the Python twin serves (TRAITSTREAM_IMPL=python, or not built)
    _checks = None  # type: ignore[assignment]

Check = Callable[[JSON, str], None]


def _fail(name: str, expected: str, value: JSON) -> InvalidRequest:
    return InvalidRequest(f"{name} must be {expected}, got {type_name(value)}", field=name)


def _string(value: JSON, name: str) -> None:
    if not isinstance(value, str):
        raise _fail(name, "a string", value)


def _number(value: JSON, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(name, "a number", value)


STRING: Check = _string
"""The check of a string trait: the compiled loops pass a string to it without a call."""


def _string_or_number(value: JSON, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _fail(name, "a string or a number", value)


def _date(value: JSON, name: str) -> None:
    if not isinstance(value, str):
        raise _fail(name, "an ISO 8601 date string", value)
    try:
        if len(value) <= 10:
            date.fromisoformat(value)
        else:
            datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidRequest(f"{name} must be an ISO 8601 date, got {value!r}", field=name) from exc


def _string_list(value: JSON, name: str) -> None:
    if not isinstance(value, list):
        raise _fail(name, "an array of strings", value)
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise _fail(f"{name}[{index}]", "a string", item)


class ObjectCheck:
    """The check of an object trait (``address``, ``company``): each field named in
    ``fields`` by its own check. A class rather than a closure, so that the
    compiled loop can see the fields and check the string ones itself."""

    __slots__ = ("fields",)

    def __init__(self, fields: Mapping[str, Check]) -> None:
        self.fields = dict(fields)

    def __call__(self, value: JSON, name: str) -> None:
        if not isinstance(value, dict):
            raise _fail(name, "an object", value)
        for key, inner in self.fields.items():
            if value.get(key) is not None:
                inner(value[key], f"{name}.{key}")


if _checks is not None:
    _checks.bind(ObjectCheck)


ADDRESS_FIELDS: dict[str, Check] = {
    "city": _string,
    "country": _string,
    "postal_code": _string_or_number,
    "state": _string,
    "street": _string,
}
COMPANY_FIELDS: dict[str, Check] = {
    "name": _string,
    "id": _string_or_number,
    "industry": _string,
    "employee_count": _number,
    "plan": _string,
}

RESERVED: dict[str, Check] = {
    "address": ObjectCheck(ADDRESS_FIELDS),
    "age": _number,
    "avatar": _string,
    "birthday": _date,
    "company": ObjectCheck(COMPANY_FIELDS),
    "description": _string,
    "email": _string,
    "first_name": _string,
    "gender": _string,
    "last_name": _string,
    "name": _string,
    "phone": _string,
    "title": _string,
    "username": _string,
    "website": _string,
}

_ENRICHMENT_STRINGS: dict[str, Check] = {
    f"enrichment_{name}": _string
    for name in (
        "first_name",
        "last_name",
        "full_name",
        "avatar",
        "email_provider",
        "city",
        "state",
        "state_code",
        "time_zone",
        "location",
        "country",
        "country_code",
        "employment_domain",
        "employment_name",
        "employment_role",
        "employment_seniority",
        "employment_sub_role",
        "employment_title",
        "facebook_handle",
        "github_handle",
        "linkedin_handle",
        "twitter_handle",
        "inactive_at",
        "active_at",
    )
}
ENRICHMENT: dict[str, Check] = {**_ENRICHMENT_STRINGS, "enrichment_phone": _string_list}

TYPED: dict[str, Check] = RESERVED | ENRICHMENT

# The Segment spec spells the multi-word reserved traits in camelCase; they carry the
# same types as their snake_case forms above.
CAMEL_ADDRESS_FIELDS: dict[str, Check] = ADDRESS_FIELDS | {"postalCode": _string_or_number}
CAMEL_COMPANY_FIELDS: dict[str, Check] = COMPANY_FIELDS | {"employeeCount": _number}
SEGMENT_TYPED: dict[str, Check] = RESERVED | {
    "address": ObjectCheck(CAMEL_ADDRESS_FIELDS),
    "company": ObjectCheck(CAMEL_COMPANY_FIELDS),
    "firstName": _string,
    "lastName": _string,
    "createdAt": _date,
    "created_at": _date,
    "id": _string_or_number,
}


def check_typed(traits: Mapping[str, JSON], where: str, types: Mapping[str, Check] = TYPED) -> None:
    """Raise ``InvalidRequest`` naming the first typed trait whose value has the wrong
    type. ``check_typed_python``, in C when the extension was built (``_checks.c``)."""
    if _checks is not None and type(traits) is dict and type(types) is dict:
        _checks.check_typed(traits, where, types, _string)
    else:
        check_typed_python(traits, where, types)


def check_typed_python(traits: Mapping[str, JSON], where: str, types: Mapping[str, Check] = TYPED) -> None:
    for name, value in traits.items():
        check = types.get(name)
        if check is None or value is None or (check is _string and value.__class__ is str):
            continue  # the string test inlined: most typed traits are strings, and this runs per trait
        check(value, f"{where}.{name}")
