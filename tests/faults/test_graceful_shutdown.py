"""SIGTERM: a worker finishes the batch it is applying, or abandons one it is still
retrying, and exits 0; Kafka never holds a committed offset beyond what Postgres
holds; a new worker takes over without loss."""

from __future__ import annotations

import subprocess
import time

import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.faults.harness import (
    applied_offsets,
    assert_clean_run,
    log_events,
    mixed_traffic,
    offsets_locked,
    owned_partitions,
    store_errors,
    wait_blocked_worker,
    wait_progress,
)
from tests.faults.services import RedisServer
from tests.support.stack import Broker, Proc, Stack, wait_until


def committed_offsets(stack: Stack) -> dict[int, int]:
    """The consumer group's offsets in Kafka (partitions without one are left out)."""
    consumer = Consumer(
        {"bootstrap.servers": stack.bootstrap, "group.id": f"group-{stack.topic}", "client.id": "probe"}
    )
    try:
        wanted = [TopicPartition(stack.topic, p) for p in range(stack.partitions)]
        found = consumer.committed(wanted, timeout=10)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in found if tp.offset >= 0}


def assert_kafka_not_ahead_of_postgres(stack: Stack) -> None:
    in_kafka = committed_offsets(stack)
    in_postgres = applied_offsets(stack.database_url, stack.topic)
    ahead = {p: o for p, o in in_kafka.items() if o > in_postgres.get(p, 0)}
    assert not ahead, f"Kafka commits offsets Postgres does not hold: {ahead} vs {in_postgres}"


def sigterm(worker: Proc) -> None:
    assert worker.process is not None
    worker.process.send_signal(15)


@pytest.mark.timeout(150)
def test_sigterm_finishes_or_abandons_the_batch_and_a_new_worker_takes_over(
    kafka: Broker, database_url: str, throwaway_redis: RedisServer, make_stack
) -> None:
    stack = make_stack(kafka.bootstrap, database_url, workers=1, partitions=4, redis_url=throwaway_redis.url)
    # No deliberate resends: Redis is killed (and loses its keys) below, and the
    # contract keeps client-retry dedupe only while Redis keeps its data.
    with mixed_traffic(stack, at_least=100, lost_response_every=0) as (edge, counters):
        # 1. SIGTERM while the batch is in Postgres: the worker finishes it, then exits.
        applying = stack.workers[0]
        with offsets_locked(stack):
            wait_blocked_worker(stack)
            sigterm(applying)
            with pytest.raises(subprocess.TimeoutExpired):
                applying.process.wait(1.0)  # it does not walk away from an open transaction
            batches_before = len(log_events(applying, "batch applied"))
        assert applying.process.wait(20) == 0
        assert len(log_events(applying, "batch applied")) == batches_before + 1
        assert not log_events(applying, "stopped during retries")
        assert_kafka_not_ahead_of_postgres(stack)

        # 2. SIGTERM while the worker retries a dead Redis: it abandons the batch at once.
        retrying = stack.add_worker()
        wait_until(lambda: len(owned_partitions(retrying)) == stack.partitions, 40, "the second worker")
        wait_progress(stack, counters)
        throwaway_redis.kill()
        wait_until(lambda: store_errors(retrying, "redis") >= 3, 30, "the worker to retry Redis")
        held = applied_offsets(stack.database_url, stack.topic)
        started = time.monotonic()
        sigterm(retrying)
        assert retrying.process.wait(15) == 0
        assert time.monotonic() - started < 5, "a worker in backoff must stop promptly"
        assert log_events(retrying, "stopped during retries")
        assert applied_offsets(stack.database_url, stack.topic) == held, "the abandoned batch was applied"
        assert_kafka_not_ahead_of_postgres(stack)

        # 3. A new worker takes over from what Postgres holds.
        throwaway_redis.start()
        successor = stack.add_worker()
        wait_until(lambda: owned_partitions(successor), 40, "the successor to get partitions")
        wait_progress(stack, counters)

    assert_clean_run(stack, edge, counters, at_least=100)
    assert_kafka_not_ahead_of_postgres(stack)
