"""The dead-letter topic: records that cannot be applied, with the reason in headers.

Headers: ``traitstream.reason`` (stable code), ``traitstream.error`` (for a
person), and the original ``traitstream.topic``/``partition``/``offset``.
``send`` returns only when the broker has every dead letter, so the batch's
offsets can be committed without losing one; when it cannot, it raises
``TransientError`` (the worker retries the batch) and never anything else.
"""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import KafkaError, KafkaException

from traitstream.errors import TransientError
from traitstream.kafka_producer import RenewableProducer
from traitstream.worker.interfaces import DeadLetterSink
from traitstream.worker.records import DeadLetter

REASON = "traitstream.reason"
ERROR = "traitstream.error"


Headers = list[tuple[str, str | bytes | None]]
"""Kafka record headers, as producers take them."""


def headers(letter: DeadLetter, source_topic: str) -> Headers:
    """What a dead letter carries beside the original key and value."""
    message = letter.message
    return [
        (REASON, letter.reason.encode()),
        (ERROR, letter.detail.encode()),
        ("traitstream.topic", source_topic.encode()),
        ("traitstream.partition", str(message.partition()).encode()),
        ("traitstream.offset", str(message.offset()).encode()),
    ]


class DeadLetters(DeadLetterSink):
    """The dead-letter topic on the broker, through an idempotent producer."""

    def __init__(self, bootstrap: str, source_topic: str, dlq_topic: str, timeout_s: float = 30.0) -> None:
        self._producer = RenewableProducer(bootstrap, timeout_s)
        self._source = source_topic
        self._topic = dlq_topic
        self._timeout_s = timeout_s

    def send(self, letters: Sequence[DeadLetter]) -> None:
        """Raises ``TransientError`` when the broker did not take them all."""
        if not letters:
            return
        errors: list[KafkaError] = []

        def report(error: KafkaError | None, _message: object) -> None:
            if error is not None:
                errors.append(error)

        try:
            for letter in letters:
                message = letter.message
                self._producer.produce(
                    self._topic,
                    value=message.value(),
                    key=message.key(),
                    headers=headers(letter, self._source),
                    on_delivery=report,
                )
        except (BufferError, KafkaException) as exc:
            # A full queue or a producer turned fatal (replaced on the next call):
            # the whole batch is retried, and copies already sent only repeat a dead letter.
            raise TransientError(f"dead-letter topic {self._topic}: {exc}", source="kafka") from exc
        left = self._producer.flush(self._timeout_s)
        if left or errors:
            raise TransientError(
                f"dead-letter topic {self._topic}: {left} unsent, errors {errors[:3]}",
                source="kafka",
            )

    def close(self) -> None:
        self._producer.flush(5)
