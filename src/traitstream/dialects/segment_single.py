"""The Segment-compatible routes that take one message of a type other than identify:
``/v1/track``, ``/v1/page``, ``/v1/screen`` and ``/v1/group``, whose messages change no
profile, ``/v1/alias``, and analytics.js's short forms of them (``/v1/t``, ``/v1/p``,
``/v1/s``, ``/v1/g``, ``/v1/a``).

An SDK sends the first four beside its identifies; they are accepted and ignored, so
that it keeps working. An alias is parsed as in a batch (``segment.parse``). Each
body is one JSON object (as ``text/plain`` from analytics.js and ``sendBeacon``), at
most 32 KB, whose ``type``, when given, must be the route's.
"""

from __future__ import annotations

from collections.abc import Callable

from traitstream.dialects import segment
from traitstream.dialects.common import load_json, type_name
from traitstream.errors import InvalidRequest

ROUTES = {
    "track": ("/v1/track", "/v1/t"),
    "page": ("/v1/page", "/v1/p"),
    "screen": ("/v1/screen", "/v1/s"),
    "group": ("/v1/group", "/v1/g"),
}
"""Each ignored type, and its paths: the tracking API's, then analytics.js's."""
ALIAS_PATHS = ("/v1/alias", "/v1/a")
"""The alias's paths: the tracking API's, then analytics.js's."""


def reader(kind: str, path: str) -> Callable[[bytes], segment.Request]:
    """Reads the body of ``path``: one message of type ``kind``."""

    def read(body: bytes) -> segment.Request:
        if len(body) > segment.MAX_EVENT_BYTES:
            raise segment.event_too_large()
        payload = load_json(body)
        if not isinstance(payload, dict):
            raise InvalidRequest(f"the body must be a JSON object, got {type_name(payload)}")
        given = payload.get("type", kind)
        if given != kind:
            raise InvalidRequest(f"body.type must be {kind} on {path}, got {given!r}", field="type")
        write_key = payload.get("writeKey")
        if write_key is not None and not isinstance(write_key, str):
            raise InvalidRequest(
                f"body.writeKey must be a string, got {type_name(write_key)}", field="writeKey"
            )
        return segment.Request(write_key or None, [payload | {"type": kind}], batch=False)

    return read
