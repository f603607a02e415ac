"""How events change a profile: pure functions over values, no I/O.

The rules (docs/merge-rules.md explains them at length):

* Every write carries a *stamp* ``[event time ms, stamp id, op index]``, the stamp
  id being the request's response id and the event's position in it
  (``IdentifyEvent.stamp_id``). Stamps are totally ordered, so ties between events
  at the same millisecond resolve the same way everywhere, and within one request
  the later event wins. The stamp of an ``add`` or list operation names the
  operation as a fourth element (a set's, the usual write, does not), and the
  profile keeps each event's source and message id (``Profile.sources``): what the
  profile's provenance reports.
* ``set`` and ``unset`` are last-writer-wins per trait by stamp. An unset leaves a
  tombstone stamp, so an older ``set`` that arrives late stays dead.
* ``clear_all`` is an unset of every trait at its stamp (one profile-level stamp).
* ``set_once`` is a default: it fills a trait that no set, unset, clear_all, add
  or list operation has ever written, and among several the earliest wins.
* ``add`` and the list operations do not commute with each other, so they apply
  once each in the order the worker receives them (partition order); they count
  as a write at ``max(previous stamp, their stamp)``.

For histories of set, unset, set_once and clear_all the resulting profile is the
same whatever the order and duplication of delivery; for add-only histories it is
the same sum. Merging two profiles (anonymous into identified) is the same join.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from traitstream import native
from traitstream.events import JSON, IdentifyEvent, Op, Operation

if native.use("traitstream.compiled._merge"):
    from traitstream.compiled import _merge
else:  # the Python twin serves (TRAITSTREAM_IMPL=python, or not built)
    _merge = None  # type: ignore[assignment]

COMPILED = _merge is not None
"""Whether the per-trait loops run in C (``_merge.c``): applying an event's sets,
expanding and compacting stamps."""

_SET = Op.SET
"""An enum member read from the class costs a descriptor call; the hot loops use this."""
_ADD = Op.ADD.value
"""The name an add's stamp carries: a plain str, as stored."""

Stamp = list[int | str]
"""``[event time ms, stamp id, op index]``, and the operation's name after them for
``add`` and the list operations. A list, not a tuple: lists compare element by
element like tuples, and loading a stored profile builds each stamp as one list
from its event's ``[event time ms, stamp id]``. A stamp is never changed once made.
Two stamps never differ only by the name: one event's operation has one name."""

Source = tuple[str, str]
"""An event's ``(source, message id)``: its dialect, and the client's dedupe key or
else the id of the request that carried it."""

Stored = dict[str, Any]
"""The stamps as stored (column ``profiles.stamps``), written by ``Profile.meta``."""


def _is_number(value: JSON) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _as_list(value: JSON) -> list[JSON]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


@dataclass(slots=True)
class Profile:
    """A profile's full mergeable state. ``traits`` is what readers see; the stamps
    are what makes late and duplicated writes harmless."""

    traits: dict[str, JSON] = field(default_factory=dict)
    written: dict[str, Stamp] = field(default_factory=dict)
    """Stamp of the last set/unset/add/list write per trait; tombstones stay here."""
    once: dict[str, Stamp] = field(default_factory=dict)
    """Stamp of traits whose value came from set_once (never in ``written``)."""
    cleared: Stamp | None = None
    created_at_ms: int | None = None
    sources: dict[str, Source] = field(default_factory=dict, compare=False)
    """``(source, message id)`` by stamp id, for at least the events the stamps name
    (events of profiles stored before sources were kept have none). Not part of the
    profile's value: events no stamp names any more are not stored, and loading a
    profile forgets them."""

    def last_write(self, trait: str) -> Stamp | None:
        stamp = self.written.get(trait)
        if self.cleared is not None and (stamp is None or stamp < self.cleared):
            return self.cleared
        return stamp

    def _write(self, trait: str, stamp: Stamp) -> None:
        self.once.pop(trait, None)
        previous = self.last_write(trait)
        self.written[trait] = stamp if previous is None or stamp > previous else previous

    # --- operations -------------------------------------------------------------

    def set_value(self, trait: str, value: JSON, stamp: Stamp) -> None:
        previous = self.written.get(trait)  # last_write, inlined: once per trait of every event
        cleared = self.cleared
        if cleared is not None and (previous is None or previous < cleared):
            previous = cleared
        if previous is None or stamp > previous:
            self.traits[trait] = value
            self.written[trait] = stamp
            self.once.pop(trait, None)

    def unset(self, trait: str, stamp: Stamp) -> None:
        previous = self.last_write(trait)
        if previous is None or stamp > previous:
            self.traits.pop(trait, None)
            self.written[trait] = stamp
            self.once.pop(trait, None)

    def set_once(self, trait: str, value: JSON, stamp: Stamp) -> None:
        if self.last_write(trait) is not None:
            return
        current = self.once.get(trait)
        if current is None or stamp < current:
            self.traits[trait] = value
            self.once[trait] = stamp

    def clear_all(self, stamp: Stamp) -> None:
        if self.cleared is not None and stamp <= self.cleared:
            return
        self.cleared = stamp
        for trait in list(self.traits):
            written = self.written.get(trait)
            if written is None or written < stamp:
                del self.traits[trait]
        self.written = {t: s for t, s in self.written.items() if s > stamp}
        self.once.clear()

    def add(self, trait: str, amount: int | float, stamp: Stamp) -> None:
        current = self.traits.get(trait, 0)
        self.traits[trait] = (current if _is_number(current) else 0) + amount
        self._write(trait, [*stamp[:3], _ADD])

    def list_op(self, op: Op, trait: str, value: JSON, stamp: Stamp) -> None:
        if op is Op.REMOVE and trait not in self.traits:
            # Nothing to remove from: creating an empty list would let removes of
            # absent traits grow a profile that the planner's size bound, which
            # counts removes as shrinking, never checks.
            return
        items = _as_list(self.traits.get(trait))
        values = _as_list(value)
        if op is Op.APPEND:
            items.extend(values)
        elif op is Op.PREPEND:
            items[:0] = values
        elif op is Op.POST_INSERT:
            items.extend(v for v in _unique(values) if v not in items)
        elif op is Op.PRE_INSERT:
            items[:0] = [v for v in _unique(values) if v not in items]
        elif op is Op.REMOVE:
            items = [v for v in items if v not in values]
        self.traits[trait] = items
        self._write(trait, [*stamp[:3], op.value])

    def apply(self, operation: Operation, stamp: Stamp) -> None:
        op, trait = operation.op, operation.trait
        if op is Op.CLEAR_ALL:
            self.clear_all(stamp)
            return
        if trait is None:
            raise ValueError(f"{op.value} needs a trait")
        if op is Op.SET:
            self.set_value(trait, operation.value, stamp)
        elif op is Op.UNSET:
            self.unset(trait, stamp)
        elif op is Op.SET_ONCE:
            self.set_once(trait, operation.value, stamp)
        elif op is Op.ADD:
            self.add(trait, operation.value, stamp)
        else:
            self.list_op(op, trait, operation.value, stamp)

    # --- whole events and whole profiles ----------------------------------------

    def apply_event(self, event: IdentifyEvent) -> None:
        event_time, stamp_id = event.event_time_ms, event.stamp_id
        key = event.dedupe_key  # event.message_id, without a property's call
        self.sources[stamp_id] = (event.dialect, event.response_id if key is None else key)
        operations = event.operations
        if _merge is not None and type(operations) is tuple:
            _merge.apply_operations(self, operations, event_time, stamp_id)  # this loop, in C
        else:
            for index, operation in enumerate(operations):
                trait = operation.trait
                if operation.op is _SET and trait is not None:  # nearly every operation
                    self.set_value(trait, operation.value, [event_time, stamp_id, index])
                else:
                    self.apply(operation, [event_time, stamp_id, index])
        created = event.profile_created_at_ms
        if created is None:
            created = event.event_time_ms
        if self.created_at_ms is None or created < self.created_at_ms:
            self.created_at_ms = created

    def absorb(self, other: Profile) -> None:
        """Join ``other`` into this profile: per trait the newer write wins, set_once
        defaults keep the earliest, clears combine. Commutative."""
        for trait, stamp in other.written.items():
            if trait in other.traits:
                self.set_value(trait, other.traits[trait], stamp)
            else:
                self.unset(trait, stamp)
        if other.cleared is not None:
            self.clear_all(other.cleared)
        for trait, stamp in other.once.items():
            self.set_once(trait, other.traits[trait], stamp)
        if other.created_at_ms is not None and (
            self.created_at_ms is None or other.created_at_ms < self.created_at_ms
        ):
            self.created_at_ms = other.created_at_ms
        for stamp_id, source in other.sources.items():
            self.sources.setdefault(stamp_id, source)

    # --- storage form ------------------------------------------------------------

    def meta(self) -> Stored:
        """The stamps in their stored form. The stamps one identify writes share its
        event time and id, so each distinct pair is written once, in ``e``, and a
        trait's stamp is its pair's index there and the operation's position::

            {"w": {trait: [i, position]},   # last set/unset/add/list write
             "o": {trait: [i, position]},   # filled by set_once
             "c": [i, position],            # the last clear_all, when there is one
             "e": [[time ms, stamp id], ...],
             "s": [[source, message id] or null, ...],  # each event's, by its index in "e"
             "p": {trait: op}}              # written by add or a list operation

        A profile written by one identify thus stores its stamp id once rather than
        once per trait, and its stamps take about a third of the room. ``s`` is left
        out when no event's source is known (rows stored before sources were kept),
        ``p`` when every written trait was last set. Both are keys of their own, so
        that the release before them reads the rest as before (and drops them when
        it writes the row)."""
        return compact_stamps(self.written, self.once, self.cleared, self.sources)

    def meta_text(self) -> str:
        """``meta()`` as the JSON text that is stored (orjson's), written directly
        in C without building ``meta()`` first, when the extension can."""
        if _merge is not None:
            text = _merge.compact_text(self.written, self.once, self.cleared, self.sources)
            if text is not None:
                return text
        return orjson.dumps(self.meta()).decode()

    @classmethod
    def from_stored(
        cls,
        traits: dict[str, JSON],
        meta: Stored,
        created_at_ms: int | None,
    ) -> Profile:
        """The profile of a stored row: ``meta`` is ``meta()``'s form parsed from JSON,
        or the earlier form, which wrote every stamp out in full (``"e"`` absent).
        The traits are copied (the profile changes them)."""
        written, once, cleared, sources = expand_stamps(meta)
        return cls(
            traits=dict(traits),
            written=written,
            once=once,
            cleared=cleared,
            created_at_ms=created_at_ms,
            sources=sources,
        )

    @classmethod
    def from_text(cls, traits: str, meta: str, created_at_ms: int | None) -> Profile:
        """``from_stored`` of a row as PostgreSQL returns it: both columns as JSON
        text (the traits an object). The worker loads thousands a batch."""
        written, once, cleared, sources = expand_stamps_text(meta)
        return cls(
            traits=orjson.loads(traits),
            written=written,
            once=once,
            cleared=cleared,
            created_at_ms=created_at_ms,
            sources=sources,
        )


Expanded = tuple[dict[str, Stamp], dict[str, Stamp], Stamp | None, dict[str, Source]]
"""The written, set_once and clear_all stamps, and the events' sources."""


def expand_stamps_text(text: str) -> Expanded:
    """``expand_stamps`` of stored JSON text. Text exactly as ``meta`` is written
    (orjson, the compact form) is read straight into the stamps in C, without
    the parsed form's dict and lists in between; any other is parsed first."""
    if _merge is not None:
        expanded = _merge.expand_text(text)
        if expanded is not None:
            return expanded
    meta: Stored = orjson.loads(text)
    return expand_stamps(meta)


def compact_stamps(
    written: dict[str, Stamp],
    once: dict[str, Stamp],
    cleared: Stamp | None,
    sources: dict[str, Source] | None = None,
) -> Stored:
    """``Profile.meta``; its JSON text is the reference of ``_merge.compact_text``."""
    pairs: dict[tuple[int | str, int | str], int] = {}
    index = pairs.setdefault  # an existing pair's index, or the next one for a new pair
    meta: Stored = {
        "w": {trait: [index((s[0], s[1]), len(pairs)), s[2]] for trait, s in written.items()},
        "o": {trait: [index((s[0], s[1]), len(pairs)), s[2]] for trait, s in once.items()},
    }
    if cleared is not None:
        meta["c"] = [index((cleared[0], cleared[1]), len(pairs)), cleared[2]]
    meta["e"] = [list(pair) for pair in pairs]
    known: dict[Any, Source] = sources or {}
    if any(stamp_id in known for _time, stamp_id in pairs):
        meta["s"] = [list(known[stamp_id]) if stamp_id in known else None for _time, stamp_id in pairs]
    ops = {trait: s[3] for trait, s in written.items() if len(s) > 3}
    if ops:
        meta["p"] = ops
    return meta


def expand_stamps(meta: Stored) -> Expanded:
    """The written, set_once and clear_all stamps of a stored ``meta``, in full, and
    the sources of its events: the reference of ``_merge.expand_text``."""
    pairs = meta.get("e")
    if pairs is None:  # every stamp written out
        return dict(meta.get("w", {})), dict(meta.get("o", {})), meta.get("c"), {}
    written = {trait: [*pairs[i], position] for trait, (i, position) in meta["w"].items()}
    for trait, op in meta.get("p", {}).items():
        if trait in written:
            written[trait].append(op)
    once = {trait: [*pairs[i], position] for trait, (i, position) in meta["o"].items()}
    clear = meta.get("c")
    sources: dict[str, Source] = {}
    for pair, source in zip(pairs, meta.get("s", ()), strict=False):
        if source is not None:
            sources[pair[1]] = (source[0], source[1])
    return written, once, None if clear is None else [*pairs[clear[0]], clear[1]], sources


def _unique(values: list[JSON]) -> list[JSON]:
    seen: list[JSON] = []
    for value in values:
        if value not in seen:
            seen.append(value)
    return seen
