"""Planning a batch: which rows a batch reads, and what it writes. Pure; no I/O.

The store locks and loads what ``rows_to_load`` names, ``plan_batch`` decides every
change, and the store writes the plan in the same transaction.

Anonymous ids: an event with only anonymous ids goes to the profile its first id
is linked to, or to that id's own anonymous profile. An event with a user id links
its anonymous ids to the user's profile; an id that already has an anonymous
profile brings that profile along (joined trait by trait, newer writes winning) and
the anonymous profile is deleted. An id linked to a different identified user is
left where it is and counted as a conflict: two people sharing a device must not
share a profile.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from traitstream.events import IdentifyEvent, Kind, anonymous_profile_id, user_profile_id
from traitstream.merge import Profile

AnonKey = tuple[str, str]
"""(workspace id, anonymous id)"""


@dataclass(slots=True)
class StoredProfile:
    profile_id: uuid.UUID
    workspace_id: str
    user_id: str | None
    profile: Profile
    updated_at_ms: int


@dataclass(slots=True)
class BatchPlan:
    upserts: dict[uuid.UUID, StoredProfile] = field(default_factory=dict)
    deletes: set[uuid.UUID] = field(default_factory=set)
    """Deleted before the upserts: an erased profile that is identified again starts fresh."""
    links: dict[AnonKey, uuid.UUID] = field(default_factory=dict)
    conflicts: int = 0


def anon_keys(events: Iterable[IdentifyEvent]) -> set[AnonKey]:
    return {(e.workspace_id, a) for e in events for a in e.anonymous_ids}


def lock_names(events: Iterable[IdentifyEvent]) -> list[str]:
    """Names the store turns into advisory locks before reading anything: every
    user and every anonymous id of the batch. Sorted, so that workers never
    wait on each other in a cycle."""
    names = set()
    for event in events:
        if event.user_id is not None:
            names.add(f"{event.workspace_id}\x1fu\x1f{event.user_id}")
        names.update(f"{event.workspace_id}\x1fa\x1f{a}" for a in event.anonymous_ids)
    return sorted(names)


def rows_to_load(events: Sequence[IdentifyEvent], links: Mapping[AnonKey, uuid.UUID]) -> set[uuid.UUID]:
    """Every profile the batch may read or change, given the current links."""
    ids: set[uuid.UUID] = set()
    for event in events:
        if event.user_id is not None:
            ids.add(user_profile_id(event.workspace_id, event.user_id))
        for anon in event.anonymous_ids:
            key = (event.workspace_id, anon)
            ids.add(links.get(key) or anonymous_profile_id(event.workspace_id, anon))
    return ids


class _Planner:
    def __init__(
        self,
        links: Mapping[AnonKey, uuid.UUID],
        profiles: Mapping[uuid.UUID, StoredProfile],
        now_ms: int,
    ) -> None:
        self.links = dict(links)
        self.rows = dict(profiles)
        self.now_ms = now_ms
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
        self.rows.pop(profile_id, None)
        self.plan.upserts.pop(profile_id, None)
        self.plan.deletes.add(profile_id)
        for key in [k for k, v in self.links.items() if v == profile_id]:
            del self.links[key]
            self.plan.links.pop(key, None)

    def _link(self, key: AnonKey, profile_id: uuid.UUID) -> None:
        self.links[key] = profile_id
        self.plan.links[key] = profile_id

    def erase(self, event: IdentifyEvent) -> None:
        if event.user_id is not None:
            self._drop(user_profile_id(event.workspace_id, event.user_id))
        for anon in event.anonymous_ids:
            self._drop(
                self.links.get((event.workspace_id, anon)) or anonymous_profile_id(event.workspace_id, anon)
            )

    def identify(self, event: IdentifyEvent) -> None:
        ws = event.workspace_id
        if event.user_id is None:
            key = (ws, event.anonymous_ids[0])
            target_id = self.links.get(key) or anonymous_profile_id(ws, key[1])
            target = self._row(target_id, ws, None)
        else:
            target = self._row(user_profile_id(ws, event.user_id), ws, event.user_id)
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
                target.profile.anonymous_ids.discard(anon)
                continue
            if other is not None:
                target.profile.absorb(other.profile)
                self._drop(linked)
            self._link(key, target.profile_id)
        target.profile.apply_event(event)
        # An id left with another user stays out of this profile's list.
        target.profile.anonymous_ids = {
            a for a in target.profile.anonymous_ids if self.links.get((ws, a)) == target.profile_id
        }
        self._touch(target)


def plan_batch(
    events: Sequence[IdentifyEvent],
    links: Mapping[AnonKey, uuid.UUID],
    profiles: Mapping[uuid.UUID, StoredProfile],
    now_ms: int,
) -> BatchPlan:
    """Apply ``events`` in order to the loaded profiles; return every write to make."""
    planner = _Planner(links, profiles, now_ms)
    for event in events:
        if event.kind is Kind.ERASE:
            planner.erase(event)
        else:
            planner.identify(event)
    return planner.plan
