"""Poison records published straight to the topic are dead-lettered with their reason
in the headers, the good records around them are applied, and ``traitstream dlq
replay`` sends repaired copies back, each applied once.

Repair flow (docs/guarantees.md): an operator reads a dead letter, produces the
corrected record (same key, same dedupe key) to the dead-letter topic, and runs the
replay. Records that still do not decode are passed over; of an original and its
repair read together only the repair is sent back.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import uuid

import psycopg
import pytest

from tests.faults.harness import (
    log_events,
    outcome_count,
    read_topic,
    stored_profiles,
    wait_caught_up,
    worker_metrics,
)
from tests.support.publish import event, publish
from tests.support.stack import Broker, Stack, metric_sum
from traitstream.avro import codec
from traitstream.avro.schemas import LOCAL_SCHEMA_ID
from traitstream.events import IdentifyEvent, Op, Operation

REASONS = ["not_avro", "unknown_schema_id", "invalid_content", "store_rejected"]


def add_one(stack: Stack, user: str, key: str, *extra: Operation) -> IdentifyEvent:
    return event(stack.workspace, user=user, dedupe_key=key, ops=[Operation(Op.ADD, "n", 1), *extra])


def unstorable(record: IdentifyEvent) -> IdentifyEvent:
    """A record that decodes and validates but that the store refuses (see the check
    constraint the test adds): what a value PostgreSQL cannot hold does to a batch."""
    return record._replace(operations=(*record.operations, Operation(Op.SET, "refuse_me", True)))


def counter(stack: Stack, user: str) -> int | None:
    profile = stored_profiles(stack.database_url, stack.workspace, [user]).get(user)
    return None if profile is None else profile[0].get("n")


def replay(stack: Stack) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "traitstream", "dlq", "replay", "--idle-seconds", "2"],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_poison_records_are_dead_lettered_then_repaired_and_replayed_once(
    kafka: Broker, database_url: str, make_stack
) -> None:
    stack = make_stack(kafka.bootstrap, database_url, workers=1, partitions=2)
    dlq = f"{stack.topic}.dlq"
    user = f"poison-{uuid.uuid4().hex[:6]}"
    good = [add_one(stack, user, f"{user}-good-{i}") for i in range(5)]
    # What the four poison records were meant to be: one "add n 1" each.
    meant = [add_one(stack, user, f"{user}-meant-{i}") for i in range(4)]
    as_json = b'{"user_id": "%s", "operations": [{"op": "add", "trait": "n", "value": 1}]}' % user.encode()
    wrong_id = bytearray(codec.encode(meant[1], LOCAL_SCHEMA_ID))
    wrong_id[1:5] = struct.pack(">I", 999)
    invalid = event(
        stack.workspace, user=user, dedupe_key=f"{user}-meant-2", ops=[Operation(Op.ADD, "n", "one")]
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE profiles ADD CONSTRAINT refuses_poison CHECK (NOT traits ? 'refuse_me')")
    refused_by_store = unstorable(add_one(stack, user, f"{user}-meant-3"))
    poison: list[bytes] = [
        as_json,
        bytes(wrong_id),
        codec.encode(invalid, LOCAL_SCHEMA_ID),
        codec.encode(refused_by_store, LOCAL_SCHEMA_ID),
    ]
    key = good[0].partition_key
    interleaved: list[IdentifyEvent | bytes] = [good[0]]
    for bad, ok in zip(poison, good[1:], strict=True):
        interleaved += [bad, ok]
    publish(stack.bootstrap, stack.topic, interleaved, key=key)

    wait_caught_up(stack)
    assert counter(stack, user) == len(good), "the good records around the poison ones were not all applied"
    letters = read_topic(stack.bootstrap, dlq, 1, decode=False)
    assert [h.headers["traitstream.reason"].decode() for h in letters] == REASONS
    source = {r.value: r for r in read_topic(stack.bootstrap, stack.topic, stack.partitions, decode=False)}
    for letter, original in zip(letters, poison, strict=True):
        assert letter.value == original
        assert letter.headers["traitstream.error"], "a dead letter must say what is wrong"
        assert letter.headers["traitstream.topic"].decode() == stack.topic
        where = source[original]
        assert int(letter.headers["traitstream.partition"]) == where.partition
        assert int(letter.headers["traitstream.offset"]) == where.offset
    assert letters[3].headers["traitstream.error"].startswith(b"the profile store refused it")
    worker = stack.workers[0]
    assert worker.alive(), "a poison record took the worker down"
    assert outcome_count(worker, "dead_lettered") == 4
    metrics = worker_metrics(worker)
    for reason in REASONS:
        assert metric_sum(metrics, "traitstream_worker_dead_letters_total", f'reason="{reason}"') == 1, reason

    # Repair: the operator produces corrected records to the dead-letter topic, one of
    # them twice by mistake. Replay passes over the originals that still do not
    # decode, and sends only the last copy of each event: the refused original gives
    # way to its repair, the doubled repair is sent once.
    repaired = [*meant[:3], add_one(stack, user, f"{user}-meant-3")]
    publish(stack.bootstrap, dlq, [*repaired, repaired[2]], key=key)
    assert replay(stack).startswith(f"replayed 4 record(s) from {dlq}")
    wait_caught_up(stack)
    assert counter(stack, user) == len(good) + len(repaired)

    # Nothing is left to replay, and replaying again changes nothing.
    assert replay(stack).startswith("replayed 0 record(s)")
    wait_caught_up(stack)
    assert counter(stack, user) == len(good) + len(repaired)
    assert len(read_topic(stack.bootstrap, dlq, 1, decode=False)) == 4 + 5, (
        "a replayed record was dead-lettered"
    )
    assert worker.alive()
    assert log_events(worker, "dead-lettered a record the store refused")

    # A record the store refuses with a corrected copy of the same event right behind
    # it (one batch): the copy inherits the dedupe claim and is applied, once.
    again = f"{user}-again"
    publish(
        stack.bootstrap,
        stack.topic,
        [unstorable(add_one(stack, user, again)), add_one(stack, user, again)],
    )
    wait_caught_up(stack)
    assert counter(stack, user) == len(good) + len(repaired) + 1
    in_dlq = read_topic(stack.bootstrap, dlq, 1, decode=False)
    assert [r.headers["traitstream.reason"] for r in in_dlq[9:]] == [b"store_rejected"]
