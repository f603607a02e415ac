"""The Segment-compatible paths beside ``/v1/identify`` and ``/v1/batch``, each served
by the same code as those two (``routes.segment``):

- the tracking API's single-message routes ``/v1/track``, ``/v1/page``, ``/v1/screen``
  and ``/v1/group``: accepted, their message ignored;
- ``/v1/alias``: the previous id's profile merges into the user's;
- analytics.js's short forms of every route: ``/v1/i``, ``/v1/b``, ``/v1/t``, ``/v1/p``,
  ``/v1/s``, ``/v1/g``, ``/v1/a``;
- ``/beacon/v1/batch``, where RudderStack's browser SDK sends its batches with
  ``sendBeacon`` (its key in the query: ``?writeKey=``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from traitstream.dialects import segment, segment_single
from traitstream.errors import LimitExceeded

Route = tuple[Callable[[bytes], segment.Request], int, Callable[[], LimitExceeded]]
"""How a route reads its body, the most it takes, and its refusal of more."""

IDENTIFY: Route = (segment.read_identify, segment.MAX_EVENT_BYTES, segment.event_too_large)
BATCH: Route = (segment.read_batch, segment.MAX_BATCH_BYTES, segment.batch_too_large)


@dataclass(frozen=True, slots=True)
class Path:
    path: str
    route: Route
    summary: str
    body: str
    """The component schema of its body."""
    documented: bool = False
    """Listed in the OpenAPI document (the short forms and the beacon path are not)."""


def paths() -> list[Path]:
    table = [
        Path("/v1/i", IDENTIFY, "Identify a user (analytics.js)", "SegmentIdentify"),
        Path("/v1/b", BATCH, "Send a batch of messages (analytics.js)", "SegmentBatch"),
        Path("/beacon/v1/batch", BATCH, "Send a batch of messages (sendBeacon)", "SegmentBatch"),
    ]
    for kind, (long, short) in segment_single.ROUTES.items():
        for path in (long, short):
            read = segment_single.reader(kind, path)
            table.append(
                Path(
                    path,
                    (read, segment.MAX_EVENT_BYTES, segment.event_too_large),
                    f"Accept a {kind} message (Segment-compatible); it is not stored",
                    f"Segment{kind.capitalize()}",
                    documented=path == long,
                )
            )
    for path in segment_single.ALIAS_PATHS:
        table.append(
            Path(
                path,
                (segment_single.reader("alias", path), segment.MAX_EVENT_BYTES, segment.event_too_large),
                "Merge the previous id's profile into the user's (Segment-compatible alias)",
                "SegmentAlias",
                documented=path == segment_single.ALIAS_PATHS[0],
            )
        )
    return table
