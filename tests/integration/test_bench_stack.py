"""The bench's stack rotates each phase onto a fresh topic, and onto a fresh broker
when it runs the bundled one: that broker never forgets a producer, and each one it
keeps makes every later produce dearer."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from tests.support.stack import PG_ADMIN_URL, REDIS_URL
from traitstream.bench.stack import Stack, StackOptions


def _topics(bootstrap: str) -> set[str]:
    return set(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics)


def test_rotation_moves_to_a_fresh_bundled_broker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stack = Stack(StackOptions(PG_ADMIN_URL, REDIS_URL, kafka_bootstrap=None, log_dir=tmp_path))
    # Only the broker and the topics are under test here, not the edge and workers.
    monkeypatch.setattr(stack, "start_edge", lambda: None)
    monkeypatch.setattr(stack, "start_workers", lambda: None)
    try:
        stack.prepare()
        assert stack.broker is not None
        first, old_bootstrap, old_topic = stack.broker, stack.bootstrap, stack.topic
        assert old_topic in _topics(old_bootstrap)

        stack.rotate_topic()

        assert first.poll() is not None  # the old broker was stopped
        assert stack.broker is not first and stack.bootstrap != old_bootstrap
        topics = _topics(stack.bootstrap)
        assert stack.topic != old_topic
        assert {stack.topic, f"{stack.topic}.dlq"} <= topics
        assert old_topic not in topics
    finally:
        stack.close()
