"""What the profile changes stream costs a worker: ``python -m tests.bench.changes_cost``.

Two pipelines side by side on one local broker, each with its own topic, database and
one worker process: one with ``TRAITSTREAM_CHANGES=on``, one with ``off``. Each round
publishes the same number of identifies straight onto each topic (every identify sets
a few traits of one of ``--users`` profiles, with new values), waits until the
worker has applied them all (and, with the stream on, until the outbox is empty:
the relay's work counts too), and reads the worker's CPU time (utime + stime of the
process, all threads) over the round. Rounds alternate between the two, and the
medians of CPU per applied identify are reported with the records published.
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


def one_round(stack: Stack, stream_on: bool, count: int, users: int, number: int) -> float:
    """CPU seconds of the worker per applied identify over one round."""
    worker = stack.workers[0]
    assert worker.process is not None
    target = wait_until(lambda: (n := applied(stack)) >= 0 and n + 1, 60, "the database") - 1 + count
    before = cpu_seconds(worker.process.pid)
    publish(stack, count, users, number)
    wait_until(lambda: applied(stack) >= target, 300, "the worker to apply the round", every=0.2)
    if stream_on:
        wait_until(lambda: outbox_empty(stack), 120, "the outbox to empty", every=0.2)
    time.sleep(0.5)  # the metrics and lag probes of the round's end
    return (cpu_seconds(worker.process.pid) - before) / count


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--identifies", type=int, default=20_000, help="per round and pipeline")
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    broker = Broker()
    results: dict[str, list[float]] = {"on": [], "off": []}
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
            # A first round each, unmeasured: profiles created, caches and connections warm.
            for mode, stack in pipelines.items():
                one_round(stack, mode == "on", args.identifies, args.users, 0)
            for number in range(1, args.rounds + 1):
                for mode in ("on", "off") if number % 2 else ("off", "on"):
                    results[mode].append(
                        one_round(pipelines[mode], mode == "on", args.identifies, args.users, number)
                    )
            with psycopg.connect(pipelines["on"].database_url) as conn:
                row = conn.execute("SELECT coalesce(sum(version), 0) FROM profile_versions").fetchone()
                published = int(row[0]) if row else 0
    finally:
        broker.stop()
    on, off = statistics.median(results["on"]), statistics.median(results["off"])
    report = {
        "identifies_per_round": args.identifies,
        "users": args.users,
        "rounds": args.rounds,
        "worker_cpu_us_per_identify": {"on": round(on * 1e6, 1), "off": round(off * 1e6, 1)},
        "rounds_us": {m: [round(v * 1e6, 1) for v in r] for m, r in results.items()},
        "overhead": f"{(on / off - 1) * 100:.1f}%",
        "change_records_published": published,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
