"""The raw limits of this machine, measured with each store's client alone.

* PostgreSQL bulk upsert: COPY a batch of 5,000 rows into a staging table, then
  one ``INSERT … SELECT … ON CONFLICT DO UPDATE`` merging the jsonb traits, one
  transaction per batch (the table is filled first, so every row is an update,
  as in a pipeline's steady state).
* Broker produce and consume: confluent-kafka with the edge's producer settings
  (idempotent, ``acks=all``) and the worker's consumer settings, records the size
  of a real identify record.
* Redis: pipelined ``SET NX GET EX`` in batches of 2,000, the worker's dedupe claim.

Payloads are built before the clock starts, so the figures are the stores' (and
their clients'), not this module's.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass

import orjson
import psycopg

from tests.bench import workload

PG_BATCH = 5_000
REDIS_BATCH = 2_000

_CREATE = """
DROP TABLE IF EXISTS bench_upsert;
CREATE TABLE bench_upsert (
    profile_id uuid PRIMARY KEY, workspace_id text NOT NULL, user_id text,
    traits jsonb NOT NULL, updated_at timestamptz NOT NULL
)
"""
_STAGING = (
    "CREATE TEMP TABLE bench_staging (profile_id uuid, workspace_id text, user_id text,"
    " traits jsonb, updated_at timestamptz) ON COMMIT DELETE ROWS"
)
_UPSERT = """
INSERT INTO bench_upsert SELECT * FROM bench_staging
ON CONFLICT (profile_id) DO UPDATE SET
    traits = bench_upsert.traits || EXCLUDED.traits, updated_at = EXCLUDED.updated_at
"""


@dataclass(frozen=True, slots=True)
class Limit:
    name: str
    what: str
    count: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0


def _copy_text(rng: random.Random, users: list[int], stamp: str) -> bytes:
    lines = []
    for index in users:
        traits = orjson.dumps(workload.identify(rng, index)["traits"]).decode()
        # COPY's text format treats backslashes as escapes.
        traits = traits.replace("\\", "\\\\")
        profile_id = uuid.uuid5(uuid.NAMESPACE_OID, workload.user_id(index))
        lines.append(f"{profile_id}\tbench\t{workload.user_id(index)}\t{traits}\t{stamp}\n")
    return "".join(lines).encode()


def postgres_upsert(database_url: str, rows: int, population: int, seed: int = 7) -> Limit:
    rng = random.Random(seed)
    stamp = "2024-03-01 10:00:00+00"
    prefill = [
        _copy_text(rng, list(range(start, min(start + PG_BATCH, population))), stamp)
        for start in range(0, population, PG_BATCH)
    ]
    batches = [
        _copy_text(rng, workload.user_sample(rng, population, PG_BATCH), stamp)
        for _ in range(max(1, rows // PG_BATCH))
    ]
    with psycopg.connect(database_url) as conn:
        conn.execute(_CREATE)
        conn.execute(_STAGING)
        conn.commit()
        for data in prefill:
            with conn.cursor().copy("COPY bench_upsert FROM STDIN") as copy:
                copy.write(data)
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE bench_upsert")
        conn.autocommit = False
        started = time.perf_counter()
        for data in batches:
            with conn.cursor().copy("COPY bench_staging FROM STDIN") as copy:
                copy.write(data)
            conn.execute(_UPSERT)
            conn.commit()
        seconds = time.perf_counter() - started
        conn.execute("DROP TABLE bench_upsert")
        conn.commit()
    return Limit(
        "postgres_upsert",
        f"PostgreSQL COPY + INSERT … ON CONFLICT DO UPDATE (jsonb ||), batches of {PG_BATCH:,}",
        len(batches) * PG_BATCH,
        seconds,
    )


def sample_record() -> tuple[bytes, int]:
    """A real identify record of the workload (its bytes) and its size."""
    from traitstream.avro import codec
    from traitstream.avro.schemas import LOCAL_SCHEMA_ID
    from traitstream.dialects import thrivestack
    from traitstream.dialects.common import Envelope

    body = workload.bodies(1, 1, 1000, 3)[0]
    (event,) = thrivestack.parse(body, Envelope("bench", str(uuid.uuid4()), int(time.time() * 1000)))
    value = codec.encode(event, LOCAL_SCHEMA_ID)
    return value, len(value)


def broker_produce(bootstrap: str, topic: str, count: int, timeout_s: float = 120.0) -> Limit:
    from confluent_kafka import Producer

    from traitstream.kafka_producer import producer_config

    value, size = sample_record()
    keys = [f"bench:u:{workload.user_id(i)}".encode() for i in range(10_000)]
    producer = Producer(producer_config(bootstrap, 30.0))
    failures = 0

    def delivered(error: object, _message: object) -> None:
        nonlocal failures
        if error is not None:
            failures += 1

    # Connect and learn the partitions before the clock starts.
    producer.list_topics(topic, timeout=10)
    started = time.perf_counter()
    deadline = time.monotonic() + timeout_s
    for index in range(count):
        while True:
            try:
                producer.produce(topic, value=value, key=keys[index % len(keys)], on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
                if time.monotonic() > deadline:
                    raise TimeoutError("the broker stopped taking records") from None
        if index % 1000 == 0:
            producer.poll(0)
    left = producer.flush(max(1.0, deadline - time.monotonic()))
    seconds = time.perf_counter() - started
    if left or failures:
        raise RuntimeError(f"the broker refused {failures} and left {left} of {count} records unacknowledged")
    return Limit(
        "broker_produce",
        f"confluent-kafka produce, idempotent, acks=all, {size}-byte records",
        count,
        seconds,
    )


def broker_consume(bootstrap: str, topic: str, count: int, timeout_s: float = 120.0) -> Limit:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from traitstream.worker.consumer import consumer_config

    consumer = Consumer(consumer_config(bootstrap, f"bench-{uuid.uuid4().hex[:8]}", 10_000))
    # Assigned, not subscribed: no group to join, so the clock measures reading only.
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    seen = 0
    started = 0.0
    deadline = time.monotonic() + timeout_s
    try:
        while seen < count and time.monotonic() < deadline:
            messages = consumer.consume(2000, 0.5)
            good = sum(1 for m in messages if m.error() is None)
            if good and not started:
                started = time.perf_counter()
            seen += good
        seconds = time.perf_counter() - started if started else 0.0
    finally:
        consumer.close()
    if seen < count:
        raise TimeoutError(f"read {seen} of {count} records within {timeout_s:.0f}s")
    return Limit("broker_consume", "confluent-kafka consume (batches of 2,000)", seen, seconds)


def redis_claims(redis_url: str, count: int) -> Limit:
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=10)
    run = uuid.uuid4().hex[:8]
    keys = [f"bench:dedupe:{run}:{i}" for i in range(count)]
    value = b"identify:3:123456789"
    try:
        started = time.perf_counter()
        for start in range(0, count, REDIS_BATCH):
            pipe = client.pipeline(transaction=False)
            for key in keys[start : start + REDIS_BATCH]:
                pipe.set(key, value, nx=True, ex=300, get=True)
            pipe.execute()
        seconds = time.perf_counter() - started
    finally:
        for start in range(0, count, 10_000):
            client.delete(*keys[start : start + 10_000])
        client.close()
    return Limit(
        "redis_dedupe",
        f"Redis pipelined SET NX GET EX, batches of {REDIS_BATCH:,} (redis-py)",
        count,
        seconds,
    )
