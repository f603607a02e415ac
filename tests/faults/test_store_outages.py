"""Redis and Postgres fail under load: workers retry with backoff, never dead-letter,
never exit, and catch up by themselves; every count stays exact.

Both stores are throwaway servers started by the test (``conftest.py``), never the
machine's own.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.faults.harness import (
    assert_clean_run,
    log_ends,
    log_events,
    mixed_traffic,
    offsets_locked,
    outcome_count,
    owned_partitions,
    store_errors,
    wait_applied_to,
    wait_blocked_worker,
    wait_progress,
)
from tests.faults.services import PostgresCluster, RedisServer
from tests.support.stack import Broker, wait_until
from traitstream.store.database import migrate


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_redis_restarts_and_loses_every_key(
    kafka: Broker, database_url: str, throwaway_redis: RedisServer, make_stack
) -> None:
    stack = make_stack(kafka.bootstrap, database_url, workers=2, partitions=6, redis_url=throwaway_redis.url)
    # No deliberate client resends here: the contract keeps client-retry dedupe only
    # while Redis keeps its data, and this test throws that data away.
    with mixed_traffic(stack, at_least=300, lost_response_every=0) as (edge, counters):
        # 1. Redis dies under load and comes back empty.
        throwaway_redis.kill()
        retrying = lambda: all(store_errors(w, "redis") >= 2 for w in stack.workers)  # noqa: E731
        wait_until(retrying, 30, "both workers retrying Redis")
        throwaway_redis.start()
        wait_progress(stack, counters)
        assert throwaway_redis.keys("dedupe:*") > 0

        # 2. A worker freezes in the middle of a batch (waiting on a hung Redis, its
        # records polled, nothing applied) for longer than its session. Redis then
        # restarts empty, the group hands the frozen worker's partitions to the other
        # worker, which applies those records again from Postgres's offsets. When the
        # frozen worker wakes up and applies its stale batch, Redis has no claim left
        # to stop it: only the offsets Postgres holds do.
        throwaway_redis.pause()
        # A settling time, not a wait for a result: records arrive every few tens of
        # milliseconds, so after a second each worker holds a batch it cannot claim.
        time.sleep(1.0)
        frozen = stack.workers[0]
        other = stack.workers[1]
        skipped_before = outcome_count(frozen, "duplicate")
        frozen.pause()
        stale_batch_ends = log_ends(stack.bootstrap, stack.topic, stack.partitions)
        throwaway_redis.restart()
        wait_until(lambda: len(owned_partitions(other)) == stack.partitions, 40, "the takeover")
        # The other worker applies past every record the frozen one holds, so that
        # its stale batch can only be a duplicate when it wakes.
        wait_applied_to(stack, stale_batch_ends, 40)
        frozen.resume()
        wait_until(
            lambda: outcome_count(frozen, "duplicate") > skipped_before,
            30,
            "the woken worker's stale batch to be skipped as already applied",
        )
        wait_until(lambda: owned_partitions(frozen), 40, "the woken worker to rejoin the group")
        wait_progress(stack, counters)

    assert_clean_run(stack, edge, counters, at_least=300)
    for worker in stack.workers:
        assert worker.alive(), f"{worker.name} exited"
        assert any("redis" in line["msg"] for line in log_events(worker, "transient failure"))


@pytest.mark.timeout(150)
def test_postgres_restarts_under_load(kafka: Broker, throwaway_postgres: PostgresCluster, make_stack) -> None:
    url = throwaway_postgres.url("traitstream")
    migrate(url)
    # The edge keeps acknowledging through the outage on its cached key: the cache
    # must outlast the start of the traffic plus the wait for both workers' retries.
    stack = make_stack(
        kafka.bootstrap, url, workers=2, partitions=6, extra_env={"TRAITSTREAM_KEY_CACHE_S": "300"}
    )
    with mixed_traffic(stack, at_least=300) as (edge, counters):
        with offsets_locked(stack):
            wait_blocked_worker(stack)
            # A crash, not a shutdown: open transactions die with their sessions.
            throwaway_postgres.stop("immediate")
        wait_until(
            lambda: all(store_errors(w, "postgres") >= 4 for w in stack.workers),
            30,
            "both workers retrying Postgres",
        )
        ready = httpx.get(f"{stack.url}/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["checks"]["database"] is False
        acked_during = edge.acked_count
        wait_until(lambda: edge.acked_count > acked_during, 15, "the edge to keep acknowledging identifies")
        throwaway_postgres.start()
        wait_progress(stack, counters, timeout=40)

    outcome = assert_clean_run(stack, edge, counters, at_least=300)
    assert outcome.retried_identifies > 0
    for worker in stack.workers:
        assert worker.alive(), f"{worker.name} exited"
        assert any("postgres" in line["msg"] for line in log_events(worker, "transient failure"))
