"""Thrivestack identify: ``POST /api/identify`` (one object or an array of them).

``timestamp`` is when the user's profile was created, so it becomes the event's
``profile_created_at``; the event time is when the edge received the request.
"""

from __future__ import annotations

from typing import Any

from traitstream import native
from traitstream.dialects.common import (
    MAX_DEPTH,
    MAX_ID_CHARS,
    Envelope,
    as_items,
    fill_name,
    load_json,
    optional_id,
    optional_object,
    parse_time_ms,
    required_id,
)
from traitstream.dialects.traits import STRING, TYPED, check_typed
from traitstream.events import JSON, IdentifyEvent, set_operations

if native.use("traitstream.compiled._checks"):
    from traitstream.compiled import _checks
else:  # the Python twin serves (TRAITSTREAM_IMPL=python, or not built)
    _checks = None  # type: ignore[assignment]

DIALECT = "thrivestack"

Fields = tuple[str, dict[str, JSON], str | None, tuple[str, ...], dict[str, JSON] | None]
"""user id, traits (``name`` filled), message id, anonymous ids, context."""


def parse(body: bytes, envelope: Envelope) -> tuple[IdentifyEvent, ...]:
    payload = load_json(body)
    items = as_items(payload, "identify", len(body))
    many = isinstance(payload, list)
    return tuple(
        _event(item, f"identify[{index}]" if many else "body", index, envelope)
        for index, item in enumerate(items)
    )


def _traits(item: dict[str, Any], where: str) -> dict[str, Any]:
    traits: dict[str, Any] = {}
    for field in ("user_traits", "traits"):
        value = optional_object(item, field, where)
        if value is not None:
            check_typed(value, f"{where}.{field}")
            traits.update(value)
    fill_name(traits)
    return traits


def _plain_fields(item: dict[str, Any]) -> Fields | None:
    """The item's fields when every check on them passes, read in one C call
    (``_checks.c``); None when one might not, or without the extension, and then
    ``_checked_fields`` runs the checks one by one and names what is wrong."""
    if _checks is None:
        return None
    return _checks.thrivestack_fields(item, TYPED, STRING, MAX_ID_CHARS, MAX_DEPTH)


def _checked_fields(item: dict[str, Any], where: str) -> tuple[Fields, int | None]:
    """The fields and the creation time, one check at a time, so that the first
    that fails names itself."""
    user_id = required_id(item, "user_id", where)
    traits = _traits(item, where)
    message_id = optional_id(item, "message_id", where)
    anonymous_id = optional_id(item, "anonymous_id", where)
    created_ms = _created_ms(item, where)
    context = optional_object(item, "context", where)
    return (user_id, traits, message_id, (anonymous_id,) if anonymous_id else (), context), created_ms


def _created_ms(item: dict[str, Any], where: str) -> int | None:
    created = item.get("timestamp")
    return None if created is None else parse_time_ms(created, f"{where}.timestamp")


def _event(item: dict[str, Any], where: str, index: int, envelope: Envelope) -> IdentifyEvent:
    fields = _plain_fields(item)
    if fields is None:
        fields, created_ms = _checked_fields(item, where)
    else:
        created_ms = _created_ms(item, where)
    user_id, traits, message_id, anonymous_ids, context = fields
    received = envelope.received_time_ms
    # Positional, in the fields' order: the keyword form costs a Python call, per identify.
    return IdentifyEvent(
        envelope.workspace_id,
        user_id,
        DIALECT,
        received,  # event time: when the edge received it
        received,
        envelope.response_id,
        index,
        anonymous_ids,
        created_ms,
        message_id,
        context,
        set_operations(traits.items()),
    )
