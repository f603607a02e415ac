"""``ProfileWriter`` in memory: ``store.profiles.ProfileStore``'s transaction over dicts.

Each ``apply`` does what the PostgreSQL one does, in the same order and with the
same planner (``worker/plan.py``): make the batch's partitions' offset rows, refuse
ids PostgreSQL cannot hold, skip the records below each partition's next offset,
load the profiles and links the fresh records touch, plan, hand the size-capped
records to ``on_rejected``, write, and move the offsets up. The tables change only
at the end, so a batch that raises changes nothing.

Profiles are kept as the text PostgreSQL returns (traits as ``jsonb`` prints them,
stamps as stored) and parsed again by the next batch, so a batch sees what it would
see after a round trip through the database, sizes for the cap included.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from traitstream.errors import StoreRejected
from traitstream.events import JSON
from traitstream.merge import Profile
from traitstream.worker.interfaces import ProfileWriter
from traitstream.worker.plan import (
    AnonKey,
    BatchPlan,
    StoredProfile,
    UserKey,
    anon_keys,
    lock_names,
    plan_batch,
    rows_to_load,
    user_keys,
)
from traitstream.worker.records import ApplyResult, Positioned, RejectHandler

# PostgreSQL's default lock table: max_locks_per_transaction (64) times the sessions
# that may exist with the default settings (100 + 3 + 1 + 8 + 10).
DEFAULT_LOCK_CAPACITY = 64 * 122


@dataclass(frozen=True, slots=True)
class _Row:
    workspace_id: str
    user_id: str | None
    traits: str
    stamps: str
    created_at_ms: int | None
    updated_at_ms: int


@dataclass(frozen=True, slots=True)
class _Offset:
    next_offset: int
    topic_id: str | None


def _nothing(_records: Sequence[Positioned]) -> None:
    pass


class InMemoryProfileStore(ProfileWriter):
    """One database's profiles, identities and applied offsets for ``topic``.

    ``traits_check`` stands for a CHECK constraint on the stored traits: a batch
    that would store traits it refuses raises ``StoreRejected``, as one holding a
    NUL character does. ``fail_next`` makes the next ``apply`` raise, before its
    commit or after it (an answer lost on the way back)."""

    def __init__(
        self,
        topic: str,
        *,
        clock: Callable[[], float] = time.time,
        lock_capacity: int = DEFAULT_LOCK_CAPACITY,
        traits_check: Callable[[Mapping[str, JSON]], bool] | None = None,
    ) -> None:
        self._topic = topic
        self._clock = clock
        self._lock_capacity = lock_capacity
        self._traits_check = traits_check
        self._topic_id: str | None = None
        self._offsets: dict[int, _Offset] = {}
        self._profiles: dict[uuid.UUID, _Row] = {}
        self._links: dict[AnonKey, uuid.UUID] = {}
        self._aliases: dict[UserKey, uuid.UUID] = {}
        self._failure: tuple[Exception, bool] | None = None

    def lock_capacity(self) -> int:
        return self._lock_capacity

    def applied_offsets(self, partitions: Sequence[int], topic_id: str | None) -> dict[int, int]:
        self._topic_id = topic_id
        answer = {}
        for partition in partitions:
            row = self._offsets.get(partition)
            if row is None:
                continue
            if topic_id is not None and row.topic_id is not None and row.topic_id != topic_id:
                del self._offsets[partition]  # another incarnation of the topic
                continue
            if row.topic_id is None and topic_id is not None:
                row = self._offsets[partition] = _Offset(row.next_offset, topic_id)
            answer[partition] = row.next_offset
        return answer

    def apply(
        self,
        records: Sequence[Positioned],
        next_offsets: dict[int, int],
        on_rejected: RejectHandler = _nothing,
    ) -> ApplyResult:
        failure, self._failure = self._failure, None
        if failure is not None and not failure[1]:
            raise failure[0]
        partitions = sorted(next_offsets)
        offsets = {p: self._offsets.get(p, _Offset(0, self._topic_id)) for p in partitions}
        events = [r.event for r in records]
        if any("\x00" in name for name in lock_names(events)):
            raise StoreRejected("DataError: PostgreSQL text fields cannot contain NUL (0x00) bytes")
        todo = [r for r in records if r.offset >= offsets.get(r.partition, _Offset(0, None)).next_offset]
        fresh = [r.event for r in todo]
        plan = BatchPlan()
        if fresh:
            keys, users = anon_keys(events), user_keys(events)
            links = {k: p for k, p in self._links.items() if k in keys}
            aliases = {k: p for k, p in self._aliases.items() if k in users}
            wanted = rows_to_load(fresh, links, aliases)
            loaded = {pid: self._load(pid) for pid in wanted if pid in self._profiles}
            plan = plan_batch(fresh, links, loaded, int(self._clock() * 1000), aliases=aliases)
        rejected = tuple(todo[i] for i in plan.rejected)
        if rejected:
            on_rejected(rejected)
        written = {pid: self._row(stored) for pid, stored in plan.upserts.items()}
        # Commit.
        self._follow_moves(plan)
        for pid in plan.deletes:
            self._profiles.pop(pid, None)
            # The foreign keys' cascade.
            self._links = {k: v for k, v in self._links.items() if v != pid}
            self._aliases = {k: v for k, v in self._aliases.items() if v != pid}
        self._profiles.update(written)
        self._links.update(plan.links)
        self._aliases.update(plan.aliases)
        for p in partitions:
            row = offsets[p]
            self._offsets[p] = _Offset(max(row.next_offset, next_offsets[p]), row.topic_id)
        if failure is not None:
            raise failure[0]
        refused = set(plan.rejected)
        applied = tuple(e for i, e in enumerate(fresh) if i not in refused)
        return ApplyResult(applied, len(records) - len(todo), plan.conflicts, rejected)

    def close(self) -> None:
        pass

    def _follow_moves(self, plan: BatchPlan) -> None:
        """``store.profiles._follow_moves``: the stored links and aliases of the profiles
        merged away follow them, unless the plan sets them itself."""

        for table, planned in ((self._links, plan.links), (self._aliases, plan.aliases)):
            for key, profile_id in table.items():
                target = plan.final_owner(profile_id) if profile_id in plan.moves else None
                if target is not None:
                    planned.setdefault(key, target)

    def fail_next(self, error: Exception, *, after_commit: bool = False) -> None:
        self._failure = (error, after_commit)

    # --- reading, for tests ---------------------------------------------------------

    def traits(self, profile_id: uuid.UUID) -> dict[str, JSON] | None:
        row = self._profiles.get(profile_id)
        return None if row is None else dict(json.loads(row.traits))

    def linked_profile(self, workspace_id: str, anonymous_id: str) -> uuid.UUID | None:
        return self._links.get((workspace_id, anonymous_id))

    # --- rows -----------------------------------------------------------------------

    def _load(self, profile_id: uuid.UUID) -> StoredProfile:
        row = self._profiles[profile_id]
        return StoredProfile(
            profile_id,
            row.workspace_id,
            row.user_id,
            Profile.from_text(row.traits, row.stamps, row.created_at_ms),
            row.updated_at_ms,
            traits_bytes=len(row.traits.encode()),
        )

    def _row(self, stored: StoredProfile) -> _Row:
        profile = stored.profile
        if _holds_nul((stored.workspace_id, stored.user_id, profile.traits, profile.meta())):
            raise StoreRejected("DataError: unsupported Unicode escape sequence (\\u0000 in a jsonb value)")
        if self._traits_check is not None and not self._traits_check(profile.traits):
            raise StoreRejected("CheckViolation: the profile's traits fail a check constraint")
        return _Row(
            stored.workspace_id,
            stored.user_id,
            _jsonb_text(profile.traits),
            profile.meta_text(),
            profile.created_at_ms,
            stored.updated_at_ms,
        )


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_holds_nul(v) for v in value)
    return False


def _jsonb_text(value: JSON) -> str:
    """``value`` as PostgreSQL prints a ``jsonb``: keys ordered shortest first, then
    bytewise, and a space after each ``,`` and ``:``."""
    return json.dumps(_jsonb_order(value), ensure_ascii=False)


def _jsonb_order(value: JSON) -> JSON:
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: (len(k.encode()), k.encode()))
        return {k: _jsonb_order(value[k]) for k in keys}
    if isinstance(value, list):
        return [_jsonb_order(v) for v in value]
    return value
