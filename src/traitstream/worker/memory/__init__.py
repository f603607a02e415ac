"""In-memory implementations of the worker's collaborators (``worker/interfaces.py``).

``InMemoryBroker`` and ``InMemoryConsumer`` stand for Kafka, ``InMemoryDeadLetters``
for the dead-letter producer, ``InMemoryDeduper`` for Redis and
``InMemoryProfileStore`` for PostgreSQL. With them the whole worker, batch loop and
rebalances included, runs in one process in milliseconds: its unit tests do, and so
can the tests of anyone who embeds or extends it.

They live in the package rather than under ``tests/`` for that second use, as a
Kafka client library ships its local backend: they are small, import nothing the
worker does not already (no PostgreSQL or Redis client), and are kept honest by the
contract tests (``tests/contract``), which run the same tests against each fake and
the real service it stands for. They sit in ``worker/`` because they implement the
worker's Protocols over the worker's own pure planning (``worker/plan.py``); the
worker never imports ``store/``, and neither do they.

Not thread-safe; every call returns at once (timeouts are ignored).
"""

from traitstream.worker.memory.dedupe import InMemoryDeduper
from traitstream.worker.memory.kafka import (
    InMemoryBroker,
    InMemoryConsumer,
    InMemoryDeadLetters,
    InMemoryMessage,
)
from traitstream.worker.memory.store import InMemoryProfileStore

__all__ = [
    "InMemoryBroker",
    "InMemoryConsumer",
    "InMemoryDeadLetters",
    "InMemoryDeduper",
    "InMemoryMessage",
    "InMemoryProfileStore",
]
