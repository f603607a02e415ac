"""Checks and conversions every dialect shares."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeGuard

import orjson

from traitstream import native
from traitstream.errors import InvalidRequest, LimitExceeded
from traitstream.events import JSON

if native.use("traitstream.compiled._checks"):
    from traitstream.compiled import _checks
else:  # the Python twin serves (TRAITSTREAM_IMPL=python, or not built)
    _checks = None  # type: ignore[assignment]

MAX_BODY_BYTES = 1_000_000
MAX_EVENTS_PER_REQUEST = 2_000
MAX_EVENT_BYTES = 32 * 1024
MAX_DEPTH = 40
MAX_ID_CHARS = 255
# Event times must stay inside what a timestamp-millis reader turns back into a date.
MIN_TIME_MS = int(datetime(1, 1, 1, tzinfo=UTC).timestamp() * 1000)
MAX_TIME_MS = int(datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC).timestamp() * 1000)
MAX_FUTURE_SKEW_MS = 10 * 60 * 1000
"""How far past its receipt a client may date an event by default (docs/merge-rules.md
says why ten minutes); the edge's ``max_future_skew_s`` setting."""

_SHORT_YEAR = re.compile(r"^(\d{2})-(\d{2})-(\d{2})(?=T|$)")


@dataclass(frozen=True, slots=True)
class Envelope:
    """What the edge knows about a request before reading its body."""

    workspace_id: str
    response_id: str
    received_time_ms: int
    max_future_ms: int = MAX_FUTURE_SKEW_MS
    """How far past ``received_time_ms`` an event time may be (see ``event_time_ms``)."""


def event_time_ms(claimed_ms: int, envelope: Envelope) -> int:
    """The event time of an event its client dates ``claimed_ms``: that time, unless it
    is more than the envelope's margin past the receipt, and then the receipt time.
    The newest write of a trait wins, so a client whose clock runs ahead would hold
    the trait against every write until the world catches up with its clock; this
    bounds that hold to the margin. Times in the past are the client's to give."""
    received = envelope.received_time_ms
    return received if claimed_ms - received > envelope.max_future_ms else claimed_ms


def body_too_large(size: int | None) -> LimitExceeded:
    """The refusal of a request body over ``MAX_BODY_BYTES``; ``size`` if known."""
    if size is None:
        return LimitExceeded(f"request body exceeds the limit of {MAX_BODY_BYTES} bytes (1 MB)")
    return LimitExceeded(f"request body is {size} bytes; the limit is {MAX_BODY_BYTES} bytes (1 MB)")


def load_json(body: bytes) -> JSON:
    if len(body) > MAX_BODY_BYTES:
        raise body_too_large(len(body))
    if not body.strip():
        raise InvalidRequest("request body is empty; expected JSON")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"malformed JSON: {exc}") from exc


def as_items(
    payload: JSON,
    what: str,
    body_size: int,
    max_event_bytes: int = MAX_EVENT_BYTES,
    *,
    plural: str | None = None,
    unit: str = "identify",
) -> list[dict[str, Any]]:
    """One object or an array of them; enforces the count and per-item size limits.
    Errors call an item ``what[i]``, the items ``plural`` and each a ``unit``."""
    items = payload if isinstance(payload, list) else [payload]
    if not items:
        raise InvalidRequest(f"the {what} array is empty", field=what)
    if len(items) > MAX_EVENTS_PER_REQUEST:
        raise LimitExceeded(
            f"{len(items)} {plural or what + 's'} in one request; the limit is {MAX_EVENTS_PER_REQUEST}"
        )
    for index, item in enumerate(items):
        where = f"{what}[{index}]" if isinstance(payload, list) else what
        if not isinstance(item, dict):
            raise InvalidRequest(f"{where} must be a JSON object, got {type_name(item)}")
        # A body no larger than the per-item limit cannot hold an item over it.
        if body_size > max_event_bytes and not plainly_small(item, max_event_bytes):
            size = json_size(item, where)
            if size > max_event_bytes:
                raise LimitExceeded(
                    f"{where} is {size} bytes; the limit is {max_event_bytes} bytes per {unit}"
                )
    return items


def json_size(value: JSON, where: str) -> int:
    """The size of ``value`` as compact JSON. orjson writes at most 254 levels while
    its parser reads 1,024: deeper values are measured by the standard library, and
    one too deep for that is refused as too deep."""
    try:
        return len(orjson.dumps(value))
    except orjson.JSONEncodeError:
        pass
    try:
        return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
    except RecursionError:
        raise LimitExceeded(f"{where} is nested more than {MAX_DEPTH} levels deep") from None


def plainly_small(value: JSON, limit: int) -> bool:
    """A cheap proof that ``json_size(value)`` is at most ``limit``; False means
    "measure it", not "too large". In C when the extension was built (``_checks.c``:
    a bound summed in one walk, with no serializing), else always False."""
    return _checks is not None and _checks.plainly_small(value, limit)


def type_name(value: JSON) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def check_depth(value: JSON, field: str, limit: int = MAX_DEPTH) -> None:
    """Objects and arrays nested deeper than ``limit`` are refused (413)."""
    stack: list[tuple[JSON, int]] = [(value, 1)]
    while stack:
        current, depth = stack.pop()
        if isinstance(current, dict):
            children: Any = current.values()
        elif isinstance(current, list):
            children = current
        else:
            continue
        if depth > limit:
            raise LimitExceeded(f"{field} is nested more than {limit} levels deep")
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def plainly_fine(value: JSON, limit: int) -> bool:
    """A cheap proof that ``check_value`` would pass; False means "walk it", not
    "wrong". In C when the extension was built (``_checks.c``: one walk that stops
    at the first doubt), else ``plainly_fine_python``."""
    if _checks is not None:
        return _checks.plainly_fine(value, limit)
    return plainly_fine_python(value, limit)


def plainly_fine_python(value: JSON, limit: int) -> bool:
    """The proof from one serialization in C instead of two walks in Python: the
    JSON holds no ``\\u0000`` escape (the only way a NUL can appear), and has no
    more brackets than ``limit``, so nothing can be nested deeper."""
    try:
        text = orjson.dumps(value)
    except orjson.JSONEncodeError:
        return False
    return b"\\u0000" not in text and text.count(b"{") + text.count(b"[") <= limit


def check_value(value: JSON, field: str, limit: int = MAX_DEPTH) -> None:
    """Depth (413) and content (400) checks for a value bound for the profile store:
    PostgreSQL text and jsonb cannot hold U+0000, so it is refused here, where the
    client can still be told, rather than failing a worker later."""
    if plainly_fine(value, limit):
        return
    check_depth(value, field, limit)
    stack: list[tuple[JSON, str]] = [(value, field)]
    while stack:
        current, where = stack.pop()
        if isinstance(current, str):
            if "\x00" in current:
                raise InvalidRequest(f"{where} contains a NUL character (U+0000)", field=field)
        elif isinstance(current, dict):
            for key, child in current.items():
                if "\x00" in key:
                    raise InvalidRequest(f"{where} has a key with a NUL character (U+0000)", field=field)
                stack.append((child, f"{where}.{key}"))
        elif isinstance(current, list):
            stack.extend((child, f"{where}[{index}]") for index, child in enumerate(current))


def required_id(item: dict[str, Any], field: str, where: str) -> str:
    value = item.get(field)
    if value is None:
        raise InvalidRequest(f"{where}.{field} is required", field=field)
    if _plain_id(value):
        return value
    return id_string(value, f"{where}.{field}")


def optional_id(item: dict[str, Any], field: str, where: str) -> str | None:
    value = item.get(field)
    if value is None or _plain_id(value):
        return value
    return id_string(value, f"{where}.{field}")


def _plain_id(value: JSON) -> TypeGuard[str]:
    """What ``id_string`` passes, tested before its error's name is built: several
    ids per identify, and nearly all of them pass."""
    return value.__class__ is str and 0 < len(value) <= MAX_ID_CHARS and "\x00" not in value


def id_string(value: JSON, name: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string, got {type_name(value)}", field=name)
    if not value or len(value) > MAX_ID_CHARS:
        raise InvalidRequest(f"{name} must be 1 to {MAX_ID_CHARS} characters, got {len(value)}", field=name)
    if "\x00" in value:
        raise InvalidRequest(f"{name} contains a NUL character (U+0000)", field=name)
    return value


def optional_object(item: dict[str, Any], field: str, where: str) -> dict[str, JSON] | None:
    value = item.get(field)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest(f"{where}.{field} must be an object, got {type_name(value)}", field=field)
    if not plainly_fine(value, MAX_DEPTH):  # else check_value would pass it: no name needed
        check_value(value, f"{where}.{field}")
    return value


def parse_time_ms(value: JSON, name: str) -> int:
    """ISO 8601 to epoch milliseconds. A naive time is UTC. ``YY-MM-DD`` dates (as
    in the Thrivestack sample ``20-11-23T22:28:55.111Z``) are read as 20YY."""
    if not isinstance(value, str) or not value:
        raise InvalidRequest(
            f"{name} must be an ISO 8601 date-time string, got {type_name(value)}", field=name
        )
    text = _SHORT_YEAR.sub(lambda m: f"20{m[1]}-{m[2]}-{m[3]}", value) if value[2:3] == "-" else value
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidRequest(f"{name} is not an ISO 8601 date-time: {value!r}", field=name) from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return checked_time_ms(int(parsed.timestamp() * 1000), name)


def checked_time_ms(value: int, name: str) -> int:
    if not MIN_TIME_MS <= value <= MAX_TIME_MS:
        raise InvalidRequest(f"{name} is outside the years 1 to 9999", field=name)
    return value


def epoch_ms(value: JSON, name: str) -> int:
    """Milliseconds since the epoch, as a JSON number (an integral float is accepted)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(
            f"{name} must be milliseconds since the epoch (a number), got {type_name(value)}", field=name
        )
    if isinstance(value, float) and not value.is_integer():
        raise InvalidRequest(f"{name} must be a whole number of milliseconds, got {value}", field=name)
    return checked_time_ms(int(value), name)


def fill_name(traits: dict[str, JSON], first: str = "first_name", last: str = "last_name") -> None:
    """Fill ``name`` from first and last name when the caller gave none."""
    if traits.get("name") is not None:
        return
    given, family = traits.get(first), traits.get(last)
    given = given.strip() if isinstance(given, str) else ""
    family = family.strip() if isinstance(family, str) else ""
    if given or family:
        traits["name"] = f"{given} {family}" if given and family else given or family
