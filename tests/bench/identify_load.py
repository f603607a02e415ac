"""Paced Amplitude identifies, one new user each: ``python -m tests.bench.identify_load '<json>'``.

Runs in its own process so that its CPU is not the orchestrator's. Request ``n``
carries the identifies numbered ``n * per_request`` to ``(n + 1) * per_request - 1``;
identify ``i`` is user ``<prefix>-<i>`` with ``insert_id`` (the dedupe key) of the
same text, and ``user_properties`` ``{"$set": {"sent_ms": …}, "$add": {"applied": 1}}``.
Each user is identified once, so a stored profile's ``applied`` counts how often the
workers applied its identify, and its ``created_at`` (the event time: the edge's
receipt, as no ``time`` is sent) and ``updated_at`` (when a worker applied it) give
that identify's end-to-end latency.

Requests start on a fixed schedule (``rate`` identifies per second from
``start_at``); a late request is sent at once. The number of requests is fixed and
each has a timeout, so the run ends by itself. The result is one JSON object on
stdout, with the numbers of the requests that were not acknowledged.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import asdict, dataclass, field

import orjson

from tests.bench import stats
from tests.bench.load import Connection, check_loopback

PATH = "/2/httpapi"


@dataclass(frozen=True, slots=True)
class SenderConfig:
    url: str
    api_key: str
    prefix: str
    """User ids and dedupe keys are ``<prefix>-<number>``."""
    rate: float
    """Identifies per second."""
    per_request: int
    requests: int
    start_at: float
    """Epoch seconds of the first request's slot."""
    clients: int = 8
    timeout_s: float = 10.0


@dataclass(slots=True)
class SenderResult:
    requests: int = 0
    identifies_sent: int = 0
    identifies_acked: int = 0
    unacknowledged: list[int] = field(default_factory=list)
    """Numbers of the requests that got no 200 (timeouts, errors, other statuses)."""
    statuses: dict[str, int] = field(default_factory=dict)
    first_sent_at: float = 0.0
    last_answer_at: float = 0.0
    behind_schedule_max_s: float = 0.0
    """How late the latest request left against its slot (the sender's own lag)."""
    http_ms: dict[str, float | None] = field(default_factory=dict)


def user_key(prefix: str, number: int) -> str:
    """The user id, and dedupe key, of identify ``number``."""
    return f"{prefix}-{number:09d}"


def request_body(config: SenderConfig, request: int, sent_ms: int) -> bytes:
    """An HTTP API v2 body with request ``request``'s ``$identify`` events."""
    first = request * config.per_request
    events = []
    for number in range(first, first + config.per_request):
        key = user_key(config.prefix, number)
        events.append(
            {
                "event_type": "$identify",
                "user_id": key,
                "insert_id": key,
                "user_properties": {"$set": {"sent_ms": sent_ms}, "$add": {"applied": 1}},
            }
        )
    return orjson.dumps({"api_key": config.api_key, "events": events})


class Sender:
    """Clients taking request numbers in turn from one schedule."""

    def __init__(self, config: SenderConfig) -> None:
        self.config = config
        host, port = check_loopback(config.url)
        self._head = (
            f"POST {PATH} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()
        self._host, self._port = host, port
        self._interval = config.per_request / config.rate
        self._next = 0
        self._latencies: list[float] = []
        self.result = SenderResult()

    async def _post(self, conn: Connection, body: bytes) -> int:
        """The status of one request; 0 on a timeout or a broken connection."""
        try:
            return await asyncio.wait_for(conn.post(body), self.config.timeout_s)
        except TimeoutError:
            await conn.close()
            return 0

    async def _client(self) -> None:
        conn = Connection(self._host, self._port, self._head)
        config, result = self.config, self.result
        try:
            while self._next < config.requests:
                number = self._next
                self._next += 1
                slot = config.start_at + number * self._interval
                wait = slot - time.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                now = time.time()
                result.behind_schedule_max_s = max(result.behind_schedule_max_s, now - slot)
                if not result.first_sent_at:
                    result.first_sent_at = now
                body = request_body(config, number, int(now * 1000))
                began = time.perf_counter()
                status = await self._post(conn, body)
                self._latencies.append((time.perf_counter() - began) * 1000)
                result.last_answer_at = time.time()
                self._count(number, status)
        finally:
            await conn.close()

    def _count(self, number: int, status: int) -> None:
        result = self.result
        result.requests += 1
        result.identifies_sent += self.config.per_request
        result.statuses[str(status)] = result.statuses.get(str(status), 0) + 1
        if status == 200:
            result.identifies_acked += self.config.per_request
        else:
            result.unacknowledged.append(number)

    async def run(self) -> SenderResult:
        await asyncio.gather(*(self._client() for _ in range(self.config.clients)))
        self.result.unacknowledged.sort()
        self.result.http_ms = {
            "p50": stats.percentile(self._latencies, 0.50),
            "p99": stats.percentile(self._latencies, 0.99),
            "max": max(self._latencies) if self._latencies else None,
        }
        return self.result


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.bench.identify_load '<json config>'", file=sys.stderr)
        return 2
    config = SenderConfig(**orjson.loads(argv[0]))
    result = asyncio.run(Sender(config).run())
    sys.stdout.write(orjson.dumps(asdict(result)).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
