"""The load generator: ``python -m tests.bench.load '<json config>'``.

Runs in its own process, so that its CPU is not the edge's. Each client keeps one
HTTP/1.1 keep-alive connection and sends pre-built bodies: a minimal client, so
that the generator costs as little as possible of a small machine. ``closed``
clients send back to back; ``paced`` clients share a schedule of start times that
makes the requested rate. A bar on stderr shows progress; the result is one JSON
object on stdout. Only loopback addresses are accepted as targets.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from tests.bench import stats, workload

_BAR_WIDTH = 28
_LATENCY_SAMPLES = 200_000


@dataclass(frozen=True, slots=True)
class LoadConfig:
    url: str
    api_key: str
    label: str
    clients: int
    batch: int
    duration_s: float
    mode: str = "closed"
    """closed: back to back; paced: ``rate`` identifies per second in all."""
    rate: float = 0.0
    total: int = 0
    """Stop after this many identifies were sent (0: run for ``duration_s``)."""
    population: int = 100_000
    seed: int = 1
    bodies: int = 64
    path: str = "/api/identify"


@dataclass(slots=True)
class LoadResult:
    label: str
    started_at: float = 0.0
    """Epoch seconds when the first request was sent."""
    finished_at: float = 0.0
    """Epoch seconds when the last answer arrived."""
    requests: int = 0
    identifies_acked: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    latency_ms: dict[str, float | None] = field(default_factory=dict)
    cpu_s: float = 0.0

    @property
    def seconds(self) -> float:
        return max(0.0, self.finished_at - self.started_at)


def check_loopback(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host != "localhost":
        try:
            if not ipaddress.ip_address(host).is_loopback:
                raise ValueError
        except ValueError:
            raise ValueError(f"the load generator only targets loopback addresses, not {host!r}") from None
    if parts.scheme != "http":
        raise ValueError(f"only http:// is supported, not {parts.scheme!r}")
    return host, parts.port or 80


class Connection:
    """One keep-alive HTTP/1.1 connection; ``post`` returns the status code."""

    def __init__(self, host: str, port: int, head: bytes) -> None:
        self._host, self._port, self._head = host, port, head
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        return self._reader, self._writer

    async def post(self, body: bytes) -> int:
        try:
            reader, writer = await self._open()
            writer.write(self._head + str(len(body)).encode() + b"\r\n\r\n" + body)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            close = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            if length:
                await reader.readexactly(length)
            if close:
                await self.close()
            return status
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            await self.close()
            return 0

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await self._writer.wait_closed()
        self._reader = self._writer = None


class Progress:
    """A one-line bar on stderr (a line per quarter when stderr is not a terminal)."""

    def __init__(self, label: str, config: LoadConfig) -> None:
        self._label = label
        self._config = config
        self._tty = sys.stderr.isatty()
        self._shown_quarter = -1
        self._started = time.monotonic()

    def show(self, sent: int, acked: int, final: bool = False) -> None:
        elapsed = time.monotonic() - self._started
        if self._config.total:
            done = min(1.0, sent / self._config.total)
        else:
            done = min(1.0, elapsed / self._config.duration_s) if self._config.duration_s else 1.0
        if final:
            done = 1.0
        speed = acked / elapsed if elapsed > 0 else 0.0
        filled = int(done * _BAR_WIDTH)
        text = (
            f"  {self._label:<10} [{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {done * 100:3.0f}%"
            f"  {acked:>9,} identifies  {speed:>9,.0f}/s"
        )
        if self._tty:
            sys.stderr.write("\r" + text + ("\n" if final else ""))
            sys.stderr.flush()
        elif final or int(done * 4) > self._shown_quarter:
            self._shown_quarter = int(done * 4)
            sys.stderr.write(text + "\n")
            sys.stderr.flush()


class _Run:
    def __init__(self, config: LoadConfig) -> None:
        self.config = config
        self.host, self.port = check_loopback(config.url)
        self.head = (
            f"POST {config.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {config.api_key}\r\nContent-Type: application/json\r\n"
            "Content-Length: "
        ).encode()
        self.bodies = workload.bodies(config.bodies, config.batch, config.population, config.seed)
        self.result = LoadResult(config.label)
        self.latencies: list[float] = []
        self.sent = 0
        self.next_slot = 0
        self.first_send = 0.0
        self.last_answer = 0.0

    def more(self, now: float, deadline: float) -> bool:
        if self.config.total:
            return self.sent < self.config.total
        return now < deadline

    async def client(self, index: int, start: float, deadline: float) -> None:
        conn = Connection(self.host, self.port, self.head)
        config, result = self.config, self.result
        interval = config.batch / config.rate if config.mode == "paced" and config.rate > 0 else 0.0
        body_index = index
        try:
            while self.more(time.perf_counter(), deadline):
                if interval:
                    slot = start + self.next_slot * interval
                    self.next_slot += 1
                    wait = slot - time.perf_counter()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    if not self.more(time.perf_counter(), deadline):
                        break
                body = self.bodies[body_index % len(self.bodies)]
                body_index += config.clients
                self.sent += config.batch
                began = time.perf_counter()
                if not self.first_send:
                    self.first_send = time.time()
                status = await conn.post(body)
                ended = time.perf_counter()
                self.last_answer = time.time()
                result.requests += 1
                key = str(status)
                result.statuses[key] = result.statuses.get(key, 0) + 1
                if status == 200:
                    result.identifies_acked += config.batch
                else:
                    result.errors += 1
                if len(self.latencies) < _LATENCY_SAMPLES:
                    self.latencies.append((ended - began) * 1000)
        finally:
            await conn.close()

    async def run(self) -> LoadResult:
        progress = Progress(self.config.label, self.config)
        start = time.perf_counter()
        deadline = start + self.config.duration_s
        clients = [asyncio.create_task(self.client(i, start, deadline)) for i in range(self.config.clients)]

        async def report() -> None:
            while True:
                progress.show(self.sent, self.result.identifies_acked)
                await asyncio.sleep(0.25)

        reporter = asyncio.create_task(report())
        try:
            await asyncio.gather(*clients)
        finally:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
        progress.show(self.sent, self.result.identifies_acked, final=True)
        self.result.started_at = self.first_send
        self.result.finished_at = self.last_answer
        self.result.latency_ms = {
            "p50": stats.percentile(self.latencies, 0.50),
            "p90": stats.percentile(self.latencies, 0.90),
            "p99": stats.percentile(self.latencies, 0.99),
            "max": max(self.latencies) if self.latencies else None,
        }
        return self.result


def run(config: LoadConfig) -> LoadResult:
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # the generator works on the stock loop too, a little slower
        runner = asyncio.run
    cpu_before = time.process_time()
    result: LoadResult = runner(_Run(config).run())
    result.cpu_s = time.process_time() - cpu_before
    return result


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.bench.load '<json config>'", file=sys.stderr)
        return 2
    config = LoadConfig(**orjson.loads(argv[0]))
    result = run(config)
    sys.stdout.write(orjson.dumps(asdict(result)).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
