"""Fixtures of the fault suite: throwaway Redis and PostgreSQL servers and three-node
Kafka clusters that a test may kill and restart, and a factory of real-process stacks
that are always torn down."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.faults import netns
from tests.faults.netns import PartitionableKafka
from tests.faults.services import PostgresCluster, RedisServer
from tests.support.stack import Stack
from traitstream.localkafka import LocalKafka


@pytest.fixture
def throwaway_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def throwaway_postgres() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    cluster.init()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def kafka_cluster() -> Iterator[LocalKafka]:
    """Three Apache Kafka nodes of the test's own, which it may kill, stop, freeze and
    restart; killed at teardown whatever state they are in.
    Request it before ``make_stack``, so that the stack stops first."""
    cluster = LocalKafka(3, heap_mb=512)
    try:
        yield cluster.start()
    finally:
        discard(cluster)


def discard(cluster: LocalKafka) -> None:
    """kill -9 every node and remove their data: a clean shutdown of all the nodes at
    once can wait many seconds for a quorum that is going away, and nothing of a
    test's cluster is kept."""
    for node in cluster.nodes:
        cluster.kill_node(node.node_id)
    cluster.stop()


@pytest.fixture
def partitionable_kafka_cluster() -> Iterator[PartitionableKafka]:
    """Like ``kafka_cluster``, with each node in a network namespace of its own, so
    that ``cluster.network.cut(node_id)`` can cut it off (see ``netns.py``). Skipped
    where network namespaces cannot be made (without root)."""
    reason = netns.usable()
    if reason is not None:
        pytest.skip(reason)
    network = netns.Network(3).create()
    try:
        cluster = PartitionableKafka(3, network, heap_mb=512)
        try:
            yield cluster.start()
        finally:
            network.reconnect_all()  # so that their connections close, not linger
            discard(cluster)
    finally:
        network.delete()


@pytest.fixture
def make_stack() -> Iterator[Callable[..., Stack]]:
    """``make_stack(bootstrap, database_url, workers=2, **fields)``: a started Stack,
    stopped at teardown (paused processes are resumed first, so none is left behind).
    Request it after the throwaway servers the stack uses, so that it stops first."""
    stacks: list[Stack] = []

    def make(bootstrap: str, database_url: str, workers: int = 2, **fields: Any) -> Stack:
        stack = Stack(bootstrap, database_url, **fields)
        stacks.append(stack)
        return stack.start(workers=workers)

    yield make
    for stack in stacks:
        for proc in [*stack.workers, *([stack.edge] if stack.edge else [])]:
            proc.resume()
        stack.stop()
