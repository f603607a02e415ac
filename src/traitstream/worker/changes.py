"""What a batch changed in each profile, as the records of the profile changes topic.
Pure; no I/O.

The store snapshots the traits of every profile a batch loads (``Snapshot``), plans
the batch, and then asks ``batch_changes`` for the outbox entries: per profile, at
most one ``update`` or ``merge`` record for the whole batch (the difference between
its traits before and after), preceded by an ``erase`` record and a tombstone when
the batch erased it. A profile whose traits did not change (a late ``set``, a
duplicate) gets nothing. Nothing of this runs when the stream is off; when it is on,
the planner only keeps, per written profile, the events applied to it (the traits
they wrote are the only ones compared), and the rest is per profile and per trait
written, once a batch.

Provenance of a change comes from the write stamp the trait ends the batch with, as
``GET /api/profiles/…?include=provenance`` reads it (``provenance.py``): the event
time, the event's source and message id (``Profile.sources``), and the operation
(``set_once`` for a default, the name an ``add`` or list stamp carries, else ``set``;
``unset`` or ``clear_all`` for a trait removed).

Each entry has a ``step``: its version is the profile's last version plus ``step``,
given in the same transaction (``store/outbox.py``). A tombstone shares the step of
the erase record before it. An entry's record is already Avro, every field but the
version (``avro/changes.py``): the relay only adds the header and the version.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import orjson

from traitstream.avro.changes import (
    body,
    change_bytes,
    long_bytes,
    optional_string_bytes,
    string_bytes,
)
from traitstream.events import JSON, IdentifyEvent, Op
from traitstream.merge import Profile, Stamp

SHARDS = 64
"""Outbox rows are relayed by shard (``profile_id`` modulo this): one relay at a
time per shard, so one profile's versions reach the topic in order."""

UPDATE, MERGE, ERASE, TOMBSTONE = "update", "merge", "erase", "tombstone"


class Snapshot(NamedTuple):
    """A profile as the batch found it."""

    workspace_id: str
    user_id: str | None
    traits: dict[str, JSON]


class Touched(NamedTuple):
    """A profile the batch wrote: its state after the batch and the events applied to it."""

    workspace_id: str
    user_id: str | None
    profile: Profile
    events: Sequence[IdentifyEvent]


class OutboxEntry(NamedTuple):
    profile_id: uuid.UUID
    workspace_id: str
    step: int
    """The version is the profile's previous version plus this."""
    body: bytes | None
    """The change record in Avro, but its version (``avro.changes.body``); None for a tombstone."""
    kind: str

    def key(self) -> bytes:
        return f"{self.workspace_id}:{self.profile_id}".encode()


_ABSENT: Any = object()
_NULL, _SOME = b"\x00", b"\x02"
_SMALL = tuple(bytes((n << 1,)) for n in range(64))
_dumps = orjson.dumps
_OP_BYTES = {name: string_bytes(name) for name in [*(op.value for op in Op), ERASE]}
"""An operation's name as Avro; ``Op`` members hash and compare as their names."""
_SET, _SET_ONCE, _UNSET, _CLEAR_ALL = (_OP_BYTES[op] for op in ("set", "set_once", "unset", "clear_all"))
_UNKNOWN = b"\x00\x00\x00"
"""Event time 0, no source, no message id: a write no stamp records."""


def same_value(a: JSON, b: JSON) -> bool:
    """Equal as JSON: ``1``, ``1.0`` and ``true`` are equal in Python, not to a reader."""
    if a is b:
        return True
    if type(a) is not type(b) or a != b:
        return False
    return not isinstance(a, list | dict) or orjson.dumps(a) == orjson.dumps(b)


def diff(before: Mapping[str, JSON], after: Mapping[str, JSON]) -> list[tuple[str, JSON, JSON]]:
    """``(trait, old, new)`` for each trait whose value differs; ``_ABSENT`` on the side
    where the trait is missing. Traits set first, in ``after``'s order, then removals."""
    changed = []
    added = 0
    for trait, new in after.items():
        old = before.get(trait, _ABSENT)
        if old is new:  # a trait the batch did not write is the very same object
            continue
        if old is _ABSENT:
            added += 1
            changed.append((trait, old, new))
        elif not same_value(old, new):
            changed.append((trait, old, new))
    if len(after) - added < len(before):  # fewer of the old traits kept than there were
        changed.extend((t, v, _ABSENT) for t, v in before.items() if t not in after)
    return changed


class _Provenance:
    """The provenance fields of a change in Avro (event time, source, message id),
    written once per write stamp however many traits and profiles it changed. The
    stamp names its event (``merge.Profile.sources`` has the event's source and
    message id, merged profiles' too), and the operation of an ``add`` or list write."""

    __slots__ = ("heads",)

    def __init__(self) -> None:
        self.heads: dict[object, bytes] = {}

    def head(self, stamp: Stamp, sources: Mapping[str, tuple[str, str]]) -> bytes:
        stamp_id = stamp[1]
        head = self.heads.get(stamp_id)
        if head is None:
            source = sources.get(str(stamp_id))
            head = self.heads[stamp_id] = long_bytes(int(stamp[0])) + (
                b"\x00\x00"
                if source is None
                else optional_string_bytes(source[0]) + optional_string_bytes(source[1])
            )
        return head


def _op_bytes(name: object) -> bytes:
    return _OP_BYTES.get(name) or string_bytes(str(name))  # type: ignore[call-overload]


def _trait_bytes(trait: str) -> bytes:
    encoded = _TRAITS.get(trait)
    if encoded is None:
        if len(_TRAITS) >= _TRAITS_KEPT:
            _TRAITS.clear()
        encoded = _TRAITS[trait] = string_bytes(trait)
    return encoded


_TRAITS: dict[str, bytes] = {}
"""Trait names in Avro: the same few names come back in every batch."""
_TRAITS_KEPT = 4096


def _written_names(events: Sequence[IdentifyEvent]) -> Iterable[str] | None:
    """The traits ``events`` wrote, in order, once each; None when one cleared them all."""
    names = [operation.trait for event in events for operation in event.operations]
    return None if None in names else dict.fromkeys(names)  # type: ignore[arg-type]


def update_body(
    profile_id: uuid.UUID,
    before: Mapping[str, JSON],
    touched: Touched,
    merged_from: Sequence[uuid.UUID],
    provenance: _Provenance,
    applied_ms: int,
) -> bytes | None:
    """The ``update`` (or ``merge``) record of a profile written by a batch; None when
    nothing a reader sees changed.

    Only the traits the batch's events wrote can differ, so only those are compared,
    unless a merge or a ``clear_all`` may have changed any (then every trait is).
    Two texts that differ may still hold the same traits (in another order): the
    comparison trait by trait decides.
    The comparison, the stamps and the encoding share one loop: it runs for every
    trait a batch writes."""
    profile, events, merged = touched.profile, touched.events, bool(merged_from)
    after = profile.traits
    if not merged and _dumps(before) == _dumps(after):
        # The same JSON text: nothing a reader sees changed (a duplicate, a late set,
        # the same values again). Checked whole in C, before any trait in Python.
        return None
    previous = before.get
    names = None if merged else _written_names(events)
    if names is None:
        pairs = [(t, previous(t, _ABSENT), v) for t, v in after.items()]
        pairs.extend((t, v, _ABSENT) for t, v in before.items() if t not in after)
    else:
        current = after.get
        pairs = [(t, previous(t, _ABSENT), current(t, _ABSENT)) for t in names]
    once_get, written_get = profile.once.get, profile.written.get
    sources, head = profile.sources, provenance.head
    traits_get, dumps = _TRAITS.get, _dumps
    changes = []
    for trait, old, new in pairs:
        if old is new:  # untouched (the very same object), or absent before and after
            continue
        if old is _ABSENT:
            old_json = _NULL
        elif new is not _ABSENT and type(old) is type(new) and old == new and same_value(old, new):
            continue
        else:
            data = dumps(old)
            old_json = _SOME + (_SMALL[len(data)] if len(data) < 64 else long_bytes(len(data))) + data
        if new is _ABSENT:
            new_json = _NULL
            stamp = profile.last_write(trait)
            op = _CLEAR_ALL if stamp is not None and stamp is profile.cleared else _UNSET
        else:
            data = dumps(new)
            new_json = _SOME + (_SMALL[len(data)] if len(data) < 64 else long_bytes(len(data))) + data
            stamp = once_get(trait)
            if stamp is not None:
                op = _SET_ONCE
            else:
                stamp = written_get(trait)
                op = _op_bytes(stamp[3]) if stamp is not None and len(stamp) > 3 else _SET
        where = _UNKNOWN if stamp is None else head(stamp, sources)
        changes.append((traits_get(trait) or _trait_bytes(trait)) + old_json + new_json + where + op)
    if not changes and not merged_from:
        return None
    return body(
        touched.workspace_id,
        str(profile_id),
        touched.user_id,
        MERGE if merged else UPDATE,
        changes,
        [str(p) for p in merged_from],
        applied_ms,
    )


def erase_body(profile_id: uuid.UUID, before: Snapshot, applied_ms: int) -> bytes:
    """Every trait the profile had, removed."""
    removed = long_bytes(applied_ms) + b"\x00\x00" + _OP_BYTES[ERASE]
    changes = [change_bytes(trait, _dumps(value), None, removed) for trait, value in before.traits.items()]
    return body(before.workspace_id, str(profile_id), before.user_id, ERASE, changes, [], applied_ms)


def batch_changes(
    before: Mapping[uuid.UUID, Snapshot],
    upserts: Mapping[uuid.UUID, Touched],
    erased: Iterable[uuid.UUID],
    absorbed: Iterable[uuid.UUID],
    merged: Mapping[uuid.UUID, Sequence[uuid.UUID]],
    applied_ms: int,
) -> list[OutboxEntry]:
    """Every outbox entry of a batch, in the order each profile's must be published.

    ``before``: the profiles the batch loaded, as they were. ``upserts``: the profiles
    it writes. ``erased``: profiles erased by an erasure; ``absorbed``: anonymous
    profiles merged into another and deleted; ``merged``: for a profile written, the
    profiles merged into it. Only a profile that existed before the batch publishes
    an erasure or a tombstone."""
    entries: list[OutboxEntry] = []
    erased_ids = set(erased)
    steps: dict[uuid.UUID, int] = {}
    for profile_id in sorted(erased_ids, key=str):
        snapshot = before.get(profile_id)
        if snapshot is None:
            continue  # made and erased within the batch: never published
        steps[profile_id] = 1
        ws = snapshot.workspace_id
        entries.append(OutboxEntry(profile_id, ws, 1, erase_body(profile_id, snapshot, applied_ms), ERASE))
        entries.append(OutboxEntry(profile_id, ws, 1, None, TOMBSTONE))
    for profile_id in sorted(set(absorbed) - erased_ids, key=str):
        snapshot = before.get(profile_id)
        if snapshot is not None:
            # Its traits live on in the profile it was merged into (whose record names
            # it in ``merged_from``); its own key is gone. Made again later in the
            # batch, it starts from nothing, as after an erasure.
            erased_ids.add(profile_id)
            entries.append(OutboxEntry(profile_id, snapshot.workspace_id, 0, None, TOMBSTONE))
    if not upserts:
        return entries
    provenance = _Provenance()
    empty: dict[str, JSON] = {}
    for profile_id, touched in upserts.items():
        snapshot = None if profile_id in erased_ids else before.get(profile_id)
        merged_from = merged.get(profile_id, ())
        record = update_body(
            profile_id,
            empty if snapshot is None else snapshot.traits,
            touched,
            merged_from,
            provenance,
            applied_ms,
        )
        if record is not None:
            step = steps.get(profile_id, 0) + 1
            kind = MERGE if merged_from else UPDATE
            entries.append(OutboxEntry(profile_id, touched.workspace_id, step, record, kind))
    return entries


def replay(changes: Iterable[Mapping[str, Any] | None]) -> dict[str, JSON]:
    """The traits a profile's change records (from its first version, in order) add up
    to. None is a tombstone: the key is gone, and what follows starts afresh."""
    traits: dict[str, JSON] = {}
    for record in changes:
        if record is None or record["kind"] == ERASE:
            traits.clear()
            continue
        for change in record["changes"]:
            if change["new_json"] is None:
                traits.pop(change["trait"], None)
            else:
                traits[change["trait"]] = orjson.loads(change["new_json"])
    return traits
