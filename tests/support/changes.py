"""Reading a stack's profile changes topic back, and the checks the stream promises.

``assert_changes_consistent`` waits until the outbox is empty (every change
committed was acknowledged by the broker), reads the whole topic, and checks per
profile key: the versions seen are 1..N with no gap, each version seen more than
once has the same bytes every time, versions never go back (a version may repeat
after a crash, and is then skipped as a consumer would skip it), and replaying the
changes from version 1 gives the traits the store holds now.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaError, TopicPartition

from tests.support.stack import Stack, wait_until
from traitstream.avro import changes as change_codec
from traitstream.events import user_profile_id
from traitstream.worker.changes import replay


@dataclass
class KeyStream:
    """One key's records, in log order: (value bytes or None, decoded record or None)."""

    records: list[tuple[bytes | None, dict[str, Any] | None]] = field(default_factory=list)


def outbox_size(database_url: str) -> int:
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        row = conn.execute("SELECT count(*) FROM change_outbox").fetchone()
    return int(row[0]) if row else 0


def wait_outbox_empty(stack: Stack, timeout: float = 90.0) -> None:
    wait_until(
        lambda: outbox_size(stack.database_url) == 0, timeout, "the change outbox to empty", every=0.25
    )


def read_changes(bootstrap: str, topic: str, partitions: int) -> dict[str, KeyStream]:
    """Every record of the changes topic, by key, in log order."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"changes-reader-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    schemas = change_codec.LocalChangeSchemas()
    keys: dict[str, KeyStream] = defaultdict(KeyStream)
    try:
        pending = set(range(partitions))
        consumer.assign([TopicPartition(topic, p, 0) for p in pending])
        deadline = time.monotonic() + 60
        while pending and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.5):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(message.partition())
                    continue
                value = message.value()
                decoded = None if value is None else change_codec.decode(value, schemas)
                keys[(message.key() or b"").decode()].records.append((value, decoded))
        assert not pending, f"could not read {topic} to the end (partitions {sorted(pending)})"
    finally:
        consumer.close()
    return dict(keys)


@dataclass
class ChangesOutcome:
    keys: int = 0
    versions: int = 0
    repeated: int = 0
    """Versions that reached the topic more than once (identical each time)."""
    traits: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per profile id, what replaying its changes gives."""
    seen: dict[str, list[int]] = field(default_factory=dict)
    """Per profile id, the versions in the topic in log order (0: a tombstone)."""


def check_stream(keys: dict[str, KeyStream]) -> ChangesOutcome:
    outcome = ChangesOutcome(keys=len(keys))
    for key, stream in keys.items():
        seen: dict[int, bytes] = {}
        last = 0
        applied: list[dict[str, Any] | None] = []
        for value, record in stream.records:
            if record is None:
                applied.append(None)  # a tombstone
                continue
            version = int(record["version"])
            assert value is not None
            if version in seen:
                assert seen[version] == value, f"{key} version {version} was published with other content"
                outcome.repeated += 1
                continue
            assert version == last + 1, f"{key}: version {version} follows version {last}"
            seen[version] = value
            last = version
            applied.append(record)
        outcome.versions += len(seen)
        profile_id = key.split(":", 1)[1]
        outcome.traits[profile_id] = replay(applied)
        outcome.seen[profile_id] = [0 if r is None else int(r["version"]) for _v, r in stream.records]
    return outcome


def stored_traits(database_url: str, workspace: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT profile_id::text, traits FROM profiles WHERE workspace_id = %s", (workspace,)
        ).fetchall()
    return {profile_id: traits for profile_id, traits in rows}


def assert_changes_consistent(
    stack: Stack, workspace: str, users: list[str], timeout: float = 90.0
) -> ChangesOutcome:
    """The stream's promises: for every key of the topic, and replay for the profiles
    of ``users`` (a database may be shared by several stacks; a topic is not)."""
    wait_outbox_empty(stack, timeout)
    outcome = check_stream(read_changes(stack.bootstrap, stack.changes_topic, stack.partitions))
    versions = stored_versions(stack.database_url)
    stored = stored_traits(stack.database_url, workspace)
    assert users
    for user in users:
        profile_id = str(user_profile_id(workspace, user))
        traits = stored.get(profile_id)
        if traits is not None:
            rebuilt = outcome.traits.get(profile_id, {})
            assert rebuilt == traits, (
                f"replaying {profile_id}'s changes gives {rebuilt}, the store has {traits} "
                f"(at version {versions.get(profile_id)}; the topic has "
                f"{outcome.seen.get(profile_id, [])})"
            )
    return outcome


def stored_versions(database_url: str) -> dict[str, int]:
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        rows = conn.execute("SELECT profile_id::text, version FROM profile_versions").fetchall()
    return {profile_id: int(version) for profile_id, version in rows}
