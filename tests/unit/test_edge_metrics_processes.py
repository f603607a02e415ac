"""Several edge processes, one answer: with a shared multiprocess directory, any
process's /metrics counts the requests every process served (separate Python
processes, as the edge's are; no network)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from traitstream.metrics import MULTIPROCESS_DIR_ENV

# One edge process: counts ``requests`` answers, holds one request in flight, and
# prints its exposition (or, with "close", exits as the edge does at shutdown).
PROCESS = """
import sys
from traitstream.metrics import EdgeMetrics

metrics = EdgeMetrics(multiprocess_dir=sys.argv[1])
for _ in range(int(sys.argv[2])):
    metrics.count_request("thrivestack", 200)
    metrics.request_seconds.observe(0.002)
metrics.in_flight.inc()
if sys.argv[3] == "close":
    metrics.close()
else:
    sys.stdout.buffer.write(metrics.exposition())
"""


def edge_process(directory: Path, requests: int, then: str) -> str:
    env = dict(os.environ, **{MULTIPROCESS_DIR_ENV: str(directory)})
    done = subprocess.run(
        [sys.executable, "-c", PROCESS, str(directory), str(requests), then],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_any_process_answers_for_every_process(tmp_path: Path) -> None:
    edge_process(tmp_path, 3, "close")
    edge_process(tmp_path, 4, "close")
    found = samples(edge_process(tmp_path, 5, "expose"))
    ok = (("dialect", "thrivestack"), ("status", "200"))
    assert found[("traitstream_edge_requests_total", ok)] == 12
    assert found[("traitstream_edge_request_seconds_count", ())] == 12
    assert found[("traitstream_edge_request_seconds_bucket", (("le", "0.0025"),))] == 12
    # The two that exited hold nothing in flight any more; the one answering does.
    assert found[("traitstream_edge_in_flight_requests", ())] == 1


def test_a_single_process_answers_from_its_own_registry() -> None:
    from traitstream.metrics import EdgeMetrics

    metrics = EdgeMetrics()
    metrics.count_request("amplitude", 400)
    found = samples(metrics.exposition().decode())
    assert found[("traitstream_edge_requests_total", (("dialect", "amplitude"), ("status", "400")))] == 1
