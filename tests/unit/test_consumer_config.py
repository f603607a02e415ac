"""The worker's consumer settings and the fetch pause chosen for it."""

from __future__ import annotations

from traitstream import broker
from traitstream.worker.consumer import consumer_config


def test_without_a_pause_fetching_follows_fetch_min_bytes_alone() -> None:
    config = consumer_config("127.0.0.1:9092", "group", 6_000)
    assert config["fetch.min.bytes"] == 64 * 1024
    assert config["fetch.wait.max.ms"] == 50
    assert "queued.min.messages" not in config
    assert "fetch.queue.backoff.ms" not in config


def test_a_pause_holds_fetches_while_fetched_records_wait() -> None:
    config = consumer_config("127.0.0.1:9092", "group", 6_000, fetch_pause_ms=200)
    assert config["queued.min.messages"] == 1
    assert config["fetch.queue.backoff.ms"] == 200
    assert config["fetch.min.bytes"] == 64 * 1024


def test_the_pause_is_the_bundled_brokers_unless_one_was_set() -> None:
    assert broker.worker_fetch_pause_ms(None, bundled=True) == broker.WORKER_FETCH_PAUSE_MS
    assert broker.worker_fetch_pause_ms(None, bundled=False) == 0
    assert broker.worker_fetch_pause_ms(0, bundled=True) == 0
    assert broker.worker_fetch_pause_ms(50, bundled=False) == 50
