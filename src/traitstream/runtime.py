"""Process-wide runtime settings for the long-running processes (edge and worker)."""

from __future__ import annotations

import gc
import importlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager

GEN0_THRESHOLD = 50_000

EXTENSIONS = (
    "traitstream.avro._v1c",
    "traitstream._merge",
    "traitstream.worker._sizing",
    "traitstream.dialects._checks",
)
"""The C extensions that setup.py builds: each mirrors Python functions of the hot paths."""


def missing_extensions() -> list[str]:
    """The C extensions this installation lacks or cannot load (built without a
    compiler, or for another Python): it works without them, on their Python twins,
    but slower. The edge and the workers log a warning at start when any is missing."""
    missing = []
    for name in EXTENSIONS:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def warn_if_not_compiled() -> None:
    missing = missing_extensions()
    if missing:
        logging.getLogger(__name__).warning(
            "running without the C extensions %s: everything works, more slowly; "
            "reinstall where a C compiler is available",
            ", ".join(missing),
            extra={"missing_extensions": missing},
        )


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
