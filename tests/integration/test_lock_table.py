"""PostgreSQL's shared lock table full: every worker batch takes an advisory lock per
user and anonymous id, so a server whose table is too small for the workers fails
their batches with "out of shared memory". The workers must say what to change,
lose nothing, and carry on once there is room.

The fixture fills the lock table of the whole server for a few seconds; the suite
runs one test at a time, so only this test's own stack is affected."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from tests.support.stack import PG_ADMIN_URL, Stack, wait_until

# Keys far from anything hashtextextended is likely to give a worker's lock names.
_BASE = -(2**62)
_HEADROOM = 20
"""Locks left free: room for the odd statement, far too few for a batch."""


@pytest.fixture
def full_lock_table() -> Iterator[psycopg.Connection]:
    """A session holding advisory locks until the lock table has only ``_HEADROOM``
    entries free; closing it gives them all back."""
    conn = psycopg.connect(PG_ADMIN_URL, autocommit=True)
    try:
        taken, chunk = 0, 4096
        while chunk >= 1:
            try:
                conn.execute(
                    "SELECT count(pg_advisory_lock(k)) FROM generate_series(%s::bigint, %s::bigint) AS k",
                    (_BASE + taken, _BASE + taken + chunk - 1),
                )
                taken += chunk
            except psycopg.errors.OutOfMemory:
                # Session locks outlive the failed statement: count what it got.
                row = conn.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
                ).fetchone()
                taken = int(row[0]) if row else 0
                chunk //= 2
        conn.execute(
            "SELECT count(pg_advisory_unlock(k)) FROM generate_series(%s::bigint, %s::bigint) AS k",
            (_BASE + taken - _HEADROOM, _BASE + taken - 1),
        )
        yield conn
    finally:
        conn.close()


def test_a_full_lock_table_names_the_setting_and_loses_nothing(
    stack: Stack, full_lock_table: psycopg.Connection
) -> None:
    run = uuid.uuid4().hex[:6]
    users = [f"locks-{run}-{i}" for i in range(300)]
    body = [{"user_id": u, "anonymous_id": f"anon-{u}", "traits": {"plan": "pro"}} for u in users]
    assert stack.post("/api/identify", body).status_code == 200

    def named_the_setting() -> bool:
        return any(
            "lock table is full" in w.log_text() and "max_locks_per_transaction" in w.log_text()
            for w in stack.workers
        )

    wait_until(named_the_setting, 30, "a worker naming max_locks_per_transaction")
    full_lock_table.execute("SELECT pg_advisory_unlock_all()")

    def applied() -> int:
        with psycopg.connect(stack.database_url) as conn:
            row = conn.execute(
                'SELECT count(*) FROM profiles WHERE user_id = ANY(%s) AND traits = \'{"plan": "pro"}\'',
                (users,),
            ).fetchone()
        return int(row[0]) if row else 0

    wait_until(lambda: applied() == len(users), 60, "every identify applied once there was room")
    assert all(w.alive() for w in stack.workers)
