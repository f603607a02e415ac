"""Publishing identify records straight to the topic, as other services do."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable

from confluent_kafka import Producer

from traitstream.avro import codec
from traitstream.avro.schemas import LocalSchemas
from traitstream.events import IdentifyEvent, Op, Operation
from traitstream.kafka_producer import producer_config

_SCHEMAS = LocalSchemas()


def event(
    workspace: str,
    *,
    user: str | None = None,
    anon: tuple[str, ...] = (),
    t: int | None = None,
    dedupe_key: str | None = None,
    ops: Iterable[Operation] = (),
    **traits: object,
) -> IdentifyEvent:
    now = int(time.time() * 1000)
    return IdentifyEvent(
        workspace_id=workspace,
        user_id=user,
        anonymous_ids=anon,
        dialect="test-service",
        event_time_ms=now if t is None else t,
        received_time_ms=now,
        response_id=str(uuid.uuid4()),
        dedupe_key=dedupe_key,
        operations=(*ops, *(Operation(Op.SET, k, v) for k, v in traits.items())),
    )


def publish(bootstrap: str, topic: str, events: Iterable[IdentifyEvent | bytes], key: bytes = b"raw") -> None:
    """Produce and wait for the broker's acknowledgement of every record."""
    producer = Producer(producer_config(bootstrap, 30.0))
    failures: list[object] = []
    for item in events:
        if isinstance(item, bytes):
            value, record_key = item, key
        else:
            value, record_key = codec.encode(item, codec.writer_id(item, _SCHEMAS)), item.partition_key
        producer.produce(
            topic, value=value, key=record_key, on_delivery=lambda e, _m: failures.append(e) if e else None
        )
    assert producer.flush(30) == 0, "records left unacknowledged"
    assert not failures, failures
