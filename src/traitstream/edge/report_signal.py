"""A pipe that wakes the event loop when a producer has delivery reports to serve.

librdkafka can write a byte to a file descriptor whenever its report queue (the
one ``poll`` serves) gets work after being served (``rd_kafka_queue_io_event_enable``);
one byte per quiet period, however many reports arrive. With it the event loop
reads a pipe instead of polling the producer every millisecond while a request
waits: no wake-ups for nothing, and no wait of up to a tick between the broker's
acknowledgement and the answer. confluent-kafka does not expose that call, so it
is made through ctypes on the librdkafka the process already loaded, with the
producer's handle read from its Python object (``Handle`` in confluent-kafka's C
source: the object header, then ``rd_kafka_t *rk``). That layout is trusted only
for the confluent-kafka major versions known to have it (``KNOWN_MAJORS``):
reading another layout could crash the process rather than fail. The name
librdkafka gives the handle is checked too, against the client id the producer
was made with. Where anything does not match (another major version, no
librdkafka found, not Linux, another name), ``attach`` says no and the caller
polls on a timer as before.
"""

from __future__ import annotations

import ctypes
import logging
import os
from functools import lru_cache
from typing import Any

import confluent_kafka
from confluent_kafka import Producer

log = logging.getLogger(__name__)

_PAYLOAD = b"r"
KNOWN_MAJORS = frozenset({"1", "2"})
"""confluent-kafka majors whose ``Handle`` starts with ``rd_kafka_t *rk`` (since 0.9)."""


@lru_cache(maxsize=1)
def _librdkafka() -> Any | None:
    """The librdkafka this process loaded for confluent-kafka, or None."""
    major = confluent_kafka.version()[0].split(".")[0]
    if major not in KNOWN_MAJORS:
        log.info("delivery reports will be polled on a timer: confluent-kafka %s is not known", major)
        return None
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = {line.split()[-1] for line in maps if "librdkafka" in line and "/" in line}
    except OSError:
        return None
    if len(paths) != 1:  # none, or two copies: which one holds the producer is unknowable
        return None
    try:
        lib = ctypes.CDLL(paths.pop())  # the copy already loaded, not a second one
        lib.rd_kafka_name.argtypes = [ctypes.c_void_p]
        lib.rd_kafka_name.restype = ctypes.c_char_p
        lib.rd_kafka_queue_get_main.argtypes = [ctypes.c_void_p]
        lib.rd_kafka_queue_get_main.restype = ctypes.c_void_p
        enable = lib.rd_kafka_queue_io_event_enable
        enable.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
        enable.restype = None
        lib.rd_kafka_queue_destroy.argtypes = [ctypes.c_void_p]
        lib.rd_kafka_queue_destroy.restype = None
    except (OSError, AttributeError) as exc:  # not loadable, or a symbol missing
        log.info("delivery reports will be polled on a timer: %s", exc)
        return None
    return lib


def _handle(lib: Any, producer: Producer, client_id: str) -> int | None:
    """The producer's ``rd_kafka_t *``, once librdkafka confirms it by name."""
    if not isinstance(producer, Producer):
        return None
    handle = ctypes.c_void_p.from_address(id(producer) + object.__basicsize__).value
    if not handle:
        return None
    name = lib.rd_kafka_name(handle) or b""
    # librdkafka names a handle "<client.id>#producer-<n>".
    return handle if name.decode(errors="replace").startswith(f"{client_id}#producer-") else None


class ReportSignal:
    """One non-blocking pipe; any number of producers write to it, one loop reads it."""

    def __init__(self) -> None:
        # Non-blocking on both ends: librdkafka writes while holding its queue's lock,
        # and must never wait on a full pipe.
        self.read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.closed = False

    @classmethod
    def create(cls) -> ReportSignal | None:
        return cls() if _librdkafka() is not None else None

    def attach(self, producer: Producer, client_id: str) -> bool:
        """Have ``producer`` write here when it has reports; False when it cannot."""
        return self._point(producer, client_id, self._write_fd)

    def detach(self, producer: Producer, client_id: str) -> None:
        """Stop ``producer`` writing here (before the pipe closes, or the producer retires)."""
        self._point(producer, client_id, -1)

    def _point(self, producer: Producer, client_id: str, fd: int) -> bool:
        lib = _librdkafka()
        if lib is None or self.closed:
            return False
        handle = _handle(lib, producer, client_id)
        if handle is None:
            log.info("delivery reports will be polled on a timer: the producer's handle was not recognised")
            return False
        queue = lib.rd_kafka_queue_get_main(handle)
        if not queue:
            return False
        try:
            lib.rd_kafka_queue_io_event_enable(queue, fd, _PAYLOAD, len(_PAYLOAD))
        finally:
            lib.rd_kafka_queue_destroy(queue)  # the signal stays with the queue itself
        return True

    def drain(self) -> None:
        """Empty the pipe (before serving the reports, so that none is missed)."""
        try:
            while os.read(self.read_fd, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        """Close the pipe; every producer must have been detached first."""
        if not self.closed:
            self.closed = True
            os.close(self.read_fd)
            os.close(self._write_fd)
