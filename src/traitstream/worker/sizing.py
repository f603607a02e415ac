"""The size cap on a profile's traits, and the bounds the planner checks it with. Pure.

Size cap: a profile's traits may hold at most ``MAX_TRAITS_BYTES`` of JSON. Before
an event is applied, the planner bounds the size it could reach (the current size,
plus every value the event writes, less the values it replaces); an event that
could pass the cap is rejected whole and dead-lettered by the worker, so no profile
is ever half-updated and none outgrows the cap.

Measuring that bound exactly (``growth_bound``) serializes every value an event
writes and every value it replaces, which was half the cost of planning. The
planner first takes a looser bound that costs no serializing (``loose_growth``);
only when that one could pass the cap does it measure exactly, and then it also
measures every event it let through on the loose bound before, from the values
those events replaced (kept by reference; values are never changed in place). So
each decision is the one the exact bound alone would make.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from traitstream.events import JSON, IdentifyEvent, Op

MAX_TRAITS_BYTES = 512 * 1024


_NUMBER_MAX = 24
"""The longest JSON of a number orjson writes (``-1.2345678901234567e-300``)."""


def _json_size(value: JSON) -> int:
    return len(orjson.dumps(value))


def growth_bound(traits: Mapping[str, JSON], event: IdentifyEvent) -> int:
    """How much ``event`` can grow ``traits`` as JSON, at most (never less than the truth).
    Of ``traits`` it reads only the values of the traits the event sets."""
    growth = 0
    for op in event.operations:
        if op.trait is None or op.op is Op.UNSET:
            continue
        if op.op is Op.ADD:
            # The sum, not the amount, is stored, and a sum can be longer than both
            # (0.1 + 0.2 is 0.30000000000000004): take a number's longest JSON.
            added = _NUMBER_MAX + len(op.trait.encode()) + 8
        else:
            added = _json_size(op.value) + len(op.trait.encode()) + 8
        if op.op is Op.SET and op.trait in traits:
            added -= _json_size(traits[op.trait]) + len(op.trait.encode()) + 6
        growth += max(added, 0) if op.op is not Op.REMOVE else 0
    return growth


# An enum member read from its class costs a descriptor call (about 0.14 us), several
# times per operation in the loop below.
_SET, _UNSET, _REMOVE = Op.SET, Op.UNSET, Op.REMOVE

_SCALARS = (int, float, bool, type(None))
"""Values whose JSON takes at most 24 characters (orjson refuses integers past 64 bits)."""


def loose_growth(traits: Mapping[str, JSON], event: IdentifyEvent) -> tuple[int, dict[str, JSON]]:
    """At least ``growth_bound(traits, event)``, and the values of ``traits`` that the
    event's sets replace (``growth_bound`` of them is ``growth_bound`` of ``traits``).

    ``growth_bound`` counts each operation's ``max(added, 0)``; here ``added`` is never
    smaller, so neither is the sum: a value's size is taken at most (a character of a
    string is at most 6 bytes, ``\\u001f``; a scalar at most 24 characters; anything
    else is measured), a replaced one's at least (a character is at least a byte),
    and a trait name's bytes are at most 4 per character."""
    growth = 0
    replaced: dict[str, JSON] = {}
    for op in event.operations:
        kind, trait = op.op, op.trait
        if trait is None or kind is _UNSET or kind is _REMOVE:
            continue
        value = op.value
        if type(value) is str:
            added = 6 * len(value) + 2
        elif type(value) in _SCALARS:
            added = 24
        else:
            added = _json_size(value)
        if kind is _SET and trait in traits:
            old = replaced[trait] = traits[trait]
            added -= len(old) if type(old) is str else -1
        else:
            added += 4 * len(trait) + 8
        if added > 0:
            growth += added
    return growth, replaced
