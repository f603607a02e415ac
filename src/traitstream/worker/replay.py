"""``traitstream dlq replay``: send dead letters back to the identify topic.

Reads the dead-letter topic as consumer group ``traitstream-dlq-replay-<dlq topic>``
from where the last replay stopped, until nothing new arrives for ``idle_s``. Each
dead letter that decodes now (a schema registered since, a repaired copy) is produced
back to the topic; one that still does not decode is logged with its reason and
passed over, so it never bounces between the topics; of several copies of one event
read together (an original and its repair), only the last is sent. The dead-letter
offsets are committed only after the broker acknowledged the copies.

Repairing a record: produce the corrected value (same key, same dedupe key) to the
dead-letter topic, then run the replay. Replayed records go through the workers like
any other: one applied already, or sent twice, is a duplicate (same dedupe key, or
same response id and index) and changes nothing; one the store still refuses is
dead-lettered again.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from traitstream.avro import codec
from traitstream.avro.schemas import SchemaSource
from traitstream.config import CommonSettings
from traitstream.errors import InvalidRecord, TransientError
from traitstream.kafka_producer import RenewableProducer
from traitstream.worker.batch import next_offsets

log = logging.getLogger(__name__)

_JOIN_TIMEOUT_S = 60.0


def replay_group(settings: CommonSettings) -> str:
    # One group per dead-letter topic: replays of two pipelines never share offsets.
    return f"traitstream-dlq-replay-{settings.dlq_topic}"


def replay(
    settings: CommonSettings,
    *,
    idle_s: float = 5.0,
    limit: int | None = None,
    schemas: SchemaSource | None = None,
) -> int:
    """Replay what decodes; the number of records sent back. Raises ``TransientError``
    when the broker or the schema registry cannot be reached (nothing is committed
    past what was sent, so running it again is safe)."""
    if schemas is None:
        from traitstream.avro.schemas import schema_source

        schemas = schema_source(settings)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": replay_group(settings),
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "roundrobin",
            "session.timeout.ms": 6000,
        }
    )
    producer = RenewableProducer(settings.kafka_bootstrap, 30.0)
    assigned: list[float] = []
    # The idle clock starts once the group has handed out the partitions: joining a
    # group takes seconds, and a replay that gave up before then would replay nothing.
    consumer.subscribe([settings.dlq_topic], on_assign=lambda _c, _p: assigned.append(time.monotonic()))
    replayed = skipped = 0
    started = last_seen = time.monotonic()
    try:
        while limit is None or replayed + skipped < limit:
            wanted = 500 if limit is None else min(500, limit - replayed - skipped)
            messages = [m for m in consumer.consume(wanted, 0.5) if m.error() is None]
            if not messages:
                if not assigned:
                    if time.monotonic() - started > _JOIN_TIMEOUT_S:
                        raise TransientError(
                            f"no partition of {settings.dlq_topic} assigned in {_JOIN_TIMEOUT_S:.0f}s",
                            source="kafka",
                        )
                elif time.monotonic() - max(last_seen, assigned[-1]) > idle_s:
                    break
                continue
            last_seen = time.monotonic()
            errors: list[KafkaError] = []

            def report(error: KafkaError | None, _message: object, errors: list[KafkaError] = errors) -> None:
                if error is not None:
                    errors.append(error)

            sent = 0
            for message in _latest_copies(messages, schemas, settings.dlq_topic):
                try:
                    producer.produce(
                        settings.topic,
                        value=message.value(),
                        key=message.key(),
                        headers=[("traitstream.replayed_from", f"{message.partition()}:{message.offset()}")],
                        on_delivery=report,
                    )
                except (BufferError, KafkaException) as exc:
                    raise TransientError(
                        f"the broker refused replayed records: {exc}", source="kafka"
                    ) from exc
                sent += 1
            if producer.flush(30) or errors:
                raise TransientError(
                    f"the broker did not take the replayed records: {errors[:3]}", source="kafka"
                )
            consumer.commit(
                offsets=[TopicPartition(settings.dlq_topic, p, o) for p, o in next_offsets(messages).items()],
                asynchronous=False,
            )
            replayed += sent
            skipped += len(messages) - sent
            log.info("replayed %d record(s), passed over %d", sent, len(messages) - sent)
    finally:
        consumer.close()
    if skipped:
        log.warning("passed over %d dead letter(s) (see above why)", skipped)
    return replayed


def _latest_copies(messages: list[Message], schemas: SchemaSource, dlq_topic: str) -> list[Message]:
    """The messages worth sending back, in order: those that decode, and of several
    copies of one event (an original and its repair) only the last."""
    last: dict[tuple[str, str], int] = {}
    keep: list[tuple[int, tuple[str, str]]] = []
    for index, message in enumerate(messages):
        try:
            event = codec.decode(message.value(), schemas)
        except InvalidRecord as exc:
            log.warning(
                "dead letter %s:%d still does not decode (%s): %s; left in %s",
                message.partition(),
                message.offset(),
                exc.reason,
                exc.message,
                dlq_topic,
            )
            continue
        identity = (event.workspace_id, event.event_id)
        last[identity] = index
        keep.append((index, identity))
    chosen = [messages[i] for i, identity in keep if last[identity] == i]
    if len(chosen) < len(keep):
        log.info("%d dead letter(s) superseded by a later copy of the same event", len(keep) - len(chosen))
    return chosen
