"""Producing events to Kafka and waiting for the broker's acknowledgement.

``KafkaPublisher.publish`` returns only when the broker acknowledged every record
of the call (idempotent producer, ``acks=all``) and raises ``Unavailable`` when it
did not within the timeout: the edge then answers 503, never a success. The event
loop itself serves the producer's delivery reports as soon as librdkafka signals
them through a pipe (``report_signal``): no thread, and no hop between threads per
request. Where that signal cannot be set up, the loop polls every millisecond while
any record is in flight.

``RenewableProducer`` (used here, by the dead-letter writer and by replay) keeps an
idempotent producer usable across broker restarts: see its docstring.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Producer

from traitstream.avro import codec
from traitstream.avro.schemas import SchemaSource
from traitstream.edge.report_signal import ReportSignal
from traitstream.errors import TransientError, Unavailable
from traitstream.events import IdentifyEvent
from traitstream.metrics import EdgeMetrics

log = logging.getLogger(__name__)

_BUSY_TICK_S = 0.001
"""Without the pipe: how soon reports are served again while a request waits."""
_IDLE_TICK_S = 0.1
"""Otherwise (a safety net under the pipe too)."""
_SAFETY_MARGIN_S = 5.0
"""How long past librdkafka's own delivery timeout a publish waits for a report."""

DeliveryCallback = Callable[[KafkaError | None, Any], None]
Headers = list[tuple[str, str | bytes | None]]


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


DEFAULT_LINGER_MS = 1.0
CLIENT_ID = "traitstream"


def producer_config(bootstrap: str, timeout_s: float, linger_ms: float = DEFAULT_LINGER_MS) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "client.id": CLIENT_ID,
        "enable.idempotence": True,
        "acks": "all",
        # A single identify waits for its acknowledgement, so with a fixed number of
        # clients the request rate is bounded by latency: linger little. Records
        # that arrive while a request is in flight are batched anyway.
        "linger.ms": linger_ms,
        "compression.type": "lz4",
        "message.timeout.ms": int(timeout_s * 1000),
        "queue.buffering.max.messages": 500_000,
        "queue.buffering.max.kbytes": 512 * 1024,
        "socket.keepalive.enable": True,
        "reconnect.backoff.max.ms": 2000,
    }


class _Generation:
    """One librdkafka producer and whether it has turned fatal."""

    __slots__ = ("fatal", "producer")

    def __init__(self, config: dict[str, Any]) -> None:
        self.fatal = threading.Event()
        # The callback holds the event, not this generation: with no reference
        # cycle, a replaced producer is destroyed as soon as its last user lets go
        # of it, not by the cycle collector on whatever thread it happens to run.
        self.producer = Producer(config | {"error_cb": partial(_heard, self.fatal)})

    def raised(self, exc: KafkaException) -> None:
        """librdkafka raises fatal errors from poll, flush and produce."""
        error = exc.args[0] if exc.args else None
        if isinstance(error, KafkaError):
            _heard(self.fatal, error)


def _heard(fatal: threading.Event, error: KafkaError) -> None:
    """A producer's error: a fatal one sets ``fatal``, the rest are logged."""
    if error.fatal() or error.code() == KafkaError._FATAL:
        if not fatal.is_set():
            log.error("the Kafka producer hit a fatal error and will be replaced: %s", error.str())
        fatal.set()
    elif error.code() == KafkaError._ALL_BROKERS_DOWN:
        log.warning("kafka producer: %s", error.str())
    else:
        # Single connection failures and the like: librdkafka retries them itself.
        log.debug("kafka producer: %s", error.str())


class RenewableProducer:
    """An idempotent producer that replaces itself after a fatal error.

    An idempotent producer turns fatal when the broker no longer knows its producer
    id (a broker that restarted without its state, a producer id that expired): from
    then on librdkafka refuses every record, forever. This wrapper notices (the
    ``error_cb``), carries on at once with a new producer and a new producer id, and
    purges what the old one still held on a thread of its own (an event loop that
    notices does not wait for it), so each of those records gets a failed delivery
    report: its fate is unknown, callers report it as not acknowledged and clients
    retry with the same dedupe key. ``flush`` waits for that purge too.
    Acknowledged records are never affected.

    ``produce`` may be called from one thread while ``poll`` runs in another.
    ``produce`` raises ``BufferError`` or ``KafkaException`` like librdkafka's.
    Delivery callbacks run on the thread that polls or flushes, or on the thread
    that retires a replaced producer, so they must be safe to call from any thread.
    """

    def __init__(
        self,
        bootstrap: str,
        timeout_s: float,
        linger_ms: float = DEFAULT_LINGER_MS,
        signal: ReportSignal | None = None,
    ) -> None:
        self._config = producer_config(bootstrap, timeout_s, linger_ms)
        self._lock = threading.Lock()
        self._signal = signal
        self.signalled = False
        """Whether the current producer writes to ``signal`` when it has reports."""
        self._current = self._generation()
        self.renewals = 0
        self._retiring: list[threading.Thread] = []
        """Threads failing the records of replaced producers (finished ones are dropped)."""

    def _generation(self) -> _Generation:
        made = _Generation(self._config)
        if self._signal is not None:
            self.signalled = self._signal.attach(made.producer, CLIENT_ID)
        return made

    def release_signal(self) -> None:
        """Stop the current producer writing to the signal, and attach no later one
        (before the pipe closes). Under the lock, so that a renewal cannot attach
        a new producer to a pipe about to close."""
        with self._lock:
            self._detach()
            self._signal = None

    def _detach(self) -> None:
        """With the lock held: the current producer stops writing to the signal."""
        if self._signal is not None and self.signalled:
            self._signal.detach(self._current.producer, CLIENT_ID)
        self.signalled = False

    @property
    def healthy(self) -> bool:
        return not self._current.fatal.is_set()

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        on_delivery: DeliveryCallback,
        headers: Headers | None = None,
    ) -> None:
        self.renew_if_fatal()
        current = self._current
        try:
            current.producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
        except KafkaException as exc:
            current.raised(exc)
            raise

    def poll(self, timeout: float) -> None:
        """Serve delivery reports (and errors) for up to ``timeout`` seconds."""
        current = self._current
        try:
            current.producer.poll(timeout)
        except KafkaException as exc:
            current.raised(exc)
            log.warning("kafka producer poll: %s", exc)
        self.renew_if_fatal()

    def flush(self, timeout: float) -> int:
        """Wait, at most ``timeout`` seconds in all, for every record to be
        acknowledged or failed, a replaced producer's too. Returns the number the
        current producer has left (a replaced producer's records are all failed)."""
        deadline = time.monotonic() + timeout
        current = self._current
        try:
            left = int(current.producer.flush(timeout))
        except KafkaException as exc:
            current.raised(exc)
            log.warning("kafka producer flush: %s", exc)
            left = len(current.producer)
        self.renew_if_fatal()
        with self._lock:
            retiring = list(self._retiring)
        for thread in retiring:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._retiring = [t for t in self._retiring if t.is_alive()]
        return left

    def list_topics(self, topic: str, timeout: float) -> Any:
        """Topic metadata; raises ``KafkaException`` when the broker cannot be asked."""
        return self._current.producer.list_topics(topic, timeout=timeout)

    def renew_if_fatal(self) -> None:
        if not self._current.fatal.is_set():
            return  # the hot path: once per record, so no lock unless there is work
        with self._lock:
            old = self._current
            if not old.fatal.is_set():
                return
            self._detach()  # the old producer, still current here
            self._current = self._generation()
            self.renewals += 1
            # The caller may be the edge's event loop: retiring the old producer
            # waits for its reports, so it happens on a thread of its own.
            retiring = threading.Thread(target=_retire, args=(old,), name="retire-producer", daemon=True)
            retiring.start()  # before flush can see it: an unstarted thread cannot be joined
            self._retiring = [t for t in self._retiring if t.is_alive()] + [retiring]
        log.info("replaced the fatal Kafka producer with a new one", extra={"renewals": self.renewals})


def _retire(old: _Generation) -> None:
    """Fail what a fatal producer still holds: each record's callback hears
    _PURGE_QUEUE or _PURGE_INFLIGHT (on this thread; ``_Pending`` hands it to its
    loop), so nobody waits for a report that never comes. The producer is usually
    destroyed on this thread too, when it lets go of ``old``."""
    try:
        old.producer.purge(in_queue=True, in_flight=True)
        old.producer.flush(1.0)
    except Exception as exc:  # librdkafka's, or a callback's (its loop already closed)
        log.warning("purging the replaced producer: %s", exc)


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
        except TransientError as exc:
            raise Unavailable(f"the schema registry cannot be reached: {exc}") from exc
        pending = _Pending(len(events), asyncio.get_running_loop())
        produce, topic, report = self._producer.produce, self._topic, pending.report
        self._in_flight += 1
        try:
            try:
                for event in events:
                    produce(topic, codec.encode(event, schema_id), event.partition_key, report)
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
