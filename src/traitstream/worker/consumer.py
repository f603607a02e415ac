"""The worker: one member of the consumer group, polling batches until stopped.

``HTTP body → … → Kafka → decode (batch.split) → dedupe (dedupe.RedisDeduper)
→ merge (plan + a ProfileWriter) → Postgres → commit offsets``: the batch itself is
``process.BatchProcessor``'s; this module joins the group, starts each partition
where the store says it was applied to, and reports the group's lag.

The worker sees its collaborators through ``worker/interfaces.py`` only;
``commands/worker.py`` wires in the real ones (Kafka, Redis, PostgreSQL), the tests
the in-memory ones of ``worker/memory/``.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicCollection, TopicPartition

from traitstream.avro.schemas import SchemaSource
from traitstream.errors import TransientError
from traitstream.metrics import WorkerMetrics
from traitstream.processes import StopFlag
from traitstream.runtime import collector_paused, warn_if_not_compiled
from traitstream.worker.interfaces import (
    BatchConsumer,
    DeadLetterSink,
    Deduper,
    Message,
    ProfileWriter,
    TopicAdmin,
)
from traitstream.worker.process import BatchProcessor
from traitstream.worker.relay import Relay
from traitstream.worker.retry import Abandoned, Retry

log = logging.getLogger(__name__)

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
        consumer: BatchConsumer,
        admin: TopicAdmin,
        topic: str,
        schemas: SchemaSource,
        deduper: Deduper,
        store: ProfileWriter,
        dead_letters: DeadLetterSink,
        metrics: WorkerMetrics,
        *,
        batch_size: int = 2000,
        batch_wait_s: float = 0.05,
        incremental: bool = True,
        clock: Callable[[], float] = time.time,
        relay: Relay | None = None,
    ) -> None:
        """``incremental``: the group hands partitions over one by one (the
        ``consumer`` and ``cooperative-sticky`` protocols) rather than all at once.
        ``relay``: publishes the profile changes of the partitions this worker owns."""
        self._consumer = consumer
        self._admin = admin
        self._topic = topic
        self._store = store
        self._dlq = dead_letters
        self._metrics = metrics
        self._batch_size = batch_size
        self._batch_wait_s = batch_wait_s
        self._incremental = incremental
        self._stop = StopFlag()
        self._retry = Retry(self._stop, metrics)
        self._batches = BatchProcessor(
            consumer, topic, schemas, deduper, store, dead_letters, metrics, self._retry, clock
        )
        self._last_lag = 0.0
        self._lag_partitions: set[int] = set()
        self._starts: dict[int, int] = {}
        """Where each owned partition was assigned to start (PostgreSQL's next offset)."""
        self._relay = relay

    # --- lifecycle ----------------------------------------------------------------

    def stop(self, *_: object) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(self) -> None:
        """Poll and apply batches until ``stop``; then close every collaborator."""
        try:
            self.start()
            while not self._stop.is_set():
                self.poll_once()
        except Abandoned:
            log.info("stopped during retries; the batch stays uncommitted and will be redelivered")
        finally:
            self.close()

    def start(self) -> None:
        """Join the group (partitions arrive during the next polls)."""
        self._consumer.subscribe([self._topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info("worker started", extra={"topic": self._topic})
        warn_if_not_compiled()
        self._check_lock_table()
        if self._relay is not None:
            self._relay.start()

    def poll_once(self) -> int:
        """Poll one batch and apply it; how many messages the poll returned. Raises
        ``Abandoned`` when the worker is stopped during retries."""
        with collector_paused():  # the batch's objects live until it commits
            messages = self._consumer.consume(self._batch_size, self._batch_wait_s)
            polled = len(messages)
            good = [m for m in messages if self._usable(m)]
            if good:
                self._batches.process(good)
                if self._relay is not None:
                    self._relay.wake()
            del messages, good
        self._report_lag()
        return polled

    def close(self) -> None:
        log.info("worker stopping")
        self._consumer.close()
        if self._relay is not None:
            self._relay.stop()
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

    def _usable(self, message: Message) -> bool:
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

    def _on_assign(self, consumer: BatchConsumer, partitions: list[TopicPartition]) -> None:
        self._metrics.rebalances.labels("assigned").inc(len(partitions))
        topic_id = self._retry(self._topic_id)
        stored = self._retry(lambda: self._store.applied_offsets([p.partition for p in partitions], topic_id))
        for tp in partitions:
            if tp.partition in stored:
                tp.offset = stored[tp.partition]
                self._starts[tp.partition] = tp.offset
        # Each partition starts where PostgreSQL says it was applied to, not where the
        # group last committed: a revoked owner's batch that commits late moves the
        # stored offset, and the store skips what lies below it (exactly once).
        if self._incremental:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)
        if self._relay is not None:
            self._relay.assigned(p.partition for p in partitions)
        log.info("partitions assigned", extra={"partitions": sorted(p.partition for p in partitions)})

    def _topic_id(self) -> str | None:
        """The broker's id of the topic (None when the broker has none to give)."""
        try:
            futures = self._admin.describe_topics(TopicCollection([self._topic]), request_timeout=10)
            return str(futures[self._topic].result().topic_id) or None
        except KafkaException as exc:
            raise TransientError(f"describing topic {self._topic}: {exc}", source="kafka") from exc

    def _on_revoke(self, consumer: BatchConsumer, partitions: list[TopicPartition]) -> None:
        self._metrics.rebalances.labels("revoked").inc(len(partitions))
        for tp in partitions:
            self._starts.pop(tp.partition, None)
            if tp.partition in self._lag_partitions:
                self._metrics.consumer_lag.remove(str(tp.partition))
                self._lag_partitions.discard(tp.partition)
        if self._incremental:
            consumer.incremental_unassign(partitions)
        else:
            consumer.unassign()
        if self._relay is not None:
            self._relay.revoked(p.partition for p in partitions)
        log.info("partitions revoked", extra={"partitions": sorted(p.partition for p in partitions)})

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
            # Lag from what this member knows by itself: its position (the next offset
            # after the last record it consumed, and so applied) against the end it last
            # fetched. Before a partition's first record, the offset it was assigned to
            # start from. Nothing here waits for the group coordinator, which is busy
            # during a rebalance.
            for tp in self._consumer.position(self._consumer.assignment()):
                low, high = self._consumer.get_watermark_offsets(tp, cached=True)
                if high < 0:
                    continue
                position = tp.offset if tp.offset >= 0 else self._starts.get(tp.partition, low)
                self._metrics.consumer_lag.labels(str(tp.partition)).set(max(0, high - max(position, low)))
                self._lag_partitions.add(tp.partition)
        except KafkaException as exc:
            log.debug("lag not available: %s", exc)
