"""Turning a polled batch of Kafka messages into work: pure, no I/O but decoding.

``split`` decodes each message; what does not decode becomes a dead letter with its
reason. ``next_offsets`` says where each partition stands once the batch is done.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from traitstream.avro import codec
from traitstream.avro.schemas import SchemaSource
from traitstream.errors import InvalidRecord
from traitstream.worker.interfaces import Message
from traitstream.worker.records import DeadLetter, Positioned


@dataclass(slots=True)
class Split:
    records: list[Positioned] = field(default_factory=list)
    messages: list[Any] = field(default_factory=list)
    """The message each record was decoded from, position for position."""
    dead: list[DeadLetter] = field(default_factory=list)


def split(messages: Sequence[Message], schemas: SchemaSource) -> Split:
    """Decode every message. ``TransientError`` (a registry that cannot be reached)
    propagates: the batch is retried, not dead-lettered."""
    result = Split()
    for message in messages:
        try:
            event = codec.decode(message.value(), schemas)
        except InvalidRecord as exc:
            result.dead.append(DeadLetter(message, exc.reason, exc.message))
            continue
        result.records.append(Positioned(int(message.partition() or 0), int(message.offset() or 0), event))
        result.messages.append(message)
    return result


def next_offsets(messages: Sequence[Message]) -> dict[int, int]:
    offsets: dict[int, int] = {}
    for message in messages:
        partition, offset = int(message.partition() or 0), int(message.offset() or 0)
        if offset + 1 > offsets.get(partition, -1):
            offsets[partition] = offset + 1
    return offsets
