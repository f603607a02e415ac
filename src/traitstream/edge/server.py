"""Serving the edge: uvicorn, through ``uvicorn.run``, in one process or in several
that share the listening port.

On SIGTERM or SIGINT uvicorn stops accepting connections, lets the requests in
flight finish (up to ``GRACE_S``), then runs the app's lifespan shutdown, which
waits for the broker's last acknowledgements: an answer given is an identify in
Kafka. With several processes, the supervising one hands the signal on to each.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from traitstream import logs
from traitstream.config import EdgeSettings
from traitstream.edge.app import create_app
from traitstream.metrics import MULTIPROCESS_DIR_ENV, EdgeMetrics

GRACE_S = 10
"""Longest wait for the requests in flight at shutdown."""


def serve(settings: EdgeSettings) -> None:
    """Run the edge until a signal stops it. With ``http_workers`` above 1 each
    process builds its own app from the ``TRAITSTREAM_*`` environment
    (``app_from_env``), so whatever configures it must be in the environment."""
    options: dict[str, Any] = {
        "host": settings.http_host,
        "port": settings.http_port,
        "log_config": None,  # logs.setup has configured logging already
        "access_log": False,
        "timeout_graceful_shutdown": GRACE_S,
    }
    if settings.http_workers <= 1:
        uvicorn.run(create_app(settings), **options)
        return
    with _shared_metrics_dir():
        uvicorn.run(f"{__name__}:app_from_env", factory=True, workers=settings.http_workers, **options)


def app_from_env() -> ASGIApp:
    """The app of one of several edge processes: its settings, producer and pools
    built from the environment, its metrics kept where the others' are."""
    from_env: dict[str, Any] = {}  # every value comes from TRAITSTREAM_* variables
    settings = EdgeSettings(**from_env)
    logs.setup(settings.log_format, settings.log_level)
    return create_app(settings, EdgeMetrics(multiprocess_dir=os.environ.get(MULTIPROCESS_DIR_ENV)))


@contextlib.contextmanager
def _shared_metrics_dir() -> Iterator[str]:
    """A fresh directory for the processes' metrics, named in the environment the
    processes start with, and removed when they have all stopped: counts from an
    earlier run must not add to this one's."""
    path = tempfile.mkdtemp(prefix="traitstream-edge-metrics-")
    before = os.environ.get(MULTIPROCESS_DIR_ENV)
    os.environ[MULTIPROCESS_DIR_ENV] = path
    try:
        yield path
    finally:
        if before is None:
            os.environ.pop(MULTIPROCESS_DIR_ENV, None)
        else:
            os.environ[MULTIPROCESS_DIR_ENV] = before
        shutil.rmtree(path, ignore_errors=True)
