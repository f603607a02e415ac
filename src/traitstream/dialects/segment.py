"""Segment-compatible tracking API: ``POST /v1/identify``, ``/v1/alias`` and ``/v1/batch``.

RudderStack's HTTP API is the same wire format, so its SDKs use these routes too.

``identify`` messages change a profile; their traits are ``traits`` over
``context.traits`` (where RudderStack's SDKs put them). ``alias`` messages
(``previousId`` → ``userId``) merge the previous id's profile into the user's. A
batch may also carry ``track``, ``page``, ``screen`` and ``group`` messages, as
Segment's SDKs send them together: those are accepted and ignored (the caller
counts them), so an SDK
pointed here keeps working. Reserved traits are checked like their snake_case
forms (``traits.SEGMENT_TYPED``); ``name`` is filled from ``firstName`` and
``lastName``; ``createdAt`` is when the user's profile was created.

Event time: ``timestamp`` (else ``originalTimestamp``), corrected by the sender's
clock skew when it says when it sent (``sentAt``), as Segment does; else the
received time; never more than the envelope's margin past the received time. The
same fields, read the same way, serve RudderStack's bodies. ``messageId`` is the
dedupe key; ``anonymousId`` is an anonymous id of the profile.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

from traitstream.dialects.common import (
    Envelope,
    as_items,
    checked_time_ms,
    event_time_ms,
    fill_name,
    id_string,
    load_json,
    optional_object,
    parse_time_ms,
    type_name,
)
from traitstream.dialects.traits import SEGMENT_TYPED, check_typed
from traitstream.errors import InvalidRequest, LimitExceeded
from traitstream.events import JSON, IdentifyEvent, Kind, set_operations

DIALECT = "segment"
MAX_EVENT_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
IDENTIFY = "identify"
ALIAS = "alias"
IGNORED_TYPES = ("track", "page", "screen", "group")


@dataclass(frozen=True, slots=True)
class Request:
    """A body whose shape and sizes are checked; its messages are not parsed yet."""

    write_key: str | None
    messages: list[dict[str, Any]]
    batch: bool
    context: dict[str, JSON] | None = None
    sent_at_ms: int | None = None
    """The batch's ``sentAt``, read once for all its messages."""


@dataclass(frozen=True, slots=True)
class Result:
    identifies: tuple[IdentifyEvent, ...]
    """The identify and alias events, in the request's order."""
    ignored: tuple[str, ...]
    """The type of each message accepted but not stored."""
    clamped: int = 0
    """How many identifies were dated past the margin, and so at their receipt."""


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body as sent before ``Content-Encoding`` (gzip or none); stops reading at
    ``limit + 1`` bytes so that a small bomb cannot take the edge's memory."""
    scheme = (encoding or "").strip().lower()
    if scheme in ("", "identity"):
        return body
    if scheme not in ("gzip", "x-gzip"):
        raise InvalidRequest(f"Content-Encoding {encoding!r} is not supported; send gzip or none")
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidRequest(f"the gzip body does not decompress: {exc}") from exc
    if len(inflated) <= limit and not inflater.eof:
        raise InvalidRequest("the gzip body does not decompress: it ends before its gzip stream does")
    return inflated


def event_too_large() -> LimitExceeded:
    return LimitExceeded(f"the request body exceeds {MAX_EVENT_BYTES} bytes, the limit of 32 KB per event")


def batch_too_large() -> LimitExceeded:
    return LimitExceeded(f"the request body exceeds {MAX_BATCH_BYTES} bytes, the limit of 500 KB per batch")


def read_identify(body: bytes) -> Request:
    if len(body) > MAX_EVENT_BYTES:
        raise event_too_large()
    payload = _object(load_json(body), "body")
    kind = payload.get("type")
    if kind is not None and kind != IDENTIFY:
        raise InvalidRequest(f"body.type must be identify on /v1/identify, got {kind!r}", field="type")
    return Request(_write_key(payload), [payload], batch=False)


def read_batch(body: bytes) -> Request:
    if len(body) > MAX_BATCH_BYTES:
        raise batch_too_large()
    payload = _object(load_json(body), "body")
    messages = payload.get("batch")
    if messages is None:
        raise InvalidRequest("body.batch is required", field="batch")
    if not isinstance(messages, list):
        raise InvalidRequest(f"body.batch must be an array, got {type_name(messages)}", field="batch")
    items = as_items(messages, "batch", len(body), MAX_EVENT_BYTES, plural="messages", unit="event")
    return Request(
        _write_key(payload),
        items,
        batch=True,
        context=optional_object(payload, "context", "body"),
        sent_at_ms=_optional_time(payload, "sentAt", "body"),
    )


def parse(request: Request, envelope: Envelope) -> Result:
    identifies: list[IdentifyEvent] = []
    ignored: list[str] = []
    clamped = 0
    for index, message in enumerate(request.messages):
        where = f"batch[{index}]" if request.batch else "body"
        kind = message.get("type")
        if kind is None and not request.batch:
            kind = IDENTIFY
        if kind == IDENTIFY:
            event, at_receipt = _identify(message, where, index, request, envelope)
            identifies.append(event)
            clamped += at_receipt
        elif kind == ALIAS:
            event, at_receipt = _alias(message, where, index, request, envelope)
            identifies.append(event)
            clamped += at_receipt
        elif kind in IGNORED_TYPES:
            ignored.append(kind)
        elif kind is None:
            raise InvalidRequest(f"{where}.type is required", field="type")
        else:
            raise InvalidRequest(
                f"{where}.type must be one of {', '.join((IDENTIFY, ALIAS, *IGNORED_TYPES))}, got {kind!r}",
                field="type",
            )
    return Result(tuple(identifies), tuple(ignored), clamped)


def _identify(
    message: dict[str, Any], where: str, index: int, request: Request, envelope: Envelope
) -> tuple[IdentifyEvent, bool]:
    """The message's event, and whether its time was past the margin (and so taken
    as the received time)."""
    user_id = _id(message, "userId", where)
    anonymous_id = _id(message, "anonymousId", where)
    if user_id is None and anonymous_id is None:
        raise InvalidRequest(f"{where} needs userId or anonymousId", field="userId")
    context = optional_object(message, "context", where)
    # RudderStack's SDKs send an identify's traits in context.traits.
    traits = dict(_context_traits(context, where) | (optional_object(message, "traits", where) or {}))
    check_typed(traits, f"{where}.traits", SEGMENT_TYPED)
    fill_name(traits, "firstName", "lastName")
    fill_name(traits)
    if request.context is not None:
        context = request.context | (context or {})
    claimed = _client_time(message, where, request, envelope)
    event_time = event_time_ms(claimed, envelope)
    event = IdentifyEvent(
        workspace_id=envelope.workspace_id,
        user_id=user_id,
        anonymous_ids=() if anonymous_id is None else (anonymous_id,),
        dialect=DIALECT,
        event_time_ms=event_time,
        received_time_ms=envelope.received_time_ms,
        profile_created_at_ms=_created_at(traits, f"{where}.traits"),
        response_id=envelope.response_id,
        event_index=index,
        dedupe_key=_id(message, "messageId", where),
        context=context,
        operations=set_operations(traits.items()),
    )
    return event, event_time != claimed


def _alias(
    message: dict[str, Any], where: str, index: int, request: Request, envelope: Envelope
) -> tuple[IdentifyEvent, bool]:
    """``previousId`` (an anonymous id or an earlier user id) is ``userId`` from now on.
    An ``anonymousId`` beside them is linked as an identify's would be. The time as
    for an identify."""
    user_id = _id(message, "userId", where)
    if user_id is None:
        raise InvalidRequest(f"{where}.userId is required for an alias", field="userId")
    previous_id = _id(message, "previousId", where)
    if previous_id is None:
        raise InvalidRequest(f"{where}.previousId is required for an alias", field="previousId")
    anonymous_id = _id(message, "anonymousId", where)
    claimed = _client_time(message, where, request, envelope)
    event_time = event_time_ms(claimed, envelope)
    event = IdentifyEvent(
        workspace_id=envelope.workspace_id,
        user_id=user_id,
        anonymous_ids=() if anonymous_id is None else (anonymous_id,),
        dialect=DIALECT,
        event_time_ms=event_time,
        received_time_ms=envelope.received_time_ms,
        response_id=envelope.response_id,
        event_index=index,
        dedupe_key=_id(message, "messageId", where),
        context=_context(message, where, request),
        kind=Kind.ALIAS,
        previous_id=previous_id,
    )
    return event, event_time != claimed


def _context(message: dict[str, Any], where: str, request: Request) -> dict[str, JSON] | None:
    context = optional_object(message, "context", where)
    if request.context is not None:
        context = request.context | (context or {})
    return context


def _id(message: dict[str, Any], field: str, where: str) -> str | None:
    """Segment ids are strings; SDKs that send numbers get them as strings, as Segment does."""
    value = message.get(field)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return id_string(value, f"{where}.{field}")


def _client_time(message: dict[str, Any], where: str, request: Request, envelope: Envelope) -> int:
    """When the message happened, on the edge's clock as far as the client lets us know.

    ``timestamp``, else ``originalTimestamp``, are read on the client's clock. When the
    client also says when it sent (``sentAt``: the message's own, else the batch's),
    the gap between that and the receipt is its clock's skew (network time being
    small beside it), and the time is ``received - (sentAt - timestamp)``: the
    formula by which Segment and RudderStack compute their ``timestamp``. Without
    ``sentAt``, ``timestamp`` is taken as it is, and ``originalTimestamp``, a time
    on a clock nothing can correct, not at all: the received time stands."""
    name, value = f"{where}.timestamp", message.get("timestamp")
    original = value is None
    if original:
        name, value = f"{where}.originalTimestamp", message.get("originalTimestamp")
    if value is None:
        return envelope.received_time_ms
    sent_at = _optional_time(message, "sentAt", where)
    if sent_at is None:
        sent_at = request.sent_at_ms
    if sent_at is None:
        return envelope.received_time_ms if original else parse_time_ms(value, name)
    skew = sent_at - parse_time_ms(value, name)
    return checked_time_ms(envelope.received_time_ms - skew, name)


def _optional_time(payload: dict[str, Any], field: str, where: str) -> int | None:
    value = payload.get(field)
    return None if value is None else parse_time_ms(value, f"{where}.{field}")


def _context_traits(context: dict[str, JSON] | None, where: str) -> dict[str, JSON]:
    if context is None:
        return {}
    return optional_object(context, "traits", f"{where}.context") or {}


def _created_at(traits: dict[str, JSON], where: str) -> int | None:
    for name in ("createdAt", "created_at"):
        value = traits.get(name)
        if isinstance(value, str):
            return parse_time_ms(value, f"{where}.{name}")
    return None


def _object(payload: JSON, where: str) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise InvalidRequest(f"the {where} must be a JSON object, got {type_name(payload)}")
    return payload


def _write_key(payload: dict[str, Any]) -> str | None:
    value = payload.get("writeKey")
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"body.writeKey must be a string, got {type_name(value)}", field="writeKey")
    return value or None
