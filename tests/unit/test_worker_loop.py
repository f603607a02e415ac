"""The worker's batch loop on the in-memory collaborators (``worker/memory``, proven
against the real services by ``tests/contract``): poison records are isolated, offsets
advance, retries and redeliveries apply nothing twice. No network."""

from __future__ import annotations

import struct
from collections.abc import Iterable

import pytest

from tests.support.publish import event
from traitstream.avro import codec
from traitstream.avro.schemas import LOCAL_SCHEMA_ID, LocalSchemas
from traitstream.errors import TransientError
from traitstream.events import IdentifyEvent, Op, Operation, user_profile_id
from traitstream.metrics import WorkerMetrics
from traitstream.worker.consumer import Worker
from traitstream.worker.memory import (
    InMemoryBroker,
    InMemoryConsumer,
    InMemoryDeadLetters,
    InMemoryDeduper,
    InMemoryProfileStore,
)

TOPIC = "identify"
DLQ = "identify.dlq"
WS = "ws-loop"


class Pipeline:
    """A worker wired to in-memory Kafka, Redis and PostgreSQL."""

    def __init__(self, partitions: int = 2, batch_size: int = 2000) -> None:
        self.broker = InMemoryBroker()
        self.broker.create_topic(TOPIC, partitions)
        self.broker.create_topic(DLQ, 1)
        self.store = InMemoryProfileStore(TOPIC, traits_check=lambda traits: "refuse_me" not in traits)
        self.deduper = InMemoryDeduper()
        self.batch_size = batch_size
        self.worker, self.metrics = self.new_worker("traitstream")

    def new_worker(self, group: str) -> tuple[Worker, WorkerMetrics]:
        metrics = WorkerMetrics()
        worker = Worker(
            InMemoryConsumer(self.broker, group),
            self.broker,
            TOPIC,
            LocalSchemas(),
            self.deduper,
            self.store,
            InMemoryDeadLetters(self.broker, TOPIC, DLQ),
            metrics,
            batch_size=self.batch_size,
        )
        worker.start()
        return worker, metrics

    def publish(self, records: Iterable[IdentifyEvent | bytes], key: bytes = b"raw") -> None:
        for item in records:
            if isinstance(item, bytes):
                self.broker.produce(TOPIC, item, key)
            else:
                self.broker.produce(TOPIC, codec.encode(item, LOCAL_SCHEMA_ID), item.partition_key)

    def drain(self, worker: Worker | None = None) -> int:
        """Poll until nothing comes; how many polls brought messages."""
        polls = 0
        while (worker or self.worker).poll_once():
            polls += 1
        return polls

    def counter(self, user: str) -> object:
        traits = self.store.traits(user_profile_id(WS, user)) or {}
        return traits.get("n")

    def dead_letters(self, header: str) -> list[str]:
        """``header`` of every dead letter, in order."""
        return [str(dict(m.headers())[header], "utf-8") for m in self.broker.messages(DLQ)]  # type: ignore[arg-type]

    def outcome(self, outcome: str, metrics: WorkerMetrics | None = None) -> float:
        return float((metrics or self.metrics).events.labels(outcome)._value.get())

    def caught_up(self) -> bool:
        """Kafka's committed offsets and the store's are both at every partition's end."""
        ends = {p: self.broker.end_offset(TOPIC, p) for p in range(self.broker.partitions(TOPIC))}
        committed = {p: self.broker.committed("traitstream", TOPIC, p) or 0 for p in ends}
        return committed == ends and self.store.applied_offsets(list(ends), None) == {
            p: e for p, e in ends.items() if e
        }


def add_one(user: str, key: str, *extra: Operation) -> IdentifyEvent:
    return event(WS, user=user, dedupe_key=key, ops=[Operation(Op.ADD, "n", 1), *extra])


def unstorable(record: IdentifyEvent) -> IdentifyEvent:
    """Decodes and validates, but the store's check constraint refuses it."""
    return record._replace(operations=(*record.operations, Operation(Op.SET, "refuse_me", True)))


def test_a_batch_is_applied_and_its_offsets_committed() -> None:
    pipe = Pipeline()
    pipe.publish([add_one("u1", f"k{i}") for i in range(5)] + [add_one("u2", "k9")])
    assert pipe.drain() == 1
    assert (pipe.counter("u1"), pipe.counter("u2")) == (5, 1)
    assert pipe.outcome("applied") == 6
    assert pipe.caught_up()


def test_poison_records_are_dead_lettered_while_the_rest_of_their_batch_applies() -> None:
    pipe = Pipeline(partitions=1)
    good = [add_one("u1", f"good-{i}") for i in range(5)]
    wrong_id = bytearray(codec.encode(add_one("u1", "meant-1"), LOCAL_SCHEMA_ID))
    wrong_id[1:5] = struct.pack(">I", 999)
    poison: list[IdentifyEvent | bytes] = [
        b'{"user_id": "u1"}',
        bytes(wrong_id),
        codec.encode(event(WS, user="u1", ops=[Operation(Op.ADD, "n", "one")]), LOCAL_SCHEMA_ID),
        unstorable(add_one("u1", "meant-3")),
    ]
    interleaved: list[IdentifyEvent | bytes] = [good[0]]
    for bad, ok in zip(poison, good[1:], strict=True):
        interleaved += [bad, ok]
    pipe.publish(interleaved)
    assert pipe.drain() == 1
    assert pipe.counter("u1") == 5
    assert pipe.dead_letters("traitstream.reason") == [
        "not_avro",
        "unknown_schema_id",
        "invalid_content",
        "store_rejected",
    ]
    assert pipe.dead_letters("traitstream.offset") == ["1", "3", "5", "7"]
    assert pipe.outcome("dead_lettered") == 4
    assert pipe.outcome("applied") == 5
    assert pipe.caught_up()


def test_a_refused_record_hands_its_claim_to_a_repaired_copy_behind_it() -> None:
    pipe = Pipeline(partitions=1)
    pipe.publish([unstorable(add_one("u1", "again")), add_one("u1", "again"), add_one("u1", "other")])
    pipe.drain()
    assert pipe.counter("u1") == 2
    assert pipe.dead_letters("traitstream.reason") == ["store_rejected"]
    assert pipe.caught_up()
    # The refused original's claim was released: a repair replayed later applies, once.
    pipe.publish([add_one("u1", "later"), unstorable(add_one("u1", "late")), add_one("u1", "late")])
    pipe.drain()
    assert pipe.counter("u1") == 4


def test_a_profile_past_the_size_cap_is_dead_lettered_and_the_rest_applies() -> None:
    pipe = Pipeline(partitions=1)
    blobs = [
        event(WS, user="u1", dedupe_key=f"b{i}", ops=[Operation(Op.SET, f"blob{i}", "x" * 30_000)])
        for i in range(20)
    ]
    pipe.publish([*blobs, add_one("u1", "small")])
    pipe.drain()
    letters = pipe.dead_letters("traitstream.reason")
    assert letters and set(letters) == {"profile_too_large"}
    traits = pipe.store.traits(user_profile_id(WS, "u1")) or {}
    assert len(traits) == 20 - len(letters) + 1
    assert pipe.counter("u1") == 1
    assert pipe.caught_up()


@pytest.mark.parametrize("after_commit", [False, True], ids=["before-commit", "answer-lost"])
def test_a_retry_after_a_transient_store_error_applies_once(after_commit: bool) -> None:
    pipe = Pipeline()
    pipe.store.fail_next(
        TransientError("postgres: connection lost", source="postgres"), after_commit=after_commit
    )
    pipe.publish([add_one("u1", f"k{i}") for i in range(3)])
    pipe.drain()
    assert pipe.counter("u1") == 3
    assert pipe.metrics.store_errors.labels("postgres")._value.get() == 1
    assert pipe.caught_up()


def test_a_redelivery_applies_nothing_twice_even_without_dedupe_claims() -> None:
    pipe = Pipeline()
    pipe.publish([add_one("u1", f"k{i}") for i in range(4)])
    pipe.drain()
    # Another member takes over without the group's commits and with Redis emptied:
    # it starts where the store says each partition was applied to.
    pipe.deduper.forget_everything()
    worker, metrics = pipe.new_worker("another-group")
    pipe.drain(worker)
    assert pipe.counter("u1") == 4
    assert pipe.outcome("applied", metrics) == 0
    # A client retry with the same dedupe key is a duplicate while the claim lives.
    pipe.publish([add_one("u1", "k-new"), add_one("u1", "k-new")])
    pipe.drain()
    assert pipe.counter("u1") == 5
    assert pipe.outcome("duplicate") == 1


def test_a_rebalance_resumes_from_the_store_offsets() -> None:
    pipe = Pipeline(partitions=1, batch_size=2)
    pipe.publish([add_one("u1", f"k{i}") for i in range(3)])
    assert pipe.worker.poll_once() == 2
    pipe.broker.commit("traitstream", TOPIC, 0, 0)  # the group's commit was lost
    consumer = pipe.worker._consumer
    assert isinstance(consumer, InMemoryConsumer)
    consumer.rebalance()
    pipe.drain()
    assert pipe.counter("u1") == 3
    assert pipe.outcome("duplicate") == 0
    assert pipe.caught_up()


def test_closing_the_worker_closes_its_collaborators() -> None:
    pipe = Pipeline()
    pipe.worker.stop()
    pipe.worker.run()
    with pytest.raises(RuntimeError, match="Consumer closed"):
        pipe.worker.poll_once()


def test_lag_is_the_end_against_what_was_applied_without_asking_the_coordinator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pipe = Pipeline(partitions=1, batch_size=3)

    def coordinator_busy(*_: object, **__: object) -> None:
        raise AssertionError("the lag probe asked the group coordinator")

    monkeypatch.setattr(InMemoryConsumer, "committed", coordinator_busy)
    pipe.publish(event(WS, user=f"lag-{i}", n=i) for i in range(10))
    assert pipe.worker.poll_once() == 3
    assert pipe.metrics.consumer_lag.labels("0")._value.get() == 7
    pipe.drain()
    pipe.worker._last_lag = 0.0  # the probe runs every few seconds; run it now
    pipe.worker.poll_once()
    assert pipe.metrics.consumer_lag.labels("0")._value.get() == 0
