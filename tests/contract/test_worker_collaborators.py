"""The worker's collaborators keep the promises of ``worker/interfaces.py``, in
memory and for real: every test runs against the in-memory implementation
(``worker/memory``) and against the service it stands for (PostgreSQL, Redis,
Apache Kafka). The real-backed runs are marked ``integration``; ``make unit`` runs the
in-memory ones alone."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import psycopg
import pytest
from confluent_kafka import KafkaException, Producer, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient

from tests.support.stack import REDIS_URL
from traitstream import kafka_admin
from traitstream.errors import StoreRejected
from traitstream.events import JSON, IdentifyEvent, Kind, Op, Operation, anonymous_profile_id, user_profile_id
from traitstream.kafka_producer import producer_config
from traitstream.store.profiles import ProfileStore
from traitstream.worker.consumer import consumer_config
from traitstream.worker.dedupe import RedisDeduper
from traitstream.worker.dlq import DeadLetters
from traitstream.worker.interfaces import BatchConsumer, DeadLetterSink, Deduper, Message, TopicAdmin
from traitstream.worker.memory import (
    InMemoryBroker,
    InMemoryConsumer,
    InMemoryDeadLetters,
    InMemoryDeduper,
    InMemoryProfileStore,
)
from traitstream.worker.records import DeadLetter, Positioned
from traitstream.worker.sizing import MAX_TRAITS_BYTES

BACKENDS = ["memory", pytest.param("real", marks=pytest.mark.integration)]
WS = "ws-contract"


def identify(
    offset: int, *, user: str | None = "u1", anon: tuple[str, ...] = (), t: int = 1000, **traits: JSON
) -> Positioned:
    event = IdentifyEvent(
        workspace_id=WS,
        user_id=user,
        anonymous_ids=anon,
        dialect="test",
        event_time_ms=t,
        received_time_ms=t,
        response_id=f"r-{uuid.uuid4().hex}",
        operations=tuple(Operation(Op.SET, k, v) for k, v in traits.items()),
    )
    return Positioned(0, offset, event)


def blob(offset: int) -> Positioned:
    """An identify that sets a trait of 30,000 characters, ``blob<offset>``."""
    record = identify(offset)
    operations = (Operation(Op.SET, f"blob{offset}", "x" * 30_000),)
    return record._replace(event=record.event._replace(operations=operations))


# --- the profile store -------------------------------------------------------------


@dataclass
class Store:
    writer: InMemoryProfileStore | ProfileStore
    traits: Callable[[uuid.UUID], dict[str, JSON] | None]
    linked: Callable[[str], uuid.UUID | None]
    refuse: Callable[[str], None]
    """Make the store refuse profiles holding this trait (a CHECK constraint)."""


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    topic = f"contract-{uuid.uuid4().hex[:8]}"
    if request.param == "memory":
        refused: set[str] = set()
        fake = InMemoryProfileStore(topic, traits_check=lambda traits: not refused & traits.keys())
        yield Store(fake, fake.traits, lambda anon: fake.linked_profile(WS, anon), refused.add)
        return
    url: str = request.getfixturevalue("database_url")
    constraints: list[str] = []

    def read(sql: str, *args: Any) -> Any:
        with psycopg.connect(url) as conn:
            row = conn.execute(sql, args).fetchone()
        return None if row is None else row[0]

    def refuse(name: str) -> None:
        constraint = f"refuses_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"ALTER TABLE profiles ADD CONSTRAINT {constraint} CHECK (NOT traits ? '{name}')")
        constraints.append(constraint)

    real = ProfileStore(url, topic)
    try:
        yield Store(
            real,
            lambda pid: read("SELECT traits FROM profiles WHERE profile_id = %s", pid),
            lambda anon: read(
                "SELECT profile_id FROM identities WHERE workspace_id = %s AND anonymous_id = %s", WS, anon
            ),
            refuse,
        )
    finally:
        real.close()
        with psycopg.connect(url, autocommit=True) as conn:
            for constraint in constraints:
                conn.execute(f"ALTER TABLE profiles DROP CONSTRAINT {constraint}")
            conn.execute("DELETE FROM profiles WHERE workspace_id = %s", (WS,))
            conn.execute("DELETE FROM identities WHERE workspace_id = %s", (WS,))
            conn.execute("DELETE FROM user_aliases WHERE workspace_id = %s", (WS,))


USER = user_profile_id(WS, "u1")


def test_records_below_the_stored_offset_are_skipped(store: Store) -> None:
    first = [identify(0, plan="free"), identify(1, seats=1)]
    result = store.writer.apply(first, {0: 2})
    assert (len(result.applied), result.already_applied) == (2, 0)
    again = store.writer.apply([*first, identify(2, t=2000, seats=2)], {0: 3})
    assert (len(again.applied), again.already_applied) == (1, 2)
    assert store.traits(USER) == {"plan": "free", "seats": 2}
    assert store.writer.applied_offsets([0, 5], None) == {0: 3}


def test_offsets_only_move_up(store: Store) -> None:
    store.writer.apply([], {0: 5, 1: 2})
    store.writer.apply([], {0: 3, 1: 4})
    assert store.writer.applied_offsets([0, 1], None) == {0: 5, 1: 4}


def test_offsets_of_another_incarnation_of_the_topic_are_forgotten(store: Store) -> None:
    store.writer.applied_offsets([0], None)
    store.writer.apply([], {0: 4})
    assert store.writer.applied_offsets([0], "id-a") == {0: 4}  # stamped with the id it lacked
    store.writer.apply([], {0: 6})
    assert store.writer.applied_offsets([0], "id-a") == {0: 6}
    assert store.writer.applied_offsets([0], "id-b") == {}


def test_a_later_event_wins_whatever_the_order_across_batches(store: Store) -> None:
    store.writer.apply([identify(0, t=2000, plan="pro")], {0: 1})
    store.writer.apply([identify(1, t=1000, plan="free", seats=3)], {0: 2})
    assert store.traits(USER) == {"plan": "pro", "seats": 3}


def test_an_anonymous_profile_merges_into_the_user_profile(store: Store) -> None:
    store.writer.apply([identify(0, user=None, anon=("d1",), theme="dark")], {0: 1})
    assert store.linked("d1") == anonymous_profile_id(WS, "d1")
    store.writer.apply([identify(1, anon=("d1",), plan="pro")], {0: 2})
    assert store.traits(USER) == {"plan": "pro", "theme": "dark"}
    assert store.linked("d1") == USER
    assert store.traits(anonymous_profile_id(WS, "d1")) is None


def test_an_alias_absorbs_an_earlier_user_with_the_ids_the_batch_did_not_load(store: Store) -> None:
    store.writer.apply([identify(0, user="u0", anon=("d0",), plan="free", email="a@x")], {0: 1})
    store.writer.apply([identify(1, user="u0", anon=("d9",))], {0: 2})
    store.writer.apply([identify(2, user="u1", t=2000, plan="pro")], {0: 3})
    alias = identify(3, user="u1")
    store.writer.apply(
        [alias._replace(event=alias.event._replace(kind=Kind.ALIAS, previous_id="u0"))], {0: 4}
    )
    assert store.traits(USER) == {"plan": "pro", "email": "a@x"}
    assert store.traits(user_profile_id(WS, "u0")) is None
    assert store.linked("d0") == store.linked("d9") == store.linked("u0") == USER
    # The previous user id resolves to the merged profile from now on.
    store.writer.apply([identify(4, user="u0", t=3000, plan="team")], {0: 5})
    assert store.traits(USER) == {"plan": "team", "email": "a@x"}
    assert store.traits(user_profile_id(WS, "u0")) is None


def test_records_past_the_size_cap_are_rejected_whole_before_the_commit(store: Store) -> None:
    batch = [blob(i) for i in range(20)]
    handed: list[Positioned] = []
    result = store.writer.apply(batch, {0: 20}, handed.extend)
    assert result.rejected and list(result.rejected) == handed
    assert len(result.applied) + len(result.rejected) == 20
    traits = store.traits(USER) or {}
    assert len(traits) == len(result.applied)
    assert not {f"blob{r.offset}" for r in result.rejected} & traits.keys()
    assert sum(len(k) + len(v) for k, v in traits.items()) <= MAX_TRAITS_BYTES


def test_a_failing_reject_handler_commits_nothing(store: Store) -> None:
    batch = [blob(i) for i in range(20)]

    def fail(_records: object) -> None:
        raise RuntimeError("the dead-letter topic is away")

    with pytest.raises(RuntimeError):
        store.writer.apply(batch, {0: 20}, fail)
    assert store.traits(USER) is None
    assert store.writer.applied_offsets([0], None) in ({}, {0: 0})


@pytest.mark.parametrize("where", ["value", "user id"])
def test_a_nul_character_refuses_the_whole_batch(store: Store, where: str) -> None:
    bad = identify(1, note="a\x00b") if where == "value" else identify(1, user="u\x00", note="b")
    with pytest.raises(StoreRejected):
        store.writer.apply([identify(0, plan="free"), bad], {0: 2})
    assert store.traits(USER) is None
    assert store.writer.applied_offsets([0], None) in ({}, {0: 0})
    assert len(store.writer.apply([identify(0, plan="free")], {0: 1}).applied) == 1


def test_a_check_constraint_refuses_the_batch(store: Store) -> None:
    store.refuse("refuse_me")
    with pytest.raises(StoreRejected):
        store.writer.apply([identify(0, plan="free"), identify(1, refuse_me=True)], {0: 2})
    assert store.traits(USER) is None
    store.writer.apply([identify(0, plan="free")], {0: 1})
    assert store.traits(USER) == {"plan": "free"}


# --- dedupe ------------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def deduper(request: pytest.FixtureRequest) -> Iterator[Deduper]:
    if request.param == "memory":
        yield InMemoryDeduper(ttl_s=60)
        return
    real = RedisDeduper(REDIS_URL, ttl_s=60)
    yield real
    real.close()


def test_claims_tell_first_sightings_from_duplicates(deduper: Deduper) -> None:
    key = uuid.uuid4().hex

    def copy(offset: int) -> Positioned:
        record = identify(offset)
        return record._replace(event=record.event._replace(dedupe_key=key))

    a, b, c = copy(0), copy(1), copy(2)
    assert deduper.first_seen("t", [a, b]) == [True, False]
    assert deduper.first_seen("t", [a, b]) == [True, False], "a retry keeps its own claim"
    assert deduper.first_seen("other", [a]) == [False], "the position includes the topic"
    deduper.release([a])
    assert deduper.first_seen("t", [c, a]) == [True, False]


# --- Kafka: consumer, topic ids, dead letters ----------------------------------------


@dataclass
class Kafka:
    create_topic: Callable[[str, int], None]
    produce: Callable[[str, int, list[bytes]], None]
    consumer: Callable[[str], BatchConsumer]
    admin: TopicAdmin
    dead_letters: Callable[[str, str], DeadLetterSink]


@pytest.fixture(params=BACKENDS)
def kafka_side(request: pytest.FixtureRequest) -> Iterator[Kafka]:
    if request.param == "memory":
        broker = InMemoryBroker()

        def produce_fake(topic: str, partition: int, values: list[bytes]) -> None:
            for value in values:
                broker.produce(topic, value, b"k", partition=partition)

        yield Kafka(
            broker.create_topic,
            produce_fake,
            lambda group: InMemoryConsumer(broker, group),
            broker,
            lambda source, dlq: InMemoryDeadLetters(broker, source, dlq),
        )
        return
    bootstrap: str = request.getfixturevalue("kafka").bootstrap
    opened: list[Any] = []

    def produce_real(topic: str, partition: int, values: list[bytes]) -> None:
        producer = Producer(producer_config(bootstrap, 30.0))
        for value in values:
            producer.produce(topic, value=value, key=b"k", partition=partition)
        assert producer.flush(30) == 0

    def consumer(group: str) -> BatchConsumer:
        from confluent_kafka import Consumer

        opened.append(Consumer(consumer_config(bootstrap, group, 6000)))
        return opened[-1]  # type: ignore[no-any-return]

    def dead_letters(source: str, dlq: str) -> DeadLetterSink:
        opened.append(DeadLetters(bootstrap, source, dlq))
        return opened[-1]  # type: ignore[no-any-return]

    yield Kafka(
        lambda name, n: kafka_admin.ensure_topics(bootstrap, {name: n}),
        produce_real,
        consumer,
        AdminClient({"bootstrap.servers": bootstrap}),
        dead_letters,
    )
    for each in opened:
        with contextlib.suppress(RuntimeError):  # closed by the test
            each.close()


def consume(consumer: BatchConsumer, count: int, timeout: float = 30) -> list[Message]:
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        got += [m for m in consumer.consume(count - len(got), 0.2) if m.error() is None]
    return got


def positions(messages: list[Message]) -> list[tuple[int | None, int | None, bytes | None]]:
    return sorted((m.partition(), m.offset(), m.value()) for m in messages)


def assigning(at: Mapping[int, int]) -> Callable[[BatchConsumer, list[TopicPartition]], None]:
    def on_assign(consumer: BatchConsumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            if tp.partition in at:
                tp.offset = at[tp.partition]
        consumer.incremental_assign(partitions)

    return on_assign


def test_a_member_reads_every_partition_from_where_on_assign_says(kafka_side: Kafka) -> None:
    topic = f"contract-{uuid.uuid4().hex[:8]}"
    kafka_side.create_topic(topic, 2)
    kafka_side.produce(topic, 0, [b"a0", b"a1", b"a2"])
    kafka_side.produce(topic, 1, [b"b0", b"b1", b"b2"])
    consumer = kafka_side.consumer(f"g-{topic}")
    consumer.subscribe([topic], on_assign=assigning({0: 1}))
    assert positions(consume(consumer, 5)) == [
        (0, 1, b"a1"),
        (0, 2, b"a2"),
        (1, 0, b"b0"),
        (1, 1, b"b1"),
        (1, 2, b"b2"),
    ]
    assert sorted(tp.partition for tp in consumer.assignment()) == [0, 1]
    assert consumer.get_watermark_offsets(TopicPartition(topic, 1))[1] == 3


def test_the_next_member_starts_at_the_committed_offsets(kafka_side: Kafka) -> None:
    topic = f"contract-{uuid.uuid4().hex[:8]}"
    group = f"g-{topic}"
    kafka_side.create_topic(topic, 2)
    kafka_side.produce(topic, 0, [b"a0", b"a1", b"a2"])
    kafka_side.produce(topic, 1, [b"b0", b"b1"])
    first = kafka_side.consumer(group)
    first.subscribe([topic], on_assign=assigning({}))
    assert len(consume(first, 5)) == 5
    first.commit(offsets=[TopicPartition(topic, 0, 2), TopicPartition(topic, 1, 2)], asynchronous=True)
    deadline = time.monotonic() + 10
    wanted = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    while [tp.offset for tp in first.committed(wanted, timeout=10)] != [2, 2]:
        assert time.monotonic() < deadline, "the commit never arrived"
        time.sleep(0.1)
    first.close()
    second = kafka_side.consumer(group)
    second.subscribe([topic], on_assign=assigning({}))
    assert positions(consume(second, 1)) == [(0, 2, b"a2")]
    assert consume(second, 1, timeout=1) == []


def described_id(admin: TopicAdmin, topic: str) -> str:
    """The topic's id, once the broker knows the topic (a new topic's metadata may
    reach the broker a moment after its creation returned: the worker retries too)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return str(
                admin.describe_topics(TopicCollection([topic]), request_timeout=10)[topic].result().topic_id
            )
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_a_topic_is_described_with_its_id(kafka_side: Kafka) -> None:
    topic = f"contract-{uuid.uuid4().hex[:8]}"
    kafka_side.create_topic(topic, 1)
    topic_id = described_id(kafka_side.admin, topic)
    assert topic_id
    assert described_id(kafka_side.admin, topic) == topic_id
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(KafkaException):
        kafka_side.admin.describe_topics(TopicCollection([missing]), request_timeout=10)[missing].result()


def test_dead_letters_keep_the_record_and_say_why(kafka_side: Kafka) -> None:
    topic = f"contract-{uuid.uuid4().hex[:8]}"
    dlq = f"{topic}.dlq"
    kafka_side.create_topic(topic, 2)
    kafka_side.create_topic(dlq, 1)
    kafka_side.produce(topic, 1, [b"not avro", b"ok"])
    consumer = kafka_side.consumer(f"g-{topic}")
    consumer.subscribe([topic], on_assign=assigning({}))
    bad = next(m for m in consume(consumer, 2) if m.value() == b"not avro")
    sink = kafka_side.dead_letters(topic, dlq)
    sink.send([])
    sink.send([DeadLetter(bad, "not_avro", "the value does not start with the magic byte")])
    reader = kafka_side.consumer(f"g-{dlq}")
    reader.subscribe([dlq], on_assign=assigning({}))
    (letter,) = consume(reader, 1)
    assert (letter.key(), letter.value()) == (b"k", b"not avro")
    headers = dict(cast(Any, letter).headers() or [])
    assert headers == {
        "traitstream.reason": b"not_avro",
        "traitstream.error": b"the value does not start with the magic byte",
        "traitstream.topic": topic.encode(),
        "traitstream.partition": b"1",
        "traitstream.offset": b"0",
    }
