"""The outbox of profile changes: written with the batch, read and emptied by the relay.

``record_changes`` runs inside the batch's transaction (``ProfileStore``): the change
records and the profiles' version counters commit with the profiles, or not at all.

``Outbox`` is the relay's side, on a connection of its own (autocommit). Contract:
every method blocks on the database and raises ``TransientError`` when it cannot be
reached (the connection is dropped, and with it the leases it held: ``held`` is then
empty). Leases are session advisory locks, one per shard, so at most one relay in
the whole deployment publishes a shard's rows, and a relay that dies loses its
leases with its session.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg

from traitstream.errors import TransientError
from traitstream.worker.changes import SHARDS, OutboxEntry
from traitstream.worker.relay import ChangeOutbox, Pending

LEASE_CLASS = 0x7472_6300
"""First key of the shards' two-key advisory locks (the batch's own locks use one key)."""

# Versions come from ``profile_versions`` under its row lock, taken after the batch's
# locks on the profiles: two batches that change one profile take their versions one
# after the other, and the second one's outbox rows get the larger ids. A batch writes
# one row per shard holding that shard's records as parallel arrays, in the order of
# the entries (``n``), so one profile's records are in version order within the row,
# its tombstone after its erase record. The columns travel as arrays in binary
# (psycopg escapes each element of a text-format array with a regular expression).
_RECORD = """
WITH e AS (
    SELECT * FROM unnest(%b::uuid[], %b::text[], %b::int[], %b::int[], %b::text[], %b::bytea[])
        WITH ORDINALITY AS d (profile_id, workspace_id, shard, step, kind, body, n)
), bumped AS (
    INSERT INTO profile_versions AS v (profile_id, version)
    SELECT profile_id, max(step) FROM e GROUP BY profile_id
    ON CONFLICT (profile_id) DO UPDATE SET version = v.version + EXCLUDED.version
    RETURNING profile_id, version
), numbered AS (
    SELECT e.n, e.shard, e.profile_id, e.workspace_id, e.kind, e.body,
           b.version - max(e.step) OVER (PARTITION BY e.profile_id) + e.step AS version
    FROM e JOIN bumped AS b USING (profile_id)
)
INSERT INTO change_outbox (shard, profile_ids, workspace_ids, versions, kinds, bodies)
SELECT shard, array_agg(profile_id ORDER BY n), array_agg(workspace_id ORDER BY n),
       array_agg(version ORDER BY n), array_agg(kind ORDER BY n), array_agg(body ORDER BY n)
FROM numbered GROUP BY shard
"""


def record_changes(conn: psycopg.Connection[Any], entries: Sequence[OutboxEntry]) -> None:
    """Inside the batch's transaction (pipeline mode: nothing is waited for)."""
    if entries:
        conn.execute(
            _RECORD,
            (
                [e.profile_id for e in entries],
                [e.workspace_id for e in entries],
                [e.profile_id.int % SHARDS for e in entries],
                [e.step for e in entries],
                [e.kind for e in entries],
                [e.body for e in entries],
            ),
        )


_TAKE = "SELECT s FROM unnest(%s::int[]) AS s WHERE pg_try_advisory_lock(%s, s)"
_RELEASE = "SELECT pg_advisory_unlock(%s, s) FROM unnest(%s::int[]) AS s"
_PENDING = """
SELECT id, profile_ids, workspace_ids, versions, kinds, bodies FROM change_outbox
WHERE shard = ANY(%s) ORDER BY id LIMIT %s
"""
_DELETE = "DELETE FROM change_outbox WHERE id = ANY(%s)"
_BACKLOG = """
SELECT coalesce(sum(cardinality(versions)), 0),
       coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8
FROM change_outbox WHERE shard = ANY(%s)
"""


class Outbox(ChangeOutbox):
    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: psycopg.Connection[Any] | None = None
        self.held: set[int] = set()
        """The shards whose lease this session holds."""

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self.held.clear()  # a new session holds nothing
            self._conn = psycopg.connect(self._url, autocommit=True, connect_timeout=5)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self.held.clear()

    def _run(self, query: str, args: Sequence[Any], *, binary: bool = False) -> list[tuple[Any, ...]]:
        try:
            cursor = self._connection().execute(query, args, binary=binary)
            return cursor.fetchall() if cursor.description is not None else []
        except psycopg.Error as exc:
            self.close()
            raise TransientError(f"postgres (change outbox): {exc}", source="postgres") from exc

    def lease(self, wanted: Iterable[int]) -> set[int]:
        """Hold the leases of ``wanted`` shards and no others; returns those held. A
        shard another relay holds is left to it (asked for again next time)."""
        want = set(wanted)
        letting_go = sorted(self.held - want)
        if letting_go:
            self._run(_RELEASE, (LEASE_CLASS, letting_go))
            self.held -= set(letting_go)
        missing = sorted(want - self.held)
        if missing:
            self.held |= {int(s) for (s,) in self._run(_TAKE, (missing, LEASE_CLASS))}
        return set(self.held)

    def pending(self, limit: int) -> list[Pending]:
        """The records of the oldest ``limit`` rows of the held shards, in the order
        they must be published; a row's records share its id."""
        if not self.held:
            return []
        # In binary: the bodies arrive as they are stored, not as hex text to decode.
        rows = self._run(_PENDING, (sorted(self.held), limit), binary=True)
        return [
            Pending(row_id, *record) for row_id, *columns in rows for record in zip(*columns, strict=True)
        ]

    def delete(self, ids: Sequence[int]) -> None:
        if ids:
            self._run(_DELETE, (sorted(set(ids)),))

    def backlog(self) -> tuple[int, float]:
        """Records waiting in the held shards, and the age in seconds of the oldest."""
        if not self.held:
            return 0, 0.0
        rows = self._run(_BACKLOG, (sorted(self.held),))
        return int(rows[0][0]), float(rows[0][1])
