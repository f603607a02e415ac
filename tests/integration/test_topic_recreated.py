"""A topic deleted and created again starts its offsets over; the offsets kept in
PostgreSQL must not make the workers skip its new records."""

from __future__ import annotations

from confluent_kafka.admin import AdminClient

from tests.support.stack import Stack, wait_until
from traitstream import kafka_admin


def test_records_of_a_recreated_topic_are_applied(stack: Stack) -> None:
    for i in range(30):
        assert stack.post("/api/identify", {"user_id": f"before-{i}", "traits": {"i": i}}).status_code == 200
    stack.wait_profile("before-29")
    for worker in stack.workers:
        worker.stop()
    admin = AdminClient({"bootstrap.servers": stack.bootstrap})
    for future in admin.delete_topics([stack.topic], operation_timeout=15).values():
        future.result()
    wait_until(lambda: stack.topic not in admin.list_topics(timeout=5).topics, 15, "the topic to be deleted")
    kafka_admin.ensure_topics(stack.bootstrap, {stack.topic: stack.partitions})

    # Fewer records than before, so every partition's new offsets sit below the old ones.
    assert stack.post("/api/identify", {"user_id": "after", "traits": {"fresh": True}}).status_code == 200
    stack.workers.clear()
    # A group of its own, so the group's committed offsets of the old topic play no
    # part: starting from the offsets kept in PostgreSQL is what the worker must do.
    stack.add_worker(TRAITSTREAM_GROUP_ID=f"group-{stack.topic}-after")
    profile = stack.wait_profile("after", timeout=30)
    assert profile["traits"] == {"fresh": True}
