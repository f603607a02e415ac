"""DataFast identify: ``POST /api/v1/identify``.

One JSON object: ``user_id`` and ``datafast_visitor_id`` (a UUID) are required and
every other top-level field is profile metadata, stored as a trait of the same
name. The visitor id becomes an anonymous id of the profile, which links the
visitor's earlier anonymous profile to the user. The event time is when the edge
received the request (the dialect carries none); there is no dedupe key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from traitstream.dialects.common import (
    Envelope,
    as_items,
    check_value,
    load_json,
    required_id,
    type_name,
)
from traitstream.errors import InvalidRequest
from traitstream.events import IdentifyEvent, set_operations, user_profile_id

DIALECT = "datafast"
IDS = ("user_id", "datafast_visitor_id")
WEBSITE_CONTEXT = "website_id"

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@dataclass(frozen=True, slots=True)
class Identified:
    event: IdentifyEvent
    profile_id: str
    """The profile the event lands in: known before any worker runs."""


def parse(body: bytes, envelope: Envelope, website_id: str | None = None) -> Identified:
    """The body as one event; ``website_id`` (the website the key or ``websiteId``
    names) travels in the event's context."""
    payload = load_json(body)
    if not isinstance(payload, dict):
        raise InvalidRequest(f"the body must be a JSON object, got {type_name(payload)}")
    (item,) = as_items(payload, "body", len(body))
    user_id = required_id(item, "user_id", "body")
    visitor_id = required_id(item, "datafast_visitor_id", "body")
    if not _UUID.match(visitor_id):
        raise InvalidRequest(
            f"body.datafast_visitor_id must be a UUID (8-4-4-4-12 hex digits), got {visitor_id!r}",
            field="datafast_visitor_id",
        )
    # The body is the traits object here, so depth counts from it.
    check_value(item, "body")
    operations = set_operations((name, value) for name, value in item.items() if name not in IDS)
    event = IdentifyEvent(
        workspace_id=envelope.workspace_id,
        user_id=user_id,
        anonymous_ids=(visitor_id,),
        dialect=DIALECT,
        event_time_ms=envelope.received_time_ms,
        received_time_ms=envelope.received_time_ms,
        response_id=envelope.response_id,
        context=None if website_id is None else {WEBSITE_CONTEXT: website_id},
        operations=operations,
    )
    return Identified(event, str(user_profile_id(envelope.workspace_id, user_id)))
