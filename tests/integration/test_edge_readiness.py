"""The edge's readiness names only what the edge uses: the broker and the key store.
Redis is the workers' alone, so its outage must leave the edges ready (a load
balancer would otherwise pull every edge and stop all ingestion)."""

from __future__ import annotations

import httpx

from tests.support.stack import Broker, Stack, free_port


def test_the_edge_is_ready_and_takes_identifies_while_redis_is_down(kafka: Broker, database_url: str) -> None:
    nothing_there = f"redis://127.0.0.1:{free_port()}/0"
    stack = Stack(kafka.bootstrap, database_url, redis_url=nothing_there)
    try:
        stack.prepare()
        stack.start_edge(wait=True)
        ready = httpx.get(f"{stack.url}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"broker": True, "database": True}
        response = stack.post("/api/identify", {"user_id": "while-redis-is-down", "traits": {"a": 1}})
        assert response.status_code == 200, response.text
    finally:
        stack.stop()
