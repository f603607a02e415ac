"""``Deduper`` in memory: the claims of ``dedupe.RedisDeduper`` in a dict."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from traitstream.worker.dedupe import claim_key
from traitstream.worker.interfaces import Deduper
from traitstream.worker.records import Positioned


class InMemoryDeduper(Deduper):
    """Each claim holds the position that made it, until ``ttl_s`` passes on ``clock``
    or it is released: a record's own claim stays a first sighting, another
    record's makes it a duplicate."""

    def __init__(self, ttl_s: float = 86_400, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._claims: dict[str, tuple[str, float]] = {}

    def first_seen(self, topic: str, records: Sequence[Positioned]) -> list[bool]:
        now = self._clock()
        flags = []
        for record in records:
            key = claim_key(record)
            own = f"{topic}:{record.partition}:{record.offset}"
            previous = self._claims.get(key)
            if previous is None or previous[1] <= now:
                self._claims[key] = (own, now + self._ttl_s)
                flags.append(True)
            else:
                flags.append(previous[0] == own)
        return flags

    def release(self, records: Sequence[Positioned]) -> None:
        for record in records:
            self._claims.pop(claim_key(record), None)

    def forget_everything(self) -> None:
        """What a Redis that lost its data (restarted without persistence) does."""
        self._claims.clear()
