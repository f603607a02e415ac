"""A real Prometheus scraping a real stack (edge and two workers).

It loads ``deploy/prometheus/alerts.yml`` unchanged and uses the job names the rules
select on, so it proves what the static checks cannot: every process exports its
metrics in a format Prometheus accepts, the contract metrics arrive with the labels
the rules and the dashboard use, every alert expression evaluates against live
series, and a healthy stack fires no alert.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.stack import LOG_DIR, Stack, free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "traitstream.json"
IDENTIFIES = 5

CONTRACT_METRICS = (
    "traitstream_edge_requests_total",
    "traitstream_edge_request_seconds_count",
    "traitstream_worker_events_total",
    "traitstream_worker_batch_seconds_count",
    "traitstream_end_to_end_seconds_count",
    "traitstream_consumer_lag",
)


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        pytest.skip("the prometheus binary is not installed (Debian package: prometheus)")
    return path


def scrape_config(stack: Stack) -> dict[str, Any]:
    """One-second scrapes and rule evaluations, so the test waits seconds, not minutes.
    YAML is a superset of JSON, so the config is written as JSON."""
    workers = [f"127.0.0.1:{w.metrics_port}" for w in stack.workers]
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {
                "job_name": "traitstream-edge",
                "static_configs": [{"targets": [f"127.0.0.1:{stack.http_port}"]}],
            },
            {"job_name": "traitstream-worker", "static_configs": [{"targets": workers}]},
        ],
    }


@pytest.fixture(scope="module")
def prometheus(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = prometheus_binary()
    workdir = tmp_path_factory.mktemp("prometheus")
    config = workdir / "prometheus.yml"
    config.write_text(json.dumps(scrape_config(stack), indent=2), encoding="utf-8")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOG_DIR / f"{stack.topic}-prometheus.log", "ab") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"prometheus exited with status {process.returncode}; see its log")
            try:
                return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 30, "prometheus to be ready")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def traffic(stack: Stack) -> list[str]:
    """A few accepted identifies and one refused request; returns the user ids."""
    users = [f"prom-{uuid.uuid4().hex[:8]}" for _ in range(IDENTIFIES)]
    for user in users:
        response = stack.post("/api/identify", {"user_id": user, "traits": {"plan": "pro"}})
        assert response.status_code == 200, response.text
    assert stack.post("/api/identify", {"traits": {}}).status_code == 400
    for user in users:
        stack.wait_profile(user, timeout=30)
    return users


def api(prometheus: str, path: str, **params: str) -> Any:
    response = httpx.get(f"{prometheus}/api/v1/{path}", params=params, timeout=5)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", body
    return body["data"]


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    data = api(prometheus, "query", query=expr)
    assert data["resultType"] == "vector", data
    return list(data["result"])


def value(prometheus: str, expr: str) -> float:
    result = query(prometheus, expr)
    return float(result[0]["value"][1]) if result else 0.0


def test_every_target_is_up(stack: Stack, prometheus: str) -> None:
    expected = {
        ("traitstream-edge", f"127.0.0.1:{stack.http_port}"),
        *(("traitstream-worker", f"127.0.0.1:{w.metrics_port}") for w in stack.workers),
    }

    # Checked together and polled: one slow scrape on a busy machine fails for a
    # second, and the next one succeeds.
    def healthy() -> list[Any] | None:
        active = api(prometheus, "targets", state="active")["activeTargets"]
        up = {(t["labels"]["job"], t["labels"]["instance"]) for t in active if t["health"] == "up"}
        clean = all(t["lastError"] == "" for t in active)
        workers = value(prometheus, 'count(up{job="traitstream-worker"} == 1)')
        edge = value(prometheus, 'up{job="traitstream-edge"}')
        return active if up == expected and clean and workers == len(stack.workers) and edge == 1 else None

    wait_until(healthy, 30, "every target to be scraped successfully")


def test_alert_rules_are_loaded_and_evaluate(prometheus: str) -> None:
    declared = {
        group["name"]: {rule["alert"] for rule in group["rules"]}
        for group in yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    }

    def evaluated() -> dict[str, Any] | None:
        groups = api(prometheus, "rules", type="alert")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return {"groups": groups} if rules and all(r["health"] == "ok" for r in rules) else None

    groups = wait_until(evaluated, 30, "every alert rule to be evaluated without error")["groups"]
    loaded = {group["name"]: {rule["name"] for rule in group["rules"]} for group in groups}
    assert loaded == declared
    for group in groups:
        assert group["file"] == str(ALERTS)
        for rule in group["rules"]:
            assert rule["type"] == "alerting"
            assert rule["annotations"]["runbook"].startswith("docs/operations.md#"), rule


def test_a_healthy_stack_fires_no_alert(stack: Stack, prometheus: str, traffic: list[str]) -> None:
    # Before the first worker scrape, TraitstreamNoWorkerAlive is briefly pending; once
    # both workers are up every rule must settle to inactive.
    def quiet() -> bool:
        states = {
            rule["name"]: rule["state"]
            for group in api(prometheus, "rules", type="alert")["groups"]
            for rule in group["rules"]
        }
        inactive = bool(states) and set(states.values()) == {"inactive"}
        return inactive and api(prometheus, "alerts")["alerts"] == []

    wait_until(quiet, 30, "every alert to be inactive")


def test_contract_metrics_are_queryable(stack: Stack, prometheus: str, traffic: list[str]) -> None:
    def scraped() -> list[str] | None:
        missing = [name for name in CONTRACT_METRICS if not query(prometheus, name)]
        return None if missing else list(CONTRACT_METRICS)

    # The lag gauge is refreshed every few seconds by each worker, hence the longer bound.
    wait_until(scraped, 40, f"every contract metric in prometheus ({', '.join(CONTRACT_METRICS)})", every=0.5)

    def edge_count() -> float:
        return value(
            prometheus,
            'sum(traitstream_edge_requests_total{job="traitstream-edge",dialect="thrivestack",status="200"})',
        )

    assert wait_until(lambda: edge_count() >= IDENTIFIES, 15, "the edge's 200s to be scraped")
    # The refusal was sent after the fifth 200, so a scrape may have fallen between them.
    refused = wait_until(
        lambda: query(prometheus, 'traitstream_edge_requests_total{status="400"}'),
        15,
        "the edge's 400 to be scraped",
    )
    assert all(s["metric"]["job"] == "traitstream-edge" for s in refused)

    def applied() -> float:
        return value(prometheus, 'sum(traitstream_worker_events_total{outcome="applied"})')

    assert wait_until(lambda: applied() >= IDENTIFIES, 15, "applied events to be scraped")
    outcomes = {
        s["metric"]["outcome"]
        for s in query(prometheus, 'traitstream_worker_events_total{job="traitstream-worker"}')
    }
    assert outcomes == {"applied", "duplicate", "dead_lettered"}
    # A worker observes the end-to-end latency just after it counts the events.
    wait_until(
        lambda: value(prometheus, "sum(traitstream_end_to_end_seconds_count)") >= IDENTIFIES,
        15,
        "the end-to-end latencies to be scraped",
    )
    assert value(prometheus, "sum(traitstream_edge_request_seconds_count)") >= IDENTIFIES + 1
    partitions = {s["metric"]["partition"] for s in query(prometheus, "traitstream_consumer_lag")}
    assert partitions <= {str(p) for p in range(stack.partitions)}


def dashboard_queries() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            found.extend(
                (panel.get("title", ""), t["expr"]) for t in panel.get("targets", []) if t.get("expr")
            )
            walk(panel.get("panels", []))

    walk(json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"])
    return found


def test_dashboard_queries_evaluate_on_live_data(stack: Stack, prometheus: str, traffic: list[str]) -> None:
    queries = dashboard_queries()
    assert queries
    # Grafana's $__rate_interval is at least four scrape intervals; 15s covers the whole test.
    for _title, expr in queries:
        api(prometheus, "query", query=expr.replace("$__rate_interval", "15s"))
    workers_up = next(expr for title, expr in queries if title == "Workers up")
    assert wait_until(
        lambda: value(prometheus, workers_up) == len(stack.workers), 30, "the Workers up panel to count both"
    )
