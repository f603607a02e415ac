from __future__ import annotations

import signal
import subprocess
import sys

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
