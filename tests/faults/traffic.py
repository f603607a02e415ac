"""Traffic for the fault suite, run in background threads while a test breaks things.

* ``EdgeTraffic`` is an SDK-like client of the edge. Every identify carries its own
  ``message_id`` and sets one trait named after it, so the profile's trait names are
  exactly the identifies that were applied. On a timeout, a connection error or a 5xx
  it resends the same body (same message ids) until it is acknowledged; every
  ``lost_response_every``-th call it also resends after a 200, as an SDK does when
  the answer was lost on the way. A 200 makes its identifies *acknowledged*: each
  must be applied exactly once; the others at most once.
* ``CounterTraffic`` publishes Avro records with ``add n 1`` straight to the topic
  (as other services do), each with its own dedupe key: a profile's ``n`` must equal
  the number of records the broker acknowledged for it.

Both stop by themselves after ``max_*`` calls or ``deadline_s`` seconds.
"""

from __future__ import annotations

import collections
import threading
import time
import uuid
from typing import Any

import httpx
from confluent_kafka import KafkaError, Producer

from tests.support.publish import event
from tests.support.stack import Stack
from traitstream.avro import codec
from traitstream.avro.schemas import LOCAL_SCHEMA_ID
from traitstream.events import Op, Operation
from traitstream.kafka_producer import producer_config

RETRYABLE = frozenset({408, 429, 500, 502, 503, 504})


class EdgeTraffic:
    """Posts arrays of identifies to ``POST /api/identify`` from a background thread."""

    def __init__(
        self,
        stack: Stack,
        *,
        users: int = 12,
        per_request: int = 5,
        pause_s: float = 0.05,
        max_requests: int = 2000,
        deadline_s: float = 150.0,
        timeout_s: float = 10.0,
        lost_response_every: int = 7,
    ) -> None:
        prefix = f"edge-{uuid.uuid4().hex[:6]}"
        self.lost_response_every = lost_response_every
        self.stack = stack
        self.users = [f"{prefix}-u{i}" for i in range(users)]
        self.per_request = per_request
        self.pause_s = pause_s
        self.max_requests = max_requests
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + deadline_s
        self.sent: dict[str, set[str]] = collections.defaultdict(set)
        self.acked: dict[str, set[str]] = collections.defaultdict(set)
        self.statuses: collections.Counter[str] = collections.Counter()
        self.unexpected: list[str] = []
        self.requests_acked = 0
        self.resent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edge-traffic", daemon=True)

    def start(self) -> EdgeTraffic:
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop sending new requests; a request being retried gets until ``timeout``."""
        self._stop.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the edge client did not stop"

    @property
    def acked_count(self) -> int:
        return self.requests_acked * self.per_request

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout_s) as client:
            for number in range(self.max_requests):
                if self._stop.is_set() or time.monotonic() > self.deadline:
                    return
                user = self.users[number % len(self.users)]
                keys = [f"k{number}x{i}-{uuid.uuid4().hex[:8]}" for i in range(self.per_request)]
                body = [{"user_id": user, "message_id": k, "traits": {k: 1}} for k in keys]
                self.sent[user].update(keys)
                if self._send_until_acked(client, body):
                    self.acked[user].update(keys)
                    self.requests_acked += 1
                    if self.lost_response_every and number % self.lost_response_every == 0:
                        # As if the 200 had been lost on the way: the SDK sends the call again.
                        self.resent += 1
                        self._send_until_acked(client, body)
                time.sleep(self.pause_s)

    def _send_until_acked(self, client: httpx.Client, body: list[dict[str, Any]]) -> bool:
        delay = 0.1
        # Once told to stop, a call being retried still gets a few seconds: like an
        # SDK flushing its queue at shutdown.
        give_up = self.deadline
        while time.monotonic() < give_up:
            if self._stop.is_set():
                give_up = min(give_up, time.monotonic() + 15)
            try:
                response = client.post(
                    f"{self.stack.url}/api/identify", json=body, headers=self.stack.headers()
                )
            except httpx.HTTPError as exc:
                self.statuses[type(exc).__name__] += 1
            else:
                self.statuses[str(response.status_code)] += 1
                if response.status_code == 200:
                    return True
                if response.status_code not in RETRYABLE:
                    self.unexpected.append(f"{response.status_code} {response.text[:200]}")
                    return False
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        return False


class CounterTraffic:
    """Publishes ``add n 1`` records (Avro, Confluent wire format) straight to the topic."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        workspace: str = "test",
        *,
        users: int = 12,
        per_tick: int = 5,
        pause_s: float = 0.05,
        max_records: int = 20_000,
        deadline_s: float = 150.0,
    ) -> None:
        prefix = f"cnt-{uuid.uuid4().hex[:6]}"
        self.topic = topic
        self.workspace = workspace
        self.users = [f"{prefix}-u{i}" for i in range(users)]
        self.per_tick = per_tick
        self.pause_s = pause_s
        self.max_records = max_records
        self.deadline = time.monotonic() + deadline_s
        self.expected: collections.Counter[str] = collections.Counter()
        self.failures: list[str] = []
        self.produced = 0
        self._producer = Producer(producer_config(bootstrap, 30.0))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="counter-traffic", daemon=True)

    def start(self) -> CounterTraffic:
        self._thread.start()
        return self

    def stop(self, timeout: float = 40.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the counter publisher did not stop"
        assert not self.failures, f"the broker refused counter records: {self.failures[:3]}"

    @property
    def acked_count(self) -> int:
        return sum(self.expected.values())

    def _run(self) -> None:
        try:
            while self.produced < self.max_records:
                if self._stop.is_set() or time.monotonic() > self.deadline:
                    break
                for _ in range(self.per_tick):
                    self.publish_one(self.users[self.produced % len(self.users)])
                self._producer.poll(0)
                time.sleep(self.pause_s)
        finally:
            left = self._producer.flush(30)
            if left:
                self.failures.append(f"{left} records never acknowledged")

    def publish_one(self, user: str) -> None:
        record = event(
            self.workspace, user=user, dedupe_key=f"c-{uuid.uuid4().hex}", ops=[Operation(Op.ADD, "n", 1)]
        )

        def report(error: KafkaError | None, _message: object) -> None:
            if error is None:
                self.expected[user] += 1
            else:
                self.failures.append(error.str())

        self._producer.produce(
            self.topic,
            value=codec.encode(record, LOCAL_SCHEMA_ID),
            key=record.partition_key,
            on_delivery=report,
        )
        self.produced += 1
