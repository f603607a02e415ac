"""The pipeline's child processes, started the same way by ``traitstream dev``, the
bench and the tests: a free local port, the environment that points a child at its
services, the command of a role (``edge``, ``worker``), the child itself (its output
to a log file or to ours; it dies with its parent), and stopping one (ask, wait, and
kill it if it lingers)."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """For ``preexec_fn``: the kernel sends the child SIGTERM when its parent dies,
    even by kill -9, so a crashed supervisor leaves no orphan behind."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class StopFlag:
    """A stop request that a signal handler may set.

    ``threading.Event.set`` takes a lock, and a handler runs on the main thread
    between two bytecodes, possibly while that thread holds the same lock inside
    ``Event.wait``: the process then hangs for good (seen with two SIGTERMs in a
    row). Setting this flag takes no lock; ``wait`` polls it."""

    def __init__(self) -> None:
        self._set = False

    def set(self, *_: object) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout_s: float, every_s: float = 0.05) -> bool:
        """Sleep until the flag is set or ``timeout_s`` passed; whether it is set."""
        deadline = time.monotonic() + timeout_s
        while not self._set:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(every_s, left))
        return self._set


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pipeline_env(
    bootstrap: str, database_url: str, redis_url: str, topic: str, **extra: str
) -> dict[str, str]:
    """This process's environment with a child's services set: the broker, the
    database, Redis and the topic, then ``extra`` (``TRAITSTREAM_*`` names)."""
    env = dict(os.environ)
    env.update(
        TRAITSTREAM_KAFKA_BOOTSTRAP=bootstrap,
        TRAITSTREAM_DATABASE_URL=database_url,
        TRAITSTREAM_REDIS_URL=redis_url,
        TRAITSTREAM_TOPIC=topic,
    )
    env.update(extra)
    return env


def stop(process: subprocess.Popen[bytes], grace_s: float, sig: int = signal.SIGTERM) -> tuple[int, bool]:
    """Send ``sig`` (if it still runs), wait up to ``grace_s``, then SIGKILL.
    Returns the exit status and whether it had to be killed."""
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.wait(grace_s), False
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(), True


def command(role: str) -> list[str]:
    """The argv that runs ``traitstream <role>`` with this interpreter."""
    return [sys.executable, "-m", "traitstream", role]


@dataclass
class Child:
    """A child process of the pipeline. Its output (stdout and stderr) is appended
    to ``log_path``, or shares this process's when that is None. It gets SIGTERM
    when this process dies (``die_with_parent``). ``metrics_port``: where a worker
    serves its metrics, for whoever reads them. ``start`` may be called again once
    it has exited (a supervisor's restart); ``restarts`` counts those."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path | None = None
    metrics_port: int | None = None
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    _log: IO[bytes] | None = None

    def start(self) -> None:
        if self.process is not None:
            self.restarts += 1
        if self.log_path is not None and self._log is None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop
        output = subprocess.STDOUT if self._log is not None else None
        self.process = subprocess.Popen(
            self.argv, env=self.env, stdout=self._log, stderr=output, preexec_fn=die_with_parent
        )
        self.started_at = time.monotonic()
        log.info("started %s (pid %d)", self.name, self.process.pid)

    @property
    def metrics_url(self) -> str:
        """Where the child serves its metrics on this machine (a worker's ``metrics_port``)."""
        if self.metrics_port is None:
            raise ValueError(f"{self.name} has no metrics port")
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def exit_status(self) -> int | None:
        """The exit status once it has exited; None while it runs or before it started."""
        return None if self.process is None else self.process.poll()

    def stop(self, timeout_s: float = 20.0, sig: int = signal.SIGTERM) -> int | None:
        """Send ``sig``, wait up to ``timeout_s`` and kill it if need be; its exit
        status (None if it never started)."""
        status = None
        if self.process is not None:
            status, killed = stop(self.process, timeout_s, sig)
            if killed:
                log.warning("%s did not stop in %.0fs; it was killed", self.name, timeout_s)
        if self._log is not None:
            self._log.close()
            self._log = None
        return status
