"""Process-wide runtime settings for the long-running processes (edge and worker)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

from traitstream import native

GEN0_THRESHOLD = 50_000


def warn_if_not_compiled() -> None:
    """At start: which implementation runs, with a warning when the compiled
    modules were wanted but are missing (``native.log_choice``)."""
    native.log_choice()


def tune_gc() -> None:
    """Spend less time in Python's cycle collector on the hot paths.

    Every identify allocates dozens of short-lived containers (its traits, its
    operations, the decoded record), which reference counting frees at once. Yet
    with the default threshold the collector ran every 700 allocations and, every
    hundredth run, walked every object of the process: about a fifth of the edge's
    CPU under batched load. Objects alive once start-up is done (modules, the app,
    its routes) are frozen out of the collector's view, and the young generation
    is collected every 50,000 allocations instead. Cycles are still collected.
    """
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cycle collection inside the block; the collector is as it was after it.

    A worker's batch keeps its thousands of records, events and profiles alive until
    it commits, so the young generation filled up during every batch and each
    collection walked that batch, then promoted it to be walked again: 17% of a
    worker's CPU under load went to the collector, which found nothing (a batch's
    objects form no cycles; reference counting frees them when it ends). Around a
    batch, the collector waits until the batch is gone. What a batch leaves in
    cycles is collected after it (and during a batch's retries, by the worker).
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
