"""SIGTERM to an edge of several processes while identifies wait for the broker:
the edge stops taking connections, the requests in flight finish with their 200
once the broker acknowledges, every one of them is in Kafka, and the edge exits 0.

The broker is frozen (SIGSTOP) so that the requests are still in flight when the
signal arrives; this test runs a single-node Apache Kafka of its own for that.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.faults.harness import read_topic
from tests.support.stack import Broker, Stack, metric_sum, wait_until

IN_FLIGHT = 12
FROZEN_S = 3.0


@pytest.fixture
def own_broker() -> Iterator[Broker]:
    broker = Broker()
    yield broker
    broker.stop()


@pytest.mark.timeout(180)
def test_sigterm_lets_the_requests_in_flight_finish_and_loses_none(
    own_broker: Broker, database_url: str, make_stack: Callable[..., Stack]
) -> None:
    assert own_broker.cluster is not None, "the test freezes the broker: it needs a local one"
    stack = make_stack(
        own_broker.bootstrap, database_url, workers=0, extra_env={"TRAITSTREAM_HTTP_WORKERS": "2"}
    )
    edge = stack.edge
    assert edge is not None and edge.process is not None
    process = edge.process
    run = uuid.uuid4().hex[:8]

    def identify(index: int) -> int:
        body = {"user_id": f"shutdown-{run}-{index}", "traits": {"plan": "pro"}}
        try:
            return int(stack.post("/api/identify", body).status_code)
        except httpx.HTTPError:
            return 0

    def in_flight() -> float:
        text = httpx.get(f"{stack.url}/metrics", timeout=5).text
        return metric_sum(text, "traitstream_edge_in_flight_requests")

    assert identify(-1) == 200  # the producers are connected before the broker freezes
    own_broker.cluster.pause_node(1)
    try:
        with ThreadPoolExecutor(IN_FLIGHT) as pool:
            answers = [pool.submit(identify, i) for i in range(IN_FLIGHT)]
            # Whichever process answers the scrape counts the other's requests too.
            wait_until(lambda: in_flight() == IN_FLIGHT, 20, "every request in flight")
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            time.sleep(FROZEN_S)
            assert edge.alive(), "the edge left with requests in flight"
            with pytest.raises(httpx.HTTPError):  # nor does it answer new requests meanwhile
                httpx.get(f"{stack.url}/healthz", timeout=2)
            own_broker.cluster.resume_node(1)
            statuses = [answer.result(timeout=30) for answer in answers]
    finally:
        own_broker.cluster.resume_node(1)

    assert statuses == [200] * IN_FLIGHT
    assert process.wait(30) == 0
    assert time.monotonic() - signalled < 20
    records = read_topic(stack.bootstrap, stack.topic, stack.partitions)
    assert len(records) == IN_FLIGHT + 1, "an acknowledged identify is missing from Kafka"
