"""Dedupe claims in Redis.

Each event claims ``dedupe:<workspace>:<event id>`` with ``SET NX GET EX``,
storing where it sits in the topic. A claim that comes back holding the same
position is this record's own claim from an attempt that did not commit (it
is applied now); one holding another position means another record carried the
same event first: a duplicate. Losing Redis loses only client-retry dedupe; a
redelivered record is still caught by the partition offsets kept in PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import redis

from traitstream.errors import TransientError
from traitstream.store.profiles import Positioned


class Deduper(Protocol):
    """Splits records into first sightings and duplicates.

    Blocks on one network round trip. Raises ``TransientError`` when the store
    cannot be reached; calling again with the same records is safe."""

    def first_seen(self, topic: str, records: Sequence[Positioned]) -> list[bool]: ...

    def release(self, records: Sequence[Positioned]) -> None:
        """Forget the claims of records that were not applied (so a replay can apply them)."""
        ...


def claim_key(record: Positioned) -> str:
    return f"dedupe:{record.event.workspace_id}:{record.event.event_id}"


class RedisDeduper:
    def __init__(self, url: str, ttl_s: int) -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._ttl_s = ttl_s

    def first_seen(self, topic: str, records: Sequence[Positioned]) -> list[bool]:
        if not records:
            return []
        pipe = self._redis.pipeline(transaction=False)
        positions = [f"{topic}:{r.partition}:{r.offset}".encode() for r in records]
        for record, position in zip(records, positions, strict=True):
            pipe.set(claim_key(record), position, nx=True, ex=self._ttl_s, get=True)
        try:
            previous = pipe.execute()
        except redis.RedisError as exc:
            raise TransientError(f"redis: {exc}", source="redis") from exc
        return [old is None or old == own for old, own in zip(previous, positions, strict=True)]

    def release(self, records: Sequence[Positioned]) -> None:
        if not records:
            return
        try:
            self._redis.delete(*(claim_key(r) for r in records))
        except redis.RedisError as exc:
            raise TransientError(f"redis: {exc}", source="redis") from exc

    def ping(self) -> bool:
        try:
            return bool(self._redis.ping())
        except redis.RedisError:
            return False

    def close(self) -> None:
        self._redis.close()
