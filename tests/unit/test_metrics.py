"""The metric inventory: the contract's names, types and labels, on the process that
serves them, and label sets that stay bounded whatever the traffic."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from traitstream.metrics import E2E_BUCKETS, EdgeMetrics, WorkerMetrics, observe_many

ROOT = Path(__file__).resolve().parents[2]

# name as scraped -> (process, type, label names); from the contract's Metrics section.
CONTRACT = {
    "traitstream_edge_requests_total": ("edge", "counter", {"dialect", "status"}),
    "traitstream_edge_request_seconds": ("edge", "histogram", set()),
    "traitstream_worker_events_total": ("worker", "counter", {"outcome"}),
    "traitstream_worker_batch_seconds": ("worker", "histogram", set()),
    "traitstream_end_to_end_seconds": ("worker", "histogram", set()),
    "traitstream_consumer_lag": ("worker", "gauge", {"partition"}),
}
OUTCOMES = {"applied", "duplicate", "dead_lettered"}

# Every label a metric may carry: each has a small, fixed set of values.
BOUNDED_LABELS = {"dialect", "status", "outcome", "partition", "reason", "change", "store", "type", "kind"}
# Labels whose values grow with users or tenants: one series each would exhaust Prometheus.
UNBOUNDED_LABELS = {
    "user_id",
    "anonymous_id",
    "profile_id",
    "workspace",
    "workspace_id",
    "key",
    "key_id",
    "api_key",
    "response_id",
    "message_id",
    "dedupe_key",
    "path",
    "url",
    "error",
}


def metrics_of(holder: EdgeMetrics | WorkerMetrics) -> list[MetricWrapperBase]:
    return [value for value in vars(holder).values() if isinstance(value, MetricWrapperBase)]


def label_names(metric: MetricWrapperBase) -> set[str]:
    # prometheus_client keeps declared label names only on this attribute.
    return set(metric._labelnames)


def families(registry: CollectorRegistry) -> dict[str, tuple[str, list[dict[str, str]]]]:
    """What a scrape sees: family name -> (type, the label sets of its samples, less ``le``)."""
    found = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        name = f"{family.name}_total" if family.type == "counter" else family.name
        labels = [{k: v for k, v in s.labels.items() if k != "le"} for s in family.samples]
        found[name] = (family.type, labels)
    return found


def touched(holder: EdgeMetrics | WorkerMetrics) -> EdgeMetrics | WorkerMetrics:
    """Give every labelled metric one child, with the contract's label names where it has them."""
    for metric in metrics_of(holder):
        names = label_names(metric)
        if names:
            metric.labels(**dict.fromkeys(names, "1"))
    return holder


@pytest.fixture
def scraped() -> dict[str, dict[str, tuple[str, list[dict[str, str]]]]]:
    return {
        "edge": families(touched(EdgeMetrics()).registry),
        "worker": families(touched(WorkerMetrics()).registry),
    }


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_contract_metric_exists_with_its_type_and_labels(
    name: str, scraped: dict[str, dict[str, tuple[str, list[dict[str, str]]]]]
) -> None:
    process, kind, labels = CONTRACT[name]
    assert name in scraped[process], f"{name} is not served by the {process}"
    found_kind, samples = scraped[process][name]
    assert found_kind == kind
    assert samples
    assert all(set(sample) == labels for sample in samples), samples
    other = "worker" if process == "edge" else "edge"
    assert name not in scraped[other], f"{name} is served by the {other} too"


def test_worker_outcomes_are_exported_before_any_event() -> None:
    fresh = families(WorkerMetrics().registry)
    kind, samples = fresh["traitstream_worker_events_total"]
    assert kind == "counter"
    assert {s["outcome"] for s in samples} == OUTCOMES


def test_histograms_have_buckets_for_the_latency_objective() -> None:
    """The alert on end-to-end p99 compares with 1 s: a bucket must end there."""
    text = generate_latest(WorkerMetrics().registry).decode()
    assert 'traitstream_end_to_end_seconds_bucket{le="1.0"}' in text
    edge = generate_latest(EdgeMetrics().registry).decode()
    assert 'traitstream_edge_request_seconds_bucket{le="+Inf"}' in edge


@pytest.mark.parametrize("holder", [EdgeMetrics, WorkerMetrics], ids=["edge", "worker"])
def test_label_sets_are_bounded(holder: type[EdgeMetrics | WorkerMetrics]) -> None:
    for metric in metrics_of(holder()):
        names = label_names(metric)
        assert not names & UNBOUNDED_LABELS, f"{metric._name} is labelled by {names & UNBOUNDED_LABELS}"
        assert names <= BOUNDED_LABELS, f"{metric._name} has labels {names - BOUNDED_LABELS} of unknown bound"


@pytest.mark.parametrize("holder", [EdgeMetrics, WorkerMetrics], ids=["edge", "worker"])
def test_every_metric_is_named_for_the_project(holder: type[EdgeMetrics | WorkerMetrics]) -> None:
    for name in families(touched(holder()).registry):
        assert re.fullmatch(r"traitstream_[a-z0-9_]+", name), name


def test_each_process_has_its_own_registry() -> None:
    """Two edges (or an edge and a worker) in one process neither collide on names nor
    share counts (a shared default registry would raise on the second one)."""
    first, second = EdgeMetrics(), EdgeMetrics()
    WorkerMetrics(), WorkerMetrics()
    first.requests.labels("thrivestack", "200").inc(3)
    assert (
        first.registry.get_sample_value(
            "traitstream_edge_requests_total", {"dialect": "thrivestack", "status": "200"}
        )
        == 3
    )
    assert (
        second.registry.get_sample_value(
            "traitstream_edge_requests_total", {"dialect": "thrivestack", "status": "200"}
        )
        is None
    )


def exported_names() -> set[str]:
    names: set[str] = set()
    for holder in (EdgeMetrics(), WorkerMetrics()):
        for name, (kind, _) in families(touched(holder).registry).items():
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


@pytest.mark.parametrize(
    "path",
    ["deploy/prometheus/alerts.yml", "deploy/grafana/dashboards/traitstream.json", "docs/operations.md"],
)
def test_operations_files_name_only_exported_metrics(path: str) -> None:
    text = (ROOT / path).read_text(encoding="utf-8")
    if path.endswith(".json"):
        text = json.dumps(json.loads(text))
    used = set(re.findall(r"\btraitstream_[a-z0-9_]+", text))
    assert used, f"{path} names no metric"
    assert used <= exported_names(), f"{path} names metrics nobody exports: {sorted(used - exported_names())}"


def _samples(histogram: Histogram) -> dict[str, float]:
    return {
        f"{s.name}{sorted(s.labels.items())}": s.value
        for metric in histogram.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


@pytest.mark.parametrize(
    "amounts",
    [[], [0.0], [0.01, 0.011, 0.5, 0.75, 0.76, 60.0, 61.0, 1e9], [float("nan"), 0.2], [-1.0, 0.01] * 50],
)
def test_observe_many_is_observe_for_each(amounts: list[float]) -> None:
    one_by_one = Histogram("h", "h", buckets=E2E_BUCKETS, registry=CollectorRegistry())
    for amount in amounts:
        one_by_one.observe(amount)
    at_once = Histogram("h", "h", buckets=E2E_BUCKETS, registry=CollectorRegistry())
    observe_many(at_once, amounts)
    expected, got = _samples(one_by_one), _samples(at_once)
    assert expected.keys() == got.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, nan_ok=True), key


def test_observe_many_takes_any_iterable() -> None:
    histogram = Histogram("h", "h", buckets=E2E_BUCKETS, registry=CollectorRegistry())
    observe_many(histogram, (amount for amount in [0.2, 3.0]))
    assert _samples(histogram)["h_sum[]"] == pytest.approx(3.2)
    assert _samples(histogram)["h_count[]"] == 2


def test_observe_many_falls_back_to_observe_without_the_bucket_counters() -> None:
    class Plain:
        def __init__(self) -> None:
            self.seen: list[float] = []

        def observe(self, amount: float) -> None:
            self.seen.append(amount)

    plain = Plain()
    observe_many(plain, [0.1, 2.0])  # type: ignore[arg-type]
    assert plain.seen == [0.1, 2.0]


def test_request_and_identify_counts_land_on_their_own_series() -> None:
    metrics = EdgeMetrics()
    for _ in range(3):
        metrics.count_request("segment", 200)
    metrics.count_request("segment", 413)
    metrics.count_request("amplitude", 200)
    metrics.count_identifies("segment", 500)
    metrics.count_identifies("segment", 2)
    metrics.count_identifies("amplitude", 1)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
        for s in family.samples
        if s.name in ("traitstream_edge_requests_total", "traitstream_edge_identifies_total")
    }
    assert samples == {
        ("traitstream_edge_requests_total", (("dialect", "segment"), ("status", "200"))): 3.0,
        ("traitstream_edge_requests_total", (("dialect", "segment"), ("status", "413"))): 1.0,
        ("traitstream_edge_requests_total", (("dialect", "amplitude"), ("status", "200"))): 1.0,
        ("traitstream_edge_identifies_total", (("dialect", "segment"),)): 502.0,
        ("traitstream_edge_identifies_total", (("dialect", "amplitude"),)): 1.0,
    }
