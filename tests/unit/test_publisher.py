"""KafkaPublisher's delivery reports, served by an event-loop timer, and
RenewableProducer's replacement of a fatal producer, with fakes standing in for
librdkafka (no broker: this is the pure scheduling logic)."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import Any, ClassVar
from unittest.mock import patch

import pytest
from confluent_kafka import KafkaError

from traitstream.avro.schemas import LocalSchemas
from traitstream.edge.publisher import KafkaPublisher
from traitstream.errors import Unavailable
from traitstream.events import IdentifyEvent, Op, Operation
from traitstream.kafka_producer import RenewableProducer
from traitstream.metrics import EdgeMetrics


class FakeProducer:
    """Acknowledges every record at the next poll, or refuses when ``full``."""

    def __init__(self) -> None:
        self.waiting: list[Any] = []
        self.produced = 0
        self.full = False
        self.healthy = True

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery: Any) -> None:
        if self.full:
            raise BufferError("Local: Queue full")
        self.produced += 1
        self.waiting.append(on_delivery)

    def poll(self, timeout: float) -> None:
        waiting, self.waiting = self.waiting, []
        for report in waiting:
            report(None, None)

    def flush(self, timeout: float) -> int:
        self.poll(0)
        return 0


def publisher() -> tuple[KafkaPublisher, FakeProducer]:
    """A publisher serving ``FakeProducer`` on the timer (the pipe needs librdkafka's
    own producer: tests/unit/test_report_signal.py)."""
    fake = FakeProducer()
    with (
        patch("traitstream.edge.publisher.RenewableProducer", lambda *args: fake),
        patch("traitstream.edge.publisher.ReportSignal.create", lambda: None),
    ):
        pub = KafkaPublisher("unused:9092", "identify", LocalSchemas(), EdgeMetrics(), timeout_s=1.0)
    return pub, fake


def events(count: int) -> list[IdentifyEvent]:
    return [
        IdentifyEvent("ws", f"u{i}", "thrivestack", 1, 1, "r", i, operations=(Operation(Op.SET, "a", i),))
        for i in range(count)
    ]


def test_publish_returns_once_every_record_is_acknowledged() -> None:
    pub, fake = publisher()

    async def run() -> None:
        await asyncio.gather(pub.publish(events(3)), pub.publish(events(500)))

    asyncio.run(run())
    assert fake.produced == 503 and not fake.waiting


def test_a_second_event_loop_is_served_too() -> None:
    # The app may start again in the same process (a test client, a lifespan run
    # twice): the timer of the first loop died with it.
    pub, fake = publisher()
    for _ in range(3):
        asyncio.run(asyncio.wait_for(pub.publish(events(2)), 5))
    assert fake.produced == 6


def test_a_refused_record_is_unavailable_not_success() -> None:
    pub, fake = publisher()
    fake.full = True
    with pytest.raises(Unavailable, match="cannot take more identifies"):
        asyncio.run(pub.publish(events(1)))


def test_a_report_that_never_comes_is_unavailable_after_the_safety_net() -> None:
    pub, fake = publisher()
    fake.poll = lambda timeout: None  # type: ignore[method-assign]  # reports are lost
    with (
        patch.object(pub, "_timeout_s", 0.05),  # librdkafka's own timeout would come first
        patch("traitstream.edge.publisher._SAFETY_MARGIN_S", 0.05),
        pytest.raises(Unavailable, match="did not acknowledge the identify in time"),
    ):
        asyncio.run(asyncio.wait_for(pub.publish(events(2)), 5))
    assert pub._in_flight == 0
    assert pub._metrics.produce_errors._value.get() == 1


def test_a_report_after_the_safety_net_is_ignored() -> None:
    pub, fake = publisher()
    fake.poll = lambda timeout: None  # type: ignore[method-assign]

    async def run() -> None:
        with (
            patch.object(pub, "_timeout_s", 0.0),
            patch("traitstream.edge.publisher._SAFETY_MARGIN_S", 0.01),
            pytest.raises(Unavailable),
        ):
            await asyncio.wait_for(pub.publish(events(1)), 5)
        for report in fake.waiting:  # the broker answers at last: nothing raises
            report(None, None)
        await asyncio.sleep(0)

    asyncio.run(run())
    assert pub._metrics.produce_errors._value.get() == 1


def test_an_acknowledged_publish_leaves_no_timer_behind() -> None:
    pub, _fake = publisher()

    async def run() -> int:
        await pub.publish(events(3))
        loop = asyncio.get_running_loop()
        return sum(1 for handle in loop._scheduled if not handle.cancelled())  # type: ignore[attr-defined]

    # Only the serving tick may remain; the safety net's timer is gone.
    assert asyncio.run(run()) <= 1
    assert pub._metrics.produce_errors._value.get() == 0


def test_serving_starts_and_stops_with_the_app() -> None:
    pub, fake = publisher()

    async def run() -> None:
        pub.start_serving()
        fake.waiting.append(lambda error, message: None)  # a report due before any publish
        await asyncio.sleep(0.25)
        assert not fake.waiting  # the idle tick polled
        pub.stop_serving()
        fake.waiting.append(lambda error, message: None)
        await asyncio.sleep(0.25)
        assert fake.waiting  # nobody polls once stopped

    asyncio.run(run())


# --- RenewableProducer: replacing a producer that turned fatal ---------------------------


class FatalProneProducer:
    """Stands in for librdkafka's Producer: keeps its records until flushed, when
    it fails them as purged, and its flush waits until ``release`` is set, as a real
    one waits for the reports it serves."""

    made: ClassVar[list[FatalProneProducer]] = []

    def __init__(self, config: dict[str, Any]) -> None:
        self.error_cb = config["error_cb"]
        self.held: list[Any] = []
        self.purged = False
        self.release = threading.Event()
        FatalProneProducer.made.append(self)

    def produce(self, topic: str, value: bytes, key: bytes, headers: Any, on_delivery: Any) -> None:
        self.held.append(on_delivery)

    def poll(self, timeout: float) -> int:
        return 0

    def purge(self, in_queue: bool, in_flight: bool) -> None:
        self.purged = True

    def flush(self, timeout: float) -> int:
        self.release.wait(timeout)
        held, self.held = self.held, []
        for report in held:
            report(KafkaError(KafkaError._PURGE_INFLIGHT), None)
        return len(self.held)

    def __len__(self) -> int:
        return len(self.held)

    def turn_fatal(self) -> None:
        self.error_cb(KafkaError(KafkaError._FATAL, "producer id unknown", fatal=True))


def test_a_fatal_producer_is_replaced_without_stalling_the_caller() -> None:
    FatalProneProducer.made.clear()
    reports: list[int] = []
    with patch("traitstream.kafka_producer.Producer", FatalProneProducer):
        producer = RenewableProducer("unused:9092", 1.0)
        for n in (1, 2):  # two replacements, the first not yet retired
            producer.produce("identify", b"v", b"k", lambda error, _m, n=n: reports.append(n))
            FatalProneProducer.made[-1].turn_fatal()
            assert not producer.healthy
            started = time.monotonic()
            producer.poll(0)  # the edge's event loop calls this every millisecond
            assert time.monotonic() - started < 0.5  # the old producer's flush waits elsewhere
            assert producer.healthy and producer.renewals == n
        first, second, current = FatalProneProducer.made
        assert reports == []

        # flush waits for the replaced producers as well: their records are failed,
        # each with a report, before it returns.
        current.release.set()
        threading.Timer(0.2, first.release.set).start()
        threading.Timer(0.3, second.release.set).start()
        assert producer.flush(5) == 0
        assert sorted(reports) == [1, 2]
        assert first.purged and second.purged and not current.purged


def test_reports_from_a_retiring_thread_and_the_loop_together_lose_no_count() -> None:
    """A publish whose producer is replaced midway hears some reports from the thread
    that retires the old producer while the loop serves the new one's: every report
    must count, or the request waits out the safety net and answers 503."""
    from traitstream.edge.publisher import _Pending

    per_side = 20_000
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: the race, if any, shows
    try:

        async def both_sides() -> None:
            pending = _Pending(2 * per_side, asyncio.get_running_loop())
            retiring = threading.Thread(target=lambda: [pending.report(None, None) for _ in range(per_side)])
            retiring.start()
            for index in range(per_side):
                pending.report(None, None)
                if index % 500 == 0:
                    await asyncio.sleep(0)  # let handed-over reports run, as serving would
            await asyncio.to_thread(retiring.join)
            await asyncio.wait_for(pending.future, 5)

        asyncio.run(both_sides())
    finally:
        sys.setswitchinterval(switch)
