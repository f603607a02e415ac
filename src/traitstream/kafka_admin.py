"""Broker checks and topic creation."""

from __future__ import annotations

import logging
import socket

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

log = logging.getLogger(__name__)

CHANGES_TOPIC_CONFIG = {
    # Change records are differences, not states: compaction would keep only each
    # profile's last one and make the topic impossible to replay from version 1. So
    # the topic deletes by age. Erased profiles' data is gone from it at most
    # retention.ms + segment.ms after the erasure (a segment is deleted whole, once
    # its newest record is past retention); the tombstone tells consumers and any
    # compacted copy downstream to forget the key (docs/operations.md).
    "cleanup.policy": "delete",
    "retention.ms": str(7 * 24 * 3600 * 1000),
    "segment.ms": str(24 * 3600 * 1000),
}


def reachable(bootstrap: str, timeout: float = 1.0) -> bool:
    """Whether anything accepts TCP connections at the first bootstrap address."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def ensure_topics(
    bootstrap: str,
    topics: dict[str, int],
    timeout: float = 15.0,
    configs: dict[str, dict[str, str]] | None = None,
) -> None:
    """Create each topic (name → partitions) that does not exist yet, replicated as
    production wants: on three brokers or more, three replicas of which two must
    acknowledge a write (``min.insync.replicas=2``, with the producers' ``acks=all``);
    on fewer, as many as there are brokers. ``configs``: more settings of some topics
    (name → settings)."""
    # Warnings and worse only: a short-lived client's "purging unserved events" is noise.
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})
    metadata = admin.list_topics(timeout=timeout)
    replicas = max(1, min(3, len(metadata.brokers)))
    config = {"min.insync.replicas": str(min(2, replicas))}
    wanted = [
        NewTopic(name, partitions, replicas, config=config | (configs or {}).get(name, {}))
        for name, partitions in topics.items()
        if name not in metadata.topics
    ]
    if not wanted:
        return
    for name, future in admin.create_topics(wanted, operation_timeout=timeout).items():
        try:
            future.result()
            log.info("created topic %s", name, extra={"replicas": replicas, "partitions": topics[name]})
        except KafkaException as exc:
            if exc.args[0].code() != 36:  # TOPIC_ALREADY_EXISTS: another process won the race
                raise
