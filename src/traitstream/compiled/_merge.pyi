"""Types of the compiled merge loops (``_merge.c``); ``merge.py`` and ``events.py`` document and use them."""

from collections.abc import Iterable
from typing import Any

from traitstream.events import Op, Operation
from traitstream.merge import Profile

Stamp = list[int | str]

Source = tuple[str, str]

def expand_text(
    text: str, /
) -> tuple[dict[str, Stamp], dict[str, Stamp], Stamp | None, dict[str, Source]] | None: ...
def compact_text(
    written: dict[str, Stamp], once: dict[str, Stamp], cleared: Stamp | None, sources: dict[str, Source], /
) -> str | None: ...
def bind(set_: Op, operation: type[Operation], /) -> None: ...
def apply_operations(profile: Profile, operations: tuple[Operation, ...], time: int, id: str, /) -> None: ...
def set_operations(traits: Iterable[tuple[str, Any]], /) -> tuple[Operation, ...]: ...
