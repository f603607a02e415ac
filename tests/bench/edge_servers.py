"""The edge's CPU per single identify under different servers (or builds) of the same
app: ``python -m tests.bench.edge_servers --server NAME='ARGS' --server …``.

Each ``ARGS`` is what follows ``python`` to start one edge (``{port}`` and
``{processes}`` are filled in), for example ``-m traitstream edge`` or
``-m granian --interface asgi --factory --port {port} --workers {processes}
traitstream.edge.server:app_from_env``. All of them run at once on a local broker,
scratch database and topic, each on its own port. Every round loads each server in
turn, in an order that rotates from round to round, with ``--requests`` single
identifies from 16 keep-alive clients (``tests.bench.load``, in its own process),
and reads the CPU time of the server's whole process tree from ``/proc`` around
it: on a shared machine wall-clock rates move with the neighbours, CPU per request
much less. Prints each round and the medians.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

from tests.bench.procs import cpu_seconds, load_average, tree
from tests.bench.stack import create_database, drop_database, wait_for
from traitstream import kafka_admin
from traitstream.localkafka import LocalKafka
from traitstream.processes import Child, free_port, pipeline_env
from traitstream.store import keys
from traitstream.store.database import migrate

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = 16
WARM_UP = 3000


@dataclass
class Server:
    name: str
    child: Child
    port: int
    us_per_request: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in tree(self.child.pid))

    def ready(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


def load(port: int, api_key: str, total: int) -> dict[str, object]:
    config = {
        "url": f"http://127.0.0.1:{port}",
        "api_key": api_key,
        "label": "single",
        "clients": CLIENTS,
        "batch": 1,
        "duration_s": 600,
        "total": total,
    }
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench.load", json.dumps(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def measure(options: argparse.Namespace) -> list[Server]:
    broker = LocalKafka(1).start()
    scratch = f"traitstream_servers_{uuid.uuid4().hex[:8]}"
    database_url = create_database(options.database_url, scratch)
    servers: list[Server] = []
    try:
        migrate(database_url)
        topic = f"servers-{uuid.uuid4().hex[:8]}"
        kafka_admin.ensure_topics(broker.bootstrap, {topic: 12, f"{topic}.dlq": 1})
        api_key = keys.new_secret("bench_")
        with psycopg.connect(database_url, autocommit=True) as conn:
            keys.register(conn, api_key, "bench", frozenset(keys.SCOPES), description="edge servers")
        for spec in options.server:
            name, _, args = spec.partition("=")
            port = free_port()
            argv = [sys.executable, *shlex.split(args.format(port=port, processes=options.edge_processes))]
            env = pipeline_env(
                broker.bootstrap,
                database_url,
                options.redis_url,
                topic,
                TRAITSTREAM_HTTP_PORT=str(port),
                TRAITSTREAM_HTTP_WORKERS=str(options.edge_processes),
                TRAITSTREAM_LOG_FORMAT="json",
            )
            child = Child(name, argv, env, Path(options.log_dir) / f"{name}.log")
            child.start()
            servers.append(Server(name, child, port))
        for server in servers:
            wait_for(server.ready, 60, f"{server.name} answering /readyz", every_s=0.2)
            load(server.port, api_key, WARM_UP)
        for round_ in range(options.rounds):
            shift = round_ % len(servers)
            for server in servers[shift:] + servers[:shift]:
                before = server.cpu()
                result = load(server.port, api_key, options.requests)
                used = server.cpu() - before
                statuses = result["statuses"]
                assert isinstance(statuses, dict) and set(statuses) == {"200"}, statuses
                latency = result["latency_ms"]
                assert isinstance(latency, dict)
                server.us_per_request.append(used / options.requests * 1e6)
                server.p99_ms.append(float(latency["p99"]))
                print(
                    f"round {round_ + 1} {server.name}: {server.us_per_request[-1]:.1f} µs/request, "
                    f"p99 {server.p99_ms[-1]:.1f} ms, load average {load_average():.1f}",
                    flush=True,
                )
        return servers
    finally:
        for server in servers:
            server.child.stop()
        drop_database(options.database_url, scratch)
        broker.stop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.edge_servers", description=__doc__)
    parser.add_argument("--server", action="append", required=True, help="NAME='python arguments'")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=8000, help="single identifies per server and round")
    parser.add_argument("--edge-processes", type=int, default=1)
    parser.add_argument("--database-url", default="postgresql://127.0.0.1:5432/postgres")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--log-dir", default="bench-results/edge-servers")
    options = parser.parse_args(argv)
    for server in measure(options):
        print(
            f"{server.name}: median {statistics.median(server.us_per_request):.1f} µs/request, "
            f"median p99 {statistics.median(server.p99_ms):.1f} ms over {options.rounds} rounds"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
