"""A real traitstream pipeline for tests: Apache Kafka, a fresh database, and the
edge and workers as separate processes, each on a free local port.

Every process is started with a bounded wait and stopped (or killed) by the fixture,
so a failing test leaves nothing running.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tests.bench.stack import create_database, drop_database
from traitstream import kafka_admin
from traitstream.exposition import labels_of, metric_total
from traitstream.localkafka import LocalKafka
from traitstream.processes import Child, command, free_port, pipeline_env
from traitstream.store import keys
from traitstream.store.database import migrate

PG_ADMIN_URL = os.environ.get("TRAITSTREAM_TEST_PG", "postgresql://127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TRAITSTREAM_TEST_REDIS", "redis://127.0.0.1:6379/0")
SESSION_TIMEOUT_MS = 6000
LOG_DIR = Path(os.environ.get("TRAITSTREAM_TEST_LOGS", "/tmp/traitstream-test-logs"))


def wait_until(check: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def settled(read: Callable[[], float], timeout: float = 10, every: float = 0.3) -> float:
    """``read()``'s value once two reads ``every`` seconds apart agree: for a count
    that may still be catching up with work already done."""
    last = [read()]

    def still() -> bool:
        now = read()
        same, last[0] = now == last[0], now
        return same

    wait_until(still, timeout, "a count that holds still", every=every)
    return last[0]


class Broker:
    """Apache Kafka for tests: a local node on a free port, or the broker named by
    TRAITSTREAM_TEST_KAFKA. ``cluster`` is None with an external broker (the fault
    suite's three-node clusters come from its own fixtures)."""

    def __init__(self) -> None:
        external = os.environ.get("TRAITSTREAM_TEST_KAFKA")
        self.cluster = None if external else LocalKafka(1, heap_mb=512).start()
        self.bootstrap = external or self.cluster.bootstrap  # type: ignore[union-attr]

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()


@contextlib.contextmanager
def scratch_database(prefix: str = "ts_test") -> Iterator[str]:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    url = create_database(PG_ADMIN_URL, name)
    try:
        migrate(url)
        yield url
    finally:
        drop_database(PG_ADMIN_URL, name)


class Proc(Child):
    """A child of the stack under test, with the faults tests put it through."""

    def kill(self) -> None:
        self.stop(5, signal.SIGKILL)

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets but does nothing (a long GC pause, a frozen VM)."""
        if self.process is not None and self.alive():
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None and self.alive():
            self.process.send_signal(signal.SIGCONT)

    def log_text(self) -> str:
        return self.log_path.read_text("utf-8", errors="replace") if self.log_path.exists() else ""

    def owned_partitions(self) -> list[int]:
        """The partitions a worker owns by its log: each assignment adds to them and
        each revocation takes away (the group hands partitions over incrementally;
        an eager group revokes everything first, which comes to the same)."""
        owned: set[int] = set()
        for line in self.log_text().splitlines():
            if not line.startswith("{") or '"msg":"partitions ' not in line:
                continue
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if event["msg"] == "partitions assigned":
                    owned |= set(event["partitions"])
                elif event["msg"] == "partitions revoked":
                    owned -= set(event["partitions"])
        return sorted(owned)


@dataclass
class Stack:
    """Edge and workers over a fresh topic and database. ``api_key`` has every scope
    in workspace ``test``."""

    bootstrap: str
    database_url: str
    redis_url: str = REDIS_URL
    topic: str = field(default_factory=lambda: f"identify-{uuid.uuid4().hex[:8]}")
    partitions: int = 4
    api_key: str = field(default_factory=lambda: keys.new_secret("test_"))
    workspace: str = "test"
    http_port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    edge: Proc | None = None
    workers: list[Proc] = field(default_factory=list)

    @property
    def changes_topic(self) -> str:
        return f"{self.topic}.changes"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def env(self, **extra: str) -> dict[str, str]:
        """The children's environment; ``extra_env``, then ``extra``, override the defaults."""
        defaults = {
            "TRAITSTREAM_HTTP_PORT": str(self.http_port),
            "TRAITSTREAM_GROUP_ID": f"group-{self.topic}",
            "TRAITSTREAM_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
            "TRAITSTREAM_LOG_FORMAT": "json",
            "TRAITSTREAM_CHANGES_TOPIC": self.changes_topic,
        }
        return pipeline_env(
            self.bootstrap,
            self.database_url,
            self.redis_url,
            self.topic,
            **(defaults | self.extra_env | extra),
        )

    def prepare(self) -> None:
        kafka_admin.ensure_topics(
            self.bootstrap,
            {self.topic: self.partitions, f"{self.topic}.dlq": 1, self.changes_topic: self.partitions},
            configs={self.changes_topic: kafka_admin.CHANGES_TOPIC_CONFIG},
        )
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            keys.register(conn, self.api_key, self.workspace, frozenset(keys.SCOPES))

    def start_edge(self, wait: bool = True) -> Proc:
        self.edge = Proc(
            "edge",
            command("edge"),
            self.env(),
            LOG_DIR / f"{self.topic}-edge.log",
        )
        self.edge.start()
        if wait:
            wait_until(self.ready, 30, "the edge's /readyz")
        return self.edge

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=3).status_code == 200
        except httpx.HTTPError:
            return False

    def add_worker(self, **extra_env: str) -> Proc:
        """Start one more worker. Its database sessions carry the application name
        ``worker_app_name(index)`` (for tests that look at ``pg_stat_activity``)."""
        index = len(self.workers)
        port = free_port()
        proc = Proc(
            f"worker-{index}",
            command("worker"),
            self.env(TRAITSTREAM_METRICS_PORT=str(port), PGAPPNAME=self.worker_app_name(index), **extra_env),
            LOG_DIR / f"{self.topic}-worker-{index}.log",
            metrics_port=port,
        )
        proc.start()
        self.workers.append(proc)
        return proc

    def worker_app_name(self, index: int) -> str:
        return f"ts-worker-{index}-{self.topic}"[:63]

    def start(self, workers: int = 1) -> Stack:
        """Topics, key, edge and ``workers`` workers, returned once every worker owns
        partitions (as many as there are to share), so that a fault a test injects
        next meets a settled group."""
        self.prepare()
        self.start_edge()
        for _ in range(workers):
            self.add_worker()
        sharing = self.workers[: self.partitions]
        wait_until(lambda: all(w.owned_partitions() for w in sharing), 60, "every worker to own partitions")
        return self

    def stop(self) -> None:
        for proc in [*self.workers, *([self.edge] if self.edge else [])]:
            proc.stop()

    # --- client side ----------------------------------------------------------------

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.api_key}"}

    def post(self, path: str, body: Any = None, *, key: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = self.headers(key) | kwargs.pop("headers", {})
        if body is not None and not isinstance(body, bytes | str):
            kwargs["json"] = body
        elif body is not None:
            kwargs["content"] = body
        return httpx.post(f"{self.url}{path}", headers=headers, timeout=30, **kwargs)

    def profile(self, user_id: str) -> dict[str, Any] | None:
        response = httpx.get(f"{self.url}/api/profiles/{user_id}", headers=self.headers(), timeout=10)
        return response.json() if response.status_code == 200 else None

    def wait_profile(
        self, user_id: str, check: Callable[[dict[str, Any]], bool] = lambda p: True, timeout: float = 30
    ) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            profile = self.profile(user_id)
            return profile if profile is not None and check(profile) else None

        return dict(wait_until(probe, timeout, f"profile {user_id!r}"))

    def workers_metric(self, name: str, labels: str = "") -> float:
        """Sum, over every worker, of a metric's samples carrying ``labels``."""
        return sum(metric_sum(httpx.get(w.metrics_url, timeout=5).text, name, labels) for w in self.workers)


def metric_sum(text: str, name: str, labels: str = "") -> float:
    """Sum of the samples of ``name`` carrying every ``key="value"`` pair in ``labels``."""
    return metric_total(text, name, **labels_of(labels))
