"""What the profile changes stream costs a worker: ``python -m tests.bench.changes_cost``.

Two pipelines side by side on one local broker, each with its own topic, database and
one worker process: one with ``TRAITSTREAM_CHANGES=on``, one with ``off``. Each round
publishes the same number of identifies straight onto each topic (every identify sets
a few traits of one of ``--users`` profiles, with new values), waits until the
worker has applied them all (and, with the stream on, until the outbox is empty:
the relay's work counts too), and reads the CPU time (utime + stime) over the round
of the worker process (all threads), of its database's PostgreSQL server processes
(the batches' connection and the relay's; autovacuum is left out) and of the broker
(receiving the identifies too, alike for both).
Rounds alternate between the two, and the medians of CPU per applied identify are
reported with the records published.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
import uuid
from collections.abc import Iterator

import psycopg
from confluent_kafka import Producer

from tests.bench.procs import cpu_seconds
from tests.support.changes import outbox_size
from tests.support.stack import Broker, Stack, scratch_database, wait_until
from traitstream.avro import codec
from traitstream.avro.schemas import LOCAL_SCHEMA_ID
from traitstream.events import IdentifyEvent, Operation
from traitstream.events import Op as _Op
from traitstream.kafka_producer import producer_config


def identifies(count: int, users: int, round_number: int, tag: str) -> Iterator[IdentifyEvent]:
    """``tag`` keeps the two pipelines' dedupe keys apart: they share Redis."""
    now = int(time.time() * 1000)
    for i in range(count):
        yield IdentifyEvent(
            workspace_id="bench",
            user_id=f"user-{i % users}",
            dialect="segment",
            event_time_ms=now + i,
            received_time_ms=now + i,
            response_id=uuid.uuid4().hex,
            dedupe_key=f"{tag}-r{round_number}-{i}",
            operations=(
                Operation(_Op.SET, "plan", f"plan-{round_number}-{i % 7}"),
                Operation(_Op.SET, "seats", i % 50),
                Operation(_Op.SET, "email", f"user-{i % users}@example.com"),
                Operation(_Op.SET, "last_seen", now + i),
                Operation(_Op.ADD, "visits", 1),
            ),
        )


def publish(stack: Stack, count: int, users: int, round_number: int) -> None:
    producer = Producer(producer_config(stack.bootstrap, 60.0) | {"linger.ms": 20})
    for event in identifies(count, users, round_number, stack.topic):
        while True:
            try:
                producer.produce(
                    stack.topic, value=codec.encode(event, LOCAL_SCHEMA_ID), key=event.partition_key
                )
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0


def applied(stack: Stack) -> int:
    """Records applied so far (-1 while the server refuses connections: it is shared)."""
    try:
        with psycopg.connect(stack.database_url, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT coalesce(sum(next_offset), 0) FROM applied_offsets WHERE topic = %s", (stack.topic,)
            ).fetchone()
    except psycopg.OperationalError:
        return -1
    return int(row[0]) if row else 0


def outbox_empty(stack: Stack) -> bool:
    try:
        return outbox_size(stack.database_url) == 0
    except psycopg.OperationalError:
        return False


def backends(stack: Stack) -> list[int]:
    """The PostgreSQL server processes of the pipeline's database (its worker's
    connections: the batches' and the relay's)."""
    with psycopg.connect(stack.database_url, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return [int(r[0]) for r in rows]


def one_round(
    stack: Stack, broker: list[int], stream_on: bool, count: int, users: int, number: int
) -> dict[str, float]:
    """CPU seconds per applied identify over one round: the worker's, its PostgreSQL
    server processes', and the broker's."""
    worker = stack.workers[0]
    assert worker.process is not None
    target = wait_until(lambda: (n := applied(stack)) >= 0 and n + 1, 60, "the database") - 1 + count
    server = backends(stack)

    def used() -> dict[str, float]:
        return {
            "worker": cpu_seconds(worker.process.pid),  # type: ignore[union-attr]
            "postgres": sum(cpu_seconds(p) for p in server),
            "broker": sum(cpu_seconds(p) for p in broker),
        }

    before = used()
    publish(stack, count, users, number)
    wait_until(lambda: applied(stack) >= target, 300, "the worker to apply the round", every=0.2)
    if stream_on:
        wait_until(lambda: outbox_empty(stack), 120, "the outbox to empty", every=0.2)
    time.sleep(0.5)  # the metrics and lag probes of the round's end
    after = used()
    return {k: (after[k] - before[k]) / count for k in before}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--identifies", type=int, default=20_000, help="per round and pipeline")
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    broker = Broker()
    results: dict[str, list[dict[str, float]]] = {"on": [], "off": []}
    published = 0
    try:
        with contextlib.ExitStack() as stacks:
            pipelines = {}
            for mode in ("on", "off"):
                url = stacks.enter_context(scratch_database(f"ts_changes_{mode}"))
                stack = Stack(broker.bootstrap, url, partitions=4, extra_env={"TRAITSTREAM_CHANGES": mode})
                stacks.callback(stack.stop)
                stack.prepare()
                stack.add_worker()
                worker = stack.workers[0]
                wait_until(worker.owned_partitions, 60, "the worker's partitions")
                pipelines[mode] = stack
            brokers = broker.cluster.pids if broker.cluster is not None else []
            # A first round each, unmeasured: profiles created, caches and connections warm.
            for mode, stack in pipelines.items():
                one_round(stack, brokers, mode == "on", args.identifies, args.users, 0)
            for number in range(1, args.rounds + 1):
                for mode in ("on", "off") if number % 2 else ("off", "on"):
                    results[mode].append(
                        one_round(pipelines[mode], brokers, mode == "on", args.identifies, args.users, number)
                    )
            with psycopg.connect(pipelines["on"].database_url) as conn:
                row = conn.execute("SELECT coalesce(sum(version), 0) FROM profile_versions").fetchone()
                published = int(row[0]) if row else 0
    finally:
        broker.stop()

    def median_us(mode: str, group: str) -> float:
        return round(statistics.median(r[group] for r in results[mode]) * 1e6, 1)

    groups = ("worker", "postgres", "broker")
    report = {
        "identifies_per_round": args.identifies,
        "users": args.users,
        "rounds": args.rounds,
        "cpu_us_per_identify": {m: {g: median_us(m, g) for g in groups} for m in ("on", "off")},
        "rounds_us": {
            m: [{g: round(r[g] * 1e6, 1) for g in groups} for r in rs] for m, rs in results.items()
        },
        "change_records_published": published,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
