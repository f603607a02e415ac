"""Kafka in memory: topics as lists, one consumer per group, and the dead-letter topic.

``InMemoryBroker`` holds the topics and each group's committed offsets and answers
``describe_topics`` (it is the worker's ``TopicAdmin``). ``InMemoryConsumer`` is a
group's only member: at its first ``consume`` after ``subscribe`` it is assigned every
partition through ``on_assign``, as a group of one is; ``rebalance`` takes them back
through ``on_revoke`` and hands them out again at the next ``consume``.
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal

from confluent_kafka import KafkaError, KafkaException, TopicCollection, TopicPartition

from traitstream.errors import TransientError
from traitstream.worker.dlq import Headers, headers
from traitstream.worker.interfaces import BatchConsumer, DeadLetterSink, Rebalance, TopicAdmin
from traitstream.worker.records import DeadLetter

_NO_OFFSET = -1001  # librdkafka's OFFSET_INVALID: nothing committed


class InMemoryMessage:
    """A record as a consumer returns it (the worker's ``Message``)."""

    __slots__ = ("_headers", "_key", "_offset", "_partition", "_topic", "_value")

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
    ) -> None:
        self._topic = topic
        self._partition = partition
        self._offset = offset
        self._key = key
        self._value = value
        self._headers = headers

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> Headers:
        return list(self._headers)

    def error(self) -> KafkaError | None:
        return None


@dataclass(frozen=True, slots=True)
class _Description:
    topic_id: str


@dataclass(slots=True)
class _Topic:
    topic_id: str
    partitions: list[list[InMemoryMessage]] = field(default_factory=list)


class InMemoryBroker(TopicAdmin):
    def __init__(self) -> None:
        self._topics: dict[str, _Topic] = {}
        self._committed: dict[tuple[str, str, int], int] = {}

    def create_topic(self, name: str, partitions: int = 1) -> None:
        """Create ``name`` empty, with a new topic id (again if it existed: what
        deleting a topic and creating it anew does)."""
        self._topics[name] = _Topic(str(uuid.uuid4()), [[] for _ in range(partitions)])

    def partitions(self, topic: str) -> int:
        return len(self._topic(topic).partitions)

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Headers | None = None,
        partition: int | None = None,
    ) -> InMemoryMessage:
        """Append a record: to ``partition``, else to the key's partition (a hash of
        the key, so one key's records stay in order), else to partition 0."""
        logs = self._topic(topic).partitions
        if partition is None:
            partition = 0 if key is None else zlib.crc32(key) % len(logs)
        log = logs[partition]
        message = InMemoryMessage(topic, partition, len(log), key, value, list(headers or ()))
        log.append(message)
        return message

    def read(self, topic: str, partition: int, start: int, count: int) -> list[InMemoryMessage]:
        return self._topic(topic).partitions[partition][start : start + count]

    def end_offset(self, topic: str, partition: int) -> int:
        return len(self._topic(topic).partitions[partition])

    def messages(self, topic: str) -> list[InMemoryMessage]:
        """Every record of ``topic``, partition by partition."""
        return [m for log in self._topic(topic).partitions for m in log]

    def committed(self, group: str, topic: str, partition: int) -> int | None:
        return self._committed.get((group, topic, partition))

    def commit(self, group: str, topic: str, partition: int, offset: int) -> None:
        self._topic(topic)
        self._committed[(group, topic, partition)] = offset

    def describe_topics(self, topics: TopicCollection, **kwargs: Any) -> dict[str, Future[Any]]:
        answers: dict[str, Future[Any]] = {}
        for name in topics.topic_names:
            answer: Future[Any] = Future()
            if name in self._topics:
                answer.set_result(_Description(self._topics[name].topic_id))
            else:
                answer.set_exception(KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)))
            answers[name] = answer
        return answers

    def topic_names(self) -> list[str]:
        return sorted(self._topics)

    def _topic(self, name: str) -> _Topic:
        try:
            return self._topics[name]
        except KeyError:
            raise KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, f"no topic {name}")) from None


class InMemoryConsumer(BatchConsumer):
    """The only member of ``group_id`` on ``broker``. Reading starts, for each assigned
    partition, at the offset it was assigned with, else at the group's committed
    offset, else at the earliest (the worker's ``auto.offset.reset``)."""

    def __init__(self, broker: InMemoryBroker, group_id: str) -> None:
        self._broker = broker
        self._group = group_id
        self._topics: list[str] = []
        self._on_assign: Rebalance | None = None
        self._on_revoke: Rebalance | None = None
        self._joined = True
        self._positions: dict[tuple[str, int], int] = {}
        self._closed = False

    def subscribe(
        self, topics: list[str], on_assign: Rebalance | None = None, on_revoke: Rebalance | None = None
    ) -> None:
        self._open()
        self._topics = list(topics)
        self._on_assign, self._on_revoke = on_assign, on_revoke
        self._joined = False

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[InMemoryMessage]:
        self._open()
        if not self._joined:
            self._joined = True
            offered = [
                TopicPartition(topic, p)
                for topic in self._topics
                for p in range(self._broker.partitions(topic))
            ]
            if self._on_assign is not None:
                self._on_assign(self, offered)
            else:
                self.assign(offered)
        batch: list[InMemoryMessage] = []
        for (topic, partition), position in self._positions.items():
            taken = self._broker.read(topic, partition, position, num_messages - len(batch))
            self._positions[(topic, partition)] = position + len(taken)
            batch += taken
            if len(batch) >= num_messages:
                break
        return batch

    def rebalance(self) -> None:
        """Take every partition back (``on_revoke``); the next ``consume`` assigns them
        again, as a group does when a member comes or goes."""
        self._open()
        taken = self.assignment()
        if self._on_revoke is not None:
            self._on_revoke(self, taken)
        else:
            self.unassign()
        self._joined = False

    def commit(self, *, offsets: list[TopicPartition], asynchronous: Literal[True] = True) -> None:
        self._open()
        for tp in offsets:
            self._broker.commit(self._group, tp.topic, tp.partition, tp.offset)

    def assign(self, partitions: list[TopicPartition]) -> None:
        self._open()
        self._positions = {}
        self.incremental_assign(partitions)

    def unassign(self) -> None:
        self._open()
        self._positions = {}

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        self._open()
        for tp in partitions:
            start = (
                tp.offset if tp.offset >= 0 else self._broker.committed(self._group, tp.topic, tp.partition)
            )
            self._positions[(tp.topic, tp.partition)] = start or 0

    def incremental_unassign(self, partitions: list[TopicPartition]) -> None:
        self._open()
        for tp in partitions:
            self._positions.pop((tp.topic, tp.partition), None)

    def assignment(self) -> list[TopicPartition]:
        self._open()
        return [TopicPartition(topic, partition) for topic, partition in self._positions]

    def committed(self, partitions: list[TopicPartition], timeout: float = -1) -> list[TopicPartition]:
        self._open()
        answer = []
        for tp in partitions:
            offset = self._broker.committed(self._group, tp.topic, tp.partition)
            answer.append(TopicPartition(tp.topic, tp.partition, _NO_OFFSET if offset is None else offset))
        return answer

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        self._open()
        return [
            TopicPartition(tp.topic, tp.partition, self._positions.get((tp.topic, tp.partition), _NO_OFFSET))
            for tp in partitions
        ]

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = -1, cached: bool = False
    ) -> tuple[int, int]:
        self._open()
        return 0, self._broker.end_offset(partition.topic, partition.partition)

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        self._open()
        names = self._broker.topic_names()
        return {name: self._broker.partitions(name) for name in names if topic in (None, name)}

    def close(self) -> None:
        self._open()
        self._positions = {}
        self._closed = True

    def _open(self) -> None:
        if self._closed:
            raise RuntimeError("Consumer closed")


class InMemoryDeadLetters(DeadLetterSink):
    """``dlq.DeadLetters`` onto an ``InMemoryBroker``: the same key, value and headers
    in ``dlq_topic``, all the letters of a call or (the topic missing) none."""

    def __init__(self, broker: InMemoryBroker, source_topic: str, dlq_topic: str) -> None:
        self._broker = broker
        self._source = source_topic
        self._topic = dlq_topic

    def send(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        if self._topic not in self._broker.topic_names():
            raise TransientError(f"dead-letter topic {self._topic}: it does not exist", source="kafka")
        for letter in letters:
            message = letter.message
            self._broker.produce(self._topic, message.value(), message.key(), headers(letter, self._source))

    def close(self) -> None:
        pass
