"""The pipe librdkafka writes to when a producer has delivery reports, with a real
librdkafka producer and no broker: a record that cannot be delivered times out,
and its failed report is what wakes the reader."""

from __future__ import annotations

import asyncio
import select
from typing import Any
from unittest.mock import patch

import pytest
from confluent_kafka import KafkaError, Producer

from traitstream.avro.schemas import LocalSchemas
from traitstream.edge import report_signal
from traitstream.edge.publisher import KafkaPublisher
from traitstream.edge.report_signal import ReportSignal
from traitstream.errors import Unavailable
from traitstream.events import IdentifyEvent, Op, Operation
from traitstream.kafka_producer import CLIENT_ID, RenewableProducer, producer_config
from traitstream.metrics import EdgeMetrics

# librdkafka fails timed-out records when it scans for them, about once a second.
WAIT_S = 5.0


def brokerless(client_id: str = CLIENT_ID) -> Producer:
    """A producer with nowhere to send: every record fails after 10 ms."""
    return Producer({"client.id": client_id, "message.timeout.ms": 10, "log_level": 0})


def readable(fd: int, timeout: float) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


@pytest.fixture
def signal() -> Any:
    made = ReportSignal.create()
    assert made is not None, "confluent-kafka's librdkafka was not found in this process"
    yield made
    made.close()


def test_a_report_writes_to_the_pipe_once_until_served(signal: ReportSignal) -> None:
    producer = brokerless()
    assert signal.attach(producer, CLIENT_ID)
    reports: list[KafkaError | None] = []
    for _ in range(3):
        producer.produce("identify", b"v", on_delivery=lambda error, _m: reports.append(error))
    assert not readable(signal.read_fd, 0)  # nothing to serve yet

    assert readable(signal.read_fd, WAIT_S)
    signal.drain()
    assert not readable(signal.read_fd, 0)  # one byte, however many reports
    producer.poll(0)
    assert [error.code() for error in reports if error is not None] == [KafkaError._MSG_TIMED_OUT] * 3

    # Served, so the next report signals again.
    producer.produce("identify", b"v", on_delivery=lambda error, _m: reports.append(error))
    assert readable(signal.read_fd, WAIT_S)
    signal.drain()
    producer.poll(0)
    assert len(reports) == 4
    signal.detach(producer, CLIENT_ID)


def test_a_detached_producer_no_longer_writes(signal: ReportSignal) -> None:
    producer = brokerless()
    assert signal.attach(producer, CLIENT_ID)
    signal.detach(producer, CLIENT_ID)
    reports: list[KafkaError | None] = []
    producer.produce("identify", b"v", on_delivery=lambda error, _m: reports.append(error))
    assert producer.flush(WAIT_S) == 0 and len(reports) == 1  # the report came, unsignalled
    assert not readable(signal.read_fd, 0.2)


def test_only_a_producer_recognised_by_name_is_attached(signal: ReportSignal) -> None:
    # Another client id than the one the caller vouches for: the handle is not trusted.
    assert not signal.attach(brokerless("someone-else"), CLIENT_ID)
    assert not signal.attach(object(), CLIENT_ID)  # type: ignore[arg-type]


def test_a_replacement_producer_signals_through_the_same_pipe(signal: ReportSignal) -> None:
    producer = RenewableProducer("", 0.01, signal=signal)
    first = producer._current
    assert producer.signalled
    first.fatal.set()  # as the error callback does for a fatal error
    producer.renew_if_fatal()
    assert producer.renewals == 1 and producer._current is not first and producer.signalled
    reports: list[KafkaError | None] = []
    producer.produce("identify", b"v", None, lambda error, _m: reports.append(error))
    assert readable(signal.read_fd, WAIT_S)
    signal.drain()
    producer.poll(0)
    assert len(reports) == 1
    assert producer.flush(WAIT_S) == 0
    producer.release_signal()
    assert not producer.signalled
    producer._current.fatal.set()  # a renewal after the release attaches nothing to the pipe
    producer.renew_if_fatal()
    assert producer.renewals == 2 and not producer.signalled


def test_the_publisher_serves_reports_from_the_pipe_alone() -> None:
    publisher = KafkaPublisher("", "identify", LocalSchemas(), EdgeMetrics(), timeout_s=0.01)
    event = IdentifyEvent("ws", "u1", "thrivestack", 1, 1, "r", 0, operations=(Operation(Op.SET, "a", 1),))

    async def run() -> None:
        publisher.start_serving()
        try:
            assert publisher._producer.signalled
            waiting = asyncio.create_task(publisher.publish([event]))
            await asyncio.sleep(0.05)
            assert not publisher._tick_busy  # the loop does not poll every millisecond
            with pytest.raises(Unavailable, match="did not take the identify"):
                await asyncio.wait_for(waiting, WAIT_S)
        finally:
            publisher.stop_serving()

    # The safety-net timer is pushed past the wait: only the pipe can serve the report.
    with patch("traitstream.edge.publisher._IDLE_TICK_S", 60.0):
        asyncio.run(run())
    publisher.close(1.0)
    assert not publisher._producer.signalled


def test_a_closed_publisher_started_again_polls_on_the_timer() -> None:
    publisher = KafkaPublisher("", "identify", LocalSchemas(), EdgeMetrics(), timeout_s=0.01)
    publisher.close(1.0)

    async def run() -> None:
        publisher.start_serving()  # the app started again: the closed pipe is not read
        try:
            assert publisher._reading is None
        finally:
            publisher.stop_serving()

    asyncio.run(run())


def test_only_known_confluent_kafka_majors_are_trusted() -> None:
    report_signal._librdkafka.cache_clear()
    try:
        with patch("traitstream.edge.report_signal.confluent_kafka.version", lambda: ("3.0.0", 0)):
            assert ReportSignal.create() is None
    finally:
        report_signal._librdkafka.cache_clear()
    assert ReportSignal.create() is not None


def test_the_producer_config_names_the_client() -> None:
    assert producer_config("127.0.0.1:9092", 1.0)["client.id"] == CLIENT_ID
