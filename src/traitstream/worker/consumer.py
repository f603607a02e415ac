"""The worker loop: poll a batch, decode, dedupe, apply, commit.

``HTTP body → … → Kafka → decode (batch.split) → dedupe (dedupe.RedisDeduper)
→ merge (plan + store.ProfileStore) → Postgres → commit offsets``.

Offsets are committed to Kafka only after PostgreSQL committed the batch (and
PostgreSQL holds each partition's next offset too, so a commit lost in a crash
costs a re-read, never a double apply). Transient failures retry the same batch
with backoff; nothing transient is ever dead-lettered. A record the store refuses
outright is found, dead-lettered and passed over (``_apply_one_by_one``) rather than
stalling its partition.
"""

from __future__ import annotations

import gc
import heapq
import logging
import random
import signal
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient

from traitstream.avro.schemas import SchemaSource
from traitstream.errors import StoreRejected, TransientError
from traitstream.events import IdentifyEvent
from traitstream.metrics import WorkerMetrics, observe_many
from traitstream.processes import StopFlag
from traitstream.runtime import collector_paused, warn_if_not_compiled
from traitstream.store.profiles import ApplyResult, Positioned, ProfileStore, RejectHandler
from traitstream.worker.batch import DeadLetter, Split, next_offsets, split
from traitstream.worker.dedupe import Deduper, claim_key
from traitstream.worker.dlq import DeadLetters
from traitstream.worker.plan import MAX_TRAITS_BYTES

log = logging.getLogger(__name__)
T = TypeVar("T")

_BACKOFF_MAX_S = 10.0
_REFUSALS_BEFORE_BLAMING_THE_STORE = 20
_LAG_EVERY_S = 5.0
_PROBE_TIMEOUT_S = 1.0


def incremental(group_protocol: str) -> bool:
    """Whether ``group_protocol`` assigns and revokes partitions incrementally."""
    return group_protocol != "eager"


def consumer_config(
    bootstrap: str, group_id: str, session_timeout_ms: int, group_protocol: str = "consumer"
) -> dict[str, Any]:
    """The worker's consumer.

    ``group_protocol``: ``consumer`` is KIP-848's, where the broker computes the
    assignment and sets the session timeout and heartbeat (so the client may not);
    ``cooperative-sticky`` and ``eager`` are the classic protocol's assignors, with
    ``session_timeout_ms``. Whatever the protocol, exactly-once rests on the offsets
    PostgreSQL holds, not on the group: see ``Worker._on_assign``."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "max.poll.interval.ms": 600_000,
        # Wait for a worthwhile amount of data per fetch rather than asking again as
        # soon as one record arrives: fetch requests are a large part of the broker's
        # cost per identify when the workers keep up. Below that amount the broker
        # answers after 50 ms, which bounds the latency this adds.
        "fetch.min.bytes": 64 * 1024,
        "fetch.wait.max.ms": 50,
    }
    if group_protocol == "consumer":
        config["group.protocol"] = "consumer"
    else:
        config["partition.assignment.strategy"] = (
            "cooperative-sticky" if group_protocol == "cooperative-sticky" else "roundrobin"
        )
        config["session.timeout.ms"] = session_timeout_ms
        config["heartbeat.interval.ms"] = max(500, session_timeout_ms // 5)
    return config


class Worker:
    def __init__(
        self,
        consumer: Consumer,
        admin: AdminClient,
        topic: str,
        schemas: SchemaSource,
        deduper: Deduper,
        store: ProfileStore,
        dead_letters: DeadLetters,
        metrics: WorkerMetrics,
        *,
        batch_size: int = 2000,
        batch_wait_s: float = 0.05,
        incremental: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``incremental``: the group hands partitions over one by one (the
        ``consumer`` and ``cooperative-sticky`` protocols) rather than all at once."""
        self._consumer = consumer
        self._admin = admin
        self._topic = topic
        self._schemas = schemas
        self._deduper = deduper
        self._store = store
        self._dlq = dead_letters
        self._metrics = metrics
        self._batch_size = batch_size
        self._batch_wait_s = batch_wait_s
        self._incremental = incremental
        self._clock = clock
        self._stop = StopFlag()
        self._last_lag = 0.0
        self._lag_partitions: set[int] = set()

    # --- lifecycle ----------------------------------------------------------------

    def stop(self, *_: object) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(self) -> None:
        self._consumer.subscribe([self._topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info("worker started", extra={"topic": self._topic})
        warn_if_not_compiled()
        try:
            self._check_lock_table()
            while not self._stop.is_set():
                with collector_paused():  # the batch's objects live until it commits
                    messages = self._consumer.consume(self._batch_size, self._batch_wait_s)
                    good = [m for m in messages if self._usable(m)]
                    if good:
                        self._process(good)
                    del messages, good
                self._report_lag()
        except _Abandoned:
            log.info("stopped during retries; the batch stays uncommitted and will be redelivered")
        finally:
            log.info("worker stopping")
            self._consumer.close()
            self._dlq.close()
            self._store.close()

    def _check_lock_table(self) -> None:
        """Say how many workers' batches PostgreSQL's lock table fits at once: a batch
        takes an advisory lock per user and anonymous id (two per identify for most
        SDKs' traffic), and a full table fails every batch that asks for more. A table
        too small for even one batch would fail it forever: the batch size comes down
        so that a batch takes at most half the table."""
        try:
            capacity = self._store.lock_capacity()
        except TransientError as exc:
            log.warning("could not read PostgreSQL's lock table size: %s", exc)
            return
        per_batch = 2 * self._batch_size
        fits = capacity // per_batch
        extra = {"lock_table": capacity, "locks_per_batch": per_batch, "workers_that_fit": fits}
        if fits < 1:
            self._batch_size = max(1, capacity // 4)
            log.warning(
                "PostgreSQL's lock table (about %d locks) is smaller than one batch may need (%d): "
                "batches are now of at most %d records; raise max_locks_per_transaction",
                capacity,
                per_batch,
                self._batch_size,
                extra=extra,
            )
        else:
            log.info(
                "PostgreSQL's lock table fits the batches of about %d worker(s) at once; "
                "raise max_locks_per_transaction to run more",
                fits,
                extra=extra,
            )

    def _usable(self, message: Any) -> bool:
        error = message.error()
        if error is None:
            return True
        if error.code() != KafkaError._PARTITION_EOF:
            # The broker unreachable, a partition leader moving: librdkafka retries by
            # itself; counting them makes an outage visible beside Redis and Postgres.
            self._metrics.store_errors.labels("kafka").inc()
            log.warning("consumer error: %s", error.str())
        return False

    # --- rebalancing --------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._metrics.rebalances.labels("assigned").inc(len(partitions))
        topic_id = self._retry(self._topic_id)
        stored = self._retry(lambda: self._store.applied_offsets([p.partition for p in partitions], topic_id))
        for tp in partitions:
            if tp.partition in stored:
                tp.offset = stored[tp.partition]
        # Each partition starts where PostgreSQL says it was applied to, not where the
        # group last committed: a revoked owner's batch that commits late moves the
        # stored offset, and the store skips what lies below it (exactly once).
        if self._incremental:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)
        log.info("partitions assigned", extra={"partitions": sorted(p.partition for p in partitions)})

    def _topic_id(self) -> str | None:
        """The broker's id of the topic (None when the broker has none to give)."""
        try:
            futures = self._admin.describe_topics(TopicCollection([self._topic]), request_timeout=10)
            return str(futures[self._topic].result().topic_id) or None
        except KafkaException as exc:
            raise TransientError(f"describing topic {self._topic}: {exc}", source="kafka") from exc

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._metrics.rebalances.labels("revoked").inc(len(partitions))
        for tp in partitions:
            if tp.partition in self._lag_partitions:
                self._metrics.consumer_lag.remove(str(tp.partition))
                self._lag_partitions.discard(tp.partition)
        if self._incremental:
            consumer.incremental_unassign(partitions)
        else:
            consumer.unassign()
        log.info("partitions revoked", extra={"partitions": sorted(p.partition for p in partitions)})

    # --- one batch ----------------------------------------------------------------

    def _process(self, messages: Sequence[Any]) -> None:
        started = time.perf_counter()
        work = self._retry(lambda: split(messages, self._schemas))
        if work.dead:
            self._retry(lambda: self._dlq.send(work.dead))
        fresh_flags = self._retry(lambda: self._deduper.first_seen(self._topic, work.records))
        fresh = [r for r, first in zip(work.records, fresh_flags, strict=True) if first]
        offsets = next_offsets(messages)

        def dead_letter_oversized(records: Sequence[Positioned]) -> None:
            by_position = {
                (r.partition, r.offset): m for r, m in zip(work.records, work.messages, strict=True)
            }
            self._dlq.send(
                [
                    DeadLetter(
                        by_position[(r.partition, r.offset)],
                        "profile_too_large",
                        f"applying it could grow the profile's traits past {MAX_TRAITS_BYTES} bytes",
                    )
                    for r in records
                ]
            )
            self._deduper.release(records)

        try:
            result = self._retry(lambda: self._store.apply(fresh, offsets, dead_letter_oversized))
            refused: list[DeadLetter] = []
            heirs = 0
        except StoreRejected:
            # Not transient, so retrying the batch would fail forever and stall its
            # partitions (a crash loop): find the records the store refuses instead.
            log.exception("the store refused the batch; applying its records one by one")
            result, refused, heirs = self._apply_one_by_one(work, fresh, offsets, dead_letter_oversized)
        self._consumer.commit(
            offsets=[TopicPartition(self._topic, p, o) for p, o in offsets.items()],
            asynchronous=True,
        )
        now = self._clock()
        m = self._metrics
        m.events.labels("applied").inc(len(result.applied))
        duplicates = len(work.records) - len(fresh) - heirs + result.already_applied
        m.events.labels("duplicate").inc(duplicates)
        m.events.labels("dead_lettered").inc(len(work.dead) + len(result.rejected) + len(refused))
        for letter in [*work.dead, *refused]:
            m.dead_letters.labels(letter.reason).inc()
        if result.rejected:
            m.dead_letters.labels("profile_too_large").inc(len(result.rejected))
        if result.conflicts:
            m.merge_conflicts.inc(result.conflicts)
        observe_many(
            m.end_to_end_seconds, [max(0.0, now - e.received_time_ms / 1000) for e in result.applied]
        )
        m.batch_size.observe(len(messages))
        m.batch_seconds.observe(time.perf_counter() - started)
        log.info(
            "batch applied",
            extra={
                "records": len(messages),
                "applied": len(result.applied),
                "duplicates": duplicates,
                "dead_lettered": len(work.dead) + len(result.rejected) + len(refused),
                "partitions": sorted(offsets),
                # The 20 smallest, without sorting up to 2,000 ids for them.
                "response_ids": heapq.nsmallest(20, {e.response_id for e in result.applied}),
            },
        )

    def _apply_one_by_one(
        self, work: Split, fresh: Sequence[Positioned], offsets: dict[int, int], on_rejected: RejectHandler
    ) -> tuple[ApplyResult, list[DeadLetter], int]:
        """Apply each record in its own transaction, in order. A record the store
        refuses (text with a NUL byte, an id past an index's size, ...) is
        dead-lettered as ``store_rejected``; its dedupe claim goes to the next copy of
        the same event in the batch (a repaired copy replayed right behind it), or is
        released so that a later repair can apply. Every step is safe to repeat after
        a crash: records below the stored offsets are skipped.

        Returns the combined result, the refused records' dead letters, and how many
        records first counted as duplicates were applied as heirs of refused ones."""
        message_at = {(r.partition, r.offset): m for r, m in zip(work.records, work.messages, strict=True)}
        order = {(r.partition, r.offset): i for i, r in enumerate(work.records)}
        queue = list(fresh)
        applied: list[IdentifyEvent] = []
        rejected: list[Positioned] = []
        refused: list[DeadLetter] = []
        already = conflicts = heirs = 0
        while queue:
            record = queue.pop(0)
            step = {record.partition: record.offset + 1}
            try:
                done = self._retry(partial(self._store.apply, [record], step, on_rejected))
            except StoreRejected as exc:
                if len(refused) >= _REFUSALS_BEFORE_BLAMING_THE_STORE and not applied:
                    # Everything fails: the store is broken, not the records. Stop
                    # loudly rather than dead-letter a whole stream.
                    raise
                # Only a store that can still commit an offset gets to refuse a record.
                self._retry(partial(self._store.apply, [], {record.partition: record.offset}))
                letter = DeadLetter(
                    message_at[(record.partition, record.offset)],
                    "store_rejected",
                    f"the profile store refused it: {exc}",
                )
                self._retry(partial(self._dlq.send, [letter]))
                self._retry(partial(self._deduper.release, [record]))
                refused.append(letter)
                log.warning(
                    "dead-lettered a record the store refused: %s",
                    letter.detail,
                    extra={"partition": record.partition, "offset": record.offset},
                )
                heir = self._heir(work.records, fresh, record, order)
                if (
                    heir is not None
                    and self._retry(partial(self._deduper.first_seen, self._topic, [heir]))[0]
                ):
                    heirs += 1
                    queue = sorted([*queue, heir], key=lambda r: order[(r.partition, r.offset)])
                continue
            applied.extend(done.applied)
            rejected.extend(done.rejected)
            already += done.already_applied
            conflicts += done.conflicts
        # Past the duplicates and dead letters after the last record, as one batch would.
        done = self._retry(lambda: self._store.apply([], offsets))
        result = ApplyResult(tuple(applied), already + done.already_applied, conflicts, tuple(rejected))
        return result, refused, heirs

    @staticmethod
    def _heir(
        records: Sequence[Positioned],
        fresh: Sequence[Positioned],
        refused: Positioned,
        order: dict[tuple[int, int], int],
    ) -> Positioned | None:
        """The next record of the batch that carries the refused record's event."""
        after = order[(refused.partition, refused.offset)]
        taken = {(r.partition, r.offset) for r in fresh}
        key = claim_key(refused)
        for record in records[after + 1 :]:
            if (record.partition, record.offset) not in taken and claim_key(record) == key:
                return record
        return None

    def _retry(self, action: Callable[[], T]) -> T:
        """Run ``action`` until it stops raising ``TransientError`` (or the worker is
        stopped, which abandons the batch uncommitted)."""
        delay = 0.1
        while True:
            try:
                return action()
            except TransientError as exc:
                self._metrics.store_errors.labels(exc.source).inc()
                # Jittered, so that workers failing together (a full lock table, a
                # restart of a dependency) do not all come back at the same moment.
                pause = delay * random.uniform(0.5, 1.0)
                log.warning("transient failure, retrying in %.1fs: %s", pause, exc)
                # The collector is paused during a batch, and an outage can keep one in
                # retries for hours: what each failed attempt left in cycles goes now.
                gc.collect()
                if self._stop.wait(pause):
                    raise _Abandoned from exc
                delay = min(delay * 2, _BACKOFF_MAX_S)

    def _report_lag(self) -> None:
        now = time.monotonic()
        if now - self._last_lag < _LAG_EVERY_S:
            return
        self._last_lag = now
        try:
            # While the broker is away the consumer retries quietly and returns empty
            # batches; asking for metadata makes the outage visible in metrics and logs.
            self._consumer.list_topics(self._topic, timeout=_PROBE_TIMEOUT_S)
        except KafkaException as exc:
            self._metrics.store_errors.labels("kafka").inc()
            log.warning("the broker cannot be reached: %s", exc)
            return
        try:
            # The group's lag as the broker sees it: its committed offset against the
            # partition's end, for the partitions this member owns.
            assigned = self._consumer.assignment()
            for tp in self._consumer.committed(assigned, timeout=_PROBE_TIMEOUT_S):
                _low, high = self._consumer.get_watermark_offsets(tp, cached=True)
                if high >= 0:
                    committed = tp.offset if tp.offset >= 0 else _low
                    self._metrics.consumer_lag.labels(str(tp.partition)).set(max(0, high - committed))
                    self._lag_partitions.add(tp.partition)
        except KafkaException as exc:
            log.debug("lag not available: %s", exc)


class _Abandoned(Exception):
    """The worker was stopped while a batch was being retried; nothing was committed."""
