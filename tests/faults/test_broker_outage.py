"""The broker goes away: the edge answers 503 (never 200) and says it is not ready;
when a broker is back on the same address it takes identifies again, with the same
edge process, and the workers apply them exactly once.

This test runs its own single-node Apache Kafka, since it stops it; the node comes
back with its log, its topics and its producer state, as a restarted broker does.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.faults.harness import (
    assert_exactly_once,
    dead_letter_count,
    log_events,
    store_errors,
    wait_caught_up,
)
from tests.faults.traffic import EdgeTraffic
from tests.support.stack import Broker, wait_until

PRODUCE_TIMEOUT_S = 3


@pytest.fixture
def own_broker() -> Iterator[Broker]:
    broker = Broker()
    yield broker
    broker.stop()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_broker_outage_answers_503_then_resumes_without_restarting_the_edge(
    own_broker: Broker, database_url: str, make_stack
) -> None:
    stack = make_stack(
        own_broker.bootstrap,
        database_url,
        workers=1,
        partitions=4,
        extra_env={"TRAITSTREAM_PRODUCE_TIMEOUT_S": str(PRODUCE_TIMEOUT_S)},
    )
    edge_pid = stack.edge.process.pid

    # Before: identifies are acknowledged and applied.
    before = EdgeTraffic(stack, max_requests=40, pause_s=0.01).start()
    wait_until(lambda: before.requests_acked == 40, 30, "40 acknowledged calls")
    before.stop()
    assert_exactly_once(stack, before)

    assert own_broker.cluster is not None
    own_broker.cluster.stop_node(1)

    # Down: every call is refused with 503 in the dialect's error shape, none succeeds.
    refused_user = f"down-{uuid.uuid4().hex[:6]}"
    for attempt in range(2):
        started = time.monotonic()
        call = {"user_id": refused_user, "message_id": f"{refused_user}-{attempt}", "traits": {"a": 1}}
        response = stack.post("/api/identify", call)
        assert response.status_code == 503, response.text
        body = response.json()
        assert body["success"] is False and "broker" in body["message"]
        assert time.monotonic() - started < PRODUCE_TIMEOUT_S + 6
    ready = httpx.get(f"{stack.url}/readyz", timeout=10)
    assert ready.status_code == 503 and ready.json()["checks"]["broker"] is False
    assert ready.json()["checks"]["database"] is True
    # Clients keep their calls and resend them: they get 503s until the broker is back.
    during = EdgeTraffic(stack, max_requests=60, pause_s=0.05).start()
    wait_until(lambda: during.statuses["503"] >= 2, 30, "clients to be refused while the broker is down")
    assert during.requests_acked == 0
    worker = stack.workers[0]
    wait_until(lambda: store_errors(worker, "kafka") > 0, 30, "the worker to count the broker's absence")
    assert worker.alive()

    # Back: the broker restarts on the same address with its log; the same edge takes
    # identifies again, and its readiness says so.
    own_broker.cluster.start_node(1)
    wait_until(lambda: during.requests_acked > 0, 30, "the edge to acknowledge identifies again")
    wait_until(stack.ready, 15, "/readyz to say ready again")
    assert stack.edge.process.pid == edge_pid and stack.edge.alive()
    wait_until(lambda: during.requests_acked >= 60, 60, "every call to be acknowledged")
    during.stop()

    outcome = assert_exactly_once(stack, during)
    assert outcome.identifies_acked == 60 * during.per_request
    assert during.statuses["503"] >= 2 and during.statuses["200"] >= 60
    wait_caught_up(stack)
    assert dead_letter_count(stack) == 0
    assert worker.alive(), "the worker exited during the outage"
    assert log_events(worker, "the broker cannot be reached")
    # What was applied before the outage is still there, once; the refused call is not.
    assert_exactly_once(stack, before)
    assert stack.profile(refused_user) is None
