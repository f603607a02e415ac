"""Fixtures shared by every suite. Unit tests use none of them and need no network."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.stack import Broker, Stack, scratch_database


@pytest.fixture(scope="session")
def kafka() -> Iterator[Broker]:
    broker = Broker()
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    with scratch_database() as url:
        yield url


@pytest.fixture(scope="module")
def stack(kafka: Broker, database_url: str) -> Iterator[Stack]:
    """Edge and two workers on a fresh topic, shared by the tests of one module."""
    running = Stack(kafka.bootstrap, database_url)
    try:
        running.start(workers=2)
        yield running
    finally:
        running.stop()
