"""The profile changes stream through faults: kill -9 of workers (in the middle of a
batch, and at whatever moment their relays are at), and kill -9 of the Kafka node
leading most of the changes topic in a three-node cluster.

After each, besides exactly-once application (``assert_clean_run``: exact ``$add``
sums), the changes topic must hold, per profile, versions 1..N with no gap, any
version seen twice with identical bytes, and changes that replay to exactly the
stored traits (``tests/support/changes.py``); so the counters' ``n`` replayed from
the stream equals the number of records the broker acknowledged.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.faults.harness import (
    assert_clean_run,
    mixed_traffic,
    offsets_locked,
    stored_profiles,
    wait_blocked_worker,
    wait_progress,
)
from tests.faults.test_kafka_cluster_faults import describe, restart, start_stack, wait_serving
from tests.support.changes import assert_changes_consistent
from tests.support.stack import Broker, Stack, wait_until
from traitstream.events import user_profile_id
from traitstream.localkafka import LocalKafka


def assert_counters_replay(
    stack: Stack, counters_users: list[str], workspace: str, replayed: dict[str, dict[str, Any]]
) -> None:
    profiles = stored_profiles(stack.database_url, workspace, counters_users)
    for user in counters_users:
        stored = profiles[user][0].get("n") if user in profiles else None
        rebuilt = replayed.get(str(user_profile_id(workspace, user)), {}).get("n")
        assert rebuilt == stored, f"{user}: the stream replays to n={rebuilt}, the store has {stored}"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_kill9_workers_mid_batch_and_mid_relay(
    kafka: Broker, database_url: str, make_stack: Callable[..., Stack]
) -> None:
    stack = make_stack(kafka.bootstrap, database_url, workers=2, partitions=6)
    with mixed_traffic(stack, at_least=400) as (edge, counters):
        for _ in range(2):
            with offsets_locked(stack):
                victim = stack.workers[wait_blocked_worker(stack)]
                victim.kill()
            newcomer = stack.add_worker()
            wait_until(newcomer.owned_partitions, 40, f"{newcomer.name} to get partitions")
            wait_progress(stack, counters)
        # And once at no chosen moment: its relay may be between producing and deleting.
        for _ in range(2):
            time.sleep(1.5)
            victim = next(w for w in stack.workers if w.alive())
            victim.kill()
            stack.add_worker()
            wait_progress(stack, counters, timeout=40)

    assert_clean_run(stack, edge, counters, at_least=400)
    outcome = assert_changes_consistent(stack, stack.workspace, [*edge.users, *counters.users])
    # One record per profile per batch that changed it: fewer versions than records.
    assert outcome.keys == len(edge.users) + len(counters.users)
    assert outcome.versions >= outcome.keys
    assert_counters_replay(stack, counters.users, counters.workspace, outcome.traits)


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_kill9_the_changes_topics_busiest_leader(
    kafka_cluster: LocalKafka, database_url: str, make_stack: Callable[..., Stack]
) -> None:
    stack = start_stack(make_stack, kafka_cluster, database_url)
    for partition in describe(kafka_cluster, [stack.changes_topic])[stack.changes_topic]:
        assert len(partition.replicas) == 3 and len(partition.isr) == 3
    with mixed_traffic(stack) as (edge, counters):
        wait_until(lambda: edge.requests_acked >= 10, 30, "calls acknowledged")
        leaders = collections.Counter(
            p.leader.id for p in describe(kafka_cluster, [stack.changes_topic])[stack.changes_topic]
        )
        victim = leaders.most_common(1)[0][0]
        kafka_cluster.kill_node(victim)
        wait_serving(stack, edge, counters)
        restart(kafka_cluster, stack, victim)
        wait_serving(stack, edge, counters, calls=20)

    assert_clean_run(stack, edge, counters, at_least=100)
    outcome = assert_changes_consistent(stack, stack.workspace, [*edge.users, *counters.users])
    assert_counters_replay(stack, counters.users, counters.workspace, outcome.traits)
