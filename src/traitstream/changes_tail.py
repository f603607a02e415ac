"""``traitstream changes tail``: print the profile changes topic as JSON lines.

Each line is one record: the change record's fields, or for a tombstone
``{"tombstone": true, "key": …}``; with ``partition`` and ``offset``. It reads as
a consumer of no group (nothing is committed), from the end of each partition, or
from the beginning with ``--from-beginning``, until interrupted.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable
from typing import Any, TextIO

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, TopicPartition

from traitstream.avro import changes as change_codec
from traitstream.config import CommonSettings
from traitstream.errors import InvalidRecord
from traitstream.processes import StopFlag


def render(
    key: bytes | None, value: bytes | None, schemas: change_codec.ChangeSchemaSource
) -> dict[str, Any]:
    """One record as the line prints it (a record that does not decode says why)."""
    text_key = None if key is None else key.decode("utf-8", errors="replace")
    if value is None:
        return {"tombstone": True, "key": text_key}
    try:
        return change_codec.decode(value, schemas)
    except InvalidRecord as exc:
        return {"error": exc.message, "key": text_key}


def matches(line: dict[str, Any], workspace: str | None) -> bool:
    if workspace is None:
        return True
    if "workspace_id" in line:
        return bool(line["workspace_id"] == workspace)
    return str(line.get("key") or "").startswith(f"{workspace}:")


def tail(
    settings: CommonSettings,
    *,
    workspace: str | None,
    from_beginning: bool,
    out: TextIO,
    stop: Callable[[], bool],
) -> int:
    """Print until ``stop()``; returns how many records were printed."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": "traitstream-changes-tail",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
        }
    )
    schemas = change_codec.change_schemas(settings)
    printed = 0
    try:
        metadata = consumer.list_topics(settings.changes_topic, timeout=10)
        topic = metadata.topics.get(settings.changes_topic)
        if topic is None or topic.error is not None:
            raise SystemExit(f"error: topic {settings.changes_topic} does not exist")
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        consumer.assign([TopicPartition(settings.changes_topic, p, start) for p in sorted(topic.partitions)])
        while not stop():
            for message in consumer.consume(500, 0.5):
                error = message.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        print(f"consumer error: {error.str()}", file=sys.stderr)
                    continue
                line = render(message.key(), message.value(), schemas)
                if not matches(line, workspace):
                    continue
                line |= {"partition": message.partition(), "offset": message.offset()}
                out.write(json.dumps(line, ensure_ascii=False) + "\n")
                printed += 1
            out.flush()
    finally:
        consumer.close()
    return printed


def run(settings: CommonSettings, *, workspace: str | None, from_beginning: bool) -> int:
    """Print until SIGINT or SIGTERM."""
    stopping = StopFlag()
    signal.signal(signal.SIGTERM, stopping.set)
    signal.signal(signal.SIGINT, stopping.set)
    tail(settings, workspace=workspace, from_beginning=from_beginning, out=sys.stdout, stop=stopping.is_set)
    return 0
