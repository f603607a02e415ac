"""Every metric, by process. Names of the contract metrics are fixed; label sets stay
bounded (never a user id, key or workspace in a label)."""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Finer around one second, the end-to-end target: a quantile read from a histogram
# is interpolated inside its bucket, so these bounds are its precision there.
E2E_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SIZE_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000)


MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus_client's variable: where the processes of one server keep their
metrics, so that any of them can answer a scrape for all. It must be set before
prometheus_client is imported in a process."""


class EdgeMetrics:
    """The edge's metrics. ``multiprocess_dir``: the edge runs as several processes
    sharing one port, each keeping its values under that directory (see
    ``MULTIPROCESS_DIR_ENV``); ``exposition`` then answers for them all."""

    def __init__(
        self, registry: CollectorRegistry | None = None, multiprocess_dir: str | None = None
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self._multiprocess_dir = multiprocess_dir
        r = self.registry
        self.requests = Counter(
            "traitstream_edge_requests",
            "HTTP requests by dialect and status",
            ["dialect", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "traitstream_edge_request_seconds",
            "HTTP request latency",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.identifies = Counter(
            "traitstream_edge_identifies",
            "Identifies acknowledged by the broker",
            ["dialect"],
            registry=r,
        )
        self.produce_errors = Counter(
            "traitstream_edge_produce_errors",
            "Records the broker did not acknowledge",
            registry=r,
        )
        self.delivery_seconds = Histogram(
            "traitstream_edge_delivery_seconds",
            "From produce to the broker's acknowledgement",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ignored = Counter(
            "traitstream_edge_ignored_events",
            "Events accepted so that SDKs keep working, but not identifies (not stored)",
            ["dialect", "type"],
            registry=r,
        )
        self.event_time_clamped = Counter(
            "traitstream_edge_event_time_clamped",
            "Identifies dated further past their receipt than the margin allows, and so "
            "dated at their receipt",
            ["dialect"],
            registry=r,
        )
        self.in_flight = Gauge(
            "traitstream_edge_in_flight_requests",
            "Requests being handled",
            registry=r,
            multiprocess_mode="livesum",
        )
        # Each labelled child looked up once: ``labels`` takes a lock and builds a key
        # on every call, twice per request otherwise.
        self._children: dict[tuple[Counter, tuple[str, ...]], Any] = {}

    def exposition(self) -> bytes:
        """The Prometheus text exposition: of this process, or of every process of
        the edge when they share a ``multiprocess_dir``."""
        if self._multiprocess_dir is None:
            return bytes(generate_latest(self.registry))
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, self._multiprocess_dir)  # type: ignore[no-untyped-call]
        return bytes(generate_latest(merged))

    def close(self) -> None:
        """At the process's exit: its live gauges stop counting in the others' answers."""
        if self._multiprocess_dir is not None:
            multiprocess.mark_process_dead(os.getpid(), self._multiprocess_dir)  # type: ignore[no-untyped-call]

    def count_request(self, dialect: str, status: int) -> None:
        self._child(self.requests, dialect, str(status)).inc()

    def count_identifies(self, dialect: str, count: int) -> None:
        self._child(self.identifies, dialect).inc(count)

    def count_clamped(self, dialect: str, count: int) -> None:
        self._child(self.event_time_clamped, dialect).inc(count)

    def _child(self, counter: Counter, *labels: str) -> Any:
        child = self._children.get((counter, labels))
        if child is None:
            child = self._children[(counter, labels)] = counter.labels(*labels)
        return child


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "traitstream_worker_events",
            "Records handled, by outcome",
            ["outcome"],
            registry=r,
        )
        for outcome in ("applied", "duplicate", "dead_lettered"):
            self.events.labels(outcome)
        self.dead_letters = Counter(
            "traitstream_worker_dead_letters",
            "Dead-lettered records by reason",
            ["reason"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            "traitstream_worker_batch_seconds",
            "Time to apply one batch",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "traitstream_worker_batch_size",
            "Records per batch",
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.end_to_end_seconds = Histogram(
            "traitstream_end_to_end_seconds",
            "From the edge receiving an identify to its being applied",
            buckets=E2E_BUCKETS,
            registry=r,
        )
        self.consumer_lag = Gauge(
            "traitstream_consumer_lag",
            "Records behind the partition's high watermark",
            ["partition"],
            registry=r,
        )
        self.rebalances = Counter(
            "traitstream_worker_rebalances",
            "Partition assignments and revocations",
            ["change"],
            registry=r,
        )
        self.store_errors = Counter(
            "traitstream_worker_store_errors",
            "Transient errors talking to a store, retried",
            ["store"],
            registry=r,
        )
        self.merge_conflicts = Counter(
            "traitstream_worker_merge_conflicts",
            "Anonymous ids seen with a user while already linked to another user (not merged)",
            registry=r,
        )
        self.changes_published = Counter(
            "traitstream_changes_published",
            "Profile change records the broker acknowledged on the changes topic, by kind "
            "(update, merge, erase, tombstone)",
            ["kind"],
            registry=r,
        )
        self.changes_outbox_backlog = Gauge(
            "traitstream_changes_outbox_backlog",
            "Profile changes committed but not yet acknowledged by the broker, in the outbox "
            "shards this worker's relay holds",
            registry=r,
        )
        self.changes_relay_lag_seconds = Gauge(
            "traitstream_changes_relay_lag_seconds",
            "Age of the oldest profile change waiting in the outbox shards this worker's relay holds",
            registry=r,
        )
        self.changes_relay_shards = Gauge(
            "traitstream_changes_relay_shards",
            "Outbox shards whose lease this worker's relay holds",
            registry=r,
        )


def observe_many(histogram: Histogram, amounts: Iterable[float]) -> None:
    """``histogram.observe(amount)`` for every amount, as one increment per bucket.

    The workers time every identify they apply: ``observe`` takes two locks and walks
    the buckets in Python each time, 4% of a worker's CPU under load. This counts a
    batch's amounts per bucket first. It reads the histogram's own bucket counters
    (prometheus_client has no bulk observe); should they ever be missing, it falls
    back to ``observe`` (tests/unit/test_metrics.py compares the two).
    """
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for amount in amounts:
            histogram.observe(amount)
        return
    counts = [0] * len(bounds)
    added = 0.0
    for amount in amounts:
        added += amount
        if amount == amount:  # NaN counts in the sum only, as with ``observe``
            counts[bisect_left(bounds, amount)] += 1
    total.inc(added)
    for bucket, count in zip(buckets, counts, strict=True):
        if count:
            bucket.inc(count)
