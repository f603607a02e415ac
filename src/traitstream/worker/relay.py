"""The relay: from the change outbox to the profile changes topic, in order, at least once.

Each worker runs one relay, on a thread of its own, so that publishing never holds
up the batches. Which outbox rows a relay publishes: the rows of the shards
(``profile_id`` modulo ``SHARDS``) that map to the identify partitions its worker
owns (shard ``s`` goes with partition ``s`` modulo the partition count), and only
while it holds the shard's lease, a PostgreSQL session advisory lock. Ownership
spreads the work over the workers; the lease alone makes it safe: two relays never
publish one shard at the same time, across rebalances, frozen workers and crashes
(a dead relay's session, and its leases, end with it).

An outbox row holds one batch's records of one shard, in the order the batch made
them. One round: take the leases, read the oldest rows of the held shards in
outbox order (which, record by record, is version order per profile), produce
their records with the idempotent producer (``acks=all``; order kept per
partition, and every record of a profile goes to one partition by its key), wait
for the acknowledgements, and delete the rows all of whose records were
acknowledged, up to the first row with one that was not (a round whose flush times
out deletes nothing). What was not acknowledged is published again next round,
from the same stored payload: the same content, maybe twice, never different
(consumers dedupe by ``(profile_id, version)``). Between rounds the relay waits a
little (``gather_s``) so that the records of several batches share a produce
request.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any, NamedTuple, Protocol

from confluent_kafka import KafkaError, KafkaException

from traitstream.avro import changes as change_codec
from traitstream.errors import TransientError
from traitstream.kafka_producer import RenewableProducer
from traitstream.metrics import WorkerMetrics
from traitstream.worker.changes import SHARDS

log = logging.getLogger(__name__)

_BACKOFF_MAX_S = 10.0
_BACKLOG_EVERY_S = 2.0


class Pending(NamedTuple):
    """A change record waiting in the outbox to be published."""

    id: int
    """Its outbox row's: a row holds one batch's records of one shard."""
    profile_id: uuid.UUID
    workspace_id: str
    version: int
    kind: str
    body: bytes | None
    """The record but its version (``avro.changes.body``); None for a tombstone."""

    @property
    def key(self) -> bytes:
        return f"{self.workspace_id}:{self.profile_id}".encode()


class ChangeOutbox(Protocol):
    """The relay's side of the outbox (``store/outbox.py``). Every method blocks on
    the database and raises ``TransientError`` when it cannot be reached, which also
    ends the leases held (``held`` is then empty); each is safe to call again."""

    held: set[int]
    """The shards whose lease this outbox's session holds."""

    def lease(self, wanted: Iterable[int]) -> set[int]:
        """Hold the leases of ``wanted`` shards and no others; those held. A shard
        another relay holds is left to it."""
        ...

    def pending(self, limit: int) -> list[Pending]:
        """The records of the oldest ``limit`` rows of the held shards, in the order
        they must be published."""
        ...

    def delete(self, ids: Sequence[int]) -> None:
        """Delete these outbox rows (a row's id may be repeated)."""
        ...

    def backlog(self) -> tuple[int, float]:
        """Records waiting in the held shards, and the age in seconds of the oldest."""
        ...

    def close(self) -> None:
        """Let go of the connection, and with it every lease."""
        ...


class Relay(Protocol):
    """What the worker's loop tells its relay. Never blocks on I/O."""

    def start(self) -> None: ...
    def assigned(self, partitions: Iterable[int]) -> None: ...
    def revoked(self, partitions: Iterable[int]) -> None: ...
    def wake(self) -> None: ...
    def stop(self) -> None:
        """Finish the round under way, then let go (blocks, briefly)."""
        ...


def shards_of(partitions: Iterable[int], partition_count: int) -> set[int]:
    """The outbox shards that go with these identify partitions."""
    owned = set(partitions)
    if partition_count <= 0:
        return set()
    return {s for s in range(SHARDS) if s % partition_count in owned}


class ChangeRelay:
    def __init__(
        self,
        outbox: ChangeOutbox,
        producer: RenewableProducer,
        topic: str,
        identify_topic: str,
        schemas: change_codec.ChangeSchemaSource,
        metrics: WorkerMetrics,
        *,
        every_s: float = 0.2,
        gather_s: float = 1.0,
        rows_per_round: int = 500,
        flush_timeout_s: float = 30.0,
    ) -> None:
        self._outbox = outbox
        self._producer = producer
        self._topic = topic
        self._identify_topic = identify_topic
        self._schemas = schemas
        self._metrics = metrics
        self._every_s = every_s
        self._gather_s = gather_s
        self._rows_per_round = rows_per_round
        self._flush_timeout_s = flush_timeout_s
        self._lock = threading.Lock()
        self._owned: set[int] = set()
        self._partition_count = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_backlog = 0.0

    # --- what the worker tells it ----------------------------------------------------

    def assigned(self, partitions: Iterable[int]) -> None:
        with self._lock:
            self._owned |= set(partitions)
            self._partition_count = 0  # asked again: the topic may have grown
        self._wake.set()

    def revoked(self, partitions: Iterable[int]) -> None:
        with self._lock:
            self._owned -= set(partitions)
        self._wake.set()

    def wake(self) -> None:
        """A batch committed: there may be new rows."""
        self._wake.set()

    # --- the thread --------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="change-relay", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Finish the round under way (its acknowledged rows are deleted), then let go."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                # Still in a round (a database or broker that does not answer): its
                # connection and producer stay its own; the process is ending anyway.
                log.warning("change relay: the round under way did not finish in %.0fs", timeout_s)
                return
        self._producer.flush(min(timeout_s, 5.0))
        self._outbox.close()

    def _run(self) -> None:
        delay = 0.1
        while not self._stop.is_set():
            self._wake.wait(self._every_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                while self.relay_once() >= self._rows_per_round and not self._stop.is_set():
                    pass  # a full round: more are waiting
                delay = 0.1
                # Let the rows of several batches gather before the next round: the
                # broker's cost is mostly per produce request and per partition batch,
                # not per record, and nobody waits on a round (the batches commit
                # without it). Under load a round then carries hundreds of records.
                self._stop.wait(self._gather_s)
            except TransientError as exc:
                self._metrics.store_errors.labels(exc.source).inc()
                log.warning("change relay: transient failure, retrying in %.1fs: %s", delay, exc)
                self._stop.wait(delay)
                delay = min(delay * 2, _BACKOFF_MAX_S)
            except Exception:  # the relay must outlive anything one round meets
                log.exception("change relay: a round failed; retrying in %.1fs", delay)
                self._stop.wait(delay)
                delay = min(delay * 2, _BACKOFF_MAX_S)

    # --- one round ---------------------------------------------------------------------

    def _wanted(self) -> set[int]:
        with self._lock:
            owned, count = set(self._owned), self._partition_count
        if not owned:
            return set()
        if count <= 0:
            count = self._count_partitions()
            with self._lock:
                self._partition_count = count
        return shards_of(owned, count)

    def _count_partitions(self) -> int:
        try:
            metadata = self._producer.list_topics(self._identify_topic, timeout=5.0)
        except KafkaException as exc:
            raise TransientError(f"describing topic {self._identify_topic}: {exc}", source="kafka") from exc
        topic = metadata.topics.get(self._identify_topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise TransientError(f"topic {self._identify_topic} has no partitions yet", source="kafka")
        return len(topic.partitions)

    def relay_once(self) -> int:
        """One round; returns how many outbox rows it read (and tried to publish)."""
        if self._producer.flush(self._flush_timeout_s):
            # A round whose flush timed out left records in flight. Until they are
            # settled no lease may change hands: a new owner would publish those
            # versions again, and the late copies could land after its later ones.
            raise TransientError(f"records for {self._topic} still unacknowledged", source="kafka")
        self._outbox.lease(self._wanted())
        self._metrics.changes_relay_shards.set(len(self._outbox.held))
        rows = self._outbox.pending(self._rows_per_round)
        if rows:
            self._publish(rows)
        # On a timer only: the count reads every waiting row, and under load rounds
        # follow one another with thousands waiting.
        now = time.monotonic()
        if now - self._last_backlog >= _BACKLOG_EVERY_S:
            self._last_backlog = now
            count, age = self._outbox.backlog()
            self._metrics.changes_outbox_backlog.set(count)
            self._metrics.changes_relay_lag_seconds.set(age)
        return len({row.id for row in rows})

    def _publish(self, rows: list[Pending]) -> None:
        schema_id = self._schemas.writer_id
        failed: list[int] = []
        with_version = change_codec.with_version
        for row in rows:
            value = None if row.body is None else with_version(row.body, row.version, schema_id)
            self._produce(row, value, partial(_failed, failed, row.id))
        left = self._producer.flush(self._flush_timeout_s)
        # The producer calls back only for records that failed; once flush has nothing
        # left, every other record was acknowledged. Everything from the first row not
        # acknowledged on is published again next round, so that no profile's later
        # version is deleted ahead of an earlier one.
        if left:
            cutoff: int | None = rows[0].id  # which ones are still waiting is unknown
        else:
            cutoff = min(failed) if failed else None
        done = [row for row in rows if cutoff is None or row.id < cutoff]
        self._outbox.delete([row.id for row in done])
        for kind, count in Counter(row.kind for row in done).items():
            self._metrics.changes_published.labels(kind).inc(count)
        if len(done) < len(rows):
            log.warning(
                "change relay: %d of %d records not acknowledged; publishing them again",
                len(rows) - len(done),
                len(rows),
            )

    def _produce(self, row: Pending, value: bytes | None, report: Any) -> None:
        while True:
            try:
                self._producer.produce(self._topic, value, row.key, report)
                return
            except BufferError:
                self._producer.poll(0.1)  # the local queue is full: let it drain
            except KafkaException as exc:
                raise TransientError(f"producing to {self._topic}: {exc}", source="kafka") from exc


def _failed(failed: list[int], row_id: int, error: KafkaError | None, _message: Any) -> None:
    if error is not None:
        failed.append(row_id)
