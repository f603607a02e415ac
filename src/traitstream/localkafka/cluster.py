"""Apache Kafka on this machine, in KRaft mode: one node for ``traitstream dev`` and most
tests, three for the fault suite.

Every node is a combined broker and controller (``process.roles=broker,controller``)
with a static quorum of all the nodes, listening on 127.0.0.1 (or on an address of
its own, in a network namespace of its own, for tests that cut one off). Its data lives in
``<data_dir>/node-<id>``: formatted on first start, kept across restarts, so a stopped
node comes back with its log. Internal topics and new topics' defaults follow the
cluster's size as production does: with three nodes, replication factor 3 and
``min.insync.replicas=2``.

Nodes die with the process that started them (``processes.die_with_parent``), so a
crashed test or supervisor leaves no broker behind.
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from traitstream import processes
from traitstream.kafka_admin import reachable
from traitstream.localkafka.artifacts import KafkaUnavailable, ensure_jars, java_command

log = logging.getLogger(__name__)

_LOG4J = """\
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
appender.file.type = File
appender.file.name = file
appender.file.fileName = {path}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
logger.state.name = state.change.logger
logger.state.level = WARN
"""

_QUORUM_STATE = "__cluster_metadata-0/quorum-state"

CONSUMER_SESSION_TIMEOUT_MS = 10_000
"""The session timeout of groups on the ``consumer`` protocol (KIP-848), which the
broker sets: how long a crashed worker keeps its partitions. Kafka's default of 45 s
would hold a crashed worker's partitions for most of a minute; locally, 10 s."""


def _cluster_id() -> str:
    """A KRaft cluster id: a random UUID in URL-safe base64, as ``kafka-storage.sh random-uuid``."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def broker_config(size: int, session_timeout_ms: int = CONSUMER_SESSION_TIMEOUT_MS) -> dict[str, str]:
    """The settings every node of a cluster of ``size`` nodes shares, beyond its
    listeners and quorum: replication that matches the cluster's size, and a group
    coordinator that hands out partitions without waiting."""
    replicas = str(min(3, size))
    min_isr = str(min(2, size))
    return {
        "default.replication.factor": replicas,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": replicas,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": min_isr,
        "auto.create.topics.enable": "false",
        "group.initial.rebalance.delay.ms": "0",
        "group.consumer.min.session.timeout.ms": str(min(session_timeout_ms, 45_000)),
        "group.consumer.session.timeout.ms": str(session_timeout_ms),
        "group.consumer.min.heartbeat.interval.ms": "1000",
        "group.consumer.heartbeat.interval.ms": "1000",
    }


@dataclass
class Node:
    """One broker-and-controller process of a ``LocalKafka``."""

    node_id: int
    port: int
    controller_port: int
    directory: Path
    host: str = "127.0.0.1"
    launcher: tuple[str, ...] = ()
    """What runs the node's java, if anything (``ip netns exec <namespace>``, say)."""
    process: subprocess.Popen[bytes] | None = None
    _output: IO[bytes] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "server.log"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        if self.process is not None and self.alive():
            self.process.send_signal(sig)


class LocalKafka:
    """``size`` Apache Kafka nodes on free local ports (the first on ``port`` when given).

    ``data_dir``: where the nodes keep their logs; a temporary folder, removed by
    ``stop``, when not given. ``heap_mb``: each node's JVM heap. ``overrides``: broker
    settings over ``broker_config``'s. ``hosts`` and ``launchers``, one per node: the
    address each listens on (default 127.0.0.1) and what runs its java (default
    nothing), for nodes in network namespaces of their own."""

    def __init__(
        self,
        size: int = 1,
        *,
        data_dir: Path | None = None,
        port: int | None = None,
        heap_mb: int = 1024,
        overrides: dict[str, str] | None = None,
        hosts: Sequence[str] | None = None,
        launchers: Sequence[Sequence[str]] | None = None,
    ) -> None:
        self._temporary = data_dir is None
        self.data_dir = Path(tempfile.mkdtemp(prefix="traitstream-kafka-")) if data_dir is None else data_dir
        self.heap_mb = heap_mb
        self.config = broker_config(size) | (overrides or {})
        ports = [port or processes.free_port(), *(processes.free_port() for _ in range(size - 1))]
        self.nodes = [
            Node(
                i + 1,
                ports[i],
                processes.free_port(),
                self.data_dir / f"node-{i + 1}",
                host=hosts[i] if hosts else "127.0.0.1",
                launcher=tuple(launchers[i]) if launchers else (),
            )
            for i in range(size)
        ]
        self._runtime_found: tuple[str, Path] | None = None

    @property
    def bootstrap(self) -> str:
        return ",".join(node.address for node in self.nodes)

    @property
    def pids(self) -> list[int]:
        """The process ids of the running nodes."""
        return [n.process.pid for n in self.nodes if n.process is not None and n.alive()]

    def node(self, node_id: int) -> Node:
        return self.nodes[node_id - 1]

    # --- the whole cluster --------------------------------------------------------

    def start(self, timeout_s: float = 90.0) -> LocalKafka:
        """Fetch the jars if need be, format new nodes, start them all, and wait until
        every broker has registered. Raises ``KafkaUnavailable`` naming what failed."""
        self._runtime()
        for node in self.nodes:
            if reachable(node.address, 0.2):
                raise KafkaUnavailable(f"something already listens on {node.address}")
            self._prepare(node)
        for node in self.nodes:
            self.start_node(node.node_id, wait=False)
        self.wait_registered(len(self.nodes), timeout_s)
        log.info("Apache Kafka is up", extra={"bootstrap": self.bootstrap, "nodes": len(self.nodes)})
        return self

    def stop(self, grace_s: float = 20.0) -> None:
        """Stop every node (SIGTERM to all at once, then SIGKILL after ``grace_s``)
        and remove a temporary data folder."""
        for node in self.nodes:
            node.signal(signal.SIGCONT)  # a frozen node cannot shut down
            node.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for node in self.nodes:
            self._reap(node, max(0.1, deadline - time.monotonic()))
        if self._temporary:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def wait_registered(self, count: int, timeout_s: float = 60.0) -> None:
        """Wait until the cluster reports ``count`` live brokers."""
        deadline = time.monotonic() + timeout_s
        seen = 0
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.process is not None and node.process.poll() is not None:
                    raise KafkaUnavailable(
                        f"Kafka node {node.node_id} exited with status {node.process.returncode} "
                        f"while starting; see {node.directory / 'stdout.log'} and {node.log_path}"
                    )
            seen = self._live_brokers()
            if seen >= count:
                return
            time.sleep(0.2)
        raise KafkaUnavailable(
            f"Apache Kafka at {self.bootstrap} had {seen} of {count} brokers up after {timeout_s:.0f}s; "
            f"see the logs under {self.data_dir}"
        )

    def _live_brokers(self) -> int:
        live = [n.address for n in self.nodes if n.alive() and reachable(n.address, 0.2)]
        if not live:
            return 0
        try:
            admin = AdminClient({"bootstrap.servers": ",".join(live), "log_level": 3})
            return len(admin.describe_cluster(request_timeout=2).result().nodes)
        except KafkaException:
            return 0

    # --- one node, for fault tests ------------------------------------------------

    def start_node(self, node_id: int, *, wait: bool = True, timeout_s: float = 60.0) -> None:
        node = self.node(node_id)
        if node.alive():
            return
        java, libs = self._runtime()
        node._output = open(node.directory / "stdout.log", "ab")  # noqa: SIM115 - closed in _reap
        node.process = subprocess.Popen(
            [
                *node.launcher,
                java,
                f"-Xms{min(256, self.heap_mb)}m",
                f"-Xmx{self.heap_mb}m",
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={node.directory / 'log4j2.properties'}",
                "-cp",
                f"{libs}/*",
                "kafka.Kafka",
                str(node.directory / "server.properties"),
            ],
            stdout=node._output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # A session of its own: Ctrl-C at a terminal reaches the pipeline's
            # processes, and the broker, stopped last by its owner, outlives them.
            start_new_session=True,
            preexec_fn=processes.die_with_parent,
        )
        if wait:
            self.wait_registered(sum(1 for n in self.nodes if n.alive()), timeout_s)

    def stop_node(self, node_id: int, grace_s: float = 30.0) -> None:
        """A clean shutdown (SIGTERM): the node hands its leaderships over first."""
        node = self.node(node_id)
        node.signal(signal.SIGTERM)
        self._reap(node, grace_s)

    def kill_node(self, node_id: int) -> None:
        """kill -9: no shutdown; what the node had not replicated is up to the others."""
        node = self.node(node_id)
        node.signal(signal.SIGCONT)
        node.signal(signal.SIGKILL)
        self._reap(node, 10)

    def pause_node(self, node_id: int) -> None:
        """SIGSTOP: sockets stay open and nothing answers (a long GC pause, a frozen VM)."""
        self.node(node_id).signal(signal.SIGSTOP)

    def resume_node(self, node_id: int) -> None:
        self.node(node_id).signal(signal.SIGCONT)

    def leader_of(self, topic: str, partition: int) -> int:
        """The node id leading ``topic``'s ``partition`` (-1 while none does)."""
        admin = self._admin()
        metadata = admin.list_topics(topic, timeout=10)
        return int(metadata.topics[topic].partitions[partition].leader)

    def active_controller(self) -> int:
        """The node id of the active controller (the KRaft quorum's leader) as every
        running node records it in its ``quorum-state`` file; -1 while they disagree
        or none is elected. (DescribeCluster, asked through a broker's listener,
        names a random live broker as the controller in KRaft mode.)"""
        views = set()
        for node in self.nodes:
            if not node.alive():
                continue
            try:
                state = json.loads((node.directory / "log" / _QUORUM_STATE).read_text("utf-8"))
            except (OSError, ValueError):
                return -1
            views.add((int(state["leaderEpoch"]), int(state["leaderId"])))
        return views.pop()[1] if len(views) == 1 else -1

    def _admin(self) -> AdminClient:
        live = [n.address for n in self.nodes if n.alive()] or [self.nodes[0].address]
        return AdminClient({"bootstrap.servers": ",".join(live)})

    # --- files and processes ------------------------------------------------------

    def _prepare(self, node: Node) -> None:
        """Write the node's settings (ports may differ from its last start) and format
        its log folder the first time, with the cluster id every node shares."""
        node.directory.mkdir(parents=True, exist_ok=True)
        voters = ",".join(f"{n.node_id}@{n.host}:{n.controller_port}" for n in self.nodes)
        settings = self.config | {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://{node.address},CONTROLLER://{node.host}:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{node.address}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(node.directory / "log"),
        }
        properties = node.directory / "server.properties"
        properties.write_text("".join(f"{k}={v}\n" for k, v in sorted(settings.items())), "utf-8")
        (node.directory / "log4j2.properties").write_text(_LOG4J.format(path=node.log_path), "utf-8")
        if (node.directory / "log" / "meta.properties").exists():
            return
        cluster_id = self._shared_cluster_id()
        java, libs = self._runtime()
        formatted = subprocess.run(
            [
                java,
                "-cp",
                f"{libs}/*",
                f"-Dlog4j2.configurationFile={node.directory / 'log4j2.properties'}",
                "kafka.tools.StorageTool",
                *("format", "-t", cluster_id, "-c", str(properties)),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if formatted.returncode != 0:
            raise KafkaUnavailable(
                f"formatting Kafka node {node.node_id} failed: {formatted.stdout}{formatted.stderr}".strip()
            )

    def _runtime(self) -> tuple[str, Path]:
        """The checked ``java`` and the verified jars, found once."""
        if self._runtime_found is None:
            self._runtime_found = (java_command(), ensure_jars())
        return self._runtime_found

    def _shared_cluster_id(self) -> str:
        path = self.data_dir / "cluster-id"
        if not path.exists():
            path.write_text(_cluster_id(), "utf-8")
        return path.read_text("utf-8").strip()

    @staticmethod
    def _reap(node: Node, grace_s: float) -> None:
        if node.process is not None:
            _status, killed = processes.stop(node.process, grace_s, sig=signal.SIGTERM)
            if killed:
                log.warning("Kafka node %d did not stop in %.0fs; it was killed", node.node_id, grace_s)
        if node._output is not None:
            node._output.close()
            node._output = None
