"""The pipeline under test: a broker of its own on a free port (unless one is
given), a scratch database, the edge and the workers as separate processes.

Everything started here is stopped by ``close`` (the scratch database dropped),
whatever happened in between.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from traitstream import kafka_admin
from traitstream.localkafka import LocalKafka
from traitstream.processes import Child, command, free_port, pipeline_env
from traitstream.store import keys
from traitstream.store.database import migrate

log = logging.getLogger(__name__)


def wait_for(check: Any, timeout_s: float, what: str, every_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every_s)
    raise TimeoutError(f"{what} did not happen within {timeout_s:.0f}s")


def create_database(server_url: str, name: str) -> str:
    """Create database ``name`` on the server of ``server_url``; returns its URL."""
    admin = make_conninfo(server_url, dbname="postgres")
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_conninfo(server_url, dbname=name)


def drop_database(server_url: str, name: str) -> None:
    """Drop database ``name`` (and its sessions) if it is there; errors are ignored."""
    admin = make_conninfo(server_url, dbname="postgres")
    with (
        contextlib.suppress(psycopg.Error),
        psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn,
    ):
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@dataclass
class StackOptions:
    database_url: str
    redis_url: str
    kafka_bootstrap: str | None
    """None: start an Apache Kafka node of our own on a free port."""
    workers: int = 2
    edge_processes: int = 4
    partitions: int = 12
    batch_size: int = 2000
    log_dir: Path = Path("bench-results")


@dataclass
class Stack:
    options: StackOptions
    topic: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:8]}")
    api_key: str = field(default_factory=lambda: keys.new_secret("bench_"))
    workspace: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:8]}")
    http_port: int = field(default_factory=free_port)
    bootstrap: str = ""
    database_url: str = ""
    broker: LocalKafka | None = None
    edge: Child | None = None
    workers: list[Child] = field(default_factory=list)
    _scratch: str | None = None
    _probe: psycopg.Connection[Any] | None = None
    _generation: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    # --- lifecycle ----------------------------------------------------------------

    def prepare(self) -> None:
        """Broker, scratch database, migrations, topics and the API key; no edge or workers yet."""
        o = self.options
        o.log_dir.mkdir(parents=True, exist_ok=True)
        if o.kafka_bootstrap:
            self.bootstrap = o.kafka_bootstrap
        else:
            self._start_broker()
        self._scratch = f"traitstream_bench_{uuid.uuid4().hex[:8]}"
        self.database_url = create_database(o.database_url, self._scratch)
        migrate(self.database_url)
        self._create_topic()
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            keys.register(conn, self.api_key, self.workspace, frozenset(keys.SCOPES), description="bench")

    def env(self, **extra: str) -> dict[str, str]:
        """The children's environment; ``extra`` overrides the defaults."""
        defaults = {
            "TRAITSTREAM_GROUP_ID": f"group-{self.topic}",
            "TRAITSTREAM_LOG_FORMAT": "json",
            "TRAITSTREAM_BATCH_SIZE": str(self.options.batch_size),
        }
        return pipeline_env(
            self.bootstrap, self.database_url, self.options.redis_url, self.topic, **(defaults | extra)
        )

    def start_edge(self) -> None:
        o = self.options
        self.edge = Child(
            "edge",
            command("edge"),
            self.env(
                TRAITSTREAM_HTTP_PORT=str(self.http_port), TRAITSTREAM_HTTP_WORKERS=str(o.edge_processes)
            ),
            o.log_dir / f"edge-{self.topic}.log",
        )
        self.edge.start()
        wait_for(self.ready, 60, "the edge answering /readyz", every_s=0.2)

    def rotate_topic(self) -> None:
        """Move the edge and the workers to a fresh, empty topic and delete the old
        one, so that no phase inherits the previous phases' backlog."""
        self.stop_workers()
        if self.edge is not None:
            self.edge.stop()
        old = self.topic
        self.topic = f"bench-{uuid.uuid4().hex[:8]}"
        self.delete_topics([old, f"{old}.dlq"])
        self._create_topic()
        self.start_edge()
        self.start_workers()

    def _start_broker(self) -> None:
        self.broker = LocalKafka(1).start()
        self.bootstrap = self.broker.bootstrap

    def _create_topic(self) -> None:
        kafka_admin.ensure_topics(
            self.bootstrap, {self.topic: self.options.partitions, f"{self.topic}.dlq": 1}
        )

    def delete_topics(self, topics: list[str]) -> None:
        """Best effort: a broker that cannot delete topics just keeps them."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 3})
        for name, future in admin.delete_topics(topics, operation_timeout=10).items():
            try:
                future.result(timeout=15)
            except Exception as exc:  # any failure only costs broker memory
                log.info("could not delete topic %s: %s", name, exc)

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=3).status_code == 200
        except httpx.HTTPError:
            return False

    def start_workers(self, **extra_env: str) -> None:
        """Start the workers; ``extra_env`` adds to their environment (``TRAITSTREAM_*``)."""
        o = self.options
        # A fresh consumer group for each set of workers, so that one phase's group
        # never waits out the last phase's departed members. The workers seek to the
        # offsets PostgreSQL holds, so a new group resumes exactly where the last stopped.
        self._generation += 1
        group = f"group-{self.topic}-{self._generation}"
        for index in range(o.workers):
            port = free_port()
            child = Child(
                f"worker-{index + 1}",
                command("worker"),
                self.env(
                    TRAITSTREAM_METRICS_PORT=str(port),
                    TRAITSTREAM_GROUP_ID=group,
                    **extra_env,
                ),
                o.log_dir / f"worker-{index + 1}-{self.topic}-{self._generation}.log",
                metrics_port=port,
            )
            child.start()
            self.workers.append(child)
        for child in self.workers:
            wait_for(lambda c=child: self._metrics_up(c), 60, f"{child.name}'s metrics endpoint")

    def stop_workers(self) -> None:
        for child in self.workers:
            child.stop()
        self.workers = []

    def _metrics_up(self, child: Child) -> bool:
        try:
            return httpx.get(child.metrics_url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        if self._probe is not None:
            self._probe.close()
        self.stop_workers()
        if self.edge is not None:
            self.edge.stop()
        if self.broker is not None:
            self.broker.stop()
        self.forget_dedupe_keys()
        if self._scratch:
            drop_database(self.options.database_url, self._scratch)

    def forget_dedupe_keys(self) -> int:
        """Remove the workers' dedupe claims for this run's workspace from Redis
        (millions of keys after a long soak, otherwise kept for the TTL)."""
        import redis

        client = redis.Redis.from_url(self.options.redis_url, socket_timeout=10)
        removed = 0
        try:
            batch: list[bytes] = []
            for key in client.scan_iter(match=f"dedupe:{self.workspace}:*", count=10_000):
                batch.append(key)
                if len(batch) >= 10_000:
                    removed += int(client.unlink(*batch))
                    batch = []
            if batch:
                removed += int(client.unlink(*batch))
        except redis.RedisError as exc:
            log.warning("could not remove the bench's dedupe keys: %s", exc)
        finally:
            client.close()
        return removed

    # --- what the phases read -------------------------------------------------------

    def worker_metrics(self) -> list[str]:
        texts = []
        for child in self.workers:
            try:
                texts.append(httpx.get(child.metrics_url, timeout=5).text)
            except httpx.HTTPError:
                texts.append("")
        return texts

    def applied_records(self) -> int:
        """Records every worker has finished with, from the offsets PostgreSQL
        committed with the profiles they produced (survives worker restarts)."""
        if self._probe is None or self._probe.closed:
            self._probe = psycopg.connect(self.database_url, autocommit=True)
        row = self._probe.execute(
            "SELECT coalesce(sum(next_offset), 0) FROM applied_offsets WHERE topic = %s", (self.topic,)
        ).fetchone()
        return int(row[0]) if row else 0
