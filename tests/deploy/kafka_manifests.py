"""What the deploy files ask of Apache Kafka, read the way the ``apache/kafka`` image
and Kubernetes read them. Shared by the static checks and the live ones."""

from __future__ import annotations

import itertools
import re
import shlex
from pathlib import Path

import yaml

from traitstream.localkafka.artifacts import KAFKA_VERSION

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
K8S = DEPLOY / "k8s"
KAFKA_STATEFULSET = K8S / "kafka" / "kafka-statefulset.yaml"
KAFKA_TOPICS_JOB = K8S / "kafka" / "kafka-topics-job.yaml"

KAFKA_IMAGE = f"apache/kafka:{KAFKA_VERSION}"

# KAFKA_* variables the image's start-up leaves out of server.properties (they are
# the JVM's and log4j's), as listed by kafka.docker.KafkaDockerWrapper in 4.1.1.
IMAGE_ENV_NOT_SETTINGS = frozenset(
    {
        "KAFKA_VERSION",
        "KAFKA_HEAP_OPTS",
        "KAFKA_LOG4J_OPTS",
        "KAFKA_OPTS",
        "KAFKA_JMX_OPTS",
        "KAFKA_JVM_PERFORMANCE_OPTS",
        "KAFKA_GC_LOG_OPTS",
        "KAFKA_LOG4J_ROOT_LOGLEVEL",
        "KAFKA_LOG4J_LOGGERS",
        "KAFKA_TOOLS_LOG4J_LOGLEVEL",
        "KAFKA_JMX_HOSTNAME",
    }
)

# Settings that differ from node to node, or between Compose and Kubernetes by
# design (addresses, the cluster's identity, where the log lives).
PER_NODE_SETTINGS = frozenset(
    {
        "node.id",
        "listeners",
        "advertised.listeners",
        "listener.security.protocol.map",
        "controller.quorum.voters",
        "log.dirs",
    }
)


def load_yaml(path: Path):
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def load_all_yaml(path: Path) -> list:
    with path.open(encoding="utf-8") as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc is not None]


def image_properties(env: dict[str, object]) -> dict[str, str]:
    """The server.properties the apache/kafka image writes from a container's
    environment: each KAFKA_* variable, prefix dropped, lower case, ``_`` to ``.``,
    ``___`` to ``-`` and ``__`` to ``_``."""
    out = {}
    for key, value in env.items():
        if not key.startswith("KAFKA_") or key in IMAGE_ENV_NOT_SETTINGS:
            continue
        name = key.replace("KAFKA_", "").lower().replace("_", ".").replace("...", "-").replace("..", "_")
        out[name] = str(value)
    return out


# ---------------------------------------------------------------- Compose


def compose_kafka_nodes(compose: dict) -> dict[str, dict]:
    """The Compose services that run a Kafka node, by service name."""
    return {
        name: svc
        for name, svc in compose["services"].items()
        if "KAFKA_PROCESS_ROLES" in (svc.get("environment") or {})
    }


def compose_env(svc: dict) -> dict[str, str]:
    return {k: str(v) for k, v in (svc.get("environment") or {}).items()}


def script_of(command: object) -> str:
    return command if isinstance(command, str) else "\n".join(command)  # type: ignore[arg-type]


# ---------------------------------------------------------------- Kubernetes

_K8S_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def statefulset_pod_env(statefulset: dict, ordinal: int, namespace: str) -> dict[str, str]:
    """A StatefulSet pod's environment as the kubelet gives it: downward-API fields
    filled in for pod ``ordinal`` and ``$(VAR)`` references to earlier variables
    expanded."""
    name = f"{statefulset['metadata']['name']}-{ordinal}"
    fields = {
        "metadata.name": name,
        "metadata.namespace": namespace,
        "metadata.labels['apps.kubernetes.io/pod-index']": str(ordinal),
    }
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "valueFrom" in var:
            env[var["name"]] = fields[var["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            value = str(var["value"])
            env[var["name"]] = _K8S_REF.sub(lambda m: env.get(m.group(1), m.group(0)), value)
    return env


# ---------------------------------------------------------------- topic creation


def topic_creations(script: str) -> dict[str, dict]:
    """Each ``kafka-topics.sh --create`` of a shell script: topic name → partitions
    (a Compose ``${VAR:-default}`` counts as its default), replication factor,
    ``--config`` settings and whether ``--if-not-exists`` is given."""
    out = {}
    for line in script.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if "--create" not in words:
            continue
        topic: dict = {"configs": {}, "if_not_exists": "--if-not-exists" in words}
        for flag, value in itertools.pairwise(words):
            if flag == "--topic":
                topic["name"] = value
            elif flag == "--partitions":
                topic["partitions"] = int(re.sub(r"^\$\{[A-Za-z_]+:-(\d+)\}$", r"\1", value))
            elif flag == "--replication-factor":
                topic["replication_factor"] = int(value)
            elif flag == "--config":
                key, _, setting = value.partition("=")
                topic["configs"][key] = setting
        out[topic.pop("name")] = topic
    return out
