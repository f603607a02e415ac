"""Types of the compiled size bound (``_sizing.c``); ``plan.py`` documents and uses it."""

from collections.abc import Callable
from typing import Any

from traitstream.events import JSON, Op, Operation

def bind(
    set_: Op, unset: Op, remove: Op, dumps: Callable[[Any], bytes], operation: type[Operation], /
) -> None: ...
def loose_growth(
    traits: dict[str, JSON], operations: tuple[Operation, ...], /
) -> tuple[int, dict[str, JSON]]: ...
