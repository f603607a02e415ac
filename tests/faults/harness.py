"""Bookkeeping for the fault suite: where the pipeline stands, and the checks.

``assert_exactly_once`` waits until the workers have applied every partition to its
end (Postgres's ``applied_offsets`` reach the end of the log), then checks the two
kinds of traffic of ``tests/faults/traffic.py``:

* counters (``CounterTraffic``): each profile's ``n`` equals the records the broker
  acknowledged for it, so a lost or doubled record shows as a wrong number;
* identifies (``EdgeTraffic``): every acknowledged identify is a trait of its profile,
  and no trait is one that was never sent. A trait set twice keeps its value, so
  double application of an identify that sits in the topic more than once (a
  resent call) is caught by its write stamp: it must be that of the first copy,
  the one dedupe keeps.

``offsets_locked`` catches a worker in the middle of a batch, deterministically.
"""

from __future__ import annotations

import collections
import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
from confluent_kafka import Consumer, KafkaError, TopicPartition

from tests.faults.traffic import CounterTraffic, EdgeTraffic
from tests.support.stack import Proc, Stack, metric_sum, wait_until
from traitstream.avro import codec
from traitstream.avro.schemas import LocalSchemas
from traitstream.merge import expand_stamps

# --- the state of the pipeline ----------------------------------------------------------


def log_ends(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """Each partition's end: its high watermark, the offset after the last record
    every in-sync replica has (so after every record the producers were told of)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex[:6]}"})
    try:
        return {
            p: int(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1])
            for p in range(partitions)
        }
    finally:
        consumer.close()


def applied_offsets(database_url: str, topic: str) -> dict[int, int]:
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT partition, next_offset FROM applied_offsets WHERE topic = %s", (topic,)
        ).fetchall()
    return {int(p): int(o) for p, o in rows}


def wait_caught_up(stack: Stack, timeout: float = 90.0) -> dict[int, int]:
    """Wait until Postgres has applied every partition to its end; the end offsets."""
    ends = log_ends(stack.bootstrap, stack.topic, stack.partitions)
    wait_applied_to(stack, ends, timeout)
    return ends


def wait_applied_to(stack: Stack, ends: dict[int, int], timeout: float) -> None:
    """Wait until Postgres has applied each partition up to ``ends``."""

    def caught_up() -> bool:
        try:
            done = applied_offsets(stack.database_url, stack.topic)
        except psycopg.OperationalError:
            return False
        return all(done.get(p, 0) >= end for p, end in ends.items())

    wait_until(caught_up, timeout, f"the workers to apply {stack.topic} up to {ends}", every=0.25)


def dead_letter_count(stack: Stack) -> int:
    return sum(log_ends(stack.bootstrap, f"{stack.topic}.dlq", 1).values())


@dataclass
class TopicRecord:
    partition: int
    offset: int
    event_time_ms: int
    event_id: str
    headers: dict[str, bytes] = field(default_factory=dict)
    value: bytes | None = None


def read_topic(bootstrap: str, topic: str, partitions: int, *, decode: bool = True) -> list[TopicRecord]:
    """Every record of ``topic`` from the beginning to its current end."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    schemas = LocalSchemas()
    records: list[TopicRecord] = []
    try:
        pending = set(range(partitions))
        consumer.assign([TopicPartition(topic, p, 0) for p in pending])
        deadline = time.monotonic() + 30
        while pending and time.monotonic() < deadline:
            for message in consumer.consume(500, 0.5):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(message.partition())
                    continue
                event_time, event_id = 0, ""
                if decode:
                    decoded = codec.decode(message.value(), schemas)
                    event_time, event_id = decoded.event_time_ms, decoded.event_id
                records.append(
                    TopicRecord(
                        message.partition(),
                        message.offset(),
                        event_time,
                        event_id,
                        {k: v for k, v in (message.headers() or [])},
                        message.value(),
                    )
                )
        assert not pending, f"could not read {topic} to the end (partitions {sorted(pending)})"
    finally:
        consumer.close()
    return records


def stored_profiles(database_url: str, workspace: str, users: list[str]) -> dict[str, tuple[dict, dict]]:
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT user_id, traits, coalesce(stamps, trait_meta) FROM profiles"
            " WHERE workspace_id = %s AND user_id = ANY(%s)",
            (workspace, users),
        ).fetchall()
    return {user: (traits, meta) for user, traits, meta in rows}


@dataclass
class Outcome:
    counters_applied: int = 0
    identifies_acked: int = 0
    identifies_applied: int = 0
    identifies_unacked_applied: int = 0
    retried_identifies: int = 0


def assert_exactly_once(
    stack: Stack,
    edge: EdgeTraffic | None = None,
    counters: CounterTraffic | None = None,
    *,
    timeout: float = 90.0,
) -> Outcome:
    wait_caught_up(stack, timeout)
    outcome = Outcome()
    if counters is not None:
        profiles = stored_profiles(stack.database_url, counters.workspace, counters.users)
        got = {u: profiles[u][0].get("n") if u in profiles else None for u in counters.users}
        want = {u: counters.expected[u] or None for u in counters.users}
        assert got == want, f"counters differ from the acknowledged records: got {got}, want {want}"
        outcome.counters_applied = sum(n or 0 for n in got.values())
    if edge is not None:
        profiles = stored_profiles(stack.database_url, stack.workspace, edge.users)
        first_copy: dict[str, TopicRecord] = {}
        copies: collections.Counter[str] = collections.Counter()
        for record in read_topic(stack.bootstrap, stack.topic, stack.partitions):
            if record.event_id.startswith("k"):
                copies[record.event_id] += 1
                known = first_copy.get(record.event_id)
                if known is None or (record.partition, record.offset) < (known.partition, known.offset):
                    first_copy[record.event_id] = record
        for user in edge.users:
            traits, meta = profiles.get(user, ({}, {}))
            applied = set(traits)
            lost = edge.acked[user] - applied
            assert not lost, f"{len(lost)} acknowledged identifies of {user} were lost: {sorted(lost)[:5]}"
            strays = applied - edge.sent[user]
            assert not strays, f"{user} has traits nobody sent: {sorted(strays)[:5]}"
            assert all(v == 1 for v in traits.values())
            for key in applied:
                if copies[key] > 1:
                    outcome.retried_identifies += 1
                    stamp = expand_stamps(meta)[0][key]
                    assert stamp[0] == first_copy[key].event_time_ms, (
                        f"identify {key} is in the topic {copies[key]} times and a later copy "
                        f"was applied too (stamp {stamp}, first copy at {first_copy[key].event_time_ms})"
                    )
            outcome.identifies_acked += len(edge.acked[user])
            outcome.identifies_applied += len(applied)
            outcome.identifies_unacked_applied += len(applied - edge.acked[user])
        assert not edge.unexpected, f"the edge refused identifies: {edge.unexpected[:3]}"
    return outcome


# --- workers in the middle of a batch ---------------------------------------------------


@contextlib.contextmanager
def offsets_locked(stack: Stack) -> Iterator[psycopg.Connection[Any]]:
    """Hold ``FOR UPDATE`` on every partition's ``applied_offsets`` row of the stack's
    topic. A worker that reaches its batch's transaction waits there with its dedupe
    keys claimed in Redis and nothing committed: in the middle of a batch."""
    with psycopg.connect(stack.database_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(
            "INSERT INTO applied_offsets (topic, partition, next_offset)"
            " SELECT %s, p, 0 FROM generate_series(0, %s - 1) AS p ON CONFLICT DO NOTHING",
            (stack.topic, stack.partitions),
        )
    lock = psycopg.connect(stack.database_url, connect_timeout=5)
    try:
        lock.execute(
            "SELECT partition FROM applied_offsets WHERE topic = %s ORDER BY partition FOR UPDATE",
            (stack.topic,),
        )
        yield lock
    finally:
        with contextlib.suppress(psycopg.Error):
            lock.rollback()
        with contextlib.suppress(psycopg.Error):
            lock.close()


def blocked_workers(stack: Stack) -> list[int]:
    """Indexes of the live workers whose database session waits for a lock."""
    names = {stack.worker_app_name(i): i for i, w in enumerate(stack.workers) if w.alive()}
    with psycopg.connect(stack.database_url, autocommit=True, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT application_name FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchall()
    return sorted(names[name] for (name,) in rows if name in names)


def wait_blocked_worker(stack: Stack, timeout: float = 30.0) -> int:
    """The index of a worker stuck in the middle of a batch (under ``offsets_locked``)."""
    found: list[int] = wait_until(lambda: blocked_workers(stack), timeout, "a worker blocked mid-batch")
    return found[0]


# --- metrics and logs -------------------------------------------------------------------


def worker_metrics(worker: Proc) -> str:
    try:
        return httpx.get(worker.metrics_url, timeout=5).text
    except httpx.HTTPError:
        return ""


def store_errors(worker: Proc, store: str) -> float:
    return metric_sum(worker_metrics(worker), "traitstream_worker_store_errors_total", f'store="{store}"')


def outcome_count(worker: Proc, outcome: str) -> float:
    return metric_sum(worker_metrics(worker), "traitstream_worker_events_total", f'outcome="{outcome}"')


def log_events(worker: Proc, msg: str) -> list[dict[str, Any]]:
    """The worker's JSON log lines whose message is ``msg``."""
    found = []
    for line in worker.log_text().splitlines():
        if line.startswith("{") and f'"msg":"{msg}' in line:
            with contextlib.suppress(ValueError):
                found.append(json.loads(line))
    return found


def owned_partitions(worker: Proc) -> list[int]:
    """The partitions the worker owns by its log (``Proc.owned_partitions``)."""
    return worker.owned_partitions()


def counters_applied(stack: Stack, counters: CounterTraffic) -> int:
    try:
        profiles = stored_profiles(stack.database_url, counters.workspace, counters.users)
    except psycopg.OperationalError:
        return 0
    return sum(int(traits.get("n", 0)) for traits, _meta in profiles.values())


def wait_progress(stack: Stack, counters: CounterTraffic, timeout: float = 30.0) -> int:
    """Wait until the workers apply more counter records than now; how many are applied."""
    before = counters_applied(stack, counters)
    return int(
        wait_until(
            lambda: (n := counters_applied(stack, counters)) > before and n,
            timeout,
            f"the workers to apply more than {before} counter records",
            every=0.2,
        )
    )


# --- the load every fault test runs under -------------------------------------------------


@contextlib.contextmanager
def mixed_traffic(
    stack: Stack, at_least: int = 0, **edge_options: Any
) -> Iterator[tuple[EdgeTraffic, CounterTraffic]]:
    """Identifies through the edge and counter records straight onto the topic, from
    before the block (once the workers apply them) until it ends, even by a failure.
    A block that ends normally keeps the load on until more than ``at_least`` of each
    were acknowledged: a fault the pipeline gets over quickly still meets real volume."""
    edge = EdgeTraffic(stack, **edge_options).start()
    counters = CounterTraffic(stack.bootstrap, stack.topic).start()
    try:
        wait_progress(stack, counters)
        yield edge, counters
        wait_until(
            lambda: edge.acked_count > at_least and counters.acked_count > at_least,
            120,
            f"more than {at_least} identifies and counters acknowledged",
        )
    finally:
        edge.stop()
        counters.stop()


def assert_clean_run(stack: Stack, edge: EdgeTraffic, counters: CounterTraffic, *, at_least: int) -> Outcome:
    """Exactly once, more than ``at_least`` counters and acknowledged identifies
    applied, and nothing dead-lettered."""
    outcome = assert_exactly_once(stack, edge, counters)
    assert outcome.counters_applied > at_least and outcome.identifies_acked > at_least, (
        outcome,
        edge.statuses,
    )
    assert dead_letter_count(stack) == 0
    return outcome
