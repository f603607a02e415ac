"""The v1 record as a dict, both ways.

``to_record`` is an event's record (what fastavro writes for other writer
schemas); ``from_record`` checks a decoded record, whichever reader decoded it
(``binary.read_record`` or fastavro), and builds its event, refusing what the
workers must not apply (``InvalidRecord``, naming the first problem).

A new field of the schema is a line in each: its value in ``to_record``, and in
``from_record`` its check and its place in the event (a nullable field that an
older writer lacks arrives as its default, None); ``binary.py`` has its two.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from traitstream.dialects.common import MAX_ID_CHARS
from traitstream.errors import InvalidRecord
from traitstream.events import JSON, IdentifyEvent, Kind, Op, Operation

_OPS_NEEDING_TRAIT = frozenset(Op) - {Op.CLEAR_ALL}
_OPS_NEEDING_VALUE = _OPS_NEEDING_TRAIT - {Op.UNSET}
_OP_OF = {op.value: op for op in Op}  # a dict lookup costs a fraction of Op(value)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


def _dumps(value: JSON) -> str:
    return orjson.dumps(value).decode()


def to_record(event: IdentifyEvent) -> dict[str, Any]:
    return {
        "kind": event.kind.value,
        "workspace_id": event.workspace_id,
        "user_id": event.user_id,
        "anonymous_ids": list(event.anonymous_ids),
        "dialect": event.dialect,
        "event_time": event.event_time_ms,
        "received_time": event.received_time_ms,
        "profile_created_at": event.profile_created_at_ms,
        "response_id": event.response_id,
        "event_index": event.event_index,
        "dedupe_key": event.dedupe_key,
        "context_json": None if event.context is None else _dumps(event.context),
        "operations": [
            {
                "op": op.op.value,
                "trait": op.trait,
                "value_json": None if op.op in (Op.UNSET, Op.CLEAR_ALL) else _dumps(op.value),
            }
            for op in event.operations
        ],
        "previous_id": event.previous_id,
    }


def _loads(text: str | None, where: str) -> JSON:
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidRecord("invalid_content", f"{where} is not valid JSON: {exc}") from exc


def _millis(value: Any) -> int:
    """fastavro reads timestamp-millis as an aware datetime; publishers may send plain
    ints. Exact: integer arithmetic on the timedelta, no float seconds."""
    if isinstance(value, int):
        return value
    return (value - _EPOCH) // _MILLISECOND  # type: ignore[no-any-return]


def _has_nul(value: JSON) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in k or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _check_text(record: dict[str, Any]) -> None:
    """PostgreSQL stores no NUL character and indexes no huge id: refuse them here, with
    a reason, instead of letting the store reject the batch."""
    ids = [record["workspace_id"], record["user_id"], *record["anonymous_ids"]]
    for name, value in zip(("workspace_id", "user_id"), ids, strict=False):
        if value is not None and len(value) > MAX_ID_CHARS:
            raise InvalidRecord("invalid_content", f"{name} is longer than {MAX_ID_CHARS} characters")
    if any(len(a) > MAX_ID_CHARS for a in record["anonymous_ids"]):
        raise InvalidRecord("invalid_content", f"an anonymous id is longer than {MAX_ID_CHARS} characters")
    texts = [*ids, record["response_id"], record["dedupe_key"], record["dialect"]]
    texts += [raw["trait"] for raw in record["operations"]]
    if any(t is not None and "\x00" in t for t in texts):
        raise InvalidRecord("invalid_content", "an id, trait name or dialect holds a NUL character")


def _check_json_nul(text: str | None, value: JSON, where: str) -> None:
    # JSON spells NUL as \u0000; only then is the parsed value worth walking.
    if text is not None and "\\u0000" in text and _has_nul(value):
        raise InvalidRecord("invalid_content", f"{where} holds a NUL character")


def from_record(record: dict[str, Any]) -> IdentifyEvent:
    """The event of a decoded record, checked in the order that decides which
    problem a record is refused for. Raises ``InvalidRecord``."""
    _check_text(record)
    kind = record["kind"]
    if kind not in ("identify", "erase", "alias"):
        raise InvalidRecord("invalid_content", f"kind {kind!r} is not identify, erase or alias")
    workspace_id = record["workspace_id"]
    if not workspace_id:
        raise InvalidRecord("invalid_content", "workspace_id is empty")
    user_id = record["user_id"]
    anonymous_ids = tuple(record["anonymous_ids"])
    if not user_id and not anonymous_ids:
        raise InvalidRecord("invalid_content", "neither user_id nor anonymous_ids is set")
    if any(not a for a in anonymous_ids):
        raise InvalidRecord("invalid_content", "anonymous_ids holds an empty id")
    if not record["response_id"]:
        raise InvalidRecord("invalid_content", "response_id is empty")
    previous_id = _previous_id(record, kind)
    operations = []
    for index, raw in enumerate(record["operations"]):
        where = f"operations[{index}]"
        if raw["op"] == "unknown":
            raise InvalidRecord("invalid_content", f"{where}.op is not an operation this reader knows")
        op = _OP_OF.get(raw["op"]) or Op(raw["op"])
        trait = raw["trait"]
        if op in _OPS_NEEDING_TRAIT and not trait:
            raise InvalidRecord("invalid_content", f"{where}: {op.value} needs a trait name")
        if op in _OPS_NEEDING_VALUE and raw["value_json"] is None:
            raise InvalidRecord("invalid_content", f"{where}: {op.value} of {trait!r} needs value_json")
        value = _loads(raw["value_json"], f"{where}.value_json")
        _check_json_nul(raw["value_json"], value, f"{where}.value_json")
        if op is Op.ADD and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise InvalidRecord("invalid_content", f"{where}: add of {trait!r} needs a number")
        operations.append(Operation(op, trait, value))
    context = _loads(record["context_json"], "context_json")
    _check_json_nul(record["context_json"], context, "context_json")
    if context is not None and not isinstance(context, dict):
        raise InvalidRecord("invalid_content", "context_json is not a JSON object")
    created = record["profile_created_at"]
    return IdentifyEvent(
        kind=Kind(kind),
        workspace_id=workspace_id,
        user_id=user_id or None,
        anonymous_ids=anonymous_ids,
        dialect=record["dialect"],
        event_time_ms=_millis(record["event_time"]),
        received_time_ms=_millis(record["received_time"]),
        profile_created_at_ms=None if created is None else _millis(created),
        response_id=record["response_id"],
        event_index=record["event_index"],
        dedupe_key=record["dedupe_key"] or None,
        context=context,
        operations=tuple(operations),
        previous_id=previous_id,
    )


def _previous_id(record: dict[str, Any], kind: str) -> str | None:
    previous_id: str | None = record.get("previous_id")
    if kind != "alias":
        if previous_id is not None:
            raise InvalidRecord(
                "invalid_content", f"previous_id is set on a record of kind {kind}; only an alias has one"
            )
        return None
    if not previous_id:
        raise InvalidRecord("invalid_content", "an alias needs previous_id")
    if len(previous_id) > MAX_ID_CHARS:
        raise InvalidRecord("invalid_content", f"previous_id is longer than {MAX_ID_CHARS} characters")
    if "\x00" in previous_id:
        raise InvalidRecord("invalid_content", "previous_id holds a NUL character")
    if not record["user_id"]:
        raise InvalidRecord("invalid_content", "an alias needs user_id")
    if record["operations"]:
        raise InvalidRecord("invalid_content", "an alias carries no operations")
    return previous_id
