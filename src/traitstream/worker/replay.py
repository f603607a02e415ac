"""``traitstream dlq replay``: send dead letters back to the identify topic.

Reads the dead-letter topic as consumer group ``<group>-dlq-replay``, produces
each record's key and value back to the topic, and commits the dead-letter
offsets only after the broker acknowledged the copies. Records that still do not
decode are dead-lettered again by the workers; records already applied are
duplicates (same response id and index) and change nothing.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from traitstream.config import CommonSettings
from traitstream.edge.publisher import producer_config
from traitstream.errors import TransientError
from traitstream.worker.batch import next_offsets

log = logging.getLogger(__name__)


def replay(settings: CommonSettings, *, idle_s: float = 5.0, limit: int | None = None) -> int:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": "traitstream-dlq-replay",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "roundrobin",
            "session.timeout.ms": 6000,
        }
    )
    producer = Producer(producer_config(settings.kafka_bootstrap, 30.0))
    consumer.subscribe([settings.dlq_topic])
    replayed = 0
    last_seen = time.monotonic()
    try:
        while limit is None or replayed < limit:
            wanted = 500 if limit is None else min(500, limit - replayed)
            messages = [m for m in consumer.consume(wanted, 0.5) if m.error() is None]
            if not messages:
                if time.monotonic() - last_seen > idle_s:
                    break
                continue
            last_seen = time.monotonic()
            errors: list[KafkaError] = []

            def report(error: KafkaError | None, _message: object, errors: list[KafkaError] = errors) -> None:
                if error is not None:
                    errors.append(error)

            for message in messages:
                producer.produce(
                    settings.topic,
                    value=message.value(),
                    key=message.key(),
                    headers=[
                        (
                            "traitstream.replayed_from",
                            f"{message.partition()}:{message.offset()}".encode(),
                        )
                    ],
                    on_delivery=report,
                )
            if producer.flush(30) or errors:
                raise TransientError(
                    f"the broker did not take the replayed records: {errors[:3]}", source="kafka"
                )
            consumer.commit(
                offsets=[
                    TopicPartition(settings.dlq_topic, p, o)
                    for p, o in next_offsets(messages).items()  # type: ignore[arg-type]
                ],
                asynchronous=False,  # type: ignore[call-overload]
            )
            replayed += len(messages)
            log.info("replayed %d record(s)", len(messages))
    finally:
        consumer.close()
    return replayed
