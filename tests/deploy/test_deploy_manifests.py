"""Static checks of the deployment files under deploy/ and of docs/operations.md.

Nothing here needs a network, a Docker engine or a cluster. Optional tools are
used when present:

- ``promtool`` (Debian package ``prometheus``): checks the rules, the config
  and the dashboard's queries, and unit-tests the alerts;
- ``docker compose`` with a running engine: ``docker compose config -q``;
- the ``kubernetes_validate`` module: schema validation of the k8s objects;
- ``kustomize`` or ``kubectl``: renders the kustomization.

The Kafka settings are read as the apache/kafka image reads its environment
(``kafka_manifests.image_properties``); ``test_kafka_live.py`` has Kafka itself
check them.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import tomllib
import typing
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

from tests.deploy.kafka_manifests import (  # noqa: E402 - needs yaml
    KAFKA_IMAGE,
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
from traitstream.config import CommonSettings, EdgeSettings, WorkerSettings  # noqa: E402
from traitstream.worker.consumer import consumer_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
K8S = DEPLOY / "k8s"
PROM_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "traitstream.json"
OPERATIONS = ROOT / "docs" / "operations.md"

PARTITIONS = 12
TOPICS = {"identify", "identify.dlq", "profiles.changes"}
BROKERS = 3
# What every Kafka node of Compose and of Kubernetes is given (server.properties
# names, as the image writes them).
BROKER_SETTINGS = {
    "process.roles": "broker,controller",
    "default.replication.factor": "3",
    "min.insync.replicas": "2",
    "offsets.topic.replication.factor": "3",
    "transaction.state.log.replication.factor": "3",
    "transaction.state.log.min.isr": "2",
    "share.coordinator.state.topic.replication.factor": "3",
    "share.coordinator.state.topic.min.isr": "2",
    "unclean.leader.election.enable": "false",
    "auto.create.topics.enable": "false",
    "group.consumer.session.timeout.ms": "15000",
    "group.consumer.heartbeat.interval.ms": "2000",
    "group.initial.rebalance.delay.ms": "3000",
}
# Kafka 4.1's defaults for the bounds a group's session timeout and heartbeat
# interval must keep within (group.consumer.{min,max}.*).
CONSUMER_GROUP_BOUNDS_DEFAULTS = {
    "group.consumer.min.session.timeout.ms": 45_000,
    "group.consumer.max.session.timeout.ms": 60_000,
    "group.consumer.min.heartbeat.interval.ms": 5_000,
    "group.consumer.max.heartbeat.interval.ms": 15_000,
}
HISTOGRAMS = {
    "traitstream_edge_request_seconds",
    "traitstream_worker_batch_seconds",
    "traitstream_end_to_end_seconds",
    "traitstream_worker_batch_size",
}
# Every metric name the services export (contract names plus the planned ones).
KNOWN_METRICS = HISTOGRAMS | {
    "traitstream_edge_requests_total",
    "traitstream_worker_events_total",
    "traitstream_consumer_lag",
    "traitstream_edge_produce_errors_total",
    "traitstream_worker_dead_letters_total",
    "traitstream_worker_rebalances_total",
    "traitstream_edge_in_flight_requests",
    "traitstream_worker_store_errors_total",
    "traitstream_changes_published_total",
    "traitstream_changes_outbox_backlog",
    "traitstream_changes_relay_lag_seconds",
    "traitstream_changes_relay_shards",
}
METRIC_RE = re.compile(r"\btraitstream_[a-z0-9_]+")
ALERT_NAMES = {
    "TraitstreamConsumerLagGrowing",
    "TraitstreamDeadLetters",
    "TraitstreamEdge5xxRate",
    "TraitstreamEndToEndLatencyHigh",
    "TraitstreamNoWorkerAlive",
    "TraitstreamChangesBacklogGrowing",
}


# ---------------------------------------------------------------- helpers


def metric_base(name: str) -> str:
    """Map a series name (``x_bucket``, ``x_sum``, ``x_count``) to its metric."""
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in HISTOGRAMS:
            return name[: -len(suffix)]
    return name


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def doc_anchors() -> set[str]:
    anchors = set()
    in_code = False
    for line in OPERATIONS.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match and not in_code:
            anchors.add(github_anchor(match.group(1)))
    return anchors


def alert_rules() -> list[dict]:
    doc = load_yaml(ALERTS)
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def dashboard_panels() -> list[dict]:
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    out = []
    stack = list(dash["panels"])
    while stack:
        panel = stack.pop(0)
        out.append(panel)
        stack.extend(panel.get("panels", []))
    return out


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard_panels() for t in p.get("targets", []) if "expr" in t]


def k8s_objects() -> dict[str, list[dict]]:
    """Every manifest under deploy/k8s (kustomizations aside), by path relative to it."""
    objects = {}
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        objects[str(path.relative_to(K8S))] = load_all_yaml(path)
    return objects


def kustomized_files(directory: Path) -> list[str]:
    """The manifest files a kustomization takes in, following directories listed as
    resources into their own kustomization, relative to deploy/k8s."""
    out = []
    for resource in load_yaml(directory / "kustomization.yaml")["resources"]:
        path = directory / resource
        if path.is_dir():
            out.extend(kustomized_files(path))
        else:
            out.append(str(path.relative_to(K8S)))
    return out


def k8s_by_kind(kind: str) -> list[dict]:
    return [o for docs in k8s_objects().values() for o in docs if o.get("kind") == kind]


def k8s_one(kind: str, name: str) -> dict:
    found = [o for o in k8s_by_kind(kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} named {name}, found {len(found)}"
    return found[0]


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed: apt-get install prometheus")
    return path


def run(cmd: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


def docker_compose_usable() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        if run(["docker", "compose", "version"]).returncode != 0:
            return False
        return run(["docker", "info"]).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


# ---------------------------------------------------------------- every YAML parses


def all_yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yml", ".yaml"})


@pytest.mark.parametrize("path", all_yaml_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_yaml_parses(path: Path) -> None:
    docs = load_all_yaml(path)
    assert docs, f"{path} is empty"


def test_expected_files_exist() -> None:
    for path in (
        COMPOSE,
        DOCKERFILE,
        PROM_CONFIG,
        ALERTS,
        DASHBOARD,
        OPERATIONS,
        K8S / "kustomization.yaml",
        DEPLOY / "README.md",
    ):
        assert path.is_file(), f"missing {path.relative_to(ROOT)}"


# ---------------------------------------------------------------- docker compose


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_yaml(COMPOSE)


def test_compose_has_all_services(compose: dict) -> None:
    expected = {
        "kafka-init",
        "schema-registry",
        "postgres",
        "redis",
        "migrate",
        "edge",
        "worker",
        "prometheus",
        "grafana",
    }
    assert expected <= set(compose["services"])
    assert set(compose_kafka_nodes(compose)) == {f"kafka-{i}" for i in range(1, BROKERS + 1)}


def check_broker_settings(where: str, settings: dict[str, str]) -> None:
    """The settings every node must have, and a consumer-group session timeout and
    heartbeat interval that the broker's own bounds allow."""
    for key, value in BROKER_SETTINGS.items():
        assert settings.get(key) == value, f"{where}: {key}={settings.get(key)}, expected {value}"
    assert "zookeeper.connect" not in settings, where

    def number(key: str) -> int:
        return int(settings.get(key, CONSUMER_GROUP_BOUNDS_DEFAULTS.get(key, 0)))

    session = number("group.consumer.session.timeout.ms")
    heartbeat = number("group.consumer.heartbeat.interval.ms")
    low, high = (
        number("group.consumer.min.session.timeout.ms"),
        number("group.consumer.max.session.timeout.ms"),
    )
    assert low <= session <= high, f"{where}: session timeout {session} outside [{low}, {high}]"
    low, high = (
        number("group.consumer.min.heartbeat.interval.ms"),
        number("group.consumer.max.heartbeat.interval.ms"),
    )
    assert low <= heartbeat <= high, f"{where}: heartbeat interval {heartbeat} outside [{low}, {high}]"
    # Two lost heartbeats must not cost a member its partitions.
    assert 3 * heartbeat <= session, where


def quorum(settings: dict[str, str]) -> dict[int, tuple[str, int]]:
    """controller.quorum.voters as node id -> (host, port)."""
    voters = {}
    for voter in settings["controller.quorum.voters"].split(","):
        node, _, address = voter.partition("@")
        host, _, port = address.rpartition(":")
        voters[int(node)] = (host, int(port))
    return voters


def listener_ports(value: str) -> dict[str, int]:
    """A listeners value (NAME://host:port,...) as listener name -> port."""
    return {name: int(rest.rpartition(":")[2]) for name, rest in (e.split("://") for e in value.split(","))}


def listener_hosts(value: str) -> dict[str, str]:
    return {name: rest.rpartition(":")[0] for name, rest in (e.split("://") for e in value.split(","))}


def test_compose_kafka_runs_the_pinned_version(compose: dict) -> None:
    for name, svc in compose_kafka_nodes(compose).items():
        assert svc["image"] == KAFKA_IMAGE, name
    assert compose["services"]["kafka-init"]["image"] == KAFKA_IMAGE


def test_compose_kafka_is_a_three_node_kraft_quorum(compose: dict) -> None:
    nodes = compose_kafka_nodes(compose)
    assert len(nodes) == BROKERS
    settings = {name: image_properties(svc["environment"]) for name, svc in nodes.items()}
    ids = {name: int(s["node.id"]) for name, s in settings.items()}
    assert len(set(ids.values())) == BROKERS
    cluster_ids = {compose_env(svc)["CLUSTER_ID"] for svc in nodes.values()}
    assert len(cluster_ids) == 1, "every node formats its log with the same cluster id"
    assert len(base64.urlsafe_b64decode(cluster_ids.pop() + "==")) == 16, "a cluster id is a 16-byte UUID"
    volumes = set()
    for name, svc in nodes.items():
        s = settings[name]
        check_broker_settings(name, s)
        # The static quorum names every node, at its own controller listener.
        voters = quorum(s)
        assert set(voters) == set(ids.values()), name
        assert voters[ids[name]] == (svc["hostname"], listener_ports(s["listeners"])["CONTROLLER"])
        assert s["controller.listener.names"] == "CONTROLLER"
        # Other containers reach the node by its service name; the host by the
        # published port, one per node.
        advertised = s["advertised.listeners"]
        assert listener_hosts(advertised)["PLAINTEXT"] == svc["hostname"] == name
        assert s["inter.broker.listener.name"] == "PLAINTEXT"
        host_port = listener_ports(advertised)["HOST"]
        assert listener_ports(s["listeners"])["HOST"] == host_port
        assert f"127.0.0.1:{host_port}:{host_port}" in svc["ports"]
        assert "CONTROLLER" not in listener_ports(advertised)
        # Each node keeps its own log.
        (volume,) = [v.split(":")[0] for v in svc["volumes"] if v.split(":")[1] == s["log.dirs"]]
        volumes.add(volume)
        assert "healthcheck" in svc, name
    assert len(volumes) == BROKERS


def test_compose_app_bootstrap_lists_every_broker(compose: dict) -> None:
    nodes = compose_kafka_nodes(compose)
    expected = {f"{name}:9092" for name in nodes}
    for name in ("migrate", "edge", "worker"):
        bootstrap = compose["services"][name]["environment"]["TRAITSTREAM_KAFKA_BOOTSTRAP"]
        assert set(bootstrap.split(",")) == expected, name
    registry = compose["services"]["schema-registry"]["environment"]
    assert {
        a.removeprefix("PLAINTEXT://")
        for a in registry["SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS"].split(",")
    } == expected
    # The registry's own topic, _schemas, is replicated like the others.
    assert str(registry["SCHEMA_REGISTRY_KAFKASTORE_TOPIC_REPLICATION_FACTOR"]) == "3"


def check_topic_creations(where: str, script: str) -> dict[str, dict]:
    topics = topic_creations(script)
    assert set(topics) == TOPICS, where
    assert topics["identify"]["partitions"] == PARTITIONS, where
    for name, topic in topics.items():
        assert topic["if_not_exists"], (where, name)
        assert topic["replication_factor"] == 3, (where, name)
        assert topic["configs"].get("min.insync.replicas") == "2", (where, name)
    return topics


def test_compose_init_creates_replicated_topics(compose: dict) -> None:
    init = compose["services"]["kafka-init"]
    # Three replicas need three registered brokers.
    for name in compose_kafka_nodes(compose):
        assert init["depends_on"][name]["condition"] == "service_healthy", name
    check_topic_creations("kafka-init", script_of(init["command"]))


def test_compose_worker_is_scalable(compose: dict) -> None:
    worker = compose["services"]["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker, "a published host port would break --scale"
    assert "hostname" not in worker
    assert worker["command"] == ["worker"]


def test_compose_postgres_lock_table_fits_a_worker_per_partition(compose: dict) -> None:
    """Every worker's batch holds an advisory lock per user and anonymous id (two per
    identify at most SDKs' traffic) until it commits; PostgreSQL fails a batch with
    "out of shared memory" once its lock table is full. The table holds about
    max_locks_per_transaction times max_connections (100 by default)."""
    from traitstream.config import WorkerSettings

    command = compose["services"]["postgres"]["command"]
    settings = dict(arg.split("=", 1) for arg in command if "=" in arg)
    locks_per_batch = 2 * WorkerSettings.model_fields["batch_size"].default
    assert int(settings["max_locks_per_transaction"]) * 100 >= PARTITIONS * locks_per_batch


def test_compose_one_shot_services(compose: dict) -> None:
    services = compose["services"]
    assert services["migrate"]["command"] == ["migrate"]
    for name in ("migrate", "kafka-init"):
        assert services[name]["restart"] == "no"


def test_compose_healthchecks_and_conditions(compose: dict) -> None:
    services = compose["services"]
    one_shot = {"migrate", "kafka-init"}
    for name, svc in services.items():
        if name not in one_shot:
            assert "healthcheck" in svc, f"{name} has no healthcheck"
        depends = svc.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on must use conditions"
        for dep, spec in depends.items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            cond = spec["condition"]
            if dep in one_shot:
                assert cond == "service_completed_successfully", (name, dep)
            else:
                assert cond in {"service_healthy", "service_started"}, (name, dep)
                if cond == "service_healthy":
                    assert "healthcheck" in services[dep], (name, dep)
    for name in ("edge", "worker"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["kafka-init"]["condition"] == "service_completed_successfully"
    assert "/readyz" in " ".join(services["edge"]["healthcheck"]["test"])
    assert "9108/healthz" in " ".join(services["worker"]["healthcheck"]["test"])


def test_compose_app_environment(compose: dict) -> None:
    required = {
        "TRAITSTREAM_KAFKA_BOOTSTRAP",
        "TRAITSTREAM_DATABASE_URL",
        "TRAITSTREAM_REDIS_URL",
        "TRAITSTREAM_TOPIC",
        "TRAITSTREAM_HTTP_PORT",
        "TRAITSTREAM_METRICS_PORT",
        "TRAITSTREAM_SCHEMA_REGISTRY_URL",
    }
    services = compose["services"]
    for name in ("migrate", "edge", "worker"):
        svc = services[name]
        assert required <= set(svc["environment"]), name
        assert svc["environment"]["TRAITSTREAM_TOPIC"] == "identify"
        assert svc["environment"]["TRAITSTREAM_HTTP_HOST"] == "0.0.0.0"
        assert svc["environment"]["TRAITSTREAM_METRICS_HOST"] == "0.0.0.0"
        build = svc["build"]
        context = (COMPOSE.parent / build["context"]).resolve()
        assert context == ROOT
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE


GROUP_PROTOCOLS = set(typing.get_args(WorkerSettings.model_fields["group_protocol"].annotation))


def known_settings() -> set[str]:
    """The TRAITSTREAM_* variables the edge, the worker and migrate read."""
    fields = (
        set(CommonSettings.model_fields) | set(EdgeSettings.model_fields) | set(WorkerSettings.model_fields)
    )
    return {f"TRAITSTREAM_{name.upper()}" for name in fields}


def check_worker_group(where: str, env: dict[str, str], broker: dict[str, str], monkeypatch) -> None:
    """The worker's environment names a group protocol the worker knows, and the
    consumer it builds from that environment is a member of that protocol."""
    assert env.get("TRAITSTREAM_GROUP_PROTOCOL") in GROUP_PROTOCOLS, where
    assert env["TRAITSTREAM_GROUP_PROTOCOL"] == "consumer", where
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = WorkerSettings()
    assert settings.group_protocol == "consumer"
    config = consumer_config(
        settings.kafka_bootstrap, settings.group_id, settings.session_timeout_ms, settings.group_protocol
    )
    # On the consumer protocol the broker's group.consumer.* settings rule: the
    # client sends no session timeout or heartbeat interval of its own.
    assert config["group.protocol"] == "consumer"
    assert "session.timeout.ms" not in config and "heartbeat.interval.ms" not in config
    # The classic protocols take the worker's own session timeout: the same as the
    # broker's, so a crashed worker's partitions wait as long whichever protocol runs.
    assert settings.session_timeout_ms == int(broker["group.consumer.session.timeout.ms"]), where


def test_compose_worker_group_protocol(compose: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    worker = compose_env(compose["services"]["worker"])
    broker = image_properties(next(iter(compose_kafka_nodes(compose).values()))["environment"])
    check_worker_group("compose worker", worker, broker, monkeypatch)


def test_compose_sets_only_known_settings(compose: dict) -> None:
    known = known_settings()
    for name in ("migrate", "edge", "worker"):
        env = compose["services"][name]["environment"]
        unknown = {k for k in env if k.startswith("TRAITSTREAM_")} - known
        assert not unknown, f"{name}: no such setting {sorted(unknown)}"


def test_compose_bind_mounts_exist(compose: dict) -> None:
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume["source"]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"{name}: {source} missing"
            else:
                assert source in (compose.get("volumes") or {}), f"{name}: volume {source}"


def test_compose_config_with_docker() -> None:
    if not docker_compose_usable():
        pytest.skip("docker compose with a running engine not available; checked with PyYAML only")
    result = run(["docker", "compose", "-f", str(COMPOSE), "config", "-q"])
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_multistage_nonroot() -> None:
    instructions = dockerfile_instructions()
    froms = [rest for word, rest in instructions if word == "FROM"]
    assert len(froms) >= 2, "expected a build stage and a runtime stage"
    assert all("slim" in f for f in froms)
    users = [rest for word, rest in instructions if word == "USER"]
    assert users, "the image must switch to an unprivileged user"
    assert users[-1].split(":")[0] not in {"root", "0"}
    entrypoint = [rest for word, rest in instructions if word == "ENTRYPOINT"]
    assert entrypoint and json.loads(entrypoint[-1])[-1] == "traitstream"


def test_dockerfile_copies_what_the_build_needs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    readme = project["project"].get("readme")
    if isinstance(readme, dict):
        readme = readme.get("file")
    copied = set()
    for word, rest in dockerfile_instructions():
        if word == "COPY" and "--from" not in rest:
            parts = [p for p in rest.split() if not p.startswith("--")]
            copied.update(parts[:-1])
    assert {"pyproject.toml", "src"} <= copied
    assert "setup.py" in copied, "setup.py declares the C extension"
    if readme:
        assert readme in copied, "pip needs the readme named in pyproject.toml"


# ---------------------------------------------------------------- Kubernetes


def test_k8s_objects_are_well_formed() -> None:
    objects = k8s_objects()
    assert objects
    for filename, docs in objects.items():
        for obj in docs:
            assert obj.get("apiVersion"), filename
            assert obj.get("kind"), filename
            assert obj.get("metadata", {}).get("name"), filename
            assert "namespace" not in obj["metadata"], f"{filename} must not set a namespace"


def test_kustomization_lists_every_manifest() -> None:
    kustomization = load_yaml(K8S / "kustomization.yaml")
    assert kustomization["kind"] == "Kustomization"
    assert "namespace" not in kustomization
    listed = kustomized_files(K8S)
    assert len(listed) == len(set(listed))
    assert set(listed) == set(k8s_objects())
    assert "kafka" in kustomization["resources"]


def test_k8s_has_required_objects() -> None:
    kinds = {(o["kind"], o["metadata"]["name"]) for docs in k8s_objects().values() for o in docs}
    for expected in [
        ("ConfigMap", "traitstream-config"),
        ("Secret", "traitstream-secrets"),
        ("Deployment", "traitstream-edge"),
        ("Service", "traitstream-edge"),
        ("HorizontalPodAutoscaler", "traitstream-edge"),
        ("Deployment", "traitstream-worker"),
        ("ScaledObject", "traitstream-worker"),
        ("Job", "traitstream-migrate"),
    ]:
        assert expected in kinds, expected
    assert len(k8s_by_kind("PodDisruptionBudget")) >= 2


def pod_spec(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]


def pod_labels(obj: dict) -> dict:
    return obj["spec"]["template"]["metadata"]["labels"]


def matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize(
    "kind,name",
    [
        ("Deployment", "traitstream-edge"),
        ("Deployment", "traitstream-worker"),
        ("Job", "traitstream-migrate"),
    ],
)
def test_k8s_pods_are_hardened_and_configured(kind: str, name: str) -> None:
    obj = k8s_one(kind, name)
    spec = pod_spec(obj)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    config_names = {o["metadata"]["name"] for o in k8s_by_kind("ConfigMap")}
    secret_names = {o["metadata"]["name"] for o in k8s_by_kind("Secret")}
    for container in spec["containers"]:
        resources = container["resources"]
        for section in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources[section]), (name, section)
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert "ALL" in security["capabilities"]["drop"]
        refs = container["envFrom"]
        assert {r["configMapRef"]["name"] for r in refs if "configMapRef" in r} <= config_names
        assert {r["secretRef"]["name"] for r in refs if "secretRef" in r} <= secret_names
        assert any("secretRef" in r for r in refs)
    if kind == "Deployment":
        assert matches(obj["spec"]["selector"]["matchLabels"], pod_labels(obj))


def probe_target(container: dict, probe: str) -> tuple[str, int]:
    http = container[probe]["httpGet"]
    port = http["port"]
    if isinstance(port, str):
        port = next(p["containerPort"] for p in container["ports"] if p["name"] == port)
    return http["path"], port


def test_k8s_edge_probes_and_args() -> None:
    container = pod_spec(k8s_one("Deployment", "traitstream-edge"))["containers"][0]
    assert container["args"] == ["edge"]
    assert probe_target(container, "livenessProbe") == ("/healthz", 8080)
    assert probe_target(container, "readinessProbe") == ("/readyz", 8080)


def test_k8s_worker_probes_and_args() -> None:
    container = pod_spec(k8s_one("Deployment", "traitstream-worker"))["containers"][0]
    assert container["args"] == ["worker"]
    assert probe_target(container, "livenessProbe") == ("/healthz", 9108)
    assert probe_target(container, "readinessProbe") == ("/healthz", 9108)


def test_k8s_migrate_job() -> None:
    job = k8s_one("Job", "traitstream-migrate")
    assert job["apiVersion"] == "batch/v1"
    assert pod_spec(job)["containers"][0]["args"] == ["migrate"]
    assert pod_spec(job)["restartPolicy"] in {"Never", "OnFailure"}


def test_k8s_configmap_matches_ports() -> None:
    data = k8s_one("ConfigMap", "traitstream-config")["data"]
    assert data["TRAITSTREAM_HTTP_PORT"] == "8080"
    # The defaults listen on loopback only, which no probe or Service could reach.
    assert data["TRAITSTREAM_HTTP_HOST"] == "0.0.0.0"
    assert data["TRAITSTREAM_METRICS_HOST"] == "0.0.0.0"
    assert data["TRAITSTREAM_METRICS_PORT"] == "9108"
    assert data["TRAITSTREAM_TOPIC"] == "identify"
    secret = k8s_one("Secret", "traitstream-secrets")
    values = secret.get("stringData") or secret.get("data")
    assert {"TRAITSTREAM_DATABASE_URL", "TRAITSTREAM_REDIS_URL"} <= set(values)


def test_k8s_edge_service_and_hpa() -> None:
    edge = k8s_one("Deployment", "traitstream-edge")
    assert "replicas" not in edge["spec"], "the HPA owns the replica count"
    service = k8s_one("Service", "traitstream-edge")
    assert matches(service["spec"]["selector"], pod_labels(edge))
    hpa = k8s_one("HorizontalPodAutoscaler", "traitstream-edge")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == "traitstream-edge"
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    resources = [m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"]
    assert "cpu" in resources


def test_k8s_worker_scaled_object() -> None:
    worker = k8s_one("Deployment", "traitstream-worker")
    assert "replicas" not in worker["spec"], "KEDA owns the replica count"
    scaled = k8s_one("ScaledObject", "traitstream-worker")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == "traitstream-worker"
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= PARTITIONS
    kafka = [t for t in spec["triggers"] if t["type"] == "kafka"]
    assert len(kafka) == 1
    meta = kafka[0]["metadata"]
    assert meta["consumerGroup"] == "traitstream"
    assert meta["topic"] == "identify"
    assert int(meta["lagThreshold"]) > 0
    assert meta.get("allowIdleConsumers", "false") == "false"
    bootstrap = k8s_one("ConfigMap", "traitstream-config")["data"]["TRAITSTREAM_KAFKA_BOOTSTRAP"]
    assert meta["bootstrapServers"] == bootstrap


def test_k8s_worker_group_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    container = pod_spec(k8s_one("Deployment", "traitstream-worker"))["containers"][0]
    env = dict(k8s_one("ConfigMap", "traitstream-config")["data"])
    env.update({v["name"]: v["value"] for v in container.get("env", [])})
    broker = statefulset_pod_env(k8s_one("StatefulSet", "kafka"), 0, "traitstream")
    check_worker_group("k8s worker", env, image_properties(broker), monkeypatch)


def test_k8s_sets_only_known_settings() -> None:
    known = known_settings()
    names = set(k8s_one("ConfigMap", "traitstream-config")["data"])
    secret = k8s_one("Secret", "traitstream-secrets")
    names |= set(secret.get("stringData") or secret.get("data"))
    for kind, name in (
        ("Deployment", "traitstream-edge"),
        ("Deployment", "traitstream-worker"),
        ("Job", "traitstream-migrate"),
    ):
        for container in pod_spec(k8s_one(kind, name))["containers"]:
            names |= {v["name"] for v in container.get("env", [])}
    unknown = {n for n in names if n.startswith("TRAITSTREAM_")} - known
    assert not unknown, f"no such setting {sorted(unknown)}"


def kafka_pod_settings() -> dict[int, dict[str, str]]:
    statefulset = k8s_one("StatefulSet", "kafka")
    return {
        i: image_properties(statefulset_pod_env(statefulset, i, "traitstream"))
        for i in range(statefulset["spec"]["replicas"])
    }


def test_k8s_kafka_is_a_three_node_kraft_quorum() -> None:
    statefulset = k8s_one("StatefulSet", "kafka")
    spec = statefulset["spec"]
    assert spec["replicas"] == BROKERS
    # Nodes must all be up to form the quorum, so none may wait for another.
    assert spec["podManagementPolicy"] == "Parallel"
    pod = pod_spec(statefulset)
    (container,) = pod["containers"]
    assert container["image"] == KAFKA_IMAGE
    # Service links would put KAFKA_<SERVICE>_* variables in the environment, which
    # the image would write into server.properties.
    assert pod["enableServiceLinks"] is False
    headless = k8s_one("Service", spec["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert matches(headless["spec"]["selector"], pod_labels(statefulset))
    env = {v["name"]: v for v in container["env"]}
    assert env["KAFKA_NODE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['apps.kubernetes.io/pod-index']"
    )
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"]["value"] + "==")) == 16
    domain = f"{spec['serviceName']}.traitstream.svc"
    for ordinal, settings in kafka_pod_settings().items():
        check_broker_settings(f"kafka-{ordinal}", settings)
        assert settings["node.id"] == str(ordinal)
        ports = listener_ports(settings["listeners"])
        container_ports = {p["containerPort"] for p in container["ports"]}
        assert set(ports.values()) <= container_ports
        # The quorum: every pod of the StatefulSet by its stable name.
        assert quorum(settings) == {i: (f"kafka-{i}.{domain}", ports["CONTROLLER"]) for i in range(BROKERS)}
        assert (
            settings["advertised.listeners"] == f"PLAINTEXT://kafka-{ordinal}.{domain}:{ports['PLAINTEXT']}"
        )
        # The log lives on the pod's volume.
        mounts = [m["mountPath"] for m in container["volumeMounts"]]
        assert any(settings["log.dirs"].startswith(m + "/") for m in mounts)
    claims = [t["metadata"]["name"] for t in spec["volumeClaimTemplates"]]
    assert {m["name"] for m in container["volumeMounts"]} <= set(claims)


def test_k8s_kafka_is_hardened_and_spread() -> None:
    statefulset = k8s_one("StatefulSet", "kafka")
    pod = pod_spec(statefulset)
    # The image's user is a name; runAsNonRoot can only check a number.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert isinstance(pod["securityContext"]["runAsUser"], int) and pod["securityContext"]["runAsUser"] != 0
    (container,) = pod["containers"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert "ALL" in container["securityContext"]["capabilities"]["drop"]
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert probe in container, probe
    # No two replicas of a partition on one machine.
    terms = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert any(
        t["topologyKey"] == "kubernetes.io/hostname"
        and matches(t["labelSelector"]["matchLabels"], pod_labels(statefulset))
        for t in terms
    )
    # Drains take one node at a time: min.insync.replicas=2 of 3 holds.
    pdbs = [
        p
        for p in k8s_by_kind("PodDisruptionBudget")
        if matches(p["spec"]["selector"]["matchLabels"], pod_labels(statefulset))
    ]
    assert len(pdbs) == 1 and pdbs[0]["spec"]["maxUnavailable"] == 1


def test_k8s_bootstrap_is_the_kafka_service() -> None:
    bootstrap = k8s_one("ConfigMap", "traitstream-config")["data"]["TRAITSTREAM_KAFKA_BOOTSTRAP"]
    host, _, port = bootstrap.rpartition(":")
    service = k8s_one("Service", host)
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}
    assert matches(service["spec"]["selector"], pod_labels(k8s_one("StatefulSet", "kafka")))


def test_k8s_topics_job_creates_replicated_topics() -> None:
    job = k8s_one("Job", "traitstream-kafka-topics")
    pod = pod_spec(job)
    assert pod["restartPolicy"] in {"Never", "OnFailure"}
    assert job["spec"]["backoffLimit"] >= 3, "brokers may still be starting: retry"
    (container,) = pod["containers"]
    assert container["image"] == KAFKA_IMAGE
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    script = script_of(container["command"][2:] + container.get("args", []))
    topics = check_topic_creations("kafka topics Job", script)
    host = re.search(r"bootstrap=(\S+)", script).group(1)
    assert host == k8s_one("ConfigMap", "traitstream-config")["data"]["TRAITSTREAM_KAFKA_BOOTSTRAP"]
    # The same topics as Compose, created the same way.
    compose_topics = topic_creations(script_of(load_yaml(COMPOSE)["services"]["kafka-init"]["command"]))
    assert topics == compose_topics


def test_compose_and_k8s_brokers_agree(compose: dict) -> None:
    """Compose and Kubernetes run the same Kafka with the same settings, addresses
    and sizes aside."""
    compose_settings = [image_properties(svc["environment"]) for svc in compose_kafka_nodes(compose).values()]
    pods = list(kafka_pod_settings().values())

    def shared(settings: dict[str, str]) -> dict[str, str]:
        return {k: v for k, v in settings.items() if k not in PER_NODE_SETTINGS}

    reference = shared(pods[0])
    for settings in compose_settings + pods:
        assert shared(settings) == reference


def kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def test_kustomize_builds_every_object() -> None:
    command = kustomize_command()
    if command is None:
        pytest.skip("neither kustomize nor kubectl is installed")
    result = run([*command, str(K8S)])
    assert result.returncode == 0, result.stderr
    rendered = [d for d in yaml.safe_load_all(result.stdout) if d]
    built = sorted((d["kind"], d["metadata"]["name"]) for d in rendered)
    expected = sorted((o["kind"], o["metadata"]["name"]) for docs in k8s_objects().values() for o in docs)
    assert built == expected
    images = {
        c["image"]
        for d in rendered
        if d["kind"] in {"Deployment", "StatefulSet", "Job"}
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert KAFKA_IMAGE in images
    for d in rendered:
        assert d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "traitstream", d["metadata"]["name"]


def test_k8s_pdbs_select_pods() -> None:
    pdbs = k8s_by_kind("PodDisruptionBudget")
    for name in ("traitstream-edge", "traitstream-worker"):
        labels = pod_labels(k8s_one("Deployment", name))
        selecting = [p for p in pdbs if matches(p["spec"]["selector"]["matchLabels"], labels)]
        assert len(selecting) == 1, name
        assert selecting[0]["apiVersion"] == "policy/v1"


def test_k8s_schemas() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    for docs in k8s_objects().values():
        for obj in docs:
            if obj["apiVersion"].startswith("keda.sh/"):
                continue  # KEDA's CRD: kubernetes-validate has no schema for it
            kv.validate(obj, "1.29.0", strict=True)


# ---------------------------------------------------------------- Prometheus


def test_prometheus_config_structure() -> None:
    config = load_yaml(PROM_CONFIG)
    for rule_file in config["rule_files"]:
        assert (PROM_CONFIG.parent / rule_file).is_file(), rule_file
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    edge = jobs["traitstream-edge"]
    assert any("edge:8080" in sc["targets"] for sc in edge["static_configs"])
    worker = jobs["traitstream-worker"]
    assert "static_configs" not in worker
    dns = worker["dns_sd_configs"]
    assert any(d["type"] == "A" and d["port"] == 9108 and "worker" in d["names"] for d in dns)


def test_alerts_cover_the_required_conditions() -> None:
    rules = alert_rules()
    names = {r["alert"] for r in rules}
    assert names >= ALERT_NAMES
    by_name = {r["alert"]: r for r in rules}
    assert "traitstream_consumer_lag" in by_name["TraitstreamConsumerLagGrowing"]["expr"]
    assert "dead_lettered" in by_name["TraitstreamDeadLetters"]["expr"]
    assert '"5.."' in by_name["TraitstreamEdge5xxRate"]["expr"]
    e2e = by_name["TraitstreamEndToEndLatencyHigh"]["expr"]
    assert "0.99" in e2e and "traitstream_end_to_end_seconds_bucket" in e2e
    assert re.search(r">\s*1\b", e2e)
    assert 'job="traitstream-worker"' in by_name["TraitstreamNoWorkerAlive"]["expr"]


def test_alert_metrics_exist() -> None:
    for rule in alert_rules():
        for name in METRIC_RE.findall(rule["expr"]):
            assert metric_base(name) in KNOWN_METRICS, (rule["alert"], name)


def test_alert_jobs_match_scrape_config() -> None:
    jobs = {job["job_name"] for job in load_yaml(PROM_CONFIG)["scrape_configs"]}
    for rule in alert_rules():
        for job in re.findall(r'job="([^"]+)"', rule["expr"]):
            assert job in jobs, (rule["alert"], job)


def test_every_alert_has_a_runbook_section() -> None:
    anchors = doc_anchors()
    for rule in alert_rules():
        annotations = rule["annotations"]
        assert annotations.get("summary"), rule["alert"]
        assert annotations.get("description"), rule["alert"]
        runbook = annotations.get("runbook")
        assert runbook, f"{rule['alert']} has no runbook annotation"
        path, _, anchor = runbook.partition("#")
        assert path == "docs/operations.md", runbook
        assert anchor in anchors, f"{runbook}: no such heading in docs/operations.md"
        assert "severity" in rule.get("labels", {}), rule["alert"]


def test_operations_doc_sections() -> None:
    anchors = doc_anchors()
    for section in ("deploying", "scaling-workers", "replaying-dead-letters", "rotating-api-keys", "alerts"):
        assert section in anchors, section
    text = OPERATIONS.read_text(encoding="utf-8")
    for command in ("traitstream dlq replay", "traitstream keys create", "traitstream keys revoke"):
        assert command in text
    # Internal links point at headings that exist.
    for anchor in re.findall(r"\]\(#([^)]+)\)", text):
        assert anchor in anchors, anchor


def test_promtool_check_rules() -> None:
    tool = promtool()
    result = run([tool, "check", "rules", str(ALERTS)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_config() -> None:
    tool = promtool()
    result = run([tool, "check", "config", str(PROM_CONFIG)])
    assert result.returncode == 0, result.stdout + result.stderr


ALERT_TESTS = """
rule_files:
  - {rules}
evaluation_interval: 1m
tests:
  - name: a change backlog that keeps growing fires; a steady one does not
    interval: 1m
    input_series:
      - series: 'traitstream_changes_outbox_backlog{{instance="w1"}}'
        values: '0+200x40'
      - series: 'traitstream_changes_outbox_backlog{{instance="w2"}}'
        values: '3000x40'
    alert_rule_test:
      - eval_time: 5m
        alertname: TraitstreamChangesBacklogGrowing
        exp_alerts: []
      - eval_time: 30m
        alertname: TraitstreamChangesBacklogGrowing
        exp_alerts:
          - exp_labels: {{severity: warning}}

  - name: a steady change backlog stays quiet
    interval: 1m
    input_series:
      - series: 'traitstream_changes_outbox_backlog{{instance="w1"}}'
        values: '5000x40'
    alert_rule_test:
      - eval_time: 30m
        alertname: TraitstreamChangesBacklogGrowing
        exp_alerts: []

  - name: no worker alive, then one comes up
    interval: 1m
    input_series:
      - series: 'up{{job="traitstream-edge", instance="edge:8080"}}'
        values: '1x10'
      - series: 'up{{job="traitstream-worker", instance="w1:9108"}}'
        values: '_x5 1x5'
    alert_rule_test:
      - eval_time: 4m
        alertname: TraitstreamNoWorkerAlive
        exp_alerts:
          - exp_labels: {{severity: critical}}
      - eval_time: 9m
        alertname: TraitstreamNoWorkerAlive
        exp_alerts: []

  - name: dead letters fire at once
    interval: 1m
    input_series:
      - series: 'traitstream_worker_events_total{{outcome="dead_lettered", instance="w1"}}'
        values: '0 0 0 1 2 2 2'
      - series: 'traitstream_worker_events_total{{outcome="applied", instance="w1"}}'
        values: '0+100x6'
    alert_rule_test:
      - eval_time: 2m
        alertname: TraitstreamDeadLetters
        exp_alerts: []
      - eval_time: 5m
        alertname: TraitstreamDeadLetters
        exp_alerts:
          - exp_labels: {{severity: warning}}

  - name: edge 5xx rate above 5 percent
    interval: 1m
    input_series:
      - series: 'traitstream_edge_requests_total{{dialect="segment", status="200"}}'
        values: '0+90x20'
      - series: 'traitstream_edge_requests_total{{dialect="segment", status="503"}}'
        values: '0+10x20'
      - series: 'traitstream_edge_requests_total{{dialect="amplitude", status="400"}}'
        values: '0+50x20'
    alert_rule_test:
      - eval_time: 15m
        alertname: TraitstreamEdge5xxRate
        exp_alerts:
          - exp_labels: {{severity: critical}}

  - name: edge 4xx alone does not page
    interval: 1m
    input_series:
      - series: 'traitstream_edge_requests_total{{dialect="segment", status="200"}}'
        values: '0+10x20'
      - series: 'traitstream_edge_requests_total{{dialect="segment", status="401"}}'
        values: '0+90x20'
    alert_rule_test:
      - eval_time: 15m
        alertname: TraitstreamEdge5xxRate
        exp_alerts: []

  - name: end-to-end p99 above one second
    interval: 1m
    input_series:
      - series: 'traitstream_end_to_end_seconds_bucket{{le="0.5"}}'
        values: '0+50x30'
      - series: 'traitstream_end_to_end_seconds_bucket{{le="1"}}'
        values: '0+60x30'
      - series: 'traitstream_end_to_end_seconds_bucket{{le="5"}}'
        values: '0+100x30'
      - series: 'traitstream_end_to_end_seconds_bucket{{le="+Inf"}}'
        values: '0+100x30'
    alert_rule_test:
      - eval_time: 20m
        alertname: TraitstreamEndToEndLatencyHigh
        exp_alerts:
          - exp_labels: {{severity: warning}}

  - name: growing lag fires, steady lag does not
    interval: 1m
    input_series:
      - series: 'traitstream_consumer_lag{{partition="0", instance="w1"}}'
        values: '0+200x40'
      - series: 'traitstream_consumer_lag{{partition="1", instance="w2"}}'
        values: '5000x40'
      - series: 'traitstream_consumer_lag{{partition="1", instance="w1"}}'
        values: '5000x40'
    alert_rule_test:
      - eval_time: 30m
        alertname: TraitstreamConsumerLagGrowing
        exp_alerts:
          - exp_labels: {{severity: warning}}
  - name: large but steady lag does not fire
    interval: 1m
    input_series:
      - series: 'traitstream_consumer_lag{{partition="0", instance="w1"}}'
        values: '5000x40'
    alert_rule_test:
      - eval_time: 30m
        alertname: TraitstreamConsumerLagGrowing
        exp_alerts: []
"""


def test_promtool_alert_unit_tests(tmp_path: Path) -> None:
    tool = promtool()
    # The rules under test without their annotations: promtool compares
    # annotations exactly, and the templated texts are not what is tested here.
    doc = load_yaml(ALERTS)
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    rules_file = tmp_path / "alerts.yml"
    rules_file.write_text(yaml.safe_dump(doc), encoding="utf-8")
    test_file = tmp_path / "alerts_test.yml"
    test_file.write_text(ALERT_TESTS.format(rules=rules_file), encoding="utf-8")
    result = run([tool, "test", "rules", str(test_file)])
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- Grafana


def test_grafana_provisioning() -> None:
    datasources = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    prom = [d for d in datasources["datasources"] if d["type"] == "prometheus"]
    assert len(prom) == 1 and prom[0]["url"] == "http://prometheus:9090"
    providers = load_yaml(GRAFANA / "provisioning" / "dashboards" / "traitstream.yml")
    paths = [p["options"]["path"] for p in providers["providers"]]
    compose = load_yaml(COMPOSE)
    mounts = compose["services"]["grafana"]["volumes"]
    for path in paths:
        assert any(m.startswith("./grafana/dashboards:") and f":{path}" in m for m in mounts), path


def test_dashboard_uses_provisioned_datasource() -> None:
    uid = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"][0]["uid"]
    for panel in dashboard_panels():
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == uid, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, panel["title"]


def test_dashboard_ids_unique_and_panels_present() -> None:
    panels = dashboard_panels()
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    titles = {p["title"].lower() for p in panels}
    for wanted in (
        "ingestion rate by dialect",
        "edge errors by status",
        "edge latency p50 / p99",
        "end-to-end latency p50 / p99",
        "consumer lag by partition",
        "batch sizes",
        "worker events by outcome",
        "dead letters by reason",
        "change outbox backlog",
    ):
        assert wanted in titles, wanted


def test_dashboard_metric_names_exist() -> None:
    used = set()
    for expr in dashboard_exprs():
        for name in METRIC_RE.findall(expr):
            base = metric_base(name)
            assert base in KNOWN_METRICS, f"unknown metric {name} in {expr}"
            used.add(base)
    for required in (
        "traitstream_edge_requests_total",
        "traitstream_edge_request_seconds",
        "traitstream_end_to_end_seconds",
        "traitstream_consumer_lag",
        "traitstream_worker_batch_size",
        "traitstream_worker_events_total",
        "traitstream_worker_dead_letters_total",
    ):
        assert required in used, required


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """promtool parses each dashboard query as a recording rule expression."""
    tool = promtool()
    rules = []
    for i, expr in enumerate(dashboard_exprs()):
        expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m")
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    result = run([tool, "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr
