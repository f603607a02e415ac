"""What the worker needs of each collaborator, and what each one promises.

The batch loop (``worker/consumer.py``, ``worker/process.py``) is written against
these Protocols only. The real implementations are wired in by the composition root
(``commands/worker.py``): confluent_kafka's ``Consumer`` and ``AdminClient``,
``store.profiles.ProfileStore`` (PostgreSQL), ``dedupe.RedisDeduper`` and
``dlq.DeadLetters``. The in-memory ones in ``worker/memory/`` keep the same promises; the contract tests
(``tests/contract``) run one set of tests against both.

Two exceptions carry meaning across every interface here:

- ``TransientError``: nothing was done that a retry would repeat wrongly; the
  worker backs off and calls again with the same arguments, forever if need be.
- ``StoreRejected`` (profile store only): the data, not the service, is at fault;
  retrying the same batch fails the same way.

Anything else is a bug and stops the worker; the batch stays uncommitted and is
read again by whoever owns its partitions next.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, Literal, Protocol

from confluent_kafka import KafkaError, TopicCollection, TopicPartition

from traitstream.worker.records import ApplyResult, DeadLetter, Positioned, RejectHandler


class Message(Protocol):
    """What the worker reads of a Kafka message (confluent_kafka's ``Message`` fits)."""

    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def error(self) -> KafkaError | None:
        """Set on the pseudo-messages a consumer returns for an event (end of a
        partition, a broker gone): they carry no record."""
        ...


Rebalance = Callable[["BatchConsumer", list[TopicPartition]], None]
"""``on_assign`` / ``on_revoke``: called from inside ``consume`` with the consumer and
the partitions concerned; the callback itself assigns or unassigns them."""


class BatchConsumer(Protocol):
    """The part of a Kafka consumer the worker uses (confluent_kafka's ``Consumer``
    fits). One thread calls it; the rebalance callbacks run inside ``consume``."""

    def subscribe(
        self, topics: list[str], on_assign: Rebalance | None = None, on_revoke: Rebalance | None = None
    ) -> None:
        """Join the group for ``topics``. Returns at once: partitions arrive through
        ``on_assign`` during a later ``consume``."""
        ...

    def consume(self, num_messages: int = 1, timeout: float = -1) -> Sequence[Message]:
        """Up to ``num_messages`` messages, in offset order within each partition,
        starting where each partition was assigned (its ``offset``), else at the
        group's committed offset, else at the earliest. Blocks at most ``timeout``
        seconds; an empty answer is normal. Errors come back as messages whose
        ``error()`` is set, never as exceptions."""
        ...

    def commit(self, *, offsets: list[TopicPartition], asynchronous: Literal[True] = True) -> None:
        """Record the group's position (the next offset to read) for each partition.
        Asynchronous: it returns at once and may be lost in a crash, which costs a
        re-read, never a record: the store's own offsets make re-reads harmless."""
        ...

    def assign(self, partitions: list[TopicPartition]) -> None:
        """Take exactly ``partitions`` (the eager protocol), each from its ``offset``."""
        ...

    def unassign(self) -> None: ...

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        """Add ``partitions`` to what this member reads, each from its ``offset``."""
        ...

    def incremental_unassign(self, partitions: list[TopicPartition]) -> None: ...

    def assignment(self) -> list[TopicPartition]: ...

    def committed(self, partitions: list[TopicPartition], timeout: float = -1) -> list[TopicPartition]:
        """The group's committed offsets (negative where there is none). Blocks up to
        ``timeout``; raises ``KafkaException`` when the broker does not answer."""
        ...

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """Each partition's next offset after the last message ``consume`` returned
        (negative before the first). Local: never waits for the broker."""
        ...

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = -1, cached: bool = False
    ) -> tuple[int, int]:
        """The partition's low and high watermarks (negative when unknown)."""
        ...

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        """The cluster's metadata; raises ``KafkaException`` when no broker answers
        within ``timeout`` (the worker uses it as a probe)."""
        ...

    def close(self) -> None:
        """Leave the group. Uncommitted positions are lost, which is harmless."""
        ...


class TopicAdmin(Protocol):
    """The broker's description of a topic (confluent_kafka's ``AdminClient`` fits)."""

    def describe_topics(self, topics: TopicCollection, **kwargs: Any) -> dict[str, Future[Any]]:
        """A future per topic whose result has ``topic_id`` (the id a topic gets
        anew when it is deleted and created again); it raises ``KafkaException``."""
        ...


class Deduper(Protocol):
    """Splits records into first sightings and duplicates by their dedupe key.

    Blocks on one network round trip. Raises ``TransientError`` when it cannot be
    reached; calling again with the same records is safe: a record's own claim
    (same topic, partition and offset) still counts as a first sighting."""

    def first_seen(self, topic: str, records: Sequence[Positioned]) -> list[bool]:
        """One flag per record, in order: True for the first record of its event."""
        ...

    def release(self, records: Sequence[Positioned]) -> None:
        """Forget the claims of records that were not applied (so a replay can apply them)."""
        ...


class ProfileWriter(Protocol):
    """The profile store as the worker sees it: it applies batches of records and
    keeps, in the same transaction, each partition's next offset to apply.

    Every method blocks on the store. ``TransientError`` means nothing was committed
    (or, when the answer to a commit was lost, that retrying changes nothing), and
    the call may be repeated as is."""

    def lock_capacity(self) -> int:
        """About how many row and advisory locks the store can hold at once across
        all its sessions. Raises ``TransientError``."""
        ...

    def applied_offsets(self, partitions: Sequence[int], topic_id: str | None) -> dict[int, int]:
        """The next offset to apply for each of ``partitions`` that has one. From now
        on ``topic_id`` is the topic's identity for them: offsets recorded under
        another id (a topic deleted and created again) are forgotten. Raises
        ``TransientError``; repeating it is harmless."""
        ...

    def apply(
        self,
        records: Sequence[Positioned],
        next_offsets: dict[int, int],
        on_rejected: RejectHandler = ...,
    ) -> ApplyResult:
        """Apply ``records`` (in consumption order) and move each partition's next
        offset up to ``next_offsets[partition]`` (never down), atomically: the
        profiles, anonymous-id links and offsets all commit, or none does.

        Records below their partition's stored next offset are skipped and counted
        in ``already_applied``, so applying a batch again (a retry, a redelivery)
        changes nothing. Records that would grow a profile past the size cap are
        refused whole: they go to ``on_rejected`` before the commit (if it raises,
        nothing commits) and come back in ``rejected``.

        Raises ``StoreRejected`` when the store cannot hold some record of the batch
        (a NUL character, a constraint): nothing is committed and repeating the
        call fails again. ``TransientError``: see the class."""
        ...

    def close(self) -> None:
        """Release the connection; a later call connects again."""
        ...


class DeadLetterSink(Protocol):
    """Where records that cannot be applied go, each with its reason."""

    def send(self, letters: Sequence[DeadLetter]) -> None:
        """Returns only once every letter is durably stored, so the batch's offsets
        may be committed after it. Raises ``TransientError`` otherwise, and never
        anything else; sending again may store a letter twice (at least once)."""
        ...

    def close(self) -> None:
        """Flush what is pending, briefly, and let go."""
        ...
