"""kill -9 in the middle of a batch: one worker at a time, then every traitstream process.

A worker is caught "in the middle of a batch" deterministically: the test holds the
row locks of the topic's ``applied_offsets``, so a worker that has decoded its batch
and claimed the dedupe keys in Redis waits inside its Postgres transaction, with
nothing committed. That is the worker that gets killed.
"""

from __future__ import annotations

import signal

import pytest

from tests.faults.harness import (
    assert_clean_run,
    mixed_traffic,
    offsets_locked,
    owned_partitions,
    wait_blocked_worker,
    wait_progress,
)
from tests.support.stack import Broker, wait_until


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_kill9_one_worker_mid_batch_again_and_again(kafka: Broker, database_url: str, make_stack) -> None:
    stack = make_stack(kafka.bootstrap, database_url, workers=2, partitions=6)
    killed = []
    with mixed_traffic(stack, at_least=500) as (edge, counters):
        for _ in range(3):
            with offsets_locked(stack):
                victim = stack.workers[wait_blocked_worker(stack)]
                victim.kill()
                killed.append(victim.name)
            # The survivor finishes its batch at once; the victim's partitions move
            # when the group notices (session timeout), to the survivor and to a newcomer.
            newcomer = stack.add_worker()
            wait_until(lambda w=newcomer: owned_partitions(w), 40, f"{newcomer.name} to get partitions")
            wait_progress(stack, counters)

    assert_clean_run(stack, edge, counters, at_least=500)
    assert len(killed) == 3
    assert sum(w.alive() for w in stack.workers) == 2, "a surviving worker died"


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_kill9_every_process_mid_stream_then_restart(kafka: Broker, database_url: str, make_stack) -> None:
    stack = make_stack(kafka.bootstrap, database_url, workers=2, partitions=6)
    with mixed_traffic(stack, at_least=300) as (edge, counters):
        with offsets_locked(stack):
            wait_blocked_worker(stack)
            everyone = [stack.edge, *stack.workers]
            for proc in everyone:
                proc.process.send_signal(signal.SIGKILL)
            for proc in everyone:
                proc.kill()  # reaps it
        # The broker lives on; clients meet a dead edge and keep their calls to resend.
        wait_until(lambda: edge.statuses["ConnectError"] > 0, 15, "a client to find the edge down")
        stack.start_edge()
        stack.add_worker()
        stack.add_worker()
        wait_progress(stack, counters, timeout=40)
        wait_progress(stack, counters)

    outcome = assert_clean_run(stack, edge, counters, at_least=300)
    assert outcome.retried_identifies > 0, "no identify reached the topic twice: the retry path went untested"
