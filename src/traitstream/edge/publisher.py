"""Producing events to Kafka and waiting for the broker's acknowledgement.

``KafkaPublisher.publish`` returns only when the broker acknowledged every record
of the call (idempotent producer, ``acks=all``) and raises ``Unavailable`` when it
did not within the timeout: the edge then answers 503, never a success. A
background thread serves the producer's delivery reports.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Producer

from traitstream.avro import codec
from traitstream.avro.schemas import SchemaSource
from traitstream.errors import Unavailable
from traitstream.events import IdentifyEvent
from traitstream.metrics import EdgeMetrics

log = logging.getLogger(__name__)


class Publisher(Protocol):
    """Durably hands events to the broker.

    ``publish`` suspends until every event is acknowledged; raises ``Unavailable``
    otherwise (some may have been written: clients retry with the same dedupe key).
    ``ready`` may block for up to ``timeout`` seconds.
    """

    async def publish(self, events: Sequence[IdentifyEvent]) -> None: ...

    def ready(self, timeout: float) -> bool: ...


class _Pending:
    """Counts down one call's delivery reports, then wakes the waiting request."""

    __slots__ = ("error", "future", "loop", "remaining", "started")

    def __init__(self, count: int, loop: asyncio.AbstractEventLoop) -> None:
        self.remaining = count
        self.error: KafkaError | None = None
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.started = time.perf_counter()

    def report(self, error: KafkaError | None, _message: Any) -> None:
        if error is not None and self.error is None:
            self.error = error
        self.remaining -= 1
        if self.remaining == 0:
            self.loop.call_soon_threadsafe(self._finish)

    def _finish(self) -> None:
        if self.future.done():
            return
        if self.error is not None:
            self.future.set_exception(
                Unavailable(f"the broker did not take the identify: {self.error.str()}")
            )
        else:
            self.future.set_result(None)


def producer_config(bootstrap: str, timeout_s: float) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2,
        "compression.type": "lz4",
        "message.timeout.ms": int(timeout_s * 1000),
        "queue.buffering.max.messages": 500_000,
        "queue.buffering.max.kbytes": 512 * 1024,
        "socket.keepalive.enable": True,
        "reconnect.backoff.max.ms": 2000,
    }


class KafkaPublisher:
    def __init__(
        self,
        bootstrap: str,
        topic: str,
        schemas: SchemaSource,
        metrics: EdgeMetrics,
        timeout_s: float = 10.0,
    ) -> None:
        self._producer = Producer(producer_config(bootstrap, timeout_s))
        self._topic = topic
        self._schema_id = schemas.writer_id
        self._metrics = metrics
        self._timeout_s = timeout_s
        self._running = True
        self._thread = threading.Thread(target=self._serve, name="kafka-delivery", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while self._running:
            self._producer.poll(0.05)

    async def publish(self, events: Sequence[IdentifyEvent]) -> None:
        pending = _Pending(len(events), asyncio.get_running_loop())
        try:
            for event in events:
                self._producer.produce(
                    self._topic,
                    value=codec.encode(event, self._schema_id),
                    key=event.partition_key,
                    on_delivery=pending.report,
                )
        except (BufferError, KafkaException) as exc:
            self._metrics.produce_errors.inc()
            raise Unavailable(f"the broker cannot take more identifies now: {exc}") from exc
        try:
            await asyncio.wait_for(pending.future, self._timeout_s + 5)
        except (Unavailable, TimeoutError) as exc:
            self._metrics.produce_errors.inc()
            if isinstance(exc, Unavailable):
                raise
            raise Unavailable("the broker did not acknowledge the identify in time") from exc
        self._metrics.delivery_seconds.observe(time.perf_counter() - pending.started)

    def ready(self, timeout: float) -> bool:
        try:
            metadata = self._producer.list_topics(self._topic, timeout=timeout)
        except KafkaException:
            return False
        topic = metadata.topics.get(self._topic)
        return topic is not None and topic.error is None and bool(topic.partitions)

    def close(self, timeout: float = 10.0) -> None:
        remaining = self._producer.flush(timeout)
        if remaining:
            log.warning("closing with %d records not acknowledged", remaining)
        self._running = False
        self._thread.join(timeout=2)
