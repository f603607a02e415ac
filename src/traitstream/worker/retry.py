"""Retrying what failed for a reason that passes (``TransientError``), with backoff.

A batch is retried as a whole, forever, until it goes through or the worker is
stopped: transient failures are never dead-lettered.
"""

from __future__ import annotations

import gc
import logging
import random
from collections.abc import Callable
from typing import TypeVar

from traitstream.errors import TransientError
from traitstream.metrics import WorkerMetrics
from traitstream.processes import StopFlag

log = logging.getLogger(__name__)
T = TypeVar("T")

BACKOFF_MAX_S = 10.0


class Abandoned(Exception):
    """The worker was stopped while a batch was being retried; nothing was committed."""


class Retry:
    def __init__(self, stop: StopFlag, metrics: WorkerMetrics) -> None:
        self._stop = stop
        self._metrics = metrics

    def __call__(self, action: Callable[[], T]) -> T:
        """Run ``action`` until it stops raising ``TransientError``. Raises
        ``Abandoned`` when the worker is stopped meanwhile (the batch stays
        uncommitted)."""
        delay = 0.1
        while True:
            try:
                return action()
            except TransientError as exc:
                self._metrics.store_errors.labels(exc.source).inc()
                # Jittered, so that workers failing together (a full lock table, a
                # restart of a dependency) do not all come back at the same moment.
                pause = delay * random.uniform(0.5, 1.0)
                log.warning("transient failure, retrying in %.1fs: %s", pause, exc)
                # The collector is paused during a batch, and an outage can keep one in
                # retries for hours: what each failed attempt left in cycles goes now.
                gc.collect()
                if self._stop.wait(pause):
                    raise Abandoned from exc
                delay = min(delay * 2, BACKOFF_MAX_S)
