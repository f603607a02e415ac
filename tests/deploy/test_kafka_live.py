"""The Kafka settings of deploy/, run by Apache Kafka itself.

Without a container engine the apache/kafka image cannot start here, but what it
does before the broker starts can: its entry point hands the container's
environment to ``kafka.docker.KafkaDockerWrapper setup``, which writes
server.properties from the KAFKA_* variables and formats the node's log folder,
and that class ships in the same Kafka release as the image. These tests run it,
from the project's pinned, checksum-verified Kafka jars, on the environment of
every Kafka node of the Compose file and of the Kubernetes StatefulSet; then
start three nodes with those settings and check what they do: the topics that
kafka-init creates, the internal offsets topic, and how long a crashed worker's
partitions wait before another worker gets them.

Skipped when Java or the Kafka jars cannot be had (see ``traitstream.localkafka``).
"""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic  # type: ignore[attr-defined]

from tests.deploy.kafka_manifests import (
    COMPOSE,
    KAFKA_STATEFULSET,
    PER_NODE_SETTINGS,
    compose_env,
    compose_kafka_nodes,
    image_properties,
    load_all_yaml,
    load_yaml,
    script_of,
    statefulset_pod_env,
    topic_creations,
)
from traitstream.localkafka.artifacts import KafkaUnavailable, ensure_jars, java_command
from traitstream.localkafka.cluster import LocalKafka
from traitstream.worker.consumer import consumer_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def kafka_runtime() -> tuple[str, Path]:
    try:
        return java_command(), ensure_jars()
    except KafkaUnavailable as exc:
        pytest.skip(f"Apache Kafka cannot run here: {exc}")


def compose_nodes() -> dict[str, dict[str, str]]:
    return {name: compose_env(svc) for name, svc in compose_kafka_nodes(load_yaml(COMPOSE)).items()}


def k8s_pods() -> dict[str, dict[str, str]]:
    (statefulset,) = [d for d in load_all_yaml(KAFKA_STATEFULSET) if d["kind"] == "StatefulSet"]
    return {
        f"kafka-{i}": statefulset_pod_env(statefulset, i, "traitstream")
        for i in range(statefulset["spec"]["replicas"])
    }


def read_properties(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


NODES = [("compose", name, env) for name, env in compose_nodes().items()] + [
    ("k8s", name, env) for name, env in k8s_pods().items()
]


@pytest.mark.parametrize("where,name,env", NODES, ids=[f"{w}-{n}" for w, n, _ in NODES])
def test_image_setup_accepts_the_node(
    where: str, name: str, env: dict[str, str], kafka_runtime: tuple[str, Path], tmp_path: Path
) -> None:
    """The image's own set-up step, on the node's environment: the server.properties
    it writes are the settings the static checks read, and Kafka 4.1.1 formats a log
    folder with them (which validates every setting it knows, such as the consumer
    group session timeout against its bounds)."""
    java, libs = kafka_runtime
    for folder in ("default", "mounted", "final", "log"):
        (tmp_path / folder).mkdir()
    (tmp_path / "default" / "server.properties").write_text("", encoding="utf-8")
    node_env = env | {"KAFKA_LOG_DIRS": str(tmp_path / "log")}
    result = subprocess.run(
        [
            java,
            "-cp",
            f"{libs}/*",
            "kafka.docker.KafkaDockerWrapper",
            "setup",
            *("--default-configs-dir", str(tmp_path / "default")),
            *("--mounted-configs-dir", str(tmp_path / "mounted")),
            *("--final-configs-dir", str(tmp_path / "final")),
        ],
        env={"PATH": os.environ.get("PATH", ""), **node_env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{where} {name}: {result.stdout}{result.stderr}"
    written = read_properties(tmp_path / "final" / "server.properties")
    assert written == image_properties(node_env)
    meta = read_properties(tmp_path / "log" / "meta.properties")
    assert meta["cluster.id"] == env["CLUSTER_ID"]
    assert meta["node.id"] == written["node.id"]


# ---------------------------------------------------------------- three nodes


def shared_settings() -> dict[str, str]:
    """The settings of the Compose nodes that are not about addresses or identity:
    what a local cluster of three nodes runs with."""
    (first, *_) = compose_nodes().values()
    return {
        k: v for k, v in image_properties(first).items() if k not in PER_NODE_SETTINGS | {"process.roles"}
    }


@pytest.fixture(scope="module")
def cluster(kafka_runtime: tuple[str, Path]) -> Iterator[LocalKafka]:
    kafka = LocalKafka(3, heap_mb=512, overrides=shared_settings())
    try:
        yield kafka.start()
    finally:
        kafka.stop()


@pytest.fixture(scope="module")
def topics(cluster: LocalKafka) -> dict[str, dict]:
    """The topics of Compose's kafka-init, created as its script says."""
    wanted = topic_creations(script_of(load_yaml(COMPOSE)["services"]["kafka-init"]["command"]))
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    new = [
        NewTopic(name, t["partitions"], t["replication_factor"], config=t["configs"])
        for name, t in wanted.items()
    ]
    for future in admin.create_topics(new, operation_timeout=30).values():
        future.result()
    # Created means the controller has them; wait until the brokers' metadata does
    # too, with every replica caught up.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        metadata = admin.list_topics(timeout=10).topics
        if all(
            name in metadata
            and len(metadata[name].partitions) == t["partitions"]
            and all(
                p.leader >= 0 and len(p.isrs) == t["replication_factor"]
                for p in metadata[name].partitions.values()
            )
            for name, t in wanted.items()
        ):
            break
        time.sleep(0.2)
    return wanted


def topic_config(admin: AdminClient, topic: str) -> dict[str, str]:
    """The topic's configuration. The broker asked may not have heard of a topic
    created a moment ago (each node learns it from the metadata log in its own
    time): it is asked again until it has, for up to 30 s."""
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    deadline = time.monotonic() + 30
    while True:
        try:
            entries = admin.describe_configs([resource])[resource].result()
            return {name: entry.value for name, entry in entries.items()}
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            unknown = isinstance(error, KafkaError) and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
            if not unknown or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_brokers_run_the_deploy_settings(cluster: LocalKafka) -> None:
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    wanted = shared_settings()
    for node in cluster.nodes:
        resource = ConfigResource(ConfigResource.Type.BROKER, str(node.node_id))
        entries = admin.describe_configs([resource])[resource].result()
        for key, value in wanted.items():
            assert entries[key].value == value, (node.node_id, key)


def test_topics_are_replicated_three_times(cluster: LocalKafka, topics: dict[str, dict]) -> None:
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    metadata = admin.list_topics(timeout=10)
    for name, wanted in topics.items():
        partitions = metadata.topics[name].partitions
        assert len(partitions) == wanted["partitions"], name
        for partition in partitions.values():
            assert len(partition.replicas) == 3, (name, partition.id)
            assert len(partition.isrs) == 3, (name, partition.id)
        config = topic_config(admin, name)
        for key, value in wanted["configs"].items():
            assert config[key] == value, (name, key)


def test_writes_go_on_with_one_node_down(cluster: LocalKafka, topics: dict[str, dict]) -> None:
    """With a node stopped, every partition keeps two replicas in sync, which
    min.insync.replicas=2 asks of an acks=all write (the edge's producer settings)."""
    producer = Producer(
        {
            "bootstrap.servers": cluster.bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "message.timeout.ms": 20000,
        }
    )
    cluster.stop_node(3)
    try:
        delivered: list[object] = []
        for i in range(20):
            producer.produce(
                "identify", key=str(i).encode(), value=b"x", on_delivery=lambda e, m: delivered.append(e)
            )
        assert producer.flush(30) == 0
        assert delivered == [None] * 20
    finally:
        cluster.start_node(3)


def assigned_count(consumer: Consumer) -> int:
    consumer.poll(0.2)
    return len(consumer.assignment())


_MEMBER = """
import sys
from confluent_kafka import Consumer
from traitstream.worker.consumer import consumer_config
consumer = Consumer(consumer_config(sys.argv[1], sys.argv[2], 15000, "consumer"))
consumer.subscribe([sys.argv[3]])
reported = -1
while True:
    consumer.poll(0.2)
    count = len(consumer.assignment())
    if count != reported:
        print(count, flush=True)
        reported = count
"""


def test_crashed_member_keeps_its_partitions_for_the_session_timeout(
    cluster: LocalKafka, topics: dict[str, dict]
) -> None:
    """Two workers' consumers (the consumer protocol, as the worker builds it) share
    `identify`; one is killed with no chance to leave. The other gets its partitions
    once the brokers' group.consumer.session.timeout.ms has run out, not before."""
    session_s = int(shared_settings()["group.consumer.session.timeout.ms"]) / 1000
    heartbeat_s = int(shared_settings()["group.consumer.heartbeat.interval.ms"]) / 1000
    partitions = topics["identify"]["partitions"]
    group = f"traitstream-deploy-{uuid.uuid4().hex[:8]}"
    member = subprocess.Popen(
        [sys.executable, "-c", _MEMBER, cluster.bootstrap, group, "identify"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    counts: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=lambda: [counts.put(line.strip()) for line in member.stdout or ()], daemon=True
    ).start()
    survivor = Consumer(consumer_config(cluster.bootstrap, group, 15000, "consumer"))
    try:
        deadline = time.monotonic() + 60
        seen = ""
        while seen != str(partitions) and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                seen = counts.get(timeout=1)
        assert seen == str(partitions), "the first member never got every partition"
        survivor.subscribe(["identify"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and assigned_count(survivor) != partitions // 2:
            pass
        assert len(survivor.assignment()) == partitions // 2, "the partitions were not shared"
        member.kill()
        member.wait(10)
        crashed = time.monotonic()
        while time.monotonic() < crashed + 3 * session_s and assigned_count(survivor) != partitions:
            pass
        waited = time.monotonic() - crashed
        assert len(survivor.assignment()) == partitions, f"not reassigned after {waited:.1f}s"
        # The member's last heartbeat came at most one interval before the kill; the
        # survivor hears of its new partitions at its next heartbeat.
        assert session_s - 2 * heartbeat_s <= waited <= session_s + 3 * heartbeat_s, waited
    finally:
        if member.poll() is None:
            member.kill()
            member.wait(10)
        with contextlib.suppress(KafkaException):
            survivor.close()


def test_offsets_topic_is_replicated_three_times(cluster: LocalKafka, topics: dict[str, dict]) -> None:
    """The group coordinator's topic, created on the first group's first request."""
    consumer = Consumer(
        consumer_config(cluster.bootstrap, f"traitstream-deploy-{uuid.uuid4().hex[:8]}", 15000)
    )
    try:
        consumer.subscribe(["identify"])
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        deadline = time.monotonic() + 60
        while (
            time.monotonic() < deadline and "__consumer_offsets" not in admin.list_topics(timeout=10).topics
        ):
            consumer.poll(0.2)
        offsets = admin.list_topics(timeout=10).topics["__consumer_offsets"]
        assert all(len(p.replicas) == 3 for p in offsets.partitions.values())
        assert topic_config(admin, "__consumer_offsets")["min.insync.replicas"] == "2"
    finally:
        consumer.close()
