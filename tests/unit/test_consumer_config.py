"""The worker's consumer settings for each group protocol."""

from __future__ import annotations

import pytest

from traitstream.worker.consumer import consumer_config


@pytest.mark.parametrize("protocol", ["consumer", "cooperative-sticky", "eager"])
def test_fetching_waits_for_fetch_min_bytes_on_every_protocol(protocol: str) -> None:
    config = consumer_config("127.0.0.1:9092", "group", 6_000, protocol)
    assert config["fetch.min.bytes"] == 64 * 1024
    assert config["fetch.wait.max.ms"] == 50
    assert config["enable.auto.commit"] is False
    assert "fetch.queue.backoff.ms" not in config


def test_the_consumer_protocol_leaves_timeouts_and_assignment_to_the_broker() -> None:
    config = consumer_config("127.0.0.1:9092", "group", 6_000, "consumer")
    assert config["group.protocol"] == "consumer"
    # librdkafka refuses these with group.protocol=consumer: the broker owns them.
    for key in ("session.timeout.ms", "heartbeat.interval.ms", "partition.assignment.strategy"):
        assert key not in config


@pytest.mark.parametrize(
    ("protocol", "strategy"), [("cooperative-sticky", "cooperative-sticky"), ("eager", "roundrobin")]
)
def test_the_classic_protocols_carry_their_assignor_and_session(protocol: str, strategy: str) -> None:
    config = consumer_config("127.0.0.1:9092", "group", 6_000, protocol)
    assert "group.protocol" not in config
    assert config["partition.assignment.strategy"] == strategy
    assert config["session.timeout.ms"] == 6_000
    assert config["heartbeat.interval.ms"] == 1_200
