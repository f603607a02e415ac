"""A stack restarted against a broker that stayed up (what every deploy does) applies
new identifies within seconds, every time: the group its departed members left behind
hands the new members every partition, and they resume where PostgreSQL says."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.support.stack import Broker, Stack

RESTARTS = 3
APPLIED_WITHIN_S = 20


@pytest.mark.timeout(240)
def test_restarted_stack_applies_new_identifies_within_seconds(kafka: Broker, database_url: str) -> None:
    topic = f"identify-{uuid.uuid4().hex[:8]}"
    waits: list[float] = []
    for round_ in range(RESTARTS):
        # The same topic and consumer group each time: only the processes are new.
        stack = Stack(kafka.bootstrap, database_url, topic=topic)
        try:
            stack.start(workers=2)
            user = f"restart-{round_}-{uuid.uuid4().hex[:6]}"
            sent = time.monotonic()
            response = stack.post("/api/identify", {"user_id": user, "traits": {"round": round_}})
            assert response.status_code == 200, response.text
            profile = stack.wait_profile(user, timeout=APPLIED_WITHIN_S)
            waits.append(time.monotonic() - sent)
            assert profile["traits"]["round"] == round_
        finally:
            # Every member leaves; the broker and the group's committed state stay.
            stack.stop()
    assert len(waits) == RESTARTS and max(waits) < APPLIED_WITHIN_S
