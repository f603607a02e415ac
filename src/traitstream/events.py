"""The canonical identify event: what every dialect is parsed into and what the worker applies.

Plain immutable values, no I/O. The Avro record (``avro/codec.py``) is this event's
wire form.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from enum import StrEnum
from typing import Any, NamedTuple

from traitstream import native

if native.use("traitstream.compiled._merge"):
    from traitstream.compiled import _merge
else:  # the Python twin serves (TRAITSTREAM_IMPL=python, or not built)
    _merge = None  # type: ignore[assignment]

JSON = Any
"""A JSON value: dict, list, str, int, float, bool or None."""

# Fixed namespace: profile ids must be the same on every machine and in every release.
PROFILE_NAMESPACE = uuid.UUID("5b1c3f9e-7a4d-5e2b-9c61-0d8f2a7e4b13")


class Kind(StrEnum):
    __hash__ = str.__hash__  # as for Op, below

    IDENTIFY = "identify"
    ERASE = "erase"
    ALIAS = "alias"
    """``previous_id`` is the same person as ``user_id``: merge its profile into the user's."""


class Op(StrEnum):
    # Hash as the plain string: Enum's own __hash__ is a Python call, and operations
    # are looked up in dicts and sets once per trait. Equal strings compare equal to
    # members already, so this also makes hash agree with ==.
    __hash__ = str.__hash__

    SET = "set"
    SET_ONCE = "set_once"
    UNSET = "unset"
    ADD = "add"
    APPEND = "append"
    PREPEND = "prepend"
    PRE_INSERT = "pre_insert"
    POST_INSERT = "post_insert"
    REMOVE = "remove"
    CLEAR_ALL = "clear_all"


class Operation(NamedTuple):
    """One change to one trait (``trait`` is None only for ``clear_all``).

    A named tuple rather than a frozen dataclass: as immutable, and about half the
    cost to build, which counts at one per trait of every identify."""

    op: Op
    trait: str | None = None
    value: JSON = None


if _merge is not None:
    _merge.bind(Op.SET, Operation)  # the types its loops read and build


def set_operations(traits: Iterable[tuple[str, JSON]]) -> tuple[Operation, ...]:
    """A ``set`` for each (name, value), in order: what every dialect makes of a plain
    traits object. ``set_operations_python``, in C when the extension was built
    (``_merge.c``): the edge builds one per trait of every identify."""
    if _merge is not None:
        return _merge.set_operations(traits)
    return set_operations_python(traits)


def set_operations_python(traits: Iterable[tuple[str, JSON]]) -> tuple[Operation, ...]:
    """Built as ``tuple.__new__`` would: a named tuple's own ``__new__`` is a Python
    function that binds its arguments, twice the cost."""
    new, operation, kind = tuple.__new__, Operation, Op.SET
    return tuple([new(operation, (kind, name, value)) for name, value in traits])


_POSITIONS = tuple(f":{index:04d}" for index in range(2_000))
"""The ends of ``IdentifyEvent.stamp_id`` for every position a request from the edge
can have (it takes 2,000 identifies at most), made once: formatting one costs ten
times looking it up, and the worker takes one per identify it applies."""


class IdentifyEvent(NamedTuple):
    """One identify (or erasure, or alias), as every dialect parses it and the worker applies it.

    Immutable, and a named tuple for the same reason as ``Operation``: the edge
    builds one per identify, and a frozen dataclass of 13 fields took a sixth of
    the parsing time to build."""

    workspace_id: str
    user_id: str | None
    dialect: str
    event_time_ms: int
    received_time_ms: int
    response_id: str
    event_index: int = 0
    anonymous_ids: tuple[str, ...] = ()
    profile_created_at_ms: int | None = None
    dedupe_key: str | None = None
    context: dict[str, JSON] | None = None
    operations: tuple[Operation, ...] = ()
    kind: Kind = Kind.IDENTIFY
    previous_id: str | None = None
    """Only for ``Kind.ALIAS``: the earlier id (anonymous or user) of ``user_id``."""

    @property
    def message_id(self) -> str:
        """What the profile's provenance names the event by: the client's dedupe key,
        else the id of the request that carried it."""
        return self.dedupe_key if self.dedupe_key is not None else self.response_id

    @property
    def event_id(self) -> str:
        """Unique id of this event: the client's dedupe key, else request id and position.
        What dedupe and replay know the event by."""
        if self.dedupe_key is not None:
            return self.dedupe_key
        return f"{self.response_id}:{self.event_index}"

    @property
    def stamp_id(self) -> str:
        """The event's id in the stamps of its writes (``merge.py``): the response id and
        the event's position in its request, four digits wide (the edge takes at most
        2,000 identifies a request), so that the ids of one request's events sort as
        their positions do and a later event wins a tie with an earlier one. Never the
        client's dedupe key: that is any text, and would order them at random."""
        index = self.event_index
        if 0 <= index < len(_POSITIONS):
            return self.response_id + _POSITIONS[index]
        return f"{self.response_id}:{index:04d}"

    @property
    def partition_key(self) -> bytes:
        """Kafka key: one profile's events share it, so they stay in one partition, in order."""
        return partition_key(self.workspace_id, self.user_id, self.anonymous_ids)


def partition_key(workspace_id: str, user_id: str | None, anonymous_ids: tuple[str, ...]) -> bytes:
    if user_id is not None:
        return f"{workspace_id}:u:{user_id}".encode()
    return f"{workspace_id}:a:{anonymous_ids[0] if anonymous_ids else ''}".encode()


def user_profile_id(workspace_id: str, user_id: str) -> uuid.UUID:
    """The profile id of an identified user: UUIDv5 of workspace and user id."""
    return _uuid5(f"{workspace_id}\x1fuser\x1f{user_id}")


def anonymous_profile_id(workspace_id: str, anonymous_id: str) -> uuid.UUID:
    """The profile id of a profile known only by an anonymous id."""
    return _uuid5(f"{workspace_id}\x1fanonymous\x1f{anonymous_id}")


_NAMESPACE_BYTES = PROFILE_NAMESPACE.bytes
_VERSION_BITS = ~((0xC000 << 48) | (0xF000 << 64)), (0x8000 << 48) | (5 << 76)
"""What ``UUID(bytes=..., version=5)`` clears and sets: the RFC 4122 variant and the version."""


def _uuid5(name: str) -> uuid.UUID:
    """``uuid.uuid5(PROFILE_NAMESPACE, name)``, at a third of the cost: the same hash
    and bits, without ``UUID.__init__``'s checks of arguments made right here (the
    workers take one or two per identify); tests/unit/test_events.py compares it
    with ``uuid.uuid5``."""
    clear, set_ = _VERSION_BITS
    value = int.from_bytes(hashlib.sha1(_NAMESPACE_BYTES + name.encode()).digest()[:16]) & clear | set_
    profile_id = object.__new__(uuid.UUID)
    object.__setattr__(profile_id, "int", value)
    object.__setattr__(profile_id, "is_safe", uuid.SafeUUID.unknown)
    return profile_id
