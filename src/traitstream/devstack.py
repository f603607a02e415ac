"""``traitstream dev``: the whole pipeline on one machine, supervised.

Starts a single-node Apache Kafka (``localkafka``) when nothing answers at the
bootstrap address, with its log kept under ``--data-dir``; applies migrations,
creates the topics, registers the dev key, then runs the edge and the workers as
child processes. A child that dies is restarted; SIGTERM or SIGINT stops every
child, then the broker it started, waiting for each to exit.
"""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path

import httpx
import psycopg

from traitstream import kafka_admin, processes
from traitstream.config import DevSettings
from traitstream.exposition import metric_total
from traitstream.localkafka import KafkaUnavailable, LocalKafka
from traitstream.processes import Child
from traitstream.store import keys
from traitstream.store.database import migrate

log = logging.getLogger(__name__)


def _child_env(settings: DevSettings, **extra: str) -> dict[str, str]:
    """A child's environment from the dev settings; ``extra`` overrides them."""
    defaults = {
        "TRAITSTREAM_HTTP_PORT": str(settings.http_port),
        "TRAITSTREAM_HTTP_HOST": settings.http_host,
        "TRAITSTREAM_SESSION_TIMEOUT_MS": str(settings.session_timeout_ms),
        "TRAITSTREAM_LOG_FORMAT": settings.log_format,
        "TRAITSTREAM_LOG_LEVEL": settings.log_level,
        "TRAITSTREAM_CHANGES_TOPIC": settings.changes_topic,
        "TRAITSTREAM_CHANGES": settings.changes,
    }
    if settings.schema_registry_url:
        defaults["TRAITSTREAM_SCHEMA_REGISTRY_URL"] = settings.schema_registry_url
    return processes.pipeline_env(
        settings.kafka_bootstrap,
        settings.database_url,
        settings.redis_url,
        settings.topic,
        **(defaults | extra),
    )


class DevStack:
    def __init__(self, settings: DevSettings) -> None:
        self.settings = settings
        self.children: list[Child] = []
        self.broker: LocalKafka | None = None
        self.api_key = settings.dev_api_key or keys.new_secret("dev_")
        self._stopping = processes.StopFlag()

    def prepare(self) -> None:
        s = self.settings
        if kafka_admin.reachable(s.kafka_bootstrap):
            log.info("using the broker at %s", s.kafka_bootstrap)
        else:
            self.broker = start_local_kafka(s.kafka_bootstrap, Path(s.data_dir).expanduser() / "kafka")
        migrate(s.database_url)
        kafka_admin.ensure_topics(
            s.kafka_bootstrap,
            {s.topic: s.partitions, s.dlq_topic: 1, s.changes_topic: s.partitions},
            configs={s.changes_topic: kafka_admin.CHANGES_TOPIC_CONFIG},
        )
        with psycopg.connect(s.database_url, autocommit=True) as conn:
            keys.register(conn, self.api_key, "dev", frozenset(keys.SCOPES), description="traitstream dev")

    def spawn(self) -> None:
        s = self.settings
        self.children.append(Child("edge", processes.command("edge"), _child_env(s)))
        for index in range(s.workers):
            port = s.metrics_port + index
            env = _child_env(s, TRAITSTREAM_METRICS_PORT=str(port))
            self.children.append(
                Child(f"worker-{index + 1}", processes.command("worker"), env, metrics_port=port)
            )
        for child in self.children:
            child.start()

    def wait_ready(self, timeout_s: float = 60.0) -> bool:
        """Ready when the edge's /readyz answers 200 and the workers' group has been
        handed its partitions, so the first identify is applied at once."""
        s = self.settings
        edge = f"http://{s.http_host}:{s.http_port}/readyz"
        workers = [f"http://{s.metrics_host}:{s.metrics_port + i}/metrics" for i in range(s.workers)]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self._stopping.is_set():
            try:
                if httpx.get(edge, timeout=2).status_code == 200 and _assigned(workers):
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        return False

    def supervise(self) -> None:
        while not self._stopping.wait(0.5):
            for child in self.children:
                code = child.exit_status()
                if code is not None:
                    delay = min(30.0, 2.0 ** min(child.restarts, 5))
                    if time.monotonic() - child.started_at < delay:
                        continue
                    log.warning(
                        "%s exited with %s; restarting (restart %d)", child.name, code, child.restarts + 1
                    )
                    child.start()

    def stop(self, *_: object) -> None:
        self._stopping.set()

    def shutdown(self, grace_s: float = 15.0) -> None:
        for child in self.children:  # every child is asked first, so they stop together
            if child.alive() and child.process is not None:
                child.process.terminate()
        deadline = time.monotonic() + grace_s
        for child in self.children:
            child.stop(max(0.1, deadline - time.monotonic()))
        if self.broker is not None:
            self.broker.stop(grace_s=30)
        log.info("every process stopped")


def start_local_kafka(bootstrap: str, data_dir: Path) -> LocalKafka:
    """A single-node Apache Kafka listening where ``bootstrap`` points, which must be
    an address of this machine; its log is kept in ``data_dir`` across runs."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    if host.strip("[]") not in ("127.0.0.1", "localhost", "::1") or not port.isdigit():
        raise KafkaUnavailable(
            f"nothing answers at {bootstrap}, and a local Apache Kafka can only be started on "
            "127.0.0.1: start that broker, or leave TRAITSTREAM_KAFKA_BOOTSTRAP at 127.0.0.1:<port>"
        )
    log.info("nothing answers at %s: starting Apache Kafka there (data in %s)", bootstrap, data_dir)
    return LocalKafka(1, data_dir=data_dir, port=int(port)).start()


def _assigned(metrics_urls: list[str]) -> bool:
    """Whether any worker has been assigned partitions (the group has formed)."""
    return any(
        metric_total(httpx.get(url, timeout=2).text, "traitstream_worker_rebalances_total", change="assigned")
        > 0
        for url in metrics_urls
    )


def run(settings: DevSettings) -> int:
    stack = DevStack(settings)
    signal.signal(signal.SIGTERM, stack.stop)
    signal.signal(signal.SIGINT, stack.stop)
    try:
        try:
            stack.prepare()
        except KafkaUnavailable as exc:
            log.error("%s", exc)
            return 1
        stack.spawn()
        if not stack.wait_ready():
            if not stack._stopping.is_set():
                log.error("the edge did not become ready")
                return 1
            return 0
        s = settings
        print(
            "traitstream is ready\n"
            f"  edge     http://{s.http_host}:{s.http_port}\n"
            f"  metrics  http://{s.http_host}:{s.http_port}/metrics, workers on ports "
            f"{s.metrics_port}..{s.metrics_port + s.workers - 1}\n"
            f"  broker   {s.kafka_bootstrap}  topic {s.topic}\n"
            f"  api key  {stack.api_key}  (workspace dev, every scope)\n"
            "Ctrl-C stops everything.",
            flush=True,
        )
        stack.supervise()
        return 0
    finally:
        stack.shutdown()
