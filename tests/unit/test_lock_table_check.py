"""The worker's start-up look at PostgreSQL's lock table (no network: a stub store)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from traitstream.errors import TransientError
from traitstream.metrics import WorkerMetrics
from traitstream.worker.consumer import Worker


class _Store:
    def __init__(self, capacity: int | None) -> None:
        self.capacity = capacity

    def lock_capacity(self) -> int:
        if self.capacity is None:
            raise TransientError("postgres: connection refused", source="postgres")
        return self.capacity


def _worker(capacity: int | None, batch_size: int = 2000) -> Worker:
    unused: Any = None
    return Worker(
        unused,
        unused,
        "identify",
        unused,
        unused,
        _Store(capacity),
        unused,
        WorkerMetrics(),
        batch_size=batch_size,
    )  # type: ignore[arg-type]


def test_a_table_that_fits_batches_keeps_the_batch_size(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    worker = _worker(7_808)
    worker._check_lock_table()
    assert worker._batch_size == 2000
    assert "fits the batches of about 1 worker(s)" in caplog.text


def test_a_table_smaller_than_one_batch_brings_the_batch_down(caplog: pytest.LogCaptureFixture) -> None:
    worker = _worker(1_000)
    worker._check_lock_table()
    assert worker._batch_size == 250
    assert "raise max_locks_per_transaction" in caplog.text


def test_an_unreachable_database_is_only_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    worker = _worker(None)
    worker._check_lock_table()
    assert worker._batch_size == 2000
    assert "could not read PostgreSQL's lock table size" in caplog.text
