"""Amplitude: the Identify API (``POST /identify``) and HTTP API v2 (``POST /2/httpapi``).

The Identify API carries ``api_key`` (or the ``api-key`` spelling of Amplitude's own
sample) and ``identification`` as form fields or as the keys of a JSON object; the HTTP API
carries ``api_key`` and ``events``, of which only ``$identify`` events change a
profile here. Reading a request (``read_fields``, ``read_batch``) needs no key;
building events (``parse_identify``, ``parse_batch``) needs the key's workspace.

An identification's time is Amplitude's ``time`` (epoch milliseconds) when given
and not more than the envelope's margin past the receipt, else when the edge
received it; ``insert_id`` is the dedupe key; ``device_id`` is an anonymous id of
the profile.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from traitstream.dialects.common import (
    MAX_BODY_BYTES,
    MAX_EVENT_BYTES,
    Envelope,
    as_items,
    body_too_large,
    check_value,
    epoch_ms,
    event_time_ms,
    load_json,
    optional_id,
    type_name,
)
from traitstream.errors import InvalidRequest
from traitstream.events import JSON, IdentifyEvent, Op, Operation, set_operations

DIALECT = "amplitude"
IDENTIFY_EVENT = "$identify"
GROUP_IDENTIFY_EVENT = "$groupidentify"
KEY_FIELDS = ("api_key", "api-key")

# Top-level fields of an identification that describe the user's device and place.
# They are kept on the profile as traits of the same name.
DEVICE_FIELDS = (
    "app_version",
    "platform",
    "os_name",
    "os_version",
    "device_brand",
    "device_manufacturer",
    "device_model",
    "carrier",
    "country",
    "region",
    "city",
    "dma",
    "language",
    "paying",
    "start_version",
)
GROUPS_TRAIT = "groups"

OPERATIONS: dict[str, Op] = {
    "$set": Op.SET,
    "$setOnce": Op.SET_ONCE,
    "$add": Op.ADD,
    "$append": Op.APPEND,
    "$prepend": Op.PREPEND,
    "$unset": Op.UNSET,
    "$preInsert": Op.PRE_INSERT,
    "$postInsert": Op.POST_INSERT,
    "$remove": Op.REMOVE,
    "$clearAll": Op.CLEAR_ALL,
}
_FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
_MAX_FORM_FIELDS = 100


class MissingField(InvalidRequest):
    """A required field is absent (Amplitude answers these with ``missing_field``)."""


class InvalidEvent(InvalidRequest):
    """Event ``index`` of an HTTP API body is refused. Amplitude's SDKs drop the events
    an answer names and send the others again, so the answer names it."""

    def __init__(self, cause: InvalidRequest, index: int) -> None:
        super().__init__(cause.message, field=cause.field)
        self.index = index
        self.missing = isinstance(cause, MissingField)


@dataclass(frozen=True, slots=True)
class Batch:
    """An HTTP API v2 request whose shape is checked; its events are not parsed yet."""

    api_key: str | None
    events: list[dict[str, Any]]
    size: int


@dataclass(frozen=True, slots=True)
class Result:
    identifies: tuple[IdentifyEvent, ...]
    ignored: tuple[str, ...] = ()
    """One label per event that is accepted but not stored: ``groupidentify`` or ``event``."""
    clamped: int = 0
    """How many identifies were dated past the margin, and so at their receipt."""


# --- reading requests ---------------------------------------------------------------


def media_type(content_type: str | None) -> str:
    return (content_type or "").partition(";")[0].strip().lower()


def read_fields(body: bytes, content_type: str | None) -> dict[str, JSON]:
    """The Identify API's fields from a JSON object body or a form-encoded one.
    Without a telling content type, a body that starts like JSON is read as JSON."""
    if len(body) > MAX_BODY_BYTES:
        raise body_too_large(len(body))
    kind = media_type(content_type)
    looks_json = body.lstrip()[:1] in (b"{", b"[")
    if kind == "application/json" or (kind not in _FORM_TYPES and looks_json):
        payload = load_json(body)
        if not isinstance(payload, dict):
            raise InvalidRequest(
                f"the JSON body must be an object with api_key and identification, got {type_name(payload)}"
            )
        return payload
    return dict(read_form(body))


def read_form(body: bytes) -> dict[str, str]:
    """``application/x-www-form-urlencoded`` fields; the first of repeated names wins."""
    try:
        text = body.decode("utf-8")
        pairs = urllib.parse.parse_qsl(
            text,
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=_MAX_FORM_FIELDS,
        )
    except ValueError as exc:  # UnicodeDecodeError included
        raise InvalidRequest(f"malformed form data: {exc}") from exc
    fields: dict[str, str] = {}
    for name, value in pairs:
        fields.setdefault(name, value)
    return fields


def api_key_of(fields: Mapping[str, JSON]) -> str | None:
    """``api_key``, or the ``api-key`` spelling of Amplitude's Identify API sample."""
    for name in KEY_FIELDS:
        value = fields.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise InvalidRequest(f"{name} must be a string, got {type_name(value)}", field=name)
        return value or None
    return None


def read_batch(body: bytes) -> Batch:
    """An HTTP API v2 body: ``{"api_key": …, "events": […], "options": {…}}``."""
    payload = load_json(body)
    if not isinstance(payload, dict):
        raise InvalidRequest(
            f"the body must be a JSON object with api_key and events, got {type_name(payload)}"
        )
    events = payload.get("events")
    if events is None:
        raise MissingField("events is required", field="events")
    if not isinstance(events, list):
        raise InvalidRequest(f"events must be an array, got {type_name(events)}", field="events")
    items = as_items(events, "events", len(body), plural="events", unit="event")
    return Batch(api_key_of(payload), items, len(body))


# --- building events ------------------------------------------------------------------


def parse_identify(fields: Mapping[str, JSON], envelope: Envelope) -> Result:
    raw = fields.get("identification")
    if raw is None:
        raise MissingField("identification is required", field="identification")
    if isinstance(raw, str):
        size = len(raw.encode())
        try:
            payload: JSON = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidRequest(f"identification is not valid JSON: {exc}", field="identification") from exc
    else:
        size, payload = MAX_EVENT_BYTES + 1, raw
    if not isinstance(payload, dict | list):
        raise InvalidRequest(
            f"identification must be a JSON object or array, got {type_name(payload)}", field="identification"
        )
    many = isinstance(payload, list)
    items = as_items(payload, "identification", size, plural="identifications")
    made = [
        identify_event(item, f"identification[{index}]" if many else "identification", index, envelope)
        for index, item in enumerate(items)
    ]
    return Result(tuple(event for event, _ in made), clamped=sum(at_receipt for _, at_receipt in made))


def parse_batch(batch: Batch, envelope: Envelope) -> Result:
    identifies: list[IdentifyEvent] = []
    ignored: list[str] = []
    clamped = 0
    for index, item in enumerate(batch.events):
        try:
            event_type = _event_type(item, f"events[{index}]")
            if event_type == IDENTIFY_EVENT:
                event, at_receipt = identify_event(item, f"events[{index}]", index, envelope)
                identifies.append(event)
                clamped += at_receipt
                continue
            # Amplitude would store these events; they are accepted here (so SDKs that
            # batch them with identifies keep working) but only checked for their ids.
            _ids(item, f"events[{index}]")
        except InvalidRequest as exc:
            raise InvalidEvent(exc, index) from exc
        ignored.append("groupidentify" if event_type == GROUP_IDENTIFY_EVENT else "event")
    return Result(tuple(identifies), tuple(ignored), clamped)


def _event_type(item: dict[str, Any], where: str) -> str:
    event_type = item.get("event_type")
    if event_type is None:
        raise MissingField(f"{where}.event_type is required", field="event_type")
    if not isinstance(event_type, str) or not event_type:
        raise InvalidRequest(f"{where}.event_type must be a non-empty string", field="event_type")
    return event_type


def _ids(item: dict[str, Any], where: str) -> tuple[str | None, str | None]:
    user_id = optional_id(item, "user_id", where)
    device_id = optional_id(item, "device_id", where)
    if user_id is None and device_id is None:
        raise MissingField(f"{where} needs user_id or device_id", field="user_id")
    return user_id, device_id


def identify_event(
    item: dict[str, Any], where: str, index: int, envelope: Envelope
) -> tuple[IdentifyEvent, bool]:
    """One identification (or ``$identify`` event) as a canonical event, and whether its
    ``time`` was past the margin (and so taken as the received time)."""
    user_id, device_id = _ids(item, where)
    time = item.get("time")
    operations = user_property_operations(item.get("user_properties"), f"{where}.user_properties")
    device = device_operations(item, where)
    # $clearAll wipes what came before it in the same identify, so it goes first.
    if operations and operations[0].op is Op.CLEAR_ALL:
        ordered = [operations[0], *device, *operations[1:]]
    else:
        ordered = [*device, *operations]
    claimed = envelope.received_time_ms if time is None else epoch_ms(time, f"{where}.time")
    event_time = event_time_ms(claimed, envelope)
    event = IdentifyEvent(
        workspace_id=envelope.workspace_id,
        user_id=user_id,
        anonymous_ids=() if device_id is None else (device_id,),
        dialect=DIALECT,
        event_time_ms=event_time,
        received_time_ms=envelope.received_time_ms,
        response_id=envelope.response_id,
        event_index=index,
        dedupe_key=optional_id(item, "insert_id", where),
        operations=tuple(ordered),
    )
    return event, event_time != claimed


def device_operations(item: dict[str, Any], where: str) -> list[Operation]:
    """The device and location fields, and ``groups``, as ``set`` operations."""
    operations = []
    for field in DEVICE_FIELDS:
        value = item.get(field)
        if value is None:
            continue
        if isinstance(value, dict | list):
            raise InvalidRequest(f"{where}.{field} must be a string, got {type_name(value)}", field=field)
        check_value(value, f"{where}.{field}")
        operations.append(Operation(Op.SET, field, value))
    groups = item.get(GROUPS_TRAIT)
    if groups is not None:
        name = f"{where}.groups"
        if isinstance(groups, str):
            try:
                groups = orjson.loads(groups)
            except orjson.JSONDecodeError as exc:
                raise InvalidRequest(f"{name} is not valid JSON: {exc}", field="groups") from exc
        if not isinstance(groups, dict):
            raise InvalidRequest(f"{name} must be an object, got {type_name(groups)}", field="groups")
        check_value(groups, name)
        operations.append(Operation(Op.SET, GROUPS_TRAIT, groups))
    return operations


def user_property_operations(properties: JSON, where: str) -> list[Operation]:
    """A plain object means ``$set``; otherwise every key must be an operation."""
    if properties is None:
        return []
    if not isinstance(properties, dict):
        raise InvalidRequest(
            f"{where} must be an object, got {type_name(properties)}", field="user_properties"
        )
    check_value(properties, where)
    if not any(key.startswith("$") for key in properties):
        return list(set_operations(properties.items()))
    operations = [Operation(Op.CLEAR_ALL)] if "$clearAll" in properties else []
    for key, value in properties.items():
        op = OPERATIONS.get(key)
        if op is None:
            if key.startswith("$"):
                known = ", ".join(OPERATIONS)
                raise InvalidRequest(
                    f"{where}.{key} is not a user property operation; expected one of {known}", field=key
                )
            raise InvalidRequest(
                f"{where}.{key} is a plain property beside operations; put it inside $set", field=key
            )
        if op is Op.CLEAR_ALL:
            continue
        if not isinstance(value, dict):
            raise InvalidRequest(
                f"{where}.{key} must be an object of property names to values, got {type_name(value)}",
                field=key,
            )
        for name, operand in value.items():
            if op is Op.ADD and (isinstance(operand, bool) or not isinstance(operand, int | float)):
                raise InvalidRequest(
                    f"{where}.$add.{name} must be a number, got {type_name(operand)}", field=name
                )
            operations.append(Operation(op, name, None if op is Op.UNSET else operand))
    return operations
