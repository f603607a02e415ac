"""The worker's profile store in PostgreSQL: apply one batch in one transaction.

``ProfileStore`` implements the worker's ``ProfileWriter`` (its contract, in
``worker/interfaces.py``): blocks on the database; either everything in the batch
(profiles, identities, the partitions' next offsets) commits or nothing does. It
raises ``StoreRejected`` when the batch holds a record PostgreSQL refuses (a value it
cannot store, a constraint), and ``TransientError`` for anything a retry can fix
(connection lost, deadlock, serialization failure); retrying the same batch is always
safe, because records below a partition's committed next offset are skipped.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from operator import attrgetter
from typing import Any

import orjson
import psycopg
from psycopg.pq import TransactionStatus
from psycopg.types.json import set_json_loads

from traitstream.errors import StoreRejected, TransientError
from traitstream.events import IdentifyEvent
from traitstream.merge import Profile
from traitstream.store.outbox import record_changes
from traitstream.worker.changes import OutboxEntry, Snapshot, Touched, batch_changes
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

log = logging.getLogger(__name__)


_LOCK_OFFSETS = """
INSERT INTO applied_offsets (topic, partition, next_offset, topic_id)
SELECT %(topic)s, p, 0, %(topic_id)s FROM unnest(%(partitions)s::int[]) AS p
ON CONFLICT DO NOTHING
"""
_SELECT_OFFSETS = """
SELECT partition, next_offset FROM applied_offsets
WHERE topic = %(topic)s AND partition = ANY(%(partitions)s)
ORDER BY partition FOR UPDATE
"""
_FORGET_OTHER_TOPIC = """
DELETE FROM applied_offsets
WHERE topic = %(topic)s AND partition = ANY(%(partitions)s) AND topic_id <> %(topic_id)s
"""
# Only rows that lack the id are written: a worker stalled in a batch holds row locks
# on its offsets, and a new owner must still be able to read them and start.
_STAMP_TOPIC = """
UPDATE applied_offsets SET topic_id = %(topic_id)s
WHERE topic = %(topic)s AND partition = ANY(%(partitions)s) AND topic_id IS NULL
  AND %(topic_id)s::text IS NOT NULL
"""
_SELECT_ASSIGNED = """
SELECT partition, next_offset FROM applied_offsets
WHERE topic = %(topic)s AND partition = ANY(%(partitions)s)
"""
# The lists of a batch's names and ids go in binary (%b): psycopg escapes each element
# of a text-format array with a regular expression.
_ADVISORY = """
SELECT pg_advisory_xact_lock(k) FROM (
    SELECT DISTINCT hashtextextended(n, 0) AS k FROM unnest(%b::text[]) AS n ORDER BY k
) AS keys
"""
_SELECT_LINKS = """
SELECT i.workspace_id, i.anonymous_id, i.profile_id
FROM identities AS i
JOIN unnest(%s::text[], %s::text[]) AS k (w, a) ON i.workspace_id = k.w AND i.anonymous_id = k.a
"""
# Every user id of a batch, as one JSON document [[workspace, user id], …]: as for the
# upserts below, psycopg's dumping of two text[] of a batch's length cost more than
# the lookup itself.
_SELECT_ALIASES = """
SELECT u.workspace_id, u.user_id, u.profile_id
FROM user_aliases AS u
JOIN jsonb_array_elements(%s::jsonb) AS k ON u.workspace_id = k->>0 AND u.user_id = k->>1
"""
# The ids still linked or aliased to profiles a batch merges away, read before the
# deletes (which would cascade them away) and written again to the merged profile.
_SELECT_MOVED_LINKS = (
    "SELECT workspace_id, anonymous_id, profile_id FROM identities WHERE profile_id = ANY(%s)"
)
_SELECT_MOVED_ALIASES = (
    "SELECT workspace_id, user_id, profile_id FROM user_aliases WHERE profile_id = ANY(%s)"
)
_SELECT_PROFILES = """
SELECT profile_id, workspace_id, user_id, traits::text, coalesce(stamps, trait_meta, '{}')::text,
       (extract(epoch FROM created_at) * 1000)::bigint,
       (extract(epoch FROM updated_at) * 1000)::bigint
FROM profiles WHERE profile_id = ANY(%b) ORDER BY profile_id FOR UPDATE
"""
# The rows travel as one JSON document, [[id, workspace, user, traits, stamps, created
# ms, updated ms], …]: psycopg escapes every element of a text[] parameter with a
# regular expression, which cost more than the rest of a batch put together. The
# stamps are a string in it, the json text to store: parsed into jsonb, their numbers
# would cost PostgreSQL a numeric each (the column is json for the same reason).
_UPSERT_PROFILES = """
INSERT INTO profiles (profile_id, workspace_id, user_id, traits, stamps, trait_meta, created_at, updated_at)
SELECT (r->>0)::uuid, r->>1, r->>2, r->3, (r->>4)::json, NULL,
       to_timestamp((r->>5)::bigint / 1000.0), to_timestamp((r->>6)::bigint / 1000.0)
FROM jsonb_array_elements(%s::jsonb) AS r
ON CONFLICT (profile_id) DO UPDATE SET
    user_id = EXCLUDED.user_id, traits = EXCLUDED.traits, stamps = EXCLUDED.stamps,
    trait_meta = NULL, created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at
"""
_DELETE_PROFILES = "DELETE FROM profiles WHERE profile_id = ANY(%s)"
_UPSERT_LINKS = """
INSERT INTO identities (workspace_id, anonymous_id, profile_id)
SELECT * FROM unnest(%s::text[], %s::text[], %s::uuid[])
ON CONFLICT (workspace_id, anonymous_id) DO UPDATE SET profile_id = EXCLUDED.profile_id, linked_at = now()
"""
_UPSERT_ALIASES = """
INSERT INTO user_aliases (workspace_id, user_id, profile_id)
SELECT * FROM unnest(%s::text[], %s::text[], %s::uuid[])
ON CONFLICT (workspace_id, user_id) DO UPDATE SET profile_id = EXCLUDED.profile_id, aliased_at = now()
"""
_SAVE_OFFSETS = """
UPDATE applied_offsets AS o SET next_offset = n.next_offset
FROM unnest(%(partitions)s::int[], %(offsets)s::bigint[]) AS n (partition, next_offset)
WHERE o.topic = %(topic)s AND o.partition = n.partition AND n.next_offset > o.next_offset
"""


# The size PostgreSQL gives its shared lock table (lock.c: max_locks_per_transaction
# times every backend that may exist, prepared transactions included).
_LOCK_CAPACITY = """
SELECT current_setting('max_locks_per_transaction')::int * (
    current_setting('max_connections')::int + current_setting('max_prepared_transactions')::int
    + current_setting('autovacuum_max_workers')::int + 1
    + current_setting('max_worker_processes')::int + current_setting('max_wal_senders')::int
)
"""

_uuid_int = attrgetter("int")


def _lock_table_full(exc: psycopg.Error) -> bool:
    """SQLSTATE 53200 is also a server short of memory; the lock table's own error
    names the setting in its hint."""
    return isinstance(exc, psycopg.errors.OutOfMemory) and "max_locks_per_transaction" in (
        exc.diag.message_hint or ""
    )


def _connect(url: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(url, connect_timeout=5)
    set_json_loads(orjson.loads, conn)
    return conn


class ProfileStore(ProfileWriter):
    def __init__(self, url: str, topic: str, *, changes: bool = False) -> None:
        """``changes``: also record each batch's profile changes in the outbox
        (``store/outbox.py``), in the batch's transaction."""
        self._url = url
        self._topic = topic
        self._changes = changes
        self._conn: psycopg.Connection[Any] | None = None
        self._topic_id: str | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = _connect(self._url)
        return self._conn

    def lock_capacity(self) -> int:
        """About how many locks PostgreSQL's shared lock table holds (it sizes the table
        for this many; a little more fits)."""
        try:
            conn = self._connection()
            # In a transaction of its own: on a connection outside autocommit a bare
            # execute would open one that every later batch ran inside, as savepoints.
            with conn.transaction():
                row = conn.execute(_LOCK_CAPACITY).fetchone()
        except psycopg.Error as exc:
            self.close()
            raise TransientError(f"postgres: {exc}", source="postgres") from exc
        return int(row[0]) if row else 0

    def applied_offsets(self, partitions: Sequence[int], topic_id: str | None) -> dict[int, int]:
        """The next offset to apply for each of ``partitions`` that has one, and from now
        on the topic's identity for them. Offsets recorded under another ``topic_id`` (a
        topic deleted and created again) are forgotten: its offsets started over."""
        try:
            conn = self._connection()
            with conn.transaction():
                args = {"topic": self._topic, "partitions": list(partitions), "topic_id": topic_id}
                self._topic_id = topic_id
                forgotten = conn.execute(_FORGET_OTHER_TOPIC, args)
                if forgotten.rowcount:
                    log.warning(
                        "topic %s was created anew; %d partition offsets start over",
                        self._topic,
                        forgotten.rowcount,
                    )
                conn.execute(_STAMP_TOPIC, args)
                rows = conn.execute(_SELECT_ASSIGNED, args).fetchall()
        except psycopg.Error as exc:
            self.close()
            raise TransientError(f"postgres: {exc}", source="postgres") from exc
        return {int(p): int(o) for p, o in rows}

    def backend_pid(self) -> int:
        """The process id of this store's PostgreSQL session (connecting if needed)."""
        return int(self._connection().info.backend_pid)

    def apply(
        self,
        records: Sequence[Positioned],
        next_offsets: dict[int, int],
        on_rejected: RejectHandler = lambda _records: None,
    ) -> ApplyResult:
        """Apply ``records`` (in consumption order) and move each partition's next
        offset to ``next_offsets[partition]`` (which covers records skipped before
        this call: duplicates and dead letters). Records refused for the size cap
        go to ``on_rejected`` inside the transaction: if it raises, nothing commits."""
        try:
            conn = self._connection()
            if conn.info.transaction_status != TransactionStatus.IDLE:
                # A batch inside an open transaction would only release a savepoint:
                # nothing would commit, and its locks would pile up until the end.
                raise RuntimeError("the profile store's connection is inside a transaction")
            # One round trip for the offsets and the locks, one for the profiles, one
            # for the writes and the commit: each wait on the server costs a context
            # switch on both sides, and small batches are mostly waits.
            with conn.pipeline(), conn.transaction():
                return self._apply(conn, records, next_offsets, on_rejected)
        except (
            psycopg.OperationalError,
            psycopg.errors.DeadlockDetected,
            psycopg.errors.SerializationFailure,
            psycopg.InterfaceError,
        ) as exc:
            if _lock_table_full(exc):
                # Every worker's batch fills the shared lock table with one advisory
                # lock per user and anonymous id. The batch was rolled back and the
                # connection is fine; it succeeds once other transactions let go of
                # theirs, but the server needs a larger table.
                names = len(lock_names(r.event for r in records))
                raise TransientError(
                    f"postgres: {exc.diag.message_primary or exc} while taking this batch's {names} "
                    "advisory locks: PostgreSQL's lock table is full. It holds about "
                    "max_locks_per_transaction x max_connections locks and each worker takes one "
                    "per user and anonymous id of its batch: raise max_locks_per_transaction "
                    "(docs/operations.md, 'Scaling workers')",
                    source="postgres",
                ) from exc
            self.close()
            raise TransientError(f"postgres: {exc}", source="postgres") from exc
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            # The data, not the database: some record of the batch cannot be stored.
            raise StoreRejected(f"{type(exc).__name__}: {exc}") from exc

    def _apply(
        self,
        conn: psycopg.Connection[Any],
        records: Sequence[Positioned],
        next_offsets: dict[int, int],
        on_rejected: RejectHandler,
    ) -> ApplyResult:
        """In pipeline mode: statements go out at once, and reading a result waits for
        everything sent before it."""
        partitions = sorted(next_offsets)
        args = {"topic": self._topic, "partitions": partitions, "topic_id": self._topic_id}
        conn.execute(_LOCK_OFFSETS, args)
        offsets = conn.execute(_SELECT_OFFSETS, args)
        # Locks and links for every record, sent before the offsets say which records
        # are new: a record already applied only adds a lock and a link nobody reads.
        events = [r.event for r in records]
        if events:
            conn.execute(_ADVISORY, (lock_names(events),))
        keys = sorted(anon_keys(events))
        linked = conn.execute(_SELECT_LINKS, ([k[0] for k in keys], [k[1] for k in keys])) if keys else None
        users = user_keys(events)
        aliased = conn.execute(_SELECT_ALIASES, (orjson.dumps(list(users)).decode(),)) if users else None
        stored = {int(p): int(o) for p, o in offsets.fetchall()}
        todo = [r for r in records if r.offset >= stored.get(r.partition, 0)]
        fresh = [r.event for r in todo]
        plan = BatchPlan()
        changes: list[OutboxEntry] = []
        if fresh:
            links = {} if linked is None else {(w, a): p for w, a, p in linked.fetchall()}
            aliases = {} if aliased is None else {(w, u): p for w, u, p in aliased.fetchall()}
            plan, changes = self._plan(conn, fresh, links, aliases, self._changes)
        rejected = tuple(todo[i] for i in plan.rejected)
        if rejected:
            on_rejected(rejected)
        self._write(conn, plan)
        record_changes(conn, changes)
        conn.execute(_SAVE_OFFSETS, args | {"offsets": [next_offsets[p] for p in partitions]})
        refused = set(plan.rejected)
        applied = tuple(e for i, e in enumerate(fresh) if i not in refused)
        return ApplyResult(applied, len(records) - len(todo), plan.conflicts, rejected)

    @staticmethod
    def _plan(
        conn: psycopg.Connection[Any],
        fresh: list[IdentifyEvent],
        links: dict[AnonKey, uuid.UUID],
        aliases: dict[UserKey, uuid.UUID],
        changes: bool,
    ) -> tuple[BatchPlan, list[OutboxEntry]]:
        """Read and plan; every row the batch touches was locked (``_ADVISORY``) before.
        With ``changes``, also the batch's profile changes."""
        wanted = sorted(rows_to_load(fresh, links, aliases), key=_uuid_int)  # UUID's own < is Python code
        loaded = {
            row[0]: StoredProfile(
                row[0],
                row[1],
                row[2],
                Profile.from_text(row[3], row[4], row[5]),
                row[6],
                traits_bytes=len(row[3]) if row[3].isascii() else len(row[3].encode()),
            )
            for row in conn.execute(_SELECT_PROFILES, (wanted,)).fetchall()
        }
        now_ms = int(time.time() * 1000)
        if not changes:
            return plan_batch(fresh, links, loaded, now_ms, aliases=aliases), []
        # The planner changes the loaded traits in place; values themselves are never
        # changed in place, so a shallow copy keeps them as they were.
        before = {p: Snapshot(r.workspace_id, r.user_id, dict(r.profile.traits)) for p, r in loaded.items()}
        plan = plan_batch(fresh, links, loaded, now_ms, aliases=aliases, track=True)
        written = {
            p: Touched(r.workspace_id, r.user_id, r.profile, r.events) for p, r in plan.upserts.items()
        }
        entries = batch_changes(before, written, plan.erased, plan.absorbed, plan.merged, now_ms)
        return plan, entries

    @staticmethod
    def _write(conn: psycopg.Connection[Any], plan: BatchPlan) -> None:
        if plan.moves:
            _follow_moves(conn, plan)
        if plan.deletes:
            conn.execute(_DELETE_PROFILES, (sorted(plan.deletes),))
        if plan.upserts:
            dumps = orjson.dumps
            document = dumps(
                [
                    (
                        r.profile_id,
                        r.workspace_id,
                        r.user_id,
                        r.profile.traits,
                        r.profile.meta_text(),
                        r.profile.created_at_ms,
                        r.updated_at_ms,
                    )
                    for r in plan.upserts.values()
                ]
            )
            conn.execute(_UPSERT_PROFILES, (document.decode(),))
        if plan.links:
            keys = sorted(plan.links)
            conn.execute(
                _UPSERT_LINKS,
                ([k[0] for k in keys], [k[1] for k in keys], [plan.links[k] for k in keys]),
            )
        if plan.aliases:
            users = sorted(plan.aliases)
            conn.execute(
                _UPSERT_ALIASES,
                ([k[0] for k in users], [k[1] for k in users], [plan.aliases[k] for k in users]),
            )


def _follow_moves(conn: psycopg.Connection[Any], plan: BatchPlan) -> None:
    """Add to the plan the stored links and aliases of the profiles merged away that
    the plan does not set itself, pointing at the profile each finally merged into
    (when that one is written; an erased one takes them along)."""
    merged = sorted(plan.moves, key=_uuid_int)
    for workspace_id, anonymous_id, profile_id in conn.execute(_SELECT_MOVED_LINKS, (merged,)).fetchall():
        target = plan.final_owner(profile_id)
        if target is not None:
            plan.links.setdefault((workspace_id, anonymous_id), target)
    for workspace_id, user_id, profile_id in conn.execute(_SELECT_MOVED_ALIASES, (merged,)).fetchall():
        target = plan.final_owner(profile_id)
        if target is not None:
            plan.aliases.setdefault((workspace_id, user_id), target)
