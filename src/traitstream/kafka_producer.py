"""The Kafka producer every part of traitstream writes with.

``producer_config`` is the one configuration (idempotent, ``acks=all``), and
``RenewableProducer`` keeps such a producer usable across broker restarts: the
edge's publisher, the workers' dead-letter writer and replay all produce through it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Producer

log = logging.getLogger(__name__)

DeliveryCallback = Callable[[KafkaError | None, Any], None]
Headers = list[tuple[str, str | bytes | None]]


class ReportHook(Protocol):
    """Where a producer says it has delivery reports to serve (the edge's pipe)."""

    def attach(self, producer: Producer, client_id: str) -> bool:
        """Have ``producer`` signal here; False when it cannot."""
        ...

    def detach(self, producer: Producer, client_id: str) -> None:
        """Stop ``producer`` signalling here."""
        ...


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
        signal: ReportHook | None = None,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        """``extra_config``: librdkafka settings beside ``producer_config``'s."""
        self._config = producer_config(bootstrap, timeout_s, linger_ms) | (extra_config or {})
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
