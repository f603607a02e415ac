"""The values the worker passes between its steps and to its collaborators.

They belong to the worker: the store, the dead-letter sink and the fakes take and
return them, and none of them imports anything from ``store/``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from traitstream.events import IdentifyEvent


class Positioned(NamedTuple):
    """A decoded event and where it sits in the topic. A named tuple: the worker
    makes one per record, and a frozen dataclass costs twice as much to build."""

    partition: int
    offset: int
    event: IdentifyEvent


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What one ``ProfileWriter.apply`` did."""

    applied: tuple[IdentifyEvent, ...]
    already_applied: int
    """Records skipped because they lie below their partition's stored next offset."""
    conflicts: int
    rejected: tuple[Positioned, ...] = ()
    """Records refused for the profile size cap (handed to ``on_rejected`` before commit)."""


RejectHandler = Callable[[Sequence[Positioned]], None]
"""Called by the store, inside its transaction, with the records it refuses for the
size cap: when it raises, the batch does not commit."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that cannot be applied: the message as read (a ``Message``), a stable
    reason code, and a sentence for a person."""

    message: Any
    reason: str
    detail: str
