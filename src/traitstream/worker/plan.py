"""Planning a batch: which rows a batch reads, and what it writes. Pure; no I/O.

The store locks and loads what ``rows_to_load`` names, ``plan_batch`` decides every
change, and the store writes the plan in the same transaction.

Anonymous ids: an event with only anonymous ids goes to the profile its first id
is linked to, or to that id's own anonymous profile. An event with a user id links
its anonymous ids to the user's profile; an id that already has an anonymous
profile brings that profile along (joined trait by trait, newer writes winning) and
the anonymous profile is deleted. An id linked to a different identified user is
left where it is and counted as a conflict: two people sharing a device must not
share a profile. A profile merged into another takes every id linked to it along
(``BatchPlan.moves``), not only the event's.

Aliases (``previousId`` → ``userId``): the user's side is planned as an identify
without operations would be (the user's profile, its anonymous ids). Then
``previous_id`` is looked up both as a user id (the profile it resolves to) and as
an anonymous id (the profile it is linked to); each profile found is merged into
the user's as an anonymous profile is, except that an anonymous link to another
identified user is left where it is and counted as a conflict. Finally the
previous id resolves to the user's profile from then on, in both namespaces: as a
user id through ``user_aliases`` (``BatchPlan.aliases``), as an anonymous id
through its link (unless it is another user's). Every user id is resolved through
the aliases first, so later identifies of the previous user id, and its erasure,
reach the merged profile.

Size cap: before an event is applied, the planner bounds the size the profile's
traits could reach (``worker/sizing.py``); an event that could pass the cap is
rejected whole and dead-lettered by the worker, so no profile is ever half-updated
and none outgrows it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from traitstream.events import JSON, IdentifyEvent, Kind, anonymous_profile_id, user_profile_id
from traitstream.merge import Profile
from traitstream.worker.sizing import MAX_TRAITS_BYTES, growth_bound, loose_growth

AnonKey = tuple[str, str]
"""(workspace id, anonymous id)"""
UserKey = tuple[str, str]
"""(workspace id, user id)"""

# The store asks for each event's profile id before planning and the planner again:
# remembering a batch's worth halves the UUIDv5 hashing.
user_profile_id = lru_cache(maxsize=8192)(user_profile_id)
anonymous_profile_id = lru_cache(maxsize=8192)(anonymous_profile_id)


@dataclass(slots=True)
class StoredProfile:
    profile_id: uuid.UUID
    workspace_id: str
    user_id: str | None
    profile: Profile
    updated_at_ms: int
    traits_bytes: int = 2
    """An upper bound of the size of ``profile.traits`` as JSON."""
    # What the planner knows of the row's size during a batch, kept here rather than
    # in a dict by profile id: a UUID's hash is Python code, and the planner asks
    # for a row's sizing once per identify.
    exact_bytes: int = 2
    """The exact bound (``growth_bound`` after ``growth_bound``) up to ``unmeasured``;
    each batch's planner starts it from ``traits_bytes``."""
    unmeasured: list[tuple[IdentifyEvent, dict[str, JSON]]] = field(default_factory=list)
    """Events applied on the loose bound since, each with the values it replaced."""
    events: list[IdentifyEvent] = field(default_factory=list)
    """The batch's events applied to this row, when the planner tracks them (for the
    provenance of profile changes)."""


@dataclass(slots=True)
class BatchPlan:
    upserts: dict[uuid.UUID, StoredProfile] = field(default_factory=dict)
    deletes: set[uuid.UUID] = field(default_factory=set)
    """Deleted before the upserts: an erased profile that is identified again starts fresh."""
    links: dict[AnonKey, uuid.UUID] = field(default_factory=dict)
    aliases: dict[UserKey, uuid.UUID] = field(default_factory=dict)
    """User ids that resolve to another user's profile from now on (upserted)."""
    moves: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)
    """Profiles merged away, each with the profile it merged into: the ids linked to
    it that the batch did not load follow it there (the store reads them before
    the deletes; a link or alias the plan sets itself wins)."""
    conflicts: int = 0
    rejected: list[int] = field(default_factory=list)
    """Positions (in the planned events) of events refused for the size cap."""
    erased: set[uuid.UUID] = field(default_factory=set)
    """Profiles removed by an erasure (also in ``deletes``)."""
    absorbed: set[uuid.UUID] = field(default_factory=set)
    """Anonymous profiles merged into another (also in ``deletes``)."""
    merged: dict[uuid.UUID, list[uuid.UUID]] = field(default_factory=dict)
    """For a profile written, the profiles merged into it."""

    def final_owner(self, profile_id: uuid.UUID) -> uuid.UUID | None:
        """The profile that ``profile_id`` finally merged into, following ``moves``
        (a profile merged into one that merged on); None unless that one is written."""
        seen = set()
        while profile_id in self.moves and profile_id not in seen:
            seen.add(profile_id)
            profile_id = self.moves[profile_id]
        return profile_id if profile_id in self.upserts else None


def anon_keys(events: Iterable[IdentifyEvent]) -> set[AnonKey]:
    """The anonymous ids a batch may read: every event's, and every alias's previous id."""
    keys = {(e.workspace_id, a) for e in events for a in e.anonymous_ids}
    keys.update((e.workspace_id, e.previous_id) for e in events if e.previous_id is not None)
    return keys


def user_keys(events: Iterable[IdentifyEvent]) -> set[UserKey]:
    """The user ids a batch may resolve through ``user_aliases``: every event's, and
    every alias's previous id."""
    keys = {(e.workspace_id, e.user_id) for e in events if e.user_id is not None}
    keys.update((e.workspace_id, e.previous_id) for e in events if e.previous_id is not None)
    return keys


def lock_names(events: Iterable[IdentifyEvent]) -> list[str]:
    """Names the store turns into advisory locks before reading anything: every
    user and every anonymous id of the batch. Sorted, so that workers never
    wait on each other in a cycle."""
    names = set()
    for event in events:
        if event.user_id is not None:
            names.add(f"{event.workspace_id}\x1fu\x1f{event.user_id}")
        names.update(f"{event.workspace_id}\x1fa\x1f{a}" for a in event.anonymous_ids)
        if event.previous_id is not None:
            names.add(f"{event.workspace_id}\x1fu\x1f{event.previous_id}")
            names.add(f"{event.workspace_id}\x1fa\x1f{event.previous_id}")
    return sorted(names)


def rows_to_load(
    events: Sequence[IdentifyEvent],
    links: Mapping[AnonKey, uuid.UUID],
    aliases: Mapping[UserKey, uuid.UUID] | None = None,
) -> set[uuid.UUID]:
    """Every profile the batch may read or change, given the current links and aliases."""
    ids: set[uuid.UUID] = set()
    aliases = aliases or {}
    for event in events:
        ws = event.workspace_id
        if event.user_id is not None:
            ids.add(user_profile_id(ws, event.user_id))
            if aliases:
                aliased = aliases.get((ws, event.user_id))
                if aliased is not None:
                    ids.add(aliased)
        for anon in event.anonymous_ids:
            key = (ws, anon)
            ids.add(links.get(key) or anonymous_profile_id(ws, anon))
        if event.previous_id is not None:
            key = (ws, event.previous_id)
            ids.add(aliases.get(key) or user_profile_id(ws, event.previous_id))
            linked = links.get(key)
            if linked is not None:
                ids.add(linked)
    return ids


class _Planner:
    def __init__(
        self,
        links: Mapping[AnonKey, uuid.UUID],
        aliases: Mapping[UserKey, uuid.UUID],
        profiles: Mapping[uuid.UUID, StoredProfile],
        now_ms: int,
        max_traits_bytes: int,
        track: bool = False,
    ) -> None:
        self.links = dict(links)
        self.aliases = dict(aliases)
        self.rows = dict(profiles)
        for row in self.rows.values():  # this batch's sizing starts afresh, whoever made the row
            row.exact_bytes = row.traits_bytes
            row.unmeasured.clear()
            row.events.clear()
        self.now_ms = now_ms
        self.track = track
        self.max_traits_bytes = max_traits_bytes
        self.plan = BatchPlan()

    def _touch(self, row: StoredProfile) -> StoredProfile:
        row.updated_at_ms = self.now_ms
        self.plan.upserts[row.profile_id] = row
        return row

    def _row(self, profile_id: uuid.UUID, workspace_id: str, user_id: str | None) -> StoredProfile:
        row = self.rows.get(profile_id)
        if row is None:
            row = StoredProfile(profile_id, workspace_id, user_id, Profile(), self.now_ms)
            self.rows[profile_id] = row
        return row

    def _drop(self, profile_id: uuid.UUID) -> None:
        """Erase a profile with every id that resolves to it."""
        self.rows.pop(profile_id, None)  # the id may start a fresh profile later in the batch
        self.plan.upserts.pop(profile_id, None)
        self.plan.deletes.add(profile_id)
        for key in [k for k, v in self.links.items() if v == profile_id]:
            del self.links[key]
            self.plan.links.pop(key, None)
        for key in [k for k, v in self.aliases.items() if v == profile_id]:
            del self.aliases[key]
            self.plan.aliases.pop(key, None)
        for merged in [k for k, v in self.plan.moves.items() if v == profile_id]:
            del self.plan.moves[merged]  # their ids go with the erased profile

    def _merge_into(self, target: StoredProfile, other: StoredProfile) -> None:
        """Join ``other`` into ``target`` and delete it; every id linked or aliased to it
        now resolves to ``target``."""
        target.profile.absorb(other.profile)
        gone, into = other.profile_id, target.profile_id
        self.rows.pop(gone, None)
        self.plan.upserts.pop(gone, None)
        self.plan.deletes.add(gone)
        for key in [k for k, v in self.links.items() if v == gone]:
            self._link(key, into)
        for user in [k for k, v in self.aliases.items() if v == gone]:
            self._alias(user, into)
        self.plan.moves[gone] = into
        self.plan.absorbed.add(gone)
        merged = self.plan.merged.setdefault(into, [])
        merged.extend(self.plan.merged.pop(gone, ()))
        merged.append(gone)

    def _link(self, key: AnonKey, profile_id: uuid.UUID) -> None:
        self.links[key] = profile_id
        self.plan.links[key] = profile_id

    def _alias(self, key: UserKey, profile_id: uuid.UUID) -> None:
        self.aliases[key] = profile_id
        self.plan.aliases[key] = profile_id

    def _user_profile(self, workspace_id: str, user_id: str) -> uuid.UUID:
        """The profile a user id resolves to: its alias's, while that profile exists,
        else its own."""
        if self.aliases:
            aliased = self.aliases.get((workspace_id, user_id))
            if aliased is not None and aliased in self.rows:
                return aliased
        return user_profile_id(workspace_id, user_id)

    def erase(self, event: IdentifyEvent) -> None:
        if event.user_id is not None:
            self._erase(self._user_profile(event.workspace_id, event.user_id))
        for anon in event.anonymous_ids:
            self._erase(
                self.links.get((event.workspace_id, anon)) or anonymous_profile_id(event.workspace_id, anon)
            )

    def _erase(self, profile_id: uuid.UUID) -> None:
        self._drop(profile_id)
        self.plan.erased.add(profile_id)
        self.plan.merged.pop(profile_id, None)

    def _target_id(self, event: IdentifyEvent) -> uuid.UUID:
        """The user's profile; for anonymous events, the profile the first id is linked to."""
        ws = event.workspace_id
        if event.user_id is not None:
            return self._user_profile(ws, event.user_id)
        anon = event.anonymous_ids[0]
        return self.links.get((ws, anon)) or anonymous_profile_id(ws, anon)

    def _absorbable(self, event: IdentifyEvent, target: StoredProfile) -> list[StoredProfile]:
        rows: dict[uuid.UUID, StoredProfile] = {}
        for anon in event.anonymous_ids:
            linked = self.links.get((event.workspace_id, anon))
            other = None if linked is None or linked == target.profile_id else self.rows.get(linked)
            if other is not None and other.user_id is None:
                rows[other.profile_id] = other
        if event.previous_id is not None:
            for row in self._previous_rows(event.workspace_id, event.previous_id, target):
                rows[row.profile_id] = row
        return list(rows.values())

    def _previous_rows(self, ws: str, previous: str, target: StoredProfile) -> list[StoredProfile]:
        """The profiles an alias's previous id names: as a user id, and as an anonymous
        id unless it is linked to another identified user."""
        rows = []
        as_user = self.rows.get(self._user_profile(ws, previous))
        if as_user is not None and as_user is not target:
            rows.append(as_user)
        linked = self.links.get((ws, previous))
        as_anon = None if linked is None else self.rows.get(linked)
        if (
            as_anon is not None
            and as_anon is not target
            and as_anon is not as_user
            and as_anon.user_id is None
        ):
            rows.append(as_anon)
        return rows

    def _merge_previous(self, event: IdentifyEvent, previous: str, target: StoredProfile) -> None:
        """An alias's previous id: its profiles merge into ``target``, and it resolves
        to ``target`` from now on, as a user id and as an anonymous id."""
        ws = event.workspace_id
        for row in self._previous_rows(ws, previous, target):
            self._merge_into(target, row)
        if previous != event.user_id:
            self._alias((ws, previous), target.profile_id)
        linked = self.links.get((ws, previous))
        if linked is None:
            self._link((ws, previous), target.profile_id)
        elif linked != target.profile_id:
            self.plan.conflicts += 1  # another identified user's device id: left where it is

    def identify(self, event: IdentifyEvent) -> bool:
        """Apply one identify; False when it was refused for the size cap (nothing changed)."""
        ws = event.workspace_id
        target_id = self._target_id(event)
        existed = target_id in self.rows
        target = self._row(target_id, ws, event.user_id)
        if not self._fits(target, event):
            if not existed:
                del self.rows[target.profile_id]
            return False
        for anon in event.anonymous_ids:
            key = (ws, anon)
            linked = self.links.get(key)
            if linked == target.profile_id:
                continue
            if linked is None:
                self._link(key, target.profile_id)
                continue
            other = self.rows.get(linked)
            if other is not None and other.user_id is not None:
                self.plan.conflicts += 1
                continue
            if other is not None:
                self._merge_into(target, other)
            self._link(key, target.profile_id)
        if event.previous_id is not None:
            self._merge_previous(event, event.previous_id, target)
        target.profile.apply_event(event)
        self._touch(target)
        if self.track:
            target.events.append(event)
        return True

    # --- the size cap -------------------------------------------------------------

    @staticmethod
    def _exact(row: StoredProfile) -> int:
        """The exact bound of ``row``: what applying every event through ``growth_bound``
        would have made of it."""
        for event, replaced in row.unmeasured:
            row.exact_bytes += growth_bound(replaced, event)
        row.unmeasured.clear()
        return row.exact_bytes

    def _fits(self, target: StoredProfile, event: IdentifyEvent) -> bool:
        """Whether ``event`` keeps ``target`` (with the anonymous profiles it brings
        along) within the cap; if so, ``target``'s bounds now count it."""
        absorbed = self._absorbable(event, target) if event.anonymous_ids else []
        traits = target.profile.traits
        growth, replaced = loose_growth(traits, event)
        loose = target.traits_bytes + growth
        for row in absorbed:
            loose += row.traits_bytes
        if loose <= self.max_traits_bytes:
            target.unmeasured.append((event, replaced))
            for row in absorbed:
                target.exact_bytes += self._exact(row)
            target.traits_bytes = loose
            return True
        exact = self._exact(target) + growth_bound(traits, event) + sum(self._exact(row) for row in absorbed)
        if exact > self.max_traits_bytes:
            return False
        target.exact_bytes = target.traits_bytes = exact
        return True


_ERASE = Kind.ERASE
"""An enum member read from its class costs a descriptor call: read once, here."""


def plan_batch(
    events: Sequence[IdentifyEvent],
    links: Mapping[AnonKey, uuid.UUID],
    profiles: Mapping[uuid.UUID, StoredProfile],
    now_ms: int,
    max_traits_bytes: int = MAX_TRAITS_BYTES,
    aliases: Mapping[UserKey, uuid.UUID] | None = None,
    *,
    track: bool = False,
) -> BatchPlan:
    """Apply ``events`` in order to the loaded profiles; return every write to make.
    ``track``: keep on each written row the events applied to it (``StoredProfile.events``)."""
    planner = _Planner(links, aliases or {}, profiles, now_ms, max_traits_bytes, track)
    for index, event in enumerate(events):
        if event.kind is _ERASE:
            planner.erase(event)
        elif not planner.identify(event):
            planner.plan.rejected.append(index)
    return planner.plan
