"""The bench's stack moves each phase onto a fresh topic and deletes the last one, so
that no phase inherits the previous phases' backlog."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from tests.bench.stack import Stack, StackOptions
from tests.support.stack import PG_ADMIN_URL, REDIS_URL, wait_until


def _topics(bootstrap: str) -> set[str]:
    return set(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics)


def test_rotation_moves_to_a_fresh_topic_and_deletes_the_old(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = Stack(StackOptions(PG_ADMIN_URL, REDIS_URL, kafka_bootstrap=None, log_dir=tmp_path))
    # Only the broker and the topics are under test here, not the edge and workers.
    monkeypatch.setattr(stack, "start_edge", lambda: None)
    monkeypatch.setattr(stack, "start_workers", lambda: None)
    try:
        stack.prepare()
        assert stack.broker is not None
        old_topic = stack.topic
        assert {old_topic, f"{old_topic}.dlq"} <= _topics(stack.bootstrap)

        stack.rotate_topic()

        assert stack.topic != old_topic
        # Created is the controller's word; a broker's metadata follows a moment later.
        new = {stack.topic, f"{stack.topic}.dlq"}
        wait_until(lambda: new <= _topics(stack.bootstrap), 15, "the new topics in the metadata")
        wait_until(lambda: old_topic not in _topics(stack.bootstrap), 15, "the old topic to be deleted")
    finally:
        stack.close()
    assert stack.broker is not None and not any(node.alive() for node in stack.broker.nodes)
