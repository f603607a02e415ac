"""Faults of a three-node Apache Kafka cluster under load: a leader killed, every node
restarted in turn, a node frozen, the active controller killed, a node cut off from
the network.

Each test runs its own cluster (``kafka_cluster``, or ``partitionable_kafka_cluster``
whose nodes live in network namespaces), a stack on it with a short produce
timeout, and the traffic of ``tests/faults/traffic.py``, whose clients resend with
the same dedupe key until they get a 200. It breaks one thing, waits until the
pipeline serves again without it, heals the cluster, and then proves:

* every identify answered 200 is in the topic's log once the cluster healed: the
  brokers had acknowledged it (``acks=all`` on three replicas, two in sync at least);
* every acknowledged identify and counter record is applied exactly once (exact
  counts and ``add`` sums, nothing dead-lettered: ``assert_clean_run``);
* the edge and the workers are the processes that started (same pids, alive): they
  recovered by themselves.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import pytest
from confluent_kafka import KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType  # type: ignore[attr-defined]

from tests.faults.harness import assert_clean_run, mixed_traffic, read_topic, wait_progress
from tests.faults.netns import PartitionableKafka
from tests.faults.traffic import CounterTraffic, EdgeTraffic
from tests.support.stack import Stack, wait_until
from traitstream.localkafka import LocalKafka

PRODUCE_TIMEOUT_S = 4
"""Short, so that a call whose partition has no leader gets a 503 (and is resent)
well before the cluster moves the leadership, which takes up to the brokers'
session timeout (``broker.session.timeout.ms``, 9 s)."""
PARTITIONS = 6
HEALED_CALLS = 20
"""Calls acknowledged once the cluster has healed, before the traffic stops: each
test ends under real load, whatever the fault cost."""
AT_LEAST = 100
"""Identifies and counter records that must have been acknowledged and applied:
the healed calls alone carry 100 identifies (five each), the counters run at
about a hundred a second."""


# --- the stack and the cluster's state ---------------------------------------------------


def start_stack(make_stack: Callable[..., Stack], cluster: LocalKafka, database_url: str) -> Stack:
    return make_stack(
        cluster.bootstrap,
        database_url,
        workers=2,
        partitions=PARTITIONS,
        extra_env={"TRAITSTREAM_PRODUCE_TIMEOUT_S": str(PRODUCE_TIMEOUT_S)},
    )


def admin(cluster: LocalKafka, excluding: int | None = None) -> AdminClient:
    """An admin client of the running nodes but ``excluding``: a frozen node accepts
    connections and answers nothing, so it must not be asked."""
    live = [n.address for n in cluster.nodes if n.alive() and n.node_id != excluding]
    return AdminClient({"bootstrap.servers": ",".join(live)})


def describe(cluster: LocalKafka, topics: list[str], excluding: int | None = None) -> dict[str, list]:
    """Each topic's partitions as the cluster describes them (leader, replicas, ISR)."""
    client = admin(cluster, excluding)  # kept until the answers arrive: a dropped client drops them
    futures = client.describe_topics(TopicCollection(topics), request_timeout=5)
    return {topic: list(future.result().partitions) for topic, future in futures.items()}


def in_sync(cluster: LocalKafka, stack: Stack) -> bool:
    """Whether every partition of the stack's topics has all three nodes in sync."""
    try:
        described = describe(cluster, [stack.topic, f"{stack.topic}.dlq"])
    except KafkaException:
        return False
    return all(len(p.isr) == 3 for partitions in described.values() for p in partitions)


def led_by(cluster: LocalKafka, stack: Stack, excluding: int | None = None) -> collections.Counter[int]:
    """How many of the stack topic's partitions each node leads (-1: no leader)."""
    try:
        partitions = describe(cluster, [stack.topic], excluding)[stack.topic]
    except KafkaException:
        return collections.Counter({-1: stack.partitions})
    return collections.Counter(p.leader.id if p.leader is not None else -1 for p in partitions)


def live_brokers(cluster: LocalKafka, excluding: int | None = None) -> set[int]:
    """The brokers the cluster counts as alive (a fenced node is not among them)."""
    client = admin(cluster, excluding)
    try:
        found = client.describe_cluster(request_timeout=5).result()
    except KafkaException:
        return set()
    return {node.id for node in found.nodes}


def busiest_leader(cluster: LocalKafka, stack: Stack, edge: EdgeTraffic) -> int:
    """The node leading most of the partitions that the edge's calls go to (a call's
    identifies share a user, so a partition), so that calls meet the fault at once."""
    wait_until(lambda: edge.requests_acked >= len(edge.users), 30, "a call acknowledged for every user")
    records = read_topic(stack.bootstrap, stack.topic, stack.partitions)
    calls_go_to = {r.partition for r in records if r.event_id.startswith("k")}  # the edge's message ids
    leaders = collections.Counter(cluster.leader_of(stack.topic, p) for p in calls_go_to)
    victim, led = leaders.most_common(1)[0]
    assert victim > 0 and led >= 1, leaders
    return int(victim)


def wait_in_sync(cluster: LocalKafka, stack: Stack, node_id: int) -> None:
    """Wait until ``node_id`` is back in every partition's ISR."""
    wait_until(lambda: in_sync(cluster, stack), 60, f"node {node_id} back in sync", every=0.5)


def restart(cluster: LocalKafka, stack: Stack, node_id: int) -> None:
    """Start ``node_id`` again and wait until it is back in every partition's ISR."""
    cluster.start_node(node_id, timeout_s=60)
    wait_in_sync(cluster, stack, node_id)


# --- what the pipeline does ---------------------------------------------------------------


def pids(stack: Stack) -> dict[str, int]:
    return {proc.name: proc.process.pid for proc in [stack.edge, *stack.workers]}  # type: ignore[union-attr]


def wait_serving(
    stack: Stack, edge: EdgeTraffic, counters: CounterTraffic, calls: int = 3, timeout: float = 60
) -> None:
    """Wait until the edge acknowledges ``calls`` new calls and the workers apply new records."""
    acked = edge.requests_acked
    more = lambda: edge.requests_acked >= acked + calls  # noqa: E731
    wait_until(more, timeout, f"the edge to acknowledge {calls} new calls")
    wait_progress(stack, counters, timeout)


def unresponsive_then_healed(
    cluster: LocalKafka,
    stack: Stack,
    edge: EdgeTraffic,
    counters: CounterTraffic,
    silence: Callable[[int], None],
    heal: Callable[[int], None],
) -> None:
    """``silence`` the busiest leader (it stays up, and answers nothing) until a call
    has timed out with a 503, the controller has fenced the node (its session lapsed),
    the others lead its partitions and the pipeline serves again without it; then
    ``heal`` it and wait until it is back in every ISR."""
    victim = busiest_leader(cluster, stack, edge)
    refused = edge.statuses["503"]
    silence(victim)
    try:
        wait_until(lambda: edge.statuses["503"] > refused, 30, "a call to time out with a 503")
        wait_until(
            lambda: live_brokers(cluster, excluding=victim) == {1, 2, 3} - {victim},
            60,
            f"the controller to fence node {victim}",
            every=0.5,
        )
        wait_until(
            lambda: victim not in led_by(cluster, stack, excluding=victim),
            30,
            f"the others to lead node {victim}'s partitions",
            every=0.5,
        )
        wait_serving(stack, edge, counters)
    finally:
        heal(victim)
    wait_in_sync(cluster, stack, victim)


def assert_recovered(
    stack: Stack, edge: EdgeTraffic, counters: CounterTraffic, started: dict[str, int]
) -> None:
    """What every test proves once the traffic has stopped; see the module's docstring."""
    in_log = {r.event_id for r in read_topic(stack.bootstrap, stack.topic, stack.partitions)}
    acked = set().union(*edge.acked.values())
    missing = acked - in_log
    assert not missing, f"{len(missing)} identifies answered 200 are not in the log: {sorted(missing)[:5]}"
    assert_clean_run(stack, edge, counters, at_least=AT_LEAST)
    assert pids(stack) == started, "the edge or a worker was replaced"
    assert stack.edge.alive() and all(w.alive() for w in stack.workers), "the edge or a worker exited"  # type: ignore[union-attr]
    assert stack.ready()


# --- the faults -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_kill9_the_busiest_leader_then_restart_it(
    kafka_cluster: LocalKafka, database_url: str, make_stack
) -> None:
    """kill -9 of the node leading most of the topic's partitions: its partitions get
    new leaders from the in-sync replicas, no acknowledged identify is lost, and the
    node rejoins when restarted. Also proves the topics are replicated as production
    wants (three replicas, ``min.insync.replicas=2``, the dead-letter topic too),
    which is what makes an acknowledged record outlive its leader."""
    stack = start_stack(make_stack, kafka_cluster, database_url)
    topics = [stack.topic, f"{stack.topic}.dlq"]
    for topic, partitions in describe(kafka_cluster, topics).items():
        assert all(len(p.replicas) == 3 and len(p.isr) == 3 for p in partitions), topic
    client = admin(kafka_cluster)
    configs = client.describe_configs([ConfigResource(ResourceType.TOPIC, t) for t in topics])
    for resource, future in configs.items():
        assert future.result()["min.insync.replicas"].value == "2", resource
    started = pids(stack)

    with mixed_traffic(stack) as (edge, counters):
        victim = busiest_leader(kafka_cluster, stack, edge)
        kafka_cluster.kill_node(victim)
        # Its partitions get a leader among the survivors once the controller fences it.
        wait_until(
            lambda: set(led_by(kafka_cluster, stack)) <= {n for n in (1, 2, 3) if n != victim},
            60,
            f"new leaders for node {victim}'s partitions",
            every=0.5,
        )
        wait_serving(stack, edge, counters)
        restart(kafka_cluster, stack, victim)
        wait_serving(stack, edge, counters, calls=HEALED_CALLS)

    assert_recovered(stack, edge, counters, started)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_rolling_restart_of_every_node(kafka_cluster: LocalKafka, database_url: str, make_stack) -> None:
    """Each node in turn stopped cleanly (SIGTERM: it hands its leaderships over) and
    started again, the next one only once the last is back in every ISR, as an
    upgrade does: the pipeline goes on through all three, exactly once."""
    stack = start_stack(make_stack, kafka_cluster, database_url)
    started = pids(stack)

    with mixed_traffic(stack) as (edge, counters):
        for node in kafka_cluster.nodes:
            kafka_cluster.stop_node(node.node_id)
            assert not node.alive()
            wait_until(
                lambda n=node.node_id: n not in led_by(kafka_cluster, stack),
                15,
                f"stopped node {node.node_id} to lead nothing",
                every=0.5,
            )
            wait_serving(stack, edge, counters)
            restart(kafka_cluster, stack, node.node_id)
        wait_serving(stack, edge, counters, calls=HEALED_CALLS)

    assert_recovered(stack, edge, counters, started)


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_frozen_node_past_the_timeouts_then_resumed(
    kafka_cluster: LocalKafka, database_url: str, make_stack
) -> None:
    """The node leading most partitions frozen (SIGSTOP: its sockets stay open and
    nothing answers) until calls to its partitions have timed out with a 503, the
    controller has fenced it (its session lapsed) and the others lead in its place;
    then woken. No call is answered 200 without the brokers, and the node catches up
    and rejoins every ISR."""
    stack = start_stack(make_stack, kafka_cluster, database_url)
    started = pids(stack)

    with mixed_traffic(stack) as (edge, counters):
        unresponsive_then_healed(
            kafka_cluster, stack, edge, counters, kafka_cluster.pause_node, kafka_cluster.resume_node
        )
        wait_serving(stack, edge, counters, calls=HEALED_CALLS)

    assert_recovered(stack, edge, counters, started)


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_kill9_the_active_controller_then_restart_it(
    kafka_cluster: LocalKafka, database_url: str, make_stack
) -> None:
    """kill -9 of the KRaft quorum's leader (every node is a broker too): the two
    others elect a new controller, which fences the dead broker and moves its
    leaderships; the node rejoins the quorum and the ISRs when restarted."""
    stack = start_stack(make_stack, kafka_cluster, database_url)
    started = pids(stack)

    with mixed_traffic(stack) as (edge, counters):
        victim = wait_until(lambda: max(kafka_cluster.active_controller(), 0), 30, "an active controller")
        kafka_cluster.kill_node(victim)
        wait_until(
            lambda: kafka_cluster.active_controller() not in (-1, victim),
            30,
            "the two others to elect a new active controller",
            every=0.2,
        )
        wait_until(
            lambda: live_brokers(kafka_cluster) == {1, 2, 3} - {victim},
            60,
            f"the new controller to fence node {victim}",
            every=0.5,
        )
        wait_serving(stack, edge, counters)
        restart(kafka_cluster, stack, victim)
        wait_until(lambda: kafka_cluster.active_controller() > 0, 30, "the quorum to agree on its leader")
        wait_serving(stack, edge, counters, calls=HEALED_CALLS)

    assert_recovered(stack, edge, counters, started)


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_node_cut_off_from_the_network_then_reconnected(
    partitionable_kafka_cluster: PartitionableKafka, database_url: str, make_stack
) -> None:
    """The node leading most partitions cut off from the other nodes and from every
    client (its link down: the process runs on, its connections open) until calls to
    its partitions time out with a 503, the controller has fenced it and the others
    lead in its place; then reconnected. Cut off, it cannot acknowledge anything (its
    followers and the controller are out of reach), so nothing it took alone was
    answered 200; back, it catches up and rejoins every ISR."""
    cluster = partitionable_kafka_cluster
    stack = start_stack(make_stack, cluster, database_url)
    started = pids(stack)

    with mixed_traffic(stack) as (edge, counters):
        network = cluster.network
        unresponsive_then_healed(cluster, stack, edge, counters, network.cut, network.reconnect)
        wait_serving(stack, edge, counters, calls=HEALED_CALLS)

    assert_recovered(stack, edge, counters, started)
