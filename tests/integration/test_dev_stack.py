"""``traitstream dev`` (what ``make run`` starts) as a user runs it: it starts its
own Apache Kafka when nothing answers at the bootstrap address, becomes ready,
applies identifies, restarts a worker that dies, and on SIGTERM stops every
process it started, the broker included."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from tests.bench.procs import tree
from tests.support.stack import REDIS_URL, wait_until
from traitstream.processes import free_port


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _workers(dev_pid: int) -> list[int]:
    return [p for p in tree(dev_pid) if p != dev_pid and _cmdline(p).endswith("traitstream worker ")]


def test_dev_runs_the_pipeline_restarts_a_dead_worker_and_stops_everything(
    database_url: str, tmp_path: Path
) -> None:
    key = f"dev_{uuid.uuid4().hex}"
    port = free_port()
    env = dict(
        os.environ,
        TRAITSTREAM_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
        TRAITSTREAM_DATABASE_URL=database_url,
        TRAITSTREAM_REDIS_URL=REDIS_URL,
        TRAITSTREAM_TOPIC=f"dev-{uuid.uuid4().hex[:8]}",
        TRAITSTREAM_HTTP_PORT=str(port),
        TRAITSTREAM_METRICS_PORT=str(free_port()),
        TRAITSTREAM_WORKERS="1",
        TRAITSTREAM_DEV_API_KEY=key,
        TRAITSTREAM_DATA_DIR=str(tmp_path / "data"),
    )
    output = tmp_path / "dev.log"
    with output.open("wb") as sink:
        dev = subprocess.Popen(
            [sys.executable, "-m", "traitstream", "dev"], env=env, stdout=sink, stderr=sink
        )
    edge = f"http://127.0.0.1:{port}"
    basic = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
    bearer = {"Authorization": f"Bearer {key}"}

    def profile(user: str) -> dict[str, object] | None:
        answer = httpx.get(f"{edge}/api/profiles/{user}", headers=bearer, timeout=5)
        return answer.json() if answer.status_code == 200 else None

    try:
        wait_until(lambda: "traitstream is ready" in output.read_text(), 180, "traitstream dev to be ready")
        assert (tmp_path / "data" / "kafka").is_dir(), "the broker keeps its log under the data dir"

        sent = httpx.post(
            f"{edge}/v1/identify", json={"userId": "ada", "traits": {"plan": "pro"}}, headers=basic
        )
        assert sent.status_code == 200, sent.text
        first = wait_until(lambda: profile("ada"), 30, "the first identify applied")
        assert first["traits"] == {"plan": "pro"}

        (worker,) = _workers(dev.pid)
        os.kill(worker, signal.SIGKILL)
        replacement = wait_until(
            lambda: [p for p in _workers(dev.pid) if p != worker], 60, "a new worker after the kill"
        )
        assert len(replacement) == 1
        sent = httpx.post(
            f"{edge}/v1/identify", json={"userId": "ada", "traits": {"plan": "team"}}, headers=basic
        )
        assert sent.status_code == 200, sent.text
        wait_until(
            lambda: (profile("ada") or {}).get("traits") == {"plan": "team"}, 60, "the restarted worker"
        )

        started = [p for p in tree(dev.pid) if p != dev.pid]
        assert any("kafka.Kafka" in _cmdline(p) for p in started), "dev started its own broker"
        dev.send_signal(signal.SIGTERM)
        assert dev.wait(90) == 0
        deadline = time.monotonic() + 10
        while any(_running(p) for p in started) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [f"{p}: {_cmdline(p)}" for p in started if _running(p)]
        assert not left, f"processes left after SIGTERM: {left}"
        assert "every process stopped" in output.read_text()
    finally:
        if dev.poll() is None:
            dev.kill()
            dev.wait(30)
