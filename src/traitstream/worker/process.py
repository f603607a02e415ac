"""One polled batch, start to finish: decode, dedupe, apply, dead-letter, commit.

``Kafka → decode (batch.split) → dedupe (Deduper) → merge and store (ProfileWriter)
→ commit offsets (BatchConsumer)``, every collaborator behind a Protocol of
``worker/interfaces.py``, so the whole step runs as well on the in-memory ones.

Offsets are committed to Kafka only after the store committed the batch (and the
store holds each partition's next offset too, so a commit lost in a crash costs a
re-read, never a double apply). Transient failures retry the same step with backoff;
nothing transient is ever dead-lettered. A record the store refuses outright is
found, dead-lettered and passed over (``_apply_one_by_one``) rather than stalling
its partition.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable, Sequence
from functools import partial

from confluent_kafka import TopicPartition

from traitstream.avro.schemas import SchemaSource
from traitstream.errors import StoreRejected
from traitstream.events import IdentifyEvent
from traitstream.metrics import WorkerMetrics, observe_many
from traitstream.worker.batch import Split, next_offsets, split
from traitstream.worker.dedupe import claim_key
from traitstream.worker.interfaces import BatchConsumer, DeadLetterSink, Deduper, Message, ProfileWriter
from traitstream.worker.records import ApplyResult, DeadLetter, Positioned, RejectHandler
from traitstream.worker.retry import Retry
from traitstream.worker.sizing import MAX_TRAITS_BYTES

log = logging.getLogger(__name__)

_REFUSALS_BEFORE_BLAMING_THE_STORE = 20


class BatchProcessor:
    def __init__(
        self,
        consumer: BatchConsumer,
        topic: str,
        schemas: SchemaSource,
        deduper: Deduper,
        store: ProfileWriter,
        dead_letters: DeadLetterSink,
        metrics: WorkerMetrics,
        retry: Retry,
        clock: Callable[[], float],
    ) -> None:
        self._consumer = consumer
        self._topic = topic
        self._schemas = schemas
        self._deduper = deduper
        self._store = store
        self._dlq = dead_letters
        self._metrics = metrics
        self._retry = retry
        self._clock = clock

    def process(self, messages: Sequence[Message]) -> None:
        """Apply ``messages`` (records only, no error events) and commit their offsets.
        Raises ``Abandoned`` when the worker is stopped during retries."""
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
                heir = _heir(work.records, fresh, record, order)
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
