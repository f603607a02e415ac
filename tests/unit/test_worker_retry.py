"""The worker's retries of a batch (no network: stub dependencies)."""

from __future__ import annotations

import weakref
from typing import Any

from traitstream.errors import TransientError
from traitstream.metrics import WorkerMetrics
from traitstream.runtime import collector_paused
from traitstream.worker.consumer import Worker


class _Cycle:
    def __init__(self) -> None:
        self.itself = self


def test_retries_collect_what_failed_attempts_left_in_cycles() -> None:
    """The collector is paused during a batch; an outage keeps a batch in retries, so
    each failed attempt's cyclic garbage is collected before the next attempt."""
    unused: Any = None
    worker = Worker(unused, unused, "identify", unused, unused, unused, unused, WorkerMetrics())
    left: list[weakref.ref[_Cycle]] = []

    def attempt() -> str:
        if not left:
            left.append(weakref.ref(_Cycle()))
            raise TransientError("redis: connection refused", source="redis")
        return "applied"

    with collector_paused():
        assert worker._retry(attempt) == "applied"
        assert left[0]() is None
