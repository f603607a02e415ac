"""Producing events to Kafka and waiting for the broker's acknowledgement.

``KafkaPublisher.publish`` returns only when the broker acknowledged every record
of the call (idempotent producer, ``acks=all``) and raises ``Unavailable`` when it
did not within the timeout: the edge then answers 503, never a success. The event
loop itself serves the producer's delivery reports as soon as librdkafka signals
them through a pipe (``report_signal``): no thread, and no hop between threads per
request. Where that signal cannot be set up, the loop polls every millisecond while
any record is in flight.

The producer itself is ``kafka_producer.RenewableProducer``, which the workers'
dead-letter writer and replay use too.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException

from traitstream.avro import codec
from traitstream.avro.schemas import SchemaSource
from traitstream.edge.report_signal import ReportSignal
from traitstream.errors import TransientError, Unavailable
from traitstream.events import IdentifyEvent, Kind
from traitstream.kafka_producer import DEFAULT_LINGER_MS, RenewableProducer
from traitstream.metrics import EdgeMetrics

log = logging.getLogger(__name__)

_BUSY_TICK_S = 0.001
"""Without the pipe: how soon reports are served again while a request waits."""
_IDLE_TICK_S = 0.1
"""Otherwise (a safety net under the pipe too)."""
_SAFETY_MARGIN_S = 5.0
"""How long past librdkafka's own delivery timeout a publish waits for a report."""


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

    __slots__ = ("error", "future", "loop", "loop_thread", "remaining", "started")

    def __init__(self, count: int, loop: asyncio.AbstractEventLoop) -> None:
        self.remaining = count
        self.error: KafkaError | None = None
        self.loop = loop
        self.loop_thread = threading.get_ident()
        self.future: asyncio.Future[None] = loop.create_future()
        self.started = time.perf_counter()

    def report(self, error: KafkaError | None, _message: Any) -> None:
        if error is not None and self.error is None:
            self.error = error
        self.remaining -= 1
        if self.remaining == 0:
            if threading.get_ident() == self.loop_thread:
                self._finish()
            else:  # a flush served the report from another thread
                self.loop.call_soon_threadsafe(self._finish)

    def expire(self) -> None:
        """The safety net behind librdkafka's own timeout, which fails every record
        it could not deliver in time: nobody waits forever for a lost report."""
        if not self.future.done():
            self.future.set_exception(Unavailable("the broker did not acknowledge the identify in time"))

    def _finish(self) -> None:
        if self.future.done():
            return
        if self.error is not None:
            self.future.set_exception(
                Unavailable(f"the broker did not take the identify: {self.error.str()}")
            )
        else:
            self.future.set_result(None)


class KafkaPublisher:
    def __init__(
        self,
        bootstrap: str,
        topic: str,
        schemas: SchemaSource,
        metrics: EdgeMetrics,
        timeout_s: float = 10.0,
        linger_ms: float = DEFAULT_LINGER_MS,
    ) -> None:
        self._signal = ReportSignal.create()
        self._producer = RenewableProducer(bootstrap, timeout_s, linger_ms, self._signal)
        self._topic = topic
        self._schemas = schemas
        try:
            log.info("writing schema id %d", schemas.writer_id)
        except TransientError as exc:
            # Not fatal: the first publish tries again (and answers 503 until it works).
            log.warning("schema registration failed; retrying on the first identify: %s", exc)
        self._metrics = metrics
        self._timeout_s = timeout_s
        self._in_flight = 0
        self._tick: asyncio.TimerHandle | None = None
        self._tick_busy = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reading: asyncio.AbstractEventLoop | None = None
        """The loop that reads the signal's pipe, if any."""

    def start_serving(self) -> None:
        """Serve the producer on the running loop from now on, so that an error it
        reports before any traffic (a fatal one makes ``ready`` false) is heard."""
        if self._signal is not None and not self._signal.closed:
            loop = asyncio.get_running_loop()
            self._stop_reading()
            loop.add_reader(self._signal.read_fd, self._woken, self._signal)
            self._reading = loop
        self._schedule(busy=False)

    def stop_serving(self) -> None:
        """Stop serving on the loop (before ``close`` flushes from another thread)."""
        self._stop_reading()
        tick, self._tick = self._tick, None
        if tick is not None:
            tick.cancel()

    def _stop_reading(self) -> None:
        loop, self._reading = self._reading, None
        if loop is not None and self._signal is not None and not loop.is_closed():
            loop.remove_reader(self._signal.read_fd)

    def _woken(self, signal: ReportSignal) -> None:
        """The producer signalled reports: empty the pipe first, then serve them,
        so that a report arriving meanwhile signals again."""
        signal.drain()
        self._poll()

    def _serve(self) -> None:
        """Serve delivery reports (and errors) on a timer: again in a millisecond
        while any request waits without the pipe, else in a tenth of a second."""
        self._tick = None
        self._poll()
        self._schedule(busy=self._in_flight > 0)

    def _poll(self) -> None:
        try:
            self._producer.poll(0)
        except Exception:  # serving must outlive every error: without it nobody hears back
            log.exception("serving delivery reports failed; carrying on")

    def _schedule(self, busy: bool) -> None:
        loop = asyncio.get_running_loop()
        busy = busy and not (self._reading is loop and self._producer.signalled)
        if loop is not self._loop:  # a new loop (the app started again): the old tick died with its own
            self._loop, self._tick = loop, None
        if self._tick is not None:
            if self._tick_busy or not busy:
                return
            self._tick.cancel()  # an idle tick, too far off for a request that waits
        self._tick_busy = busy
        delay = _BUSY_TICK_S if busy else _IDLE_TICK_S
        self._tick = loop.call_later(delay, self._serve)

    async def publish(self, events: Sequence[IdentifyEvent]) -> None:
        try:
            schema_id = self._schemas.writer_id
            # Aliases are written in the schema's current revision (codec.writer_id).
            alias_id = self._schemas.alias_writer_id if any(e.kind is Kind.ALIAS for e in events) else 0
        except TransientError as exc:
            raise Unavailable(f"the schema registry cannot be reached: {exc}") from exc
        pending = _Pending(len(events), asyncio.get_running_loop())
        produce, topic, report = self._producer.produce, self._topic, pending.report
        self._in_flight += 1
        try:
            try:
                for event in events:
                    record_id = alias_id if event.kind is Kind.ALIAS else schema_id
                    produce(topic, codec.encode(event, record_id), event.partition_key, report)
            except (BufferError, KafkaException) as exc:
                self._metrics.produce_errors.inc()
                raise Unavailable(f"the broker cannot take more identifies now: {exc}") from exc
            self._schedule(busy=True)
            # A timer of our own rather than asyncio.wait_for, which costs two more
            # futures and their callbacks on every request.
            expiry = pending.loop.call_later(self._timeout_s + _SAFETY_MARGIN_S, pending.expire)
            try:
                await pending.future
            except Unavailable:
                self._metrics.produce_errors.inc()
                raise
            finally:
                expiry.cancel()
        finally:
            self._in_flight -= 1
        self._metrics.delivery_seconds.observe(time.perf_counter() - pending.started)

    def ready(self, timeout: float) -> bool:
        if not self._producer.healthy:
            return False
        try:
            metadata = self._producer.list_topics(self._topic, timeout)
        except KafkaException:
            return False
        topic = metadata.topics.get(self._topic)
        return topic is not None and topic.error is None and bool(topic.partitions)

    def close(self, timeout: float = 10.0) -> None:
        """Wait for what is in flight (serving its reports in the calling thread)."""
        remaining = self._producer.flush(timeout)
        if remaining:
            log.warning("closing with %d records not acknowledged", remaining)
        if self._signal is not None:
            self._producer.release_signal()
            self._signal.close()
