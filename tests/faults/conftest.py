"""Fixtures of the fault suite: throwaway Redis and PostgreSQL servers that a test may
kill and restart, and a factory of real-process stacks that are always torn down."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.faults.services import PostgresCluster, RedisServer
from tests.support.stack import Stack


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
