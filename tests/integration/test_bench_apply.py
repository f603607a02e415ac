"""The workers' cost harness (``python -m tests.bench.apply``) against a real
PostgreSQL: it must apply what it measures, so that its figure is the worker's."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from tests.bench import apply
from traitstream.merge import expand_stamps


def test_the_measured_pass_updates_every_profile(database_url: str) -> None:
    # Enough work for the backend to spend several of the kernel's clock ticks
    # (10 ms each, the granularity of its CPU time in /proc): 300 identifies
    # could take less than one and measure 0.
    cost = apply.measure(database_url, identifies=2000, measured_passes=1, batch=500)
    assert (cost.identifies, cost.batches) == (2000, 4)
    assert cost.worker_us > 0
    assert cost.postgres_us is not None and cost.postgres_us > 0  # the server runs here
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT user_id, stamps FROM profiles").fetchall()
        offsets = conn.execute("SELECT max(next_offset) FROM applied_offsets").fetchone()
    users = {u for u, _ in rows}
    assert len(rows) == len(users) > 1900  # 2,000 draws from 100,000 users: a few repeat
    # Every trait of every profile was last written by the measured (second) pass,
    # whose request ids carry the pass number above their low 32 bits.
    for _, stamps in rows:
        event_ids = {stamp[1] for stamp in expand_stamps(stamps)[0].values()}
        assert {uuid.UUID(e.split(":")[0]).int >> 32 for e in event_ids} == {1}
    assert offsets is not None and offsets[0] == 4000  # both passes, every record


def test_refuses_an_empty_measurement() -> None:
    with pytest.raises(SystemExit):
        apply.main(["--identifies", "0"])
