"""Which event last wrote each trait of a profile: the answer of
``GET /api/profiles/…?include=provenance``. Pure; read from the stored stamps.

For each trait the profile holds, the stamp that decides it (``merge.Profile``:
the set_once stamp for a trait a set_once filled, else its last write) gives:

- ``event_time``: that event's time (ISO 8601, UTC);
- ``source``: the dialect it arrived in (or the publishing service's name);
- ``message_id``: the client's dedupe key, else the id of the request that carried it;
- ``op``: ``set_once`` for a set_once default; the operation's name, which the
  stamps of ``add`` and the list operations carry; else ``set``.

A profile stored before sources were kept names only its events' times: until
a trait is written again, its ``source``, ``message_id`` and ``op`` are null
(``op`` is still ``set_once`` where it is one; an older write may have been a
set or an add, which those rows do not tell).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from traitstream.events import JSON, Op
from traitstream.merge import Stamp, Stored, expand_stamps

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SET, _SET_ONCE = Op.SET.value, Op.SET_ONCE.value


def _iso(millis: object) -> str | None:
    if not isinstance(millis, int) or isinstance(millis, bool):
        return None
    try:
        return (_EPOCH + timedelta(milliseconds=millis)).isoformat()
    except OverflowError:
        return None


def provenance(traits: Mapping[str, JSON], stored: Stored) -> dict[str, dict[str, Any]]:
    """``{trait: {"event_time", "source", "message_id", "op"}}`` for every trait of
    ``traits``, from the stored stamps ``stored`` (any stored form)."""
    written, once, _cleared, sources = expand_stamps(stored)
    out: dict[str, dict[str, Any]] = {}
    for trait in traits:
        stamp: Stamp | None = once.get(trait)
        op: str | None = _SET_ONCE
        if stamp is None:
            stamp = written.get(trait)
            op = None
        if stamp is None or len(stamp) < 3:
            out[trait] = {"event_time": None, "source": None, "message_id": None, "op": op}
            continue
        source = sources.get(str(stamp[1]))
        if op is None:
            op = str(stamp[3]) if len(stamp) > 3 else _SET if source is not None else None
        out[trait] = {
            "event_time": _iso(stamp[0]),
            "source": None if source is None else source[0],
            "message_id": None if source is None else source[1],
            "op": op,
        }
    return out
