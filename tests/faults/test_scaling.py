"""Workers scaled 1 → 3 → 1 under load: every rebalance hands partitions over without
losing or repeating a record."""

from __future__ import annotations

import pytest

from tests.faults.harness import (
    assert_clean_run,
    mixed_traffic,
    outcome_count,
    owned_partitions,
    wait_progress,
)
from tests.support.stack import Broker, wait_until


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_scale_workers_one_three_one_under_load(kafka: Broker, database_url: str, make_stack) -> None:
    stack = make_stack(kafka.bootstrap, database_url, workers=1, partitions=6)
    first = stack.workers[0]
    with mixed_traffic(stack, at_least=300) as (edge, counters):
        added = [stack.add_worker(), stack.add_worker()]
        wait_until(
            lambda: all(len(owned_partitions(w)) == 2 for w in stack.workers),
            40,
            "three workers with two partitions each",
        )
        applying = lambda: all(outcome_count(w, "applied") > 0 for w in added)  # noqa: E731
        wait_until(applying, 30, "the new workers to apply records")
        for worker in added:
            assert worker.stop() == 0, f"{worker.name} did not stop cleanly"
        wait_until(lambda: len(owned_partitions(first)) == 6, 40, "one worker owning every partition again")
        wait_progress(stack, counters)

    outcome = assert_clean_run(stack, edge, counters, at_least=300)
    assert outcome.retried_identifies > 0
    assert first.alive()
