"""Workers with a fetch pause (``TRAITSTREAM_FETCH_PAUSE_MS``, what ``traitstream dev``
and the bench use with the bundled broker) still apply everything: a backlog larger
than one batch, and identifies that arrive one by one while they keep up."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from tests.support.stack import Broker, Stack, wait_until


@pytest.fixture(scope="module")
def paced(kafka: Broker, database_url: str) -> Iterator[Stack]:
    running = Stack(kafka.bootstrap, database_url)
    try:
        running.prepare()
        running.start_edge()
        for _ in range(2):
            running.add_worker(TRAITSTREAM_FETCH_PAUSE_MS="200", TRAITSTREAM_BATCH_SIZE="300")
        yield running
    finally:
        running.stop()


def applied_users(stack: Stack, prefix: str) -> int:
    with psycopg.connect(stack.database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM profiles WHERE workspace_id = %s AND user_id LIKE %s",
            (stack.workspace, f"{prefix}%"),
        ).fetchone()
    return int(row[0]) if row else 0


def test_the_workers_run_with_the_pause(paced: Stack) -> None:
    wait_until(
        lambda: all('"fetch_pause_ms":200' in w.log_text() for w in paced.workers),
        30,
        "the workers logging their fetch pause",
    )


def test_a_backlog_and_a_trickle_are_all_applied(paced: Stack) -> None:
    prefix = f"paced-{uuid.uuid4().hex[:6]}-"
    users = [f"{prefix}{i}" for i in range(2_000)]
    for start in range(0, len(users), 250):
        body = [{"user_id": u, "traits": {"plan": "free", "n": 0}} for u in users[start : start + 250]]
        assert paced.post("/api/identify", body).status_code == 200
    # Every user once, in batches of at most 300 out of several fetches.
    wait_until(lambda: applied_users(paced, prefix) == len(users), 60, "the backlog applied")

    # Then one identify at a time while the workers keep up: each lands within the
    # pause and a batch (the 10 s bound leaves room for a slow machine), not only
    # when more records arrive behind it, which would never come here.
    for n, user in enumerate(users[:20], start=1):
        assert paced.post("/api/identify", {"user_id": user, "traits": {"n": n}}).status_code == 200
        profile = paced.wait_profile(user, lambda p, n=n: p["traits"].get("n") == n, timeout=10)
        assert profile["traits"] == {"plan": "free", "n": n}
