from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from traitstream import processes


def test_a_process_that_obeys_stops_with_its_status() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    status, killed = processes.stop(child, 10)
    assert status == -signal.SIGTERM and not killed


def test_a_process_that_ignores_the_signal_is_killed() -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        " print(1, flush=True); time.sleep(30)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline()  # the handler is in place
    status, killed = processes.stop(child, 0.5)
    assert status == -signal.SIGKILL and killed


def test_an_exited_process_is_not_signalled() -> None:
    child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    child.wait()
    assert processes.stop(child, 1) == (3, False)


def test_a_logged_child_appends_its_output_and_reports_its_status(tmp_path: Path) -> None:
    log_path = tmp_path / "logs" / "child.log"
    log_path.parent.mkdir()
    log_path.write_text("earlier run\n")
    code = "import sys; print('out'); print('err', file=sys.stderr); raise SystemExit(4)"
    child = processes.Child("child", [sys.executable, "-u", "-c", code], dict(os.environ), log_path)
    child.start()
    assert child.pid > 0
    assert child.process is not None and child.process.wait(10) == 4
    assert not child.alive()
    assert child.stop(1) == 4
    assert log_path.read_text().splitlines() == ["earlier run", "out", "err"]


def test_a_restarted_child_keeps_its_log_and_counts_the_restart(tmp_path: Path) -> None:
    log_path = tmp_path / "child.log"
    child = processes.Child("child", [sys.executable, "-u", "-c", "print('ran')"], dict(os.environ), log_path)
    assert child.exit_status() is None  # not started
    child.start()
    assert child.process is not None and child.process.wait(10) == 0
    assert child.exit_status() == 0 and child.restarts == 0
    child.start()
    assert child.process.wait(10) == 0
    assert child.stop(5) == 0
    assert child.restarts == 1
    assert log_path.read_text().splitlines() == ["ran", "ran"]


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and has not exited (a zombie waits only for its reaping)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_a_child_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    """The child of a parent killed with SIGKILL is not left behind."""
    pid_file = tmp_path / "grandchild.pid"
    parent = (
        "import os, sys, time\n"
        "from traitstream import processes\n"
        "argv = [sys.executable, '-c', 'import time; time.sleep(60)']\n"
        "child = processes.Child('sleeper', argv, dict(os.environ))\n"
        "child.start()\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(60)\n"
    )
    runner = subprocess.Popen([sys.executable, "-c", parent])
    try:
        deadline = time.monotonic() + 20
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        grandchild = int(pid_file.read_text())
        runner.kill()
        runner.wait(10)
        deadline = time.monotonic() + 10
        while _running(grandchild) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(grandchild), "the child outlived the parent that was killed"
    finally:
        runner.kill()


def test_a_child_never_started_stops_as_nothing() -> None:
    child = processes.Child("idle", ["true"], {}, Path("unused.log"))
    assert child.stop(1) is None and child.pid == 0 and not child.alive()


def test_a_workers_metrics_url_is_on_this_machine() -> None:
    worker = processes.Child("worker-0", ["true"], {}, Path("unused.log"), metrics_port=9123)
    assert worker.metrics_url == "http://127.0.0.1:9123/metrics"
    edge = processes.Child("edge", ["true"], {}, Path("unused.log"))
    with pytest.raises(ValueError, match="edge has no metrics port"):
        _ = edge.metrics_url


def test_the_pipeline_env_points_at_the_services_and_takes_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAITSTREAM_TOPIC", "from-the-shell")
    monkeypatch.setenv("UNRELATED", "kept")
    env = processes.pipeline_env(
        "127.0.0.1:9092", "postgresql:///db", "redis://127.0.0.1:6379/0", "identify", TRAITSTREAM_WORKERS="3"
    )
    assert env["TRAITSTREAM_TOPIC"] == "identify"
    assert env["TRAITSTREAM_KAFKA_BOOTSTRAP"] == "127.0.0.1:9092"
    assert env["TRAITSTREAM_DATABASE_URL"] == "postgresql:///db"
    assert env["TRAITSTREAM_REDIS_URL"] == "redis://127.0.0.1:6379/0"
    assert env["TRAITSTREAM_WORKERS"] == "3" and env["UNRELATED"] == "kept"


def test_a_free_port_can_be_bound() -> None:
    port = processes.free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
