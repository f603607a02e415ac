"""Measurements that need the whole pipeline running: not tests, run by hand.

``traitstream bench`` (``make bench``): throughput and latency of the whole
pipeline, measured against the raw limits of the same machine (PostgreSQL, the
broker, Redis). ``runner`` runs the phases, ``load`` is the load generator (a
separate process), ``limits`` measures the raw limits, ``stats`` holds the pure
arithmetic, and ``report`` writes the JSON results, the summary and the chart.
``apply`` measures the workers' own cost alone.

``scaling`` (``make bench-scaling``) measures the consumer group protocols while
the workers scale, with ``identify_load`` as its load generator.

The bench is a development tool, not part of the product: it lives beside the
tests and runs from a source checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The checkout's root: the folder that holds ``tests``."""


def child_env() -> dict[str, str]:
    """The environment for a ``python -m tests.bench.…`` child: this one, with the
    checkout's root first on ``PYTHONPATH`` so the child finds ``tests`` whatever
    its working directory."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env
